# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""downtime_chart_svg: the final report's chart of each account's downtime (step 4 and step 7) against the size of
its databases, with the provider's documented 60 s/GB as a line; a self-contained SVG document as a string."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.downtime_estimate import (
    BYTES_PER_GB,
    PROVIDER_S_PER_GB,
    non_negative_int,
    non_negative_number,
)

# Pixels (one assignment per line: ansible-doc reads this file's top-level assignments and warns on tuples).
WIDTH = 720
HEIGHT = 440
LEFT = 70
RIGHT = 20
TOP = 40
BOTTOM = 60
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM
# Accounts are named next to their markers up to this many plotted accounts; beyond it the tooltips name them.
MAX_LABELS = 15
SERIES = (
    ("downtime_step4_s", "4", "step 4 (to the transit server)", "#1f77b4"),
    ("downtime_step7_s", "7", "step 7 (back to the client server)", "#d62728"),
)
PROVIDER_COLOUR = "#7f7f7f"


def _points(rows: Any) -> tuple[list[tuple[str, str, float, float]], int]:
    """(account, step, db_bytes, downtime_s) of every known pair, and how many rows have none."""
    if not isinstance(rows, list):
        raise AnsibleFilterError(f"downtime_chart_svg: rows must be a list of dicts (report_rows), got {rows!r}")
    points = []
    unplotted = 0
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("account"), str):
            raise AnsibleFilterError(f"downtime_chart_svg: rows[{index}] must be a dict with an 'account' string")
        where = f"downtime_chart_svg: rows[{index}] ({row['account']})"
        size = row.get("db_bytes")
        size = None if size is None else non_negative_int(size, f"{where} db_bytes")
        found = 0
        for key, step, _label, _colour in SERIES:
            downtime = row.get(key)
            if downtime is not None:
                downtime = non_negative_number(downtime, f"{where} {key}")
                if size is not None:
                    points.append((row["account"], step, float(size), downtime))
                    found += 1
        unplotted += found == 0
    return points, unplotted


