"""A sparkline: a series of values between 0 and 1 as a small inline SVG polyline.

Markup only, no script and nothing fetched, so the landing page stays a single self-contained
document. Time runs left to right over the series' own span; the height is fixed from 0 (the
bottom) to 1 (the top), so that two pools' charts compare at a glance. The drawing stretches to
the width of its container (``preserveAspectRatio='none'``): WIDTH and HEIGHT are its
coordinates, not its size on the page. The label becomes the
chart's accessible name (``role='img'`` with ``aria-label``) and its tooltip (``<title>``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

WIDTH = 100
HEIGHT = 20
# Room for half the stroke at the top and bottom, so that 0 % and 100 % stay visible.
PAD = 1.5


def sparkline(points: Sequence[tuple[float, float]], *, label: str) -> str:
    """The SVG for ``points`` ((time, value) oldest first, value 0..1); "" for fewer than two,
    which draw no line."""
    if len(points) < 2:
        return ""
    first, last = points[0][0], points[-1][0]
    span = last - first
    usable = HEIGHT - 2 * PAD
    coords = []
    for at, value in points:
        x = WIDTH * (at - first) / span if span > 0 else WIDTH
        y = PAD + usable * (1.0 - min(max(value, 0.0), 1.0))
        coords.append(f"{x:.1f},{y:.1f}")
    text = html.escape(label, quote=True)
    return (
        f"<svg class='spark' role='img' aria-label='{text}' width='100%' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}' preserveAspectRatio='none'><title>{text}</title>"
        f"<rect width='{WIDTH}' height='{HEIGHT}'></rect>"
        f"<polyline points='{' '.join(coords)}'></polyline></svg>"
    )
