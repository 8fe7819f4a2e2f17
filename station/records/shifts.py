"""Shifts: named by the day and hour they start ('2026-12-01/06'), in local time.

The station's config lists the start hours (6, 14, 22 by default); a shift ends where the next
one starts. Before the day's first start hour it is still the previous day's last shift.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from station.core.errors import StationError

DEFAULT_HOURS = (6, 14, 22)
_KEY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})/(\d{1,2})$")


def _starts(shift_hours: Iterable[int]) -> list[int]:
    return sorted({int(h) % 24 for h in shift_hours}) or [0]


def shift_key(timestamp: float, shift_hours: Iterable[int] = DEFAULT_HOURS) -> str:
    """The shift a local time belongs to, e.g. '2026-11-21/06'; before the first start it is
    the previous day's last shift ('2026-11-20/22' at 03:00)."""
    # Shifts start on the hour and every time zone's offset is a whole number of minutes, so
    # the key is the same for the whole minute: the display asks 15 times a second.
    return _minute_key(int(timestamp // 60), tuple(shift_hours))


@functools.lru_cache(maxsize=64)
def _minute_key(minute: int, shift_hours: tuple[int, ...]) -> str:
    starts = _starts(shift_hours)
    t = datetime.fromtimestamp(minute * 60)
    started = [h for h in starts if h <= t.hour]
    if started:
        return f"{t:%Y-%m-%d}/{started[-1]:02d}"
    prev = datetime.fromordinal(t.toordinal() - 1)
    return f"{prev:%Y-%m-%d}/{starts[-1]:02d}"


@dataclass(frozen=True)
class Shift:
    """One shift: its key and its window [start, end) in epoch seconds."""

    key: str
    start: float
    end: float

    @property
    def label(self) -> str:
        """'2026-12-01 06:00-14:00' as a person reads it."""
        a, b = datetime.fromtimestamp(self.start), datetime.fromtimestamp(self.end)
        end = f"{b:%H:%M}" if b.date() == a.date() else f"{b:%Y-%m-%d %H:%M}"
        return f"{a:%Y-%m-%d %H:%M}-{end}"

    @property
    def file_stem(self) -> str:
        """'2026-12-01_06' for file names."""
        return self.key.replace("/", "_")


def shift_window(key: str, shift_hours: Iterable[int] = DEFAULT_HOURS) -> Shift:
    """The shift named `key` ('2026-12-01/06'); StationError when it is not one of the
    configured shifts."""
    m = _KEY.match(key.strip())
    starts = _starts(shift_hours)
    if m is None:
        raise StationError(
            f"'{key}' is not a shift: write it as YYYY-MM-DD/HH (e.g. 2026-12-01/06), "
            "'current' or 'previous'"
        )
    year, month, day, hour = (int(g) for g in m.groups())
    if hour not in starts:
        raise StationError(
            f"'{key}': no shift starts at {hour:02d}:00; shifts start at "
            + ", ".join(f"{h:02d}:00" for h in starts)
        )
    try:
        begin = datetime(year, month, day, hour)
    except ValueError as exc:
        raise StationError(f"'{key}' is not a date: {exc}") from None
    later = [h for h in starts if h > hour]
    end = (
        datetime(year, month, day, later[0])
        if later
        else datetime(year, month, day, starts[0]) + timedelta(days=1)
    )
    return Shift(key=f"{begin:%Y-%m-%d}/{hour:02d}", start=begin.timestamp(), end=end.timestamp())


def current_shift(now: float | None = None, shift_hours: Iterable[int] = DEFAULT_HOURS) -> Shift:
    """The shift running at `now` (default: this moment)."""
    hours = list(shift_hours)
    return shift_window(shift_key(time.time() if now is None else now, hours), hours)


def previous_shift(shift: Shift, shift_hours: Iterable[int] = DEFAULT_HOURS) -> Shift:
    """The shift before `shift`."""
    hours = list(shift_hours)
    return shift_window(shift_key(shift.start - 1, hours), hours)


def parse_shift(
    text: str, now: float | None = None, shift_hours: Iterable[int] = DEFAULT_HOURS
) -> Shift:
    """'current', 'previous' or a key like '2026-12-01/06'."""
    hours = list(shift_hours)
    word = text.strip().lower()
    if word == "current":
        return current_shift(now, hours)
    if word == "previous":
        return previous_shift(current_shift(now, hours), hours)
    return shift_window(text, hours)


def recent_shifts(
    n: int, now: float | None = None, shift_hours: Iterable[int] = DEFAULT_HOURS
) -> list[Shift]:
    """The current shift and the n - 1 before it, newest first."""
    hours = list(shift_hours)
    out = [current_shift(now, hours)]
    while len(out) < n:
        out.append(previous_shift(out[-1], hours))
    return out
