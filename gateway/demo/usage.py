"""Usage segments (CDS-WG3-01 §10.7) → daily kWh per meter → a server-rendered SVG chart.

Only interval segments count (``interval`` of a day or less; a billing-period segment would pile a month onto one
day); of their value formats, ``electric_usage`` in kWh or Wh, delivered (``forward``) when the segment has that,
else ``net``. A value row ``i`` starts at ``segment_start + i × interval`` and belongs to that instant's day in the
customer's time zone. Sums are exact (Decimal); only the drawing's coordinates are rounded, to a tenth of a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

_UNIT_KWH = {"kWh": Decimal(1), "Wh": Decimal("0.001")}
_DAY = 86400


@dataclass
class MeterDays:
    meter: str  # the meter device (else service point) id the segments relate to
    label: str
    days: dict[date, Decimal] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return sum(self.days.values(), Decimal(0))


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _columns(formats: list[dict[str, Any]]) -> list[tuple[int, Decimal]]:
    """(column index, factor to kWh) of the electricity usage columns to add up."""
    usable = [(i, f) for i, f in enumerate(formats)
              if f.get("type") == "electric_usage" and f.get("units") in _UNIT_KWH]
    for direction in ("forward", "net"):
        chosen = [(i, _UNIT_KWH[f["units"]]) for i, f in usable if f.get("direction") == direction]
        if chosen:
            return chosen
    return []


def _meter_of(segment: dict[str, Any]) -> str:
    for key in ("related_meterdevices", "related_servicepoints"):
        related = segment.get(key) or []
        if related:
            return str(related[0])
    return str(segment.get("cds_usagesegment_id", "?"))


def daily_kwh(segments: list[dict[str, Any]], zone: ZoneInfo) -> list[MeterDays]:
    """Electricity used per local day and meter, meters in order of first appearance."""
    meters: dict[str, MeterDays] = {}
    for segment in segments:
        interval = segment.get("interval")
        if not isinstance(interval, int | Decimal) or not 0 < interval <= _DAY:
            continue
        columns = _columns(segment.get("formats") or [])
        if not columns:
            continue
        meter = _meter_of(segment)
        entry = meters.setdefault(meter, MeterDays(meter, f"Meter {len(meters) + 1}"))
        start = _instant(segment["segment_start"])
        for index, row in enumerate(segment.get("values") or []):
            day = (start + timedelta(seconds=int(interval) * index)).astimezone(zone).date()
            for column, factor in columns:
                cell = row[column] if column < len(row) else None
                if not isinstance(cell, dict):
                    continue  # a slot without a reading
                for value in cell.values():
                    if isinstance(value, int | Decimal) and not isinstance(value, bool):
                        entry.days[day] = entry.days.get(day, Decimal(0)) + Decimal(value) * factor
    return list(meters.values())


# ------------------------------------------------------------------------------------------------ the chart
WIDTH, HEIGHT = Decimal(720), Decimal(300)
LEFT, RIGHT, TOP, BOTTOM = Decimal(56), Decimal(12), Decimal(16), Decimal(40)
#: Colours told apart by people with the common colour-vision deficiencies (Okabe–Ito), and a dash pattern each.
STYLES = (("#0072B2", ""), ("#D55E00", "6 3"), ("#009E73", "2 3"), ("#CC79A7", "8 3 2 3"), ("#E69F00", "4 4"))


def _px(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.1")))


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above ``value`` (axis top)."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)  # pragma: no cover (10 × 10^k is always enough)


def chart(meters: list[MeterDays], first: date, last: date) -> dict[str, Any]:
    """The SVG's geometry for the days ``first``..``last``: axes, grid, one line with points per meter."""
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)] if last >= first else []
    top = _nice_ceiling(max((v for m in meters for v in m.days.values()), default=Decimal(0)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(days) - 1, 1)

    def x(i: int) -> Decimal:
        return LEFT + step * i

    def y(value: Decimal) -> Decimal:
        return TOP + plot_h - plot_h * value / top

    grid = [{"y": _px(y(top * k / 4)), "label": f"{(top * k / 4).normalize():f}"} for k in range(5)]
    label_every = max(1, (len(days) + 7) // 8)
    ticks = [{"x": _px(x(i)), "label": day.strftime("%b %-d")} for i, day in enumerate(days) if i % label_every == 0]
    series = []
    for n, meter in enumerate(meters):
        colour, dash = STYLES[n % len(STYLES)]
        points = [{"x": _px(x(i)), "y": _px(y(meter.days[day])), "title": f"{day:%b %-d}: {meter.days[day]} kWh"}
                  for i, day in enumerate(days) if day in meter.days]
        series.append({"label": meter.label, "meter": meter.meter, "colour": colour, "dash": dash,
                       "polyline": " ".join(f"{p['x']},{p['y']}" for p in points), "points": points})
    return {"width": _px(WIDTH), "height": _px(HEIGHT), "left": _px(LEFT), "right": _px(WIDTH - RIGHT),
            "top": _px(TOP), "bottom": _px(HEIGHT - BOTTOM), "grid": grid, "ticks": ticks, "series": series,
            "days": days, "axis_label_y": _px(HEIGHT - 8), "unit_max": f"{top.normalize():f}"}


