"""Time rules of the scheduler: quiet hours, the weekly village day, and the periods a
scheduled message is counted in (so that it is sent at most once per period).

All functions take aware datetimes and the county's time zone; nothing reads the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

WEEKDAYS: Final[tuple[str, ...]] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
_CLOCK = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


@dataclass(frozen=True)
class QuietHours:
    """A local window in which nothing scheduled is sent, e.g. 21:00 to 08:00 (across
    midnight). `start == end` means no quiet hours at all."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


def _clock(text: str) -> time:
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"{text.strip()!r} is not a time of day like 21:00")
    return time(int(match[1]), int(match[2]))


def parse_quiet_hours(text: str) -> QuietHours:
    """'21:00-08:00' → QuietHours; ValueError saying what is wrong."""
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError("expected START-END, e.g. 21:00-08:00")
    return QuietHours(_clock(start), _clock(end))


def deliver_at(now: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime:
    """`now`, or the end of the quiet hours `now` falls in (the next local `quiet.end`).

    The local end time is taken on the wall clock, so a daylight-saving change in the night
    still delivers at 08:00 local time.
    """
    local = now.astimezone(tz)
    if not quiet.contains(local.time().replace(tzinfo=None)):
        return now
    day = local.date()
    if local.time().replace(tzinfo=None) >= quiet.end:
        day += timedelta(days=1)  # evening: the quiet hours end tomorrow morning
    return datetime.combine(day, quiet.end, tz)


def weekday_number(name: str) -> int:
    """'monday' → 0 … 'sunday' → 6."""
    return WEEKDAYS.index(name)


def week_start(day: date) -> date:
    """The Monday of `day`'s week."""
    return day - timedelta(days=day.weekday())


def village_day_of_week(day: date, village_day: str) -> date:
    """The village day of the week `day` is in."""
    return week_start(day) + timedelta(days=weekday_number(village_day))


def week_of_month(day: date) -> int:
    """1 for days 1–7, 2 for 8–14, … 5 for 29–31: a period that never spans two months."""
    return (day.day - 1) // 7 + 1
