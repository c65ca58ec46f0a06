"""The inline SVG sparkline: points scaled into its box, the label escaped, nothing for fewer
than two points."""

from __future__ import annotations

import re

from defusedxml import ElementTree

from poolwatch.web.sparkline import HEIGHT, PAD, WIDTH, sparkline

SVG = "{http://www.w3.org/2000/svg}"


def _coords(svg: str) -> list[tuple[float, float]]:
    match = re.search(r"<polyline points='([^']*)'", svg)
    assert match is not None, svg
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in match[1].split())]


def test_points_are_scaled_into_the_box() -> None:
    svg = sparkline([(100.0, 0.0), (130.0, 0.5), (160.0, 1.0)], label="fill")
    assert _coords(svg) == [
        (0.0, HEIGHT - PAD),  # oldest on the left, 0 % at the bottom
        (WIDTH / 2, HEIGHT / 2),
        (WIDTH, PAD),  # newest on the right, 100 % at the top
    ]


def test_values_outside_zero_to_one_stay_in_the_box() -> None:
    coords = _coords(sparkline([(0.0, -0.2), (1.0, 1.7)], label="fill"))
    assert [y for _, y in coords] == [HEIGHT - PAD, PAD]


def test_the_label_is_escaped_and_names_the_chart() -> None:
    label = "fill of <img src=x onerror=alert(1)> 'q' \"d\" &"
    svg = sparkline([(0.0, 0.1), (60.0, 0.2)], label=label)
    assert "<img" not in svg
    root = ElementTree.fromstring(svg.replace("<svg ", "<svg xmlns='http://www.w3.org/2000/svg' "))
    assert root.get("role") == "img"
    assert root.get("aria-label") == label
    assert root.findtext(f"{SVG}title") == label
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"


def test_fewer_than_two_points_draw_nothing() -> None:
    assert sparkline([], label="fill") == ""
    assert sparkline([(0.0, 0.5)], label="fill") == ""