def nice_step(span: float, ticks: int = 5) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about `ticks` ticks over `span`."""
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _axis(maximum: float) -> tuple[float, float, int]:
    """(axis end, tick step, decimals of the tick labels) for values from 0 to `maximum`."""
    step = nice_step(maximum if maximum > 0 else 1.0)
    end = step * math.ceil(maximum / step - 1e-9) if maximum > 0 else step * 5
    return end, step, max(0, -math.floor(math.log10(step)))


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()})
    element.text = text
    return element


def _px(value: float) -> str:
    return f"{value:.1f}"


def _axes(svg: ET.Element, x_axis: tuple[float, float, int], y_axis: tuple[float, float, int], unit: str) -> None:
    """Both axes with ticks and labels; each axis is (end, tick step, decimals) as _axis returns it."""
    (x_end, x_step, x_dec), (y_end, y_step, y_dec) = x_axis, y_axis
    axes = _el(svg, "g", class_="axes", stroke="#000", font_size=11)
    _el(axes, "line", x1=LEFT, y1=TOP + PLOT_H, x2=LEFT + PLOT_W, y2=TOP + PLOT_H)
    _el(axes, "line", x1=LEFT, y1=TOP, x2=LEFT, y2=TOP + PLOT_H)
    for i in range(round(x_end / x_step) + 1):
        x = LEFT + i * x_step / x_end * PLOT_W
        _el(axes, "line", x1=_px(x), y1=TOP + PLOT_H, x2=_px(x), y2=TOP + PLOT_H + 5)
        _el(
            axes,
            "text",
            f"{i * x_step:.{x_dec}f}",
            class_="x-tick",
            x=_px(x),
            y=TOP + PLOT_H + 18,
            text_anchor="middle",
            stroke="none",
        )
    for i in range(round(y_end / y_step) + 1):
        y = TOP + PLOT_H - i * y_step / y_end * PLOT_H
        _el(axes, "line", x1=LEFT - 5, y1=_px(y), x2=LEFT, y2=_px(y))
        _el(
            axes,
            "text",
            f"{i * y_step:.{y_dec}f}",
            class_="y-tick",
            x=LEFT - 8,
            y=_px(y + 4),
            text_anchor="end",
            stroke="none",
        )
    _el(
        axes,
        "text",
        f"database size ({unit})",
        class_="x-label",
        x=LEFT + PLOT_W / 2,
        y=HEIGHT - 15,
        text_anchor="middle",
        stroke="none",
        font_size=13,
    )
    _el(
        axes,
        "text",
        "downtime (s)",
        class_="y-label",
        x=18,
        y=TOP + PLOT_H / 2,
        text_anchor="middle",
        stroke="none",
        font_size=13,
        transform=f"rotate(-90 18 {TOP + PLOT_H / 2})",
    )


def _marker(parent: ET.Element, step: str, x: float, y: float, colour: str, **attrs: Any) -> ET.Element:
    if step == "4":
        return _el(parent, "circle", cx=_px(x), cy=_px(y), r=5, fill=colour, **attrs)
    return _el(
        parent,
        "rect",
        x=_px(x - 4.5),
        y=_px(y - 4.5),
        width=9,
        height=9,
        fill="none",
        stroke=colour,
        stroke_width=2,
        **attrs,
    )


def _legend(svg: ET.Element, provider_s_per_gb: float) -> None:
    legend = _el(svg, "g", class_="legend", font_size=12)
    x, y = LEFT + 12, TOP + 14
    for _key, step, label, colour in SERIES:
        _marker(legend, step, x + 6, y - 4, colour)
        _el(legend, "text", label, x=x + 18, y=y)
        y += 18
    _el(
        legend,
        "line",
        x1=x,
        y1=y - 4,
        x2=x + 12,
        y2=y - 4,
        stroke=PROVIDER_COLOUR,
        stroke_width=2,
        stroke_dasharray="6 3",
    )
    _el(legend, "text", f"provider's documented {provider_s_per_gb:g} s/GB", x=x + 18, y=y)


def downtime_chart_svg(rows: Any, provider_s_per_gb: Any = PROVIDER_S_PER_GB) -> str:
    """An SVG document: one marker per account and step whose database size and downtime are known (circles for
    step 4, squares for step 7, each with a tooltip naming the account), the provider's rule as a dashed line."""
    points, unplotted = _points(rows)
    rate = non_negative_number(provider_s_per_gb, "downtime_chart_svg: provider_s_per_gb")
    largest = max((p[2] for p in points), default=0.0)
    unit, unit_bytes = ("GB", BYTES_PER_GB) if largest >= BYTES_PER_GB else ("MB", 10**6)
    x_axis = _axis(largest / unit_bytes)
    y_axis = _axis(max((p[3] for p in points), default=0.0))
    x_end, y_end = x_axis[0], y_axis[0]

    def position(size: float, seconds: float) -> tuple[float, float]:
        return LEFT + size / unit_bytes / x_end * PLOT_W, TOP + PLOT_H - seconds / y_end * PLOT_H

    svg = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "width": str(WIDTH),
            "height": str(HEIGHT),
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "role": "img",
            "font-family": "sans-serif",
        },
    )
    _el(svg, "title", "Downtime against database size")
    _el(svg, "text", "Downtime against database size", x=WIDTH / 2, y=22, text_anchor="middle", font_size=15)
    _axes(svg, x_axis, y_axis, unit)
    # The provider's rule from 0 until it leaves the plot at its right or top edge.
    s_per_unit = rate * unit_bytes / BYTES_PER_GB
    line_end = min(x_end, y_end / s_per_unit) if s_per_unit > 0 else x_end
    x2, y2 = position(line_end * unit_bytes, line_end * s_per_unit)
    _el(
        svg,
        "line",
        class_="provider",
        x1=LEFT,
        y1=TOP + PLOT_H,
        x2=_px(x2),
        y2=_px(y2),
        stroke=PROVIDER_COLOUR,
        stroke_width=2,
        stroke_dasharray="6 3",
    )
    marks = _el(svg, "g", class_="points")
    name_them = len({p[0] for p in points}) <= MAX_LABELS
    named: set[str] = set()
    for account, step, size, seconds in points:
        x, y = position(size, seconds)
        colour = next(s[3] for s in SERIES if s[1] == step)
        marker = _marker(marks, step, x, y, colour, class_=f"step{step}", data_account=account)
        _el(marker, "title", f"{account}: step {step}, {size / unit_bytes:.3f} {unit} of databases, {seconds:.1f} s")
        if name_them and account not in named:
            named.add(account)
            _el(marks, "text", account, class_="label", x=_px(x + 7), y=_px(y - 7), font_size=10)
    _legend(svg, rate)
    if not points:
        note = "no account has a database size and a downtime yet"
    elif unplotted:
        note = f"{unplotted} account(s) without a database size or downtime are not plotted"
    if not points or unplotted:
        _el(svg, "text", note, class_="note", x=LEFT + PLOT_W, y=TOP + 14, text_anchor="end", font_size=11)
    return ET.tostring(svg, encoding="unicode")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"downtime_chart_svg": downtime_chart_svg}
