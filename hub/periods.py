"""Periods of office time, shared by the ratings API and the reports (written by RATINGS for
issue 5; REPORTS imports it: keep ``resolve`` and ``Period`` stable).

A period is given either as ``from`` / ``to`` dates (both inclusive, office time) or as
``period=day:2026-11-30 | month:2026-11 | quarter:2026-Q4 | year:2026``. It becomes a half-open
interval of UTC instants ``[start, end)``, which is what the ``press_time`` columns hold. Office time
is Asia/Ho_Chi_Minh (no daylight saving) unless the caller passes another zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hub.office import OFFICE_TZ, OfficeError

PERIOD_HELP = (
    "day:YYYY-MM-DD | month:YYYY-MM | quarter:YYYY-Qn | year:YYYY (office time); "
    "or leave it out and give from/to"
)
_PERIOD = re.compile(
    r"^(?:day:(?P<day>\d{4}-\d{2}-\d{2})|month:(?P<month>\d{4})-(?P<mm>\d{2})"
    r"|quarter:(?P<qy>\d{4})-[Qq](?P<q>[1-4])|year:(?P<year>\d{4}))$"
)


class PeriodError(OfficeError):
    """A period the caller wrote wrongly (400, the text says what is expected)."""


@dataclass(frozen=True)
class Period:
    """``first`` .. ``last`` are the office-time dates (inclusive); ``start`` .. ``end`` the UTC
    instants (half-open). ``None`` on both sides of a side means "unbounded"."""

    first: date | None
    last: date | None
    start: datetime | None
    end: datetime | None
    label: str

    def contains(self, t: datetime) -> bool:
        t = t if t.tzinfo else t.replace(tzinfo=UTC)
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)


def day_start(d: date, tz: ZoneInfo = OFFICE_TZ) -> datetime:
    """Midnight of an office-time date, as a UTC instant."""
    return datetime.combine(d, time(0), tzinfo=tz).astimezone(UTC)


def _parse_period(text: str) -> tuple[date, date]:
    m = _PERIOD.match(text.strip())
    if m is None:
        raise PeriodError(f"period {text!r} is not understood: use {PERIOD_HELP}")
    try:
        if m["day"]:
            d = date.fromisoformat(m["day"])
            return d, d
        if m["month"]:
            first = date(int(m["month"]), int(m["mm"]), 1)
            nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return first, nxt - timedelta(days=1)
        if m["qy"]:
            y, q = int(m["qy"]), int(m["q"])
            first = date(y, 3 * q - 2, 1)
            nxt = date(y + 1, 1, 1) if q == 4 else date(y, 3 * q + 1, 1)
            return first, nxt - timedelta(days=1)
        y = int(m["year"])
        return date(y, 1, 1), date(y, 12, 31)
    except ValueError as e:  # month 13, day 31 of a 30-day month, year 0
        raise PeriodError(f"period {text!r} is not a real date: {e}") from e


def resolve(
    period: str | None = None,
    first: date | None = None,
    last: date | None = None,
    *,
    tz: ZoneInfo = OFFICE_TZ,
) -> Period:
    """The period a request asks for. ``period`` and ``first``/``last`` exclude each other; with
    neither, the period is unbounded. ``last`` is inclusive (``to=2026-11-30`` covers that day)."""
    if period:
        if first is not None or last is not None:
            raise PeriodError("give either period=... or from/to, not both")
        first, last = _parse_period(period)
        label = period.strip()
    else:
        label = f"{first.isoformat() if first else '…'}..{last.isoformat() if last else '…'}"
    if first is not None and last is not None and last < first:
        raise PeriodError(f"'to' ({last.isoformat()}) is before 'from' ({first.isoformat()})")
    try:
        start = day_start(first, tz) if first is not None else None
        end = day_start(last + timedelta(days=1), tz) if last is not None else None
    except OverflowError as e:  # date.max + 1 day, year 1 before UTC+7
        raise PeriodError(f"a date of the period is out of range: {e}") from e
    return Period(first=first, last=last, start=start, end=end, label=label)
