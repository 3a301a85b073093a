"""SDP reading and offer/answer (telephony/sdp.py) against bodies real phones sent.

The fixtures in tests/fixtures/sdp/ were captured from baresip 1.0, linphonec 5.1 and sipp on
loopback, or written after the RFC examples and forms they name (see their README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from telephony import sdp
from telephony.sdp import OfferRejected, SdpError, UnsupportedBody

FIXTURES = Path(__file__).parent / "fixtures" / "sdp"
LOCAL = {"local_ip": "127.0.0.1", "local_port": 40000, "session_id": 4242, "session_version": 7}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def offer(name: str) -> sdp.Session:
    return sdp.parse(fixture(name))


def answer_to(source: bytes | str | sdp.Session, **kwargs) -> tuple[sdp.Session, str, sdp.AudioChoice]:
    session = source if isinstance(source, sdp.Session) else sdp.parse(source)
    text, choice = sdp.answer(session, **{**LOCAL, **kwargs})
    return session, text, choice


def baresip_with(old: str, new: str) -> str:
    """baresip's real offer with one piece changed (directions, codecs)."""
    text = fixture("baresip-1.0-offer.sdp").decode()
    assert old in text
    return text.replace(old, new)


# --- parsing ----------------------------------------------------------------------------------


def test_baresip_offer_is_read_whole() -> None:
    session = offer("baresip-1.0-offer.sdp")
    assert session.origin == sdp.Origin("-", 1945383933, 2056200806, "IN", "IP4", "127.0.0.1")
    assert session.name == "-" and session.connection == "127.0.0.1"
    assert session.attributes == [("tool", "baresip 1.0.0")]
    [audio] = session.media
    assert (audio.kind, audio.port, audio.port_count, audio.proto) == ("audio", 35868, 1, "RTP/AVP")
    assert audio.formats == ["0", "8", "101"]
    assert audio.rtpmap == {"0": ("PCMU", 8000, None), "8": ("PCMA", 8000, None),
                            "101": ("telephone-event", 8000, None)}
    assert audio.fmtp == {"101": "0-15"} and audio.direction == "sendrecv"
    # every a= line, in order, the ones we do not use included
    assert [name for name, _ in audio.attributes] == [
        "rtpmap", "rtpmap", "rtpmap", "fmtp", "sendrecv", "label", "rtcp-rsize", "ssrc",
        "minptime", "ptime"]
    assert ("ssrc", "953124883 cname:sip:resident@127.0.0.1") in audio.attributes
    assert ("rtcp-rsize", None) in audio.attributes


def test_ice_attributes_are_kept_and_the_media_level_address_wins() -> None:
    session = offer("baresip-1.0-ice-opus-video-offer.sdp")
    assert ("ice-ufrag", "rZNymkf") in session.attributes
    audio, video = session.media
    assert session.connection == "127.0.0.1" and audio.connection == "192.0.2.2"
    assert session.address_of(audio) == "192.0.2.2"
    candidates = [value for name, value in audio.attributes if name == "candidate"]
    assert len(candidates) == 4 and "fd00::2 11372 typ host" in candidates[2]
    assert audio.rtpmap["96"] == ("opus", 48000, 2)
    assert video.kind == "video" and video.rtpmap == {"96": ("VP8", 90000, None)}


def test_the_session_address_serves_streams_without_their_own() -> None:
    session = offer("baresip-1.0-offer.sdp")
    assert session.media[0].connection is None
    assert session.address_of(session.media[0]) == "127.0.0.1"


def test_bare_lf_line_ends_read_as_crlf_ones() -> None:
    assert b"\r" not in fixture("bare-lf-offer.sdp")
    assert sdp.parse(fixture("bare-lf-offer.sdp")) == offer("baresip-1.0-offer.sdp")


