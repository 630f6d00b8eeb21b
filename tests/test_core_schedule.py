"""core.schedule and core.scoring: quiet hours across midnight and daylight saving, weeks,
points and ranking."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.schedule import (
    QuietHours,
    deliver_at,
    parse_quiet_hours,
    village_day_of_week,
    week_of_month,
    week_start,
    weekday_number,
)
from core.scoring import DEFAULT_POINTS, Item, Source, parse_points, rank, totals

SHANGHAI = ZoneInfo("Asia/Shanghai")
NIGHT = parse_quiet_hours("21:00-08:00")


def _local(text: str, tz: ZoneInfo = SHANGHAI) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-11-30 09:00", "2026-11-30 09:00"),  # daytime: at once
        ("2026-11-30 20:59", "2026-11-30 20:59"),
        ("2026-11-30 21:00", "2026-12-01 08:00"),  # evening: next morning
        ("2026-11-30 23:59", "2026-12-01 08:00"),
        ("2026-12-01 00:30", "2026-12-01 08:00"),  # after midnight: this morning
        ("2026-12-01 07:59", "2026-12-01 08:00"),
        ("2026-12-01 08:00", "2026-12-01 08:00"),
        ("2026-12-31 22:00", "2027-01-01 08:00"),  # across the year end
    ],
)
def test_quiet_hours_hold_messages_until_morning(now: str, expected: str) -> None:
    assert deliver_at(_local(now), SHANGHAI, NIGHT) == _local(expected)


def test_quiet_hours_are_read_on_the_local_clock_from_utc() -> None:
    # 14:30 UTC is 22:30 in Shanghai: held until 08:00 local, which is 00:00 UTC.
    held = deliver_at(datetime(2026, 11, 30, 14, 30, tzinfo=UTC), SHANGHAI, NIGHT)
    assert held == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def test_quiet_hours_end_at_local_eight_across_a_daylight_saving_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # clocks go back on 2026-10-25 at 03:00
    held = deliver_at(_local("2026-10-24 23:00", berlin), berlin, NIGHT)
    assert held == _local("2026-10-25 08:00", berlin)
    assert held.utcoffset() == _local("2026-10-26 08:00", berlin).utcoffset()


def test_daytime_window_and_no_quiet_hours() -> None:
    lunch = parse_quiet_hours("12:00-13:30")
    assert deliver_at(_local("2026-11-30 12:15"), SHANGHAI, lunch) == _local("2026-11-30 13:30")
    assert deliver_at(_local("2026-11-30 13:30"), SHANGHAI, lunch) == _local("2026-11-30 13:30")
    never = parse_quiet_hours("08:00-08:00")
    assert deliver_at(_local("2026-11-30 02:00"), SHANGHAI, never) == _local("2026-11-30 02:00")


@pytest.mark.parametrize("text", ["", "21:00", "25:00-08:00", "21-08", "21:00-8:60", "night"])
def test_bad_quiet_hours_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quiet_hours(text)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_deliver_at_is_never_earlier_and_never_inside_the_window(naive: datetime) -> None:
    now = naive.replace(tzinfo=SHANGHAI)
    due = deliver_at(now, SHANGHAI, NIGHT)
    assert due >= now
    assert not NIGHT.contains(due.astimezone(SHANGHAI).time())
    assert (due - now).total_seconds() <= 11 * 3600


def test_weeks() -> None:
    sunday = date(2026, 11, 29)
    assert week_start(sunday) == date(2026, 11, 23)
    assert week_start(date(2026, 11, 30)) == date(2026, 11, 30)
    assert village_day_of_week(sunday, "tuesday") == date(2026, 11, 24)
    assert weekday_number("monday") == 0 and weekday_number("sunday") == 6
    assert [week_of_month(date(2026, 11, d)) for d in (1, 7, 8, 28, 29, 30)] == [1, 1, 2, 4, 5, 5]
    assert QuietHours(time(21), time(8)).contains(time(3))


def test_points_overrides_and_refusals() -> None:
    points = parse_points(" patrol = 3, household=2 ,")
    assert (points["patrol"], points["household"]) == (3, 2)
    assert points["visit_day"] == DEFAULT_POINTS["visit_day"]
    for bad in ("patrol", "teleport=3", "patrol=-1", "patrol=1.5", "patrol=99999"):
        with pytest.raises(ValueError):
            parse_points(bad)


def test_totals_follow_the_table_and_rank_shares_ties() -> None:
    items = [
        Item(1, Source.VISIT_DAY, "visit_day", "V000001", 1),
        Item(1, Source.HOUSEHOLD, "household", "V000001", 4),
        Item(1, Source.ACTIVITY, "patrol", "V000001", 2),
        Item(2, Source.REQUEST_RESOLVED, "request_resolved", "R000001", 1),
        Item(2, Source.HAZARD_RECTIFIED, "hazard_rectified", "H000001", 1),
        Item(3, Source.HAZARD_HANDED_OVER, "hazard_handed_over", "H000002", 1),
    ]
    assert totals(items, DEFAULT_POINTS) == {1: 5 + 4 + 4, 2: 10, 3: 2}
    assert rank({1: 13, 2: 10, 3: 10, 4: 2}) == {1: 1, 2: 2, 3: 2, 4: 4}
    assert rank({}) == {}
