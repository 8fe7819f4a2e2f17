"""Small vector charts for the shift report (reportlab graphics): per-hour bars and lines, a
p-chart, a score histogram with the limit, a drift-level band. Drawn by hand rather than with
reportlab's chart classes so that axes, labels and colours read the same on every chart and
print well in black and white (shapes and dashes tell the series apart, not only colour).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from reportlab.graphics.shapes import Circle, Drawing, Line, PolyLine, Rect, String
from reportlab.lib import colors

FONT = "Helvetica"
OK_COLOUR = colors.HexColor("#2e7d32")
CHECK_COLOUR = colors.HexColor("#7b1fa2")
NOK_COLOUR = colors.HexColor("#c62828")
LINE_COLOUR = colors.HexColor("#1565c0")
GRID = colors.HexColor("#d0d0d0")
TEXT = colors.HexColor("#222222")
MUTED = colors.HexColor("#666666")
LEFT, BOTTOM, TOP, RIGHT = 44.0, 28.0, 18.0, 10.0  # plot margins inside a drawing


def nice_ticks(top: float, n: int = 4) -> list[float]:
    """0 and round steps up to at least `top` (1, 2, 2.5 or 5 times a power of ten)."""
    if not math.isfinite(top) or top <= 0:
        return [0.0, 1.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _fmt(v: float, percent: bool = False) -> str:
    if percent:
        return f"{v * 100:.3g} %"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.3g}"


class Plot:
    """A drawing with one plot area and a linear y axis (x in plot units 0..n)."""

    def __init__(
        self,
        width: float,
        height: float,
        title: str,
        y_top: float,
        *,
        y_label: str = "",
        percent: bool = False,
        ticks: Sequence[float] | None = None,
        tick_text: Sequence[str] | None = None,
    ) -> None:
        self.d = Drawing(width, height)
        self.x0, self.y0 = LEFT, BOTTOM
        self.w, self.h = width - LEFT - RIGHT, height - BOTTOM - TOP
        self.ticks = list(ticks) if ticks is not None else nice_ticks(y_top)
        self.y_top = self.ticks[-1] or 1.0
        self.d.add(
            String(0, height - 12, title, fontName=FONT + "-Bold", fontSize=9, fillColor=TEXT)
        )
        if y_label:
            self.d.add(
                String(width - RIGHT, height - 12, y_label, fontName=FONT, fontSize=7,
                       fillColor=MUTED, textAnchor="end")
            )  # fmt: skip
        for i, t in enumerate(self.ticks):
            y = self.y(t)
            self.d.add(Line(self.x0, y, self.x0 + self.w, y, strokeColor=GRID, strokeWidth=0.4))
            text = tick_text[i] if tick_text is not None else _fmt(t, percent)
            self.d.add(
                String(self.x0 - 4, y - 2.5, text, fontName=FONT, fontSize=7, fillColor=MUTED,
                       textAnchor="end")
            )  # fmt: skip
        self.d.add(
            Line(self.x0, self.y0, self.x0, self.y0 + self.h, strokeColor=TEXT, strokeWidth=0.6)
        )
        self.d.add(
            Line(self.x0, self.y0, self.x0 + self.w, self.y0, strokeColor=TEXT, strokeWidth=0.6)
        )

    def y(self, v: float) -> float:
        return self.y0 + self.h * min(max(v / self.y_top, 0.0), 1.0)

    def x_labels(self, labels: Sequence[str], every: int = 1) -> None:
        n = max(1, len(labels))
        for i, text in enumerate(labels):
            if i % every:
                continue
            x = self.x0 + self.w * (i + 0.5) / n
            self.d.add(
                String(x, self.y0 - 10, text, fontName=FONT, fontSize=7, fillColor=MUTED,
                       textAnchor="middle")
            )  # fmt: skip

    def legend(self, items: Sequence[tuple[str, colors.Color, bool]]) -> None:
        """(text, colour, dashed) entries under the x labels, left to right."""
        x = self.x0
        for text, colour, dashed in items:
            self.d.add(
                Line(x, 5, x + 14, 5, strokeColor=colour, strokeWidth=1.6,
                     strokeDashArray=[3, 2] if dashed else None)
            )  # fmt: skip
            self.d.add(String(x + 18, 2.5, text, fontName=FONT, fontSize=7, fillColor=TEXT))
            x += 26 + 4.2 * len(text)


def hour_labels(starts: Sequence[float]) -> list[str]:
    return [f"{datetime.fromtimestamp(t):%H}h" for t in starts]


def bars_per_hour(
    width: float,
    height: float,
    title: str,
    starts: Sequence[float],
    values: Sequence[float],
    *,
    y_label: str = "",
    colour: colors.Color = LINE_COLOUR,
) -> Drawing:
    """One bar per hour, its value written above it."""
    p = Plot(width, height, title, max(values, default=0) * 1.15 or 1.0, y_label=y_label)
    n = max(1, len(values))
    slot = p.w / n
    for i, v in enumerate(values):
        x = p.x0 + slot * i + slot * 0.15
        p.d.add(Rect(x, p.y0, slot * 0.7, p.y(v) - p.y0, fillColor=colour, strokeColor=None))
        if v:
            p.d.add(
                String(x + slot * 0.35, p.y(v) + 2, _fmt(v), fontName=FONT, fontSize=6.5,
                       fillColor=TEXT, textAnchor="middle")
            )  # fmt: skip
    p.x_labels(hour_labels(starts))
    return p.d


def lines_per_hour(
    width: float,
    height: float,
    title: str,
    starts: Sequence[float],
    series: Sequence[tuple[str, Sequence[float], colors.Color, bool]],
    *,
    y_label: str = "",
    present: Sequence[bool] | None = None,
) -> Drawing:
    """Lines over the hours; (name, values, colour, dashed) per series; hours where `present` is
    False (nothing inspected) are left out of the lines."""
    top = max((max(v, default=0) for _, v, _, _ in series), default=0) * 1.15 or 1.0
    p = Plot(width, height, title, top, y_label=y_label)
    n = max(1, len(starts))
    for _name, values, colour, dashed in series:
        pts: list[float] = []
        for i, v in enumerate(values):
            if present is not None and not present[i]:
                if len(pts) >= 4:
                    p.d.add(_poly(pts, colour, dashed))
                pts = []
                continue
            x = p.x0 + p.w * (i + 0.5) / n
            pts += [x, p.y(v)]
            p.d.add(Circle(x, p.y(v), 1.6, fillColor=colour, strokeColor=None))
        if len(pts) >= 4:
            p.d.add(_poly(pts, colour, dashed))
    p.x_labels(hour_labels(starts))
    p.legend([(name, colour, dashed) for name, _, colour, dashed in series])
    return p.d


def _poly(points: list[float], colour: colors.Color, dashed: bool) -> PolyLine:
    return PolyLine(
        points, strokeColor=colour, strokeWidth=1.2, strokeDashArray=[3, 2] if dashed else None
    )


def p_chart(
    width: float,
    height: float,
    starts: Sequence[float],
    rates: Sequence[float],
    present: Sequence[bool],
    centre: float,
    upper: Sequence[float],
    lower: Sequence[float],
    outside: Sequence[int],
) -> Drawing:
    """NOK rate per hour with the centre line and each hour's 3-sigma limits; an hour outside
    its limits is drawn as a red square."""
    top = max([*rates, *[u for u, ok in zip(upper, present, strict=True) if ok], centre]) * 1.15
    p = Plot(width, height, "NOK rate per hour (p-chart, 3-sigma limits)", top or 0.01,
             percent=True)  # fmt: skip
    n = max(1, len(starts))
    slot = p.w / n
    cy = p.y(centre)
    p.d.add(Line(p.x0, cy, p.x0 + p.w, cy, strokeColor=TEXT, strokeWidth=0.9))
    for i in range(len(starts)):
        if not present[i]:
            continue
        xa, xb = p.x0 + slot * i, p.x0 + slot * (i + 1)
        for lim in (upper[i], lower[i]):
            p.d.add(
                Line(xa, p.y(lim), xb, p.y(lim), strokeColor=NOK_COLOUR, strokeWidth=0.8,
                     strokeDashArray=[3, 2])
            )  # fmt: skip
    pts: list[float] = []
    for i, r in enumerate(rates):
        if not present[i]:
            continue
        x, y = p.x0 + slot * (i + 0.5), p.y(r)
        pts += [x, y]
        if i in outside:
            p.d.add(Rect(x - 3, y - 3, 6, 6, fillColor=NOK_COLOUR, strokeColor=None))
        else:
            p.d.add(Circle(x, y, 2.2, fillColor=LINE_COLOUR, strokeColor=None))
    if len(pts) >= 4:
        p.d.add(_poly(pts, LINE_COLOUR, False))
    p.x_labels(hour_labels(starts))
    p.legend(
        [
            ("NOK rate", LINE_COLOUR, False),
            (f"shift mean {centre * 100:.2f} %", TEXT, False),
            ("control limits", NOK_COLOUR, True),
        ]
    )
    return p.d


def score_histogram(
    width: float,
    height: float,
    scores: dict[str, np.ndarray],
    limits: Sequence[float],
    check_limits: Sequence[float] = (),
    bins: int = 40,
) -> Drawing:
    """Scores of OK / CHECK / NOK parts on one axis with the reject limit(s); counts on a log
    scale so a handful of NOK parts shows beside thousands of OK ones."""
    allv = np.concatenate([v for v in scores.values() if v.size] or [np.zeros(1)])
    lo = float(min(allv.min(), *limits)) if limits else float(allv.min())
    hi = float(max(allv.max(), *limits)) if limits else float(allv.max())
    span = hi - lo or 1.0
    lo, hi = lo - 0.03 * span, hi + 0.03 * span
    edges = np.linspace(lo, hi, bins + 1)
    hists = {k: np.histogram(v, edges)[0] for k, v in scores.items() if v.size}
    peak = max((int(h.max()) for h in hists.values()), default=1)
    decades = max(1, math.ceil(math.log10(peak + 1)))
    ticks = [float(d) for d in range(decades + 1)]
    p = Plot(width, height, "Score distribution by verdict (parts, log scale)", decades,
             ticks=ticks, tick_text=[f"{10**d:g}" for d in range(decades + 1)])  # fmt: skip
    slot = p.w / bins
    colour = {"OK": OK_COLOUR, "CHECK": CHECK_COLOUR, "NOK": NOK_COLOUR}
    order = [k for k in ("OK", "CHECK", "NOK") if k in hists]
    for k in order:
        h = hists[k]
        part = slot / len(order)
        j = order.index(k)
        for i, c in enumerate(h):
            if c:
                top = p.y(math.log10(c) + (0.15 if c == 1 else 0))  # a single part still shows
                p.d.add(Rect(p.x0 + slot * i + part * j, p.y0, part, top - p.y0,
                             fillColor=colour[k], strokeColor=None))  # fmt: skip

    def xpos(v: float) -> float:
        return p.x0 + p.w * (v - lo) / (hi - lo)

    for lim in sorted(set(limits)):
        p.d.add(Line(xpos(lim), p.y0, xpos(lim), p.y0 + p.h, strokeColor=TEXT, strokeWidth=1.2,
                     strokeDashArray=[4, 2]))  # fmt: skip
        p.d.add(String(xpos(lim) + 2, p.y0 + p.h - 8, f"limit {lim:.3g}", fontName=FONT,
                       fontSize=7, fillColor=TEXT))  # fmt: skip
    for lim in sorted(set(check_limits)):
        p.d.add(Line(xpos(lim), p.y0, xpos(lim), p.y0 + p.h, strokeColor=CHECK_COLOUR,
                     strokeWidth=1.0, strokeDashArray=[1, 2]))  # fmt: skip
    step = nice_ticks(hi - lo, 5)[1]
    first = math.ceil(lo / step) * step
    for i in range(int((hi - first) / step) + 1):
        tick = round(first + i * step, 6)
        if lo <= tick <= hi:
            p.d.add(String(xpos(tick), p.y0 - 10, f"{tick:.3g}", fontName=FONT, fontSize=7,
                           fillColor=MUTED, textAnchor="middle"))  # fmt: skip
    p.legend([(f"{k} ({int(scores[k].size)})", colour[k], False) for k in order]
             + [("reject limit", TEXT, True)])  # fmt: skip
    return p.d


DRIFT_COLOUR = {
    "none": OK_COLOUR,
    "warning": colors.HexColor("#ef6c00"),
    "critical": NOK_COLOUR,
}


def drift_band(
    width: float,
    height: float,
    start: float,
    end: float,
    steps: Sequence[tuple[float, str]],
    idle: Sequence[tuple[float, float]] = (),
) -> Drawing:
    """The drift level over the shift as a coloured band with the level written in each run;
    `idle` spans (no parts inspected) are grey: no level was measured there."""
    d = Drawing(width, height)
    d.add(String(0, height - 12, "Drift level over the shift", fontName=FONT + "-Bold",
                 fontSize=9, fillColor=TEXT))  # fmt: skip
    x0, w, y0, h = LEFT, width - LEFT - RIGHT, 16.0, height - 36.0
    span = max(end - start, 1.0)
    runs: list[tuple[float, float, str]] = []
    for i, (t, level) in enumerate(steps):
        a = max(start, t)
        b = steps[i + 1][0] if i + 1 < len(steps) else end
        b = min(end, b)
        if b > a:
            runs.append((a, b, level))
    # Each level run, less the idle spans, is what gets a colour and its word.
    pieces: list[tuple[float, float, str]] = []
    for a, b, level in runs:
        cuts = [(a, b)]
        for ia, ib in idle:
            cuts = [
                part
                for ca, cb in cuts
                for part in ((ca, min(cb, ia)), (max(ca, ib), cb))
                if part[1] > part[0]
            ]
        pieces += [(ca, cb, level) for ca, cb in cuts]
    for a, b, level in pieces:
        xa, xb = x0 + w * (a - start) / span, x0 + w * (b - start) / span
        d.add(Rect(xa, y0, xb - xa, h, fillColor=DRIFT_COLOUR.get(level, MUTED), strokeColor=None))
        if xb - xa > 6 * len(level) + 8:
            d.add(String((xa + xb) / 2, y0 + h / 2 - 3, level, fontName=FONT + "-Bold",
                         fontSize=8, fillColor=colors.white, textAnchor="middle"))  # fmt: skip
    for a, b in idle:
        xa, xb = x0 + w * (max(a, start) - start) / span, x0 + w * (min(b, end) - start) / span
        d.add(Rect(xa, y0, xb - xa, h, fillColor=colors.HexColor("#bdbdbd"), strokeColor=None))
        if xb - xa > 40:
            d.add(String((xa + xb) / 2, y0 + h / 2 - 3, "no parts", fontName=FONT,
                         fontSize=7.5, fillColor=TEXT, textAnchor="middle"))  # fmt: skip
    d.add(Rect(x0, y0, w, h, fillColor=None, strokeColor=TEXT, strokeWidth=0.6))
    hours = math.ceil(span / 3600)
    for i in range(hours + 1):
        t = min(end, start + 3600 * i)
        x = x0 + w * (t - start) / span
        d.add(Line(x, y0, x, y0 - 3, strokeColor=TEXT, strokeWidth=0.5))
        d.add(String(x, y0 - 11, f"{datetime.fromtimestamp(t):%H:%M}", fontName=FONT,
                     fontSize=7, fillColor=MUTED, textAnchor="middle"))  # fmt: skip
    return d