def test_rfc_4566_example_keeps_every_line() -> None:
    session = offer("rfc4566-5-example.sdp")
    assert session.name == "SDP Seminar"
    assert session.connection == "224.2.17.12"  # the TTL (/127) is not part of the address
    assert session.direction == "recvonly"
    assert ("i", "A Seminar on the session description protocol") in session.other
    assert ("t", "2873397496 2873404696") in session.other
    audio, video = session.media
    assert audio.rtpmap == {} and audio.encoding("0") == ("PCMU", 8000, 1)  # static, no rtpmap
    assert video.rtpmap == {"99": ("h263-1998", 90000, None)}


def test_rfc_4317_answer_with_an_empty_session_name() -> None:
    session = offer("rfc4317-2.1-answer.sdp")
    assert session.name == ""
    assert [(m.kind, m.port, m.formats) for m in session.media] == [
        ("audio", 49174, ["0"]), ("video", 49170, ["32"])]


def test_unknown_lines_and_attributes_are_kept() -> None:
    text = baresip_with("a=sendrecv\r\n", "a=sendrecv\r\nb=AS:64\r\nz=unknown line\r\n"
                        "a=x-vendor:thing\r\na=flag\r\n")
    audio = sdp.parse(text).media[0]
    assert ("b", "AS:64") in audio.other and ("z", "unknown line") in audio.other
    assert ("x-vendor", "thing") in audio.attributes and ("flag", None) in audio.attributes


def test_a_port_range_is_read() -> None:
    audio = sdp.parse(baresip_with("m=audio 35868 ", "m=audio 35868/2 ")).media[0]
    assert (audio.port, audio.port_count) == (35868, 2)


@pytest.mark.parametrize(("name", "why"), [
    ("port-65536.sdp", "port '65536' is not 0..65535"),
    ("missing-v.sdp", "must start with v=0"),
    ("missing-o.sdp", "no o= line"),
    ("garbage.sdp", "NUL byte"),
])
def test_broken_fixtures_are_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(SdpError, match=why):
        sdp.parse(fixture(name))


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty SDP"),
    ("<html><body>hello</body></html>", "line 1 is not <letter>=<value>"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "no s= line"),
    ("v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", "must start with v=0"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio -1 RTP/AVP 0\r\n", "not 0..65535"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 4000 RTP/AVP\r\n", "needs media, port"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 4000/0 RTP/AVP 0\r\n", "port count"),
    ("v=0\r\no=- x 1 IN IP4 192.0.2.1\r\ns=-\r\n", "o= is not"),
    ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "o= is not"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4\r\n", "c= is not"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nthis is not sdp\r\n", "line 4 is not"),
    ("v=0\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", "a second v="),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n\r\n\r\nnonsense\r\n", "line 6 is not"),
    ("v=0\r\no=- " + "9" * 5000 + " 1 IN IP4 192.0.2.1\r\ns=-\r\n", "o= is not"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio " + "0" * 5000 + "1 RTP/AVP 0\r\n",
     "not 0..65535"),
])
def test_unreadable_sdp_says_why(text: str, why: str) -> None:
    with pytest.raises(SdpError, match=why):
        sdp.parse(text)


def test_sdp_errors_are_value_errors_and_offer_rejections_carry_488() -> None:
    assert issubclass(SdpError, ValueError)
    rejected = OfferRejected("no audio stream offered")
    assert (rejected.code, rejected.reason) == (488, "no audio stream offered")
    assert OfferRejected("x", code=606).code == 606


# --- answering: the shape RFC 3264 §6 asks for ------------------------------------------------

