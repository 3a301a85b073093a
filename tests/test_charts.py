"""web/charts.py: the reports page's SVG charts parse, escape user text and survive odd series."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from web.charts import svg_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return root.findall(f"{SVG}rect")


def test_bar_chart_has_one_bar_per_value_scaled_to_the_axis() -> None:
    root = parse(svg_chart("来电量", [("5月1日", 10), ("5月2日", 20), ("5月3日", 5)], unit="通"))
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == "来电量"
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text == "5月1日：10 通；5月2日：20 通；5月3日：5 通"
    labelled = root.get("aria-labelledby", "").split()
    assert labelled == [title.get("id"), desc.get("id")]
    heights = [float(r.get("height", "nan")) for r in bars(root)]
    assert len(heights) == 3
    # the axis tops at 20, so the 20 bar fills the plot and the others are in proportion
    assert heights[1] == pytest.approx(2 * heights[0]) == pytest.approx(4 * heights[2])
    assert heights[1] == pytest.approx(240 - 28 - 40)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "5月2日" in texts and "20" in texts


def test_script_in_labels_and_title_is_escaped_never_markup() -> None:
    evil = '<script>alert("x")</script>'
    svg = svg_chart(f"团队{evil}", [(evil, 3), ("a&b", None)], unit="<b>")
    assert "<script>" not in svg and "<b>" not in svg
    root = parse(svg)
    assert not list(root.iter("script")) and not list(root.iter(f"{SVG}script"))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert evil in texts  # shown as text, exactly as typed
    assert "a&b" in texts
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == f"团队{evil}"


@pytest.mark.parametrize("kind", ["bar", "line"])
def test_empty_series_renders_an_empty_chart(kind: str) -> None:
    root = parse(svg_chart("接通率", [], unit="%", kind=kind))
    assert not bars(root) and not root.findall(f"{SVG}polyline")
    assert "无数据" in [t.text for t in root.iter(f"{SVG}text")]
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text == "无数据"


def test_all_zeros_draw_flat_bars_without_dividing_by_zero() -> None:
    root = parse(svg_chart("放弃", [("周一", 0), ("周二", 0)]))
    assert [float(r.get("height", "nan")) for r in bars(root)] == [0.0, 0.0]


def test_none_is_a_gap_not_a_zero() -> None:
    series: list[tuple[str, float | None]] = [("1", 1.0), ("2", None), ("3", 3.0), ("4", 4.0)]
    root = parse(svg_chart("平均应答时长", series, unit="秒"))
    assert len(bars(root)) == 3
    line = parse(svg_chart("平均应答时长", series, unit="秒", kind="line"))
    polylines = line.findall(f"{SVG}polyline")
    # the gap splits the line in two runs: point 1 alone, then points 3 and 4
    assert [len(p.get("points", "").split()) for p in polylines] == [1, 2]
    assert len(line.findall(f"{SVG}circle")) == 3
    desc = line.find(f"{SVG}desc")
    assert desc is not None and "2：无数据" in (desc.text or "")


def test_same_input_same_output_and_distinct_ids_for_distinct_charts() -> None:
    a = svg_chart("来电量", [("1", 1)])
    assert a == svg_chart("来电量", [("1", 1)])
    b = svg_chart("接通量", [("1", 1)])
    assert parse(a).get("aria-labelledby") != parse(b).get("aria-labelledby")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        svg_chart("x", [], kind="pie")
