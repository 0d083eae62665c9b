"""The overview's inline SVG chart, drawn server-side (no JavaScript needed)."""

from __future__ import annotations

from dataclasses import dataclass

from ..stats import Day

COLOURS = {"COMPLETED": "#2f9e44", "FAILED": "#e03131", "CANCELLED": "#868e96", "LIVE": "#1c7ed6"}


@dataclass
class Bar:
    x: float
    y: float
    height: float
    colour: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    bar_width: float
    bars: list[Bar]
    peak: int
    labels: list[tuple[float, str]]


def daily_chart(days: list[Day], width: int = 600, height: int = 160) -> Chart:
    """Stacked bars per day, one colour per status."""
    peak = max((day.total for day in days), default=0) or 1
    slot = width / max(len(days), 1)
    bar_width = max(slot * 0.7, 1.0)
    bars: list[Bar] = []
    for index, day in enumerate(days):
        y = float(height)
        for status, colour in COLOURS.items():
            count = day.counts.get(status, 0)
            if not count:
                continue
            h = count / peak * (height - 4)
            y -= h
            bars.append(
                Bar(
                    index * slot + (slot - bar_width) / 2,
                    y,
                    h,
                    colour,
                    f"{day.day.isoformat()}: {count} {status.lower()}",
                )
            )
    # A label every 7 days counted back from today, so the last bar (today) is labelled.
    last = len(days) - 1
    labels = [
        (index * slot + slot / 2, day.day.strftime("%d %b"))
        for index, day in enumerate(days)
        if (last - index) % 7 == 0 and index > 0
    ]
    return Chart(width, height, bar_width, bars, peak, labels)
