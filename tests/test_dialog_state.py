"""A dialog's stored state (telephony.dialog_state): round trip, the BYE built from it, and stored
input that must not become a request."""

from __future__ import annotations

import pytest

from telephony.dialog_state import DialogState, DialogStateError

STATE = DialogState(call_id="abc@10.0.0.1", local_tag="t-ours", remote_tag="t-theirs",
                    local_uri='"13800000001" <sip:hotline@10.0.0.5>', remote_uri="<sip:1001@10.0.0.5>",
                    remote_target="sip:1001@10.0.0.9:5062;transport=udp",
                    route_set=("<sip:10.0.0.5;lr;r2=on>", "<sip:10.0.0.5:5080;lr>"), local_cseq=7,
                    side="outbound")


def test_round_trip_through_json() -> None:
    assert DialogState.from_json(STATE.to_json()) == STATE


def test_the_bye_follows_the_dialog() -> None:
    head = STATE.bye("10.0.0.2", 5070, "<sip:hotline@10.0.0.2:5070>").decode()
    lines = head.split("\r\n")
    assert lines[0] == "BYE sip:1001@10.0.0.9:5062;transport=udp SIP/2.0"
    assert lines[1].startswith("Via: SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK")
    assert [ln for ln in lines if ln.startswith("Route:")] == [
        "Route: <sip:10.0.0.5;lr;r2=on>", "Route: <sip:10.0.0.5:5080;lr>"]
    assert 'From: "13800000001" <sip:hotline@10.0.0.5>;tag=t-ours' in lines
    assert "To: <sip:1001@10.0.0.5>;tag=t-theirs" in lines
    assert "Call-ID: abc@10.0.0.1" in lines and "CSeq: 8 BYE" in lines
    assert head.endswith("Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("change", "problem"), [
    ({"call_id": "x\r\nVia: evil"}, "call_id"),
    ({"remote_target": "http://example.com"}, "remote_target"),
    ({"route_set": ["<sip:a;lr>\r\nX: y"]}, "route_set"),
    ({"route_set": "<sip:a;lr>"}, "route_set"),
    ({"local_cseq": -1}, "local_cseq"),
    ({"local_cseq": 2**31}, "local_cseq"),
    ({"local_cseq": True}, "local_cseq"),
    ({"local_cseq": "7"}, "local_cseq"),
    ({"side": "sideways"}, "side"),
    ({"remote_tag": ""}, "remote_tag"),
    ({"local_uri": "x" * 5000}, "local_uri"),
])
def test_a_stored_state_that_could_not_make_a_sound_request_is_refused(change: dict, problem: str) -> None:
    with pytest.raises(DialogStateError, match=problem):
        DialogState.from_json({**STATE.to_json(), **change})


def test_missing_fields_and_other_json_are_refused() -> None:
    data = STATE.to_json()
    del data["remote_tag"]
    with pytest.raises(DialogStateError, match="missing remote_tag"):
        DialogState.from_json(data)
    with pytest.raises(DialogStateError, match="JSON object"):
        DialogState.from_json(["abc"])