ACCEPTED = [
    "baresip-1.0-offer.sdp", "baresip-1.0-ice-opus-video-offer.sdp",
    "baresip-1.0-hold-reinvite.sdp", "baresip-1.0-resume-reinvite.sdp",
    "linphone-5.1-ipv6-offer.sdp", "linphone-5.1-ice-offer.sdp",
    "linphone-5.1-hold-reinvite.sdp", "linphone-5.1-resume-reinvite.sdp", "sipp-uac-offer.sdp",
    "rfc4317-2.1-offer.sdp", "rfc3264-10.1-offer.sdp", "rfc3264-10.1-second-audio-reoffer.sdp",
    "rfc2543-hold-offer.sdp", "srtp-then-rtp-audio-offer.sdp", "bare-lf-offer.sdp",
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_answer_has_every_offered_stream_in_order(name: str) -> None:
    session, text, choice = answer_to(fixture(name))
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    reply = sdp.parse(text)
    assert len(reply.media) == len(session.media)
    for index, (offered, answered) in enumerate(zip(session.media, reply.media, strict=True)):
        assert (answered.kind, answered.proto) == (offered.kind, offered.proto)
        if index == choice.index:
            assert answered.port == 40000
            assert answered.formats[0] == str(choice.payload_type)
        else:
            # refused: port 0 and the formats as offered (§6: at least one)
            assert answered.port == 0 and answered.formats == offered.formats
    assert reply.origin == sdp.Origin("hotline", 4242, 7, "IN", "IP4", "127.0.0.1")
    assert reply.connection == "127.0.0.1"


def test_baresip_offer_answered_in_full() -> None:
    _, text, choice = answer_to(fixture("baresip-1.0-offer.sdp"))
    assert text == ("v=0\r\no=hotline 4242 7 IN IP4 127.0.0.1\r\ns=jiayi-hotline\r\n"
                    "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\n"
                    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                    "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")
    assert choice == sdp.AudioChoice(
        index=0, payload_type=0, codec="PCMU", remote_ip="127.0.0.1", remote_port=35868,
        dtmf_payload_type=101, remote_direction="sendrecv", local_direction="sendrecv",
        on_hold=False)


def test_ice_offer_with_video_takes_g711_audio_and_refuses_video() -> None:
    _, text, choice = answer_to(fixture("baresip-1.0-ice-opus-video-offer.sdp"))
    # opus (96) and G722 (9) come first in the offer; PCMU is the first of ours
    assert (choice.codec, choice.payload_type, choice.dtmf_payload_type) == ("PCMU", 0, 101)
    assert (choice.remote_ip, choice.remote_port) == ("192.0.2.2", 11372)  # media-level c=
    assert "m=video 0 RTP/AVP 96\r\n" in text
    assert "ice" not in text and "candidate" not in text  # no ICE offered back


def test_linphone_ice_offer_connects() -> None:
    _, _, choice = answer_to(fixture("linphone-5.1-ice-offer.sdp"))
    assert (choice.codec, choice.remote_ip, choice.remote_port) == ("PCMU", "192.0.2.2", 17120)


def test_linphone_ipv6_offer_names_the_address_family() -> None:
    _, _, choice = answer_to(fixture("linphone-5.1-ipv6-offer.sdp"))
    assert (choice.remote_ip, choice.remote_address_type) == ("fd00::2", "IP6")


def test_answer_from_an_ipv6_address() -> None:
    _, text, _ = answer_to(fixture("sipp-uac-offer.sdp"), local_ip="::1")
    assert "o=hotline 4242 7 IN IP6 ::1\r\n" in text and "c=IN IP6 ::1\r\n" in text


def test_second_audio_stream_and_offered_port_zero_stream_are_refused() -> None:
    _, text, choice = answer_to(fixture("rfc3264-10.1-second-audio-reoffer.sdp"))
    assert choice.index == 0
    assert text.count("m=audio 0 RTP/AVP 110\r\n") == 1
    assert "m=video 0 RTP/AVP 31\r\n" in text and "m=video 0 RTP/AVP 32\r\n" in text


def test_srtp_stream_refused_and_the_plain_rtp_one_taken() -> None:
    _, text, choice = answer_to(fixture("srtp-then-rtp-audio-offer.sdp"))
    assert (choice.index, choice.codec, choice.remote_port) == (1, "PCMA", 20002)
    assert text.index("m=audio 0 RTP/SAVP 8 0 101\r\n") < text.index("m=audio 40000 RTP/AVP 8 101\r\n")
    assert "crypto" not in text


def test_avpf_audio_is_answered_on_avpf() -> None:
    _, text, choice = answer_to(baresip_with("RTP/AVP", "RTP/AVPF"))
    assert choice.codec == "PCMU" and "m=audio 40000 RTP/AVPF 0 101\r\n" in text


def test_unknown_transport_video_and_application_streams_are_refused() -> None:
    text = baresip_with("a=ptime:20\r\n", "a=ptime:20\r\nm=application 5000 UDP/BFCP *\r\n"
                        "m=text 6000 RTP/AVP 98\r\na=rtpmap:98 t140/1000\r\n"
                        "m=audio 7000 udp 0\r\n")
    _, reply, choice = answer_to(text)
    assert choice.index == 0
    assert reply.endswith("m=application 0 UDP/BFCP *\r\nm=text 0 RTP/AVP 98\r\n"
                          "m=audio 0 udp 0\r\n")


def test_a_first_audio_stream_we_cannot_use_does_not_stop_the_next() -> None:
    text = baresip_with("m=audio 35868 RTP/AVP 0 8 101",
                        "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"
                        "m=audio 35868 RTP/AVP 0 8 101")
    _, reply, choice = answer_to(text)
    assert choice.index == 1 and reply.count("m=audio 0 RTP/AVP 96\r\n") == 1


# --- codec choice -----------------------------------------------------------------------------


@pytest.mark.parametrize(("formats", "codecs", "expected"), [
    ("0 8 101", ("PCMA", "PCMU"), ("PCMU", 0)),  # the offerer's preference, not ours
    ("8 0 101", ("PCMA", "PCMU"), ("PCMA", 8)),
    ("0 8 101", ("PCMU", "PCMA"), ("PCMU", 0)),
    ("0 8 101", ("PCMA",), ("PCMA", 8)),  # `codecs` limits what we take
    ("0 8 101", ("pcmu",), ("PCMU", 0)),
])
def test_the_offerers_most_preferred_codec_we_speak(formats: str, codecs: tuple[str, ...],
                                                    expected: tuple[str, int]) -> None:
    _, text, choice = answer_to(baresip_with("RTP/AVP 0 8 101", f"RTP/AVP {formats}"),
                                codecs=codecs)
    assert (choice.codec, choice.payload_type) == expected
    assert f"a=rtpmap:{expected[1]} {expected[0]}/8000\r\n" in text


def test_static_payload_types_need_no_rtpmap() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18 8\r\n"
    _, reply, choice = answer_to(text)
    assert (choice.codec, choice.payload_type, choice.dtmf_payload_type) == ("PCMA", 8, None)
    assert "m=audio 40000 RTP/AVP 8\r\n" in reply and "telephone-event" not in reply


def test_codec_names_match_case_insensitively_and_dynamic_numbers_are_kept() -> None:
    text = baresip_with("RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000",
                        "RTP/AVP 97 101\r\na=rtpmap:97 pcma/8000")
    _, reply, choice = answer_to(text)
    assert (choice.codec, choice.payload_type) == ("PCMA", 97)
    assert "m=audio 40000 RTP/AVP 97 101\r\na=rtpmap:97 PCMA/8000\r\n" in reply


def test_g711_at_another_rate_or_in_stereo_is_not_ours() -> None:
    text = baresip_with("RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000",
                        "RTP/AVP 97 98 101\r\na=rtpmap:97 PCMA/16000\r\na=rtpmap:98 PCMU/8000/2")
    with pytest.raises(OfferRejected, match="no common codec: offered PCMA, PCMU, telephone-event"):
        answer_to(text)


def test_an_rtpmap_we_cannot_read_leaves_its_format_unknown() -> None:
    text = baresip_with("a=rtpmap:8 PCMA/8000", "a=rtpmap:8 PCMA/" + "8" * 5000)
    audio = sdp.parse(text).media[0]
    assert "8" not in audio.rtpmap and audio.encoding("8") == ("PCMA", 8000, 1)


def test_odd_payload_type_tokens_do_not_break_the_answer() -> None:
    text = baresip_with("RTP/AVP 0 8 101", "RTP/AVP abc 300 8 101\r\na=rtpmap:abc PCMU/8000\r\n"
                        "a=rtpmap:300 PCMU/8000")
    _, _, choice = answer_to(text)
    assert (choice.codec, choice.payload_type) == ("PCMA", 8)


# --- telephone-event ----------------------------------------------------------------------------


def test_linphone_telephone_event_only_at_8000() -> None:
    _, text, choice = answer_to(fixture("linphone-5.1-ice-offer.sdp"))
    assert choice.dtmf_payload_type == 101
    assert "m=audio 40000 RTP/AVP 0 101\r\n" in text
    assert "telephone-event/48000" not in text and "telephone-event/16000" not in text
    assert text.count("telephone-event") == 1


def test_no_telephone_event_at_8000_means_none_in_the_answer() -> None:
    text = fixture("linphone-5.1-ice-offer.sdp").decode()
    text = text.replace(" 99 100 101", " 99 100").replace("a=rtpmap:101 telephone-event/8000\r\n", "")
    _, reply, choice = answer_to(text)
    assert choice.dtmf_payload_type is None
    assert "telephone-event" not in reply and "m=audio 40000 RTP/AVP 0\r\n" in reply


def test_telephone_event_not_listed_in_the_m_line_is_not_answered() -> None:
    _, reply, choice = answer_to(baresip_with("RTP/AVP 0 8 101", "RTP/AVP 0 8"))
    assert choice.dtmf_payload_type is None and "telephone-event" not in reply


# --- direction and hold ---------------------------------------------------------------------


@pytest.mark.parametrize(("offered", "answered", "on_hold"), [
    ("sendrecv", "sendrecv", False),
    ("sendonly", "recvonly", True),
    ("recvonly", "sendonly", False),
    ("inactive", "inactive", True),
])
def test_direction_mirrors_the_offer(offered: str, answered: str, on_hold: bool) -> None:
    _, text, choice = answer_to(baresip_with("a=sendrecv", f"a={offered}"))
    assert (choice.remote_direction, choice.local_direction, choice.on_hold) == (
        offered, answered, on_hold)
    assert text.endswith(f"a={answered}\r\n")


def test_no_direction_attribute_means_sendrecv() -> None:
    _, text, choice = answer_to(fixture("sipp-uac-offer.sdp"))
    assert choice.remote_direction == "sendrecv" and text.endswith("a=sendrecv\r\n")


def test_session_level_direction_applies_and_media_level_overrides_it() -> None:
    session_level = baresip_with("a=tool:baresip 1.0.0\r\n", "a=tool:baresip 1.0.0\r\na=sendonly\r\n")
    _, _, choice = answer_to(session_level.replace("a=sendrecv\r\n", ""))
    assert (choice.remote_direction, choice.local_direction) == ("sendonly", "recvonly")
    _, _, choice = answer_to(session_level)  # the media keeps its own a=sendrecv
    assert (choice.remote_direction, choice.local_direction) == ("sendrecv", "sendrecv")


def test_real_hold_and_resume_reinvites() -> None:
    for phone in ("baresip-1.0", "linphone-5.1"):
        _, text, held = answer_to(fixture(f"{phone}-hold-reinvite.sdp"), session_version=8)
        assert (held.on_hold, held.local_direction) == (True, "recvonly")
        assert text.startswith("v=0\r\no=hotline 4242 8 IN IP4")  # same id, next version
        _, _, resumed = answer_to(fixture(f"{phone}-resume-reinvite.sdp"), session_version=9)
        assert (resumed.on_hold, resumed.local_direction) == (False, "sendrecv")


def test_rfc_2543_hold_with_zero_address() -> None:
    _, text, choice = answer_to(fixture("rfc2543-hold-offer.sdp"))
    assert (choice.remote_ip, choice.remote_direction, choice.on_hold) == ("0.0.0.0", "sendonly", True)
    assert text.endswith("a=recvonly\r\n")
    _, text, choice = answer_to(fixture("rfc2543-hold-offer.sdp").replace(b"a=ptime:20", b"a=recvonly"))
    assert (choice.remote_direction, choice.local_direction) == ("inactive", "inactive")


@pytest.mark.parametrize(("offered", "wanted", "answered"), [
    ("sendrecv", "sendonly", "sendonly"),  # we hold: our audio (the chime) goes, theirs not
    ("sendonly", "sendonly", "inactive"),  # both hold
    ("sendrecv", "inactive", "inactive"),
    ("recvonly", "recvonly", "inactive"),
])
def test_our_own_hold_is_intersected_with_the_offer(offered: str, wanted: str, answered: str) -> None:
    _, text, choice = answer_to(baresip_with("a=sendrecv", f"a={offered}"), direction=wanted)
    assert choice.local_direction == answered and text.endswith(f"a={answered}\r\n")


# --- offers we cannot take ------------------------------------------------------------------


@pytest.mark.parametrize(("source", "why"), [
    ("baresip-1.0-srtp-mandatory-offer.sdp", r"SRTP \(RTP/SAVP\)"),
    ("webrtc-chrome-offer.sdp", r"SRTP \(UDP/TLS/RTP/SAVPF\)"),
    ("no-common-codec-offer.sdp", "no common codec: offered opus, G722, GSM, telephone-event"),
    ("rfc4566-5-example.sdp", "multicast"),
])
def test_offers_we_cannot_take_are_rejected_with_488(source: str, why: str) -> None:
    with pytest.raises(OfferRejected, match=why) as caught:
        answer_to(fixture(source))
    assert caught.value.code == 488 and len(caught.value.reason) < 120


@pytest.mark.parametrize(("media", "why"), [
    ("", "no media offered"),
    ("m=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n", "no audio stream offered"),
    ("m=audio 0 RTP/AVP 0 8\r\n", r"refused \(port 0\)"),
    ("m=audio 5000 RTP/SAVPF 0 8\r\n", "SRTP"),
    ("m=audio 5000 udp 0\r\n", "not RTP/AVP"),
])
def test_more_offers_without_usable_audio(media: str, why: str) -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n" + media
    with pytest.raises(OfferRejected, match=why):
        answer_to(text)


def test_audio_without_any_address_is_rejected() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
    with pytest.raises(OfferRejected, match="no c= address"):
        answer_to(text)
    with pytest.raises(SdpError, match="no c= line"):
        sdp.parse(text).address_of(sdp.parse(text).media[0])


def test_a_hostile_offer_gets_a_short_reason() -> None:
    formats = " ".join(str(96 + n % 32) for n in range(2000))
    maps = "".join(f"a=rtpmap:{96 + n} {'x' * 300}{n}/8000\r\n" for n in range(32))
    text = f"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP {formats}\r\n{maps}"
    with pytest.raises(OfferRejected) as caught:
        answer_to(text)
    assert len(caught.value.reason) < 200 and caught.value.reason.endswith("we take PCMA or PCMU")


def test_bad_arguments_are_refused() -> None:
    session = offer("baresip-1.0-offer.sdp")
    for bad in ({"local_port": 0}, {"local_port": 65536}, {"local_ip": "1.2.3.4 x"},
                {"codecs": ("G722",)}, {"codecs": ()}, {"username": "two words"},
                {"direction": "both"}, {"session_version": -1}):
        with pytest.raises(ValueError):
            sdp.answer(session, **{**LOCAL, **bad})


# --- our offer --------------------------------------------------------------------------------


def test_build_offer_reads_back_as_sent() -> None:
    text = sdp.build_offer(**LOCAL)
    assert text == ("v=0\r\no=hotline 4242 7 IN IP4 127.0.0.1\r\ns=jiayi-hotline\r\n"
                    "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0 101\r\n"
                    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
                    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
                    "a=sendrecv\r\n")
    [audio] = sdp.parse(text).media
    assert audio.formats == ["8", "0", "101"] and audio.direction == "sendrecv"


def test_build_offer_in_our_order_without_dtmf_and_on_hold() -> None:
    text = sdp.build_offer(**LOCAL, codecs=("PCMU", "PCMA"), dtmf_payload_type=None,
                           direction="sendonly")
    [audio] = sdp.parse(text).media
    assert audio.formats == ["0", "8"] and audio.direction == "sendonly"
    assert "telephone-event" not in text


def test_build_offer_refuses_bad_arguments() -> None:
    for bad in ({"dtmf_payload_type": 8}, {"dtmf_payload_type": 128}, {"codecs": ("opus",)},
                {"direction": "up"}, {"local_port": -5}):
        with pytest.raises(ValueError):
            sdp.build_offer(**{**LOCAL, **bad})


def test_our_offer_answered_by_ourselves() -> None:
    offered = sdp.build_offer(**LOCAL)
    _, text, choice = answer_to(offered, local_port=41000)
    assert (choice.codec, choice.dtmf_payload_type, choice.remote_port) == ("PCMA", 101, 40000)
    agreed = sdp.read_answer(sdp.parse(text))
    assert (agreed.codec, agreed.payload_type, agreed.remote_port) == ("PCMA", 8, 41000)
    assert (agreed.dtmf_payload_type, agreed.local_direction) == (101, "sendrecv")


def test_read_answer_of_rfc_4317() -> None:
    agreed = sdp.read_answer(offer("rfc4317-2.1-answer.sdp"))
    assert (agreed.codec, agreed.remote_ip, agreed.remote_port) == (
        "PCMU", "host.biloxi.example.com", 49174)


def test_read_answer_refusing_our_audio() -> None:
    text = "v=0\r\no=- 1 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 0 RTP/AVP 8\r\n"
    with pytest.raises(OfferRejected, match="refuses our audio"):
        sdp.read_answer(sdp.parse(text))
    with pytest.raises(OfferRejected, match="no audio stream"):
        sdp.read_answer(sdp.parse(text.replace("m=audio 0 RTP/AVP 8", "m=video 0 RTP/AVP 31")))


# --- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/sdp", "Application/SDP",
                                          "application/sdp; charset=utf-8"])
def test_an_sdp_body_is_itself(content_type: str) -> None:
    body = fixture("baresip-1.0-offer.sdp")
    assert sdp.sdp_from_body(content_type, body) is body


def test_sip_i_multipart_body_yields_its_sdp() -> None:
    body = fixture("multipart-mixed-sip-i.body")
    found = sdp.sdp_from_body("multipart/mixed;boundary=unique-boundary-1", body)
    assert found.startswith(b"v=0\r\n") and b"ISUP" not in found and b"--unique" not in found
    _, _, choice = answer_to(found)
    assert (choice.codec, choice.remote_ip, choice.dtmf_payload_type) == ("PCMA", "192.0.2.40", 101)


def test_a_required_part_we_do_not_understand_is_415() -> None:
    with pytest.raises(UnsupportedBody, match="application/isup part is required") as caught:
        sdp.sdp_from_body('multipart/mixed; boundary="unique-boundary-1"',
                          fixture("multipart-mixed-isup-required.body"))
    assert (caught.value.code, caught.value.accept) == (415, "application/sdp")


def test_nested_alternative_with_a_quoted_boundary() -> None:
    offer_body = fixture("sipp-uac-offer.sdp")
    inner = (b"--in\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
             b"--in\r\nContent-Type: application/sdp\r\n\r\n" + offer_body + b"\r\n--in--\r\n")
    outer = (b"preamble\r\n--out b\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
             + inner + b"\r\n--out b--\r\nepilogue\r\n")
    assert sdp.sdp_from_body('multipart/related; boundary="out b"', outer) == offer_body


@pytest.mark.parametrize(("content_type", "body", "error"), [
    ("text/plain", b"hello", UnsupportedBody),
    ("", b"v=0\r\n", UnsupportedBody),
    ("application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n", UnsupportedBody),
    ("multipart/mixed; boundary=b", b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
     UnsupportedBody),
    ("multipart/mixed", b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n", SdpError),
    ("multipart/mixed; boundary=zz", b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n",
     SdpError),
    ("multipart/mixed; boundary=b\r\nX-Injected: 1", b"--b--\r\n", SdpError),
])
def test_bodies_without_sdp(content_type: str, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        sdp.sdp_from_body(content_type, body)


def test_an_empty_body_is_no_offer() -> None:
    assert sdp.sdp_from_body("", b"") == b""
    assert sdp.sdp_from_body("application/sdp", b"") == b""
