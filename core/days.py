"""Days still to come, as officers type them when reporting a village day they will miss.

core.parsing.parse_date reads past days (visits); this reads coming ones (absences): a date
without a year is the next such date not before today.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import date, timedelta
from typing import Final

from core.parsing import MAX_DATE_INPUT, chinese_integer

# Reporting further ahead than this is planning, not an absence.
MAX_DAYS_AHEAD: Final = 31

_RELATIVE: Final[dict[str, int]] = {
    "今天": 0,
    "今日": 0,
    "today": 0,
    "明天": 1,
    "明日": 1,
    "tomorrow": 1,
    "后天": 2,
    "後天": 2,
    "day after tomorrow": 2,
    "the day after tomorrow": 2,
}
_NUM = r"[0-9]{1,2}|[零〇一二两三四五六七八九十]{1,3}"
_SEP = r"\s*[-/.]\s*"
_FULL = (
    re.compile(rf"(?P<y>[0-9]{{4}}){_SEP}(?P<m>[0-9]{{1,2}}){_SEP}(?P<d>[0-9]{{1,2}})"),
    re.compile(rf"(?P<y>[0-9]{{4}})\s*年\s*(?P<m>{_NUM})\s*月\s*(?P<d>{_NUM})\s*[日号]?"),
)
_MONTH_DAY = (
    re.compile(rf"(?P<m>[0-9]{{1,2}}){_SEP}(?P<d>[0-9]{{1,2}})"),
    re.compile(rf"(?P<m>{_NUM})\s*月\s*(?P<d>{_NUM})\s*[日号]?"),
)
_DAY = re.compile(rf"(?P<d>{_NUM})\s*[日号]")


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else chinese_integer(text)


def _date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _next_month_day(month: int, day: int, today: date) -> date | None:
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(2000, month)[1]):
        return None
    for year in range(today.year, today.year + 9):  # 29 February recurs within 8 years
        candidate = _date(year, month, day)
        if candidate is not None and candidate >= today:
            return candidate
    return None


def _next_day_of_month(day: int, today: date) -> date | None:
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    for _ in range(3):  # of any three months in a row, at least one has 31 days
        candidate = _date(year, month, day)
        if candidate is not None and candidate >= today:
            return candidate
        year, month = (year, month + 1) if month < 12 else (year + 1, 1)
    return None


def parse_coming_date(text: str, *, today: date) -> date | None:
    """The day meant, or None when the text is not a date.

    Accepts 2026-11-25, 2026/11/25, 2026年11月25日, 11-25, 11/25, 11月25日, 十一月二十五号,
    25日, 25号, 今天/明天/后天, today/tomorrow. Without a year, the next such date not before
    today (in December "01-05" is next year); without a month, the next such day of a month.
    Whether the day may be reported is check_coming_day's business.
    """
    if not text or any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        return None
    normal = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).strip().lower())
    if not normal or len(normal) > MAX_DATE_INPUT:
        return None
    if normal in _RELATIVE:
        return today + timedelta(days=_RELATIVE[normal])
    for pattern in _FULL:
        match = pattern.fullmatch(normal)
        if match:
            month, day = _number(match["m"]), _number(match["d"])
            return None if month is None or day is None else _date(int(match["y"]), month, day)
    for pattern in _MONTH_DAY:
        match = pattern.fullmatch(normal)
        if match:
            month, day = _number(match["m"]), _number(match["d"])
            return None if month is None or day is None else _next_month_day(month, day, today)
    match = _DAY.fullmatch(normal)
    if match:
        day = _number(match["d"])
        return None if day is None else _next_day_of_month(day, today)
    return None


def check_coming_day(day: date, *, today: date, ahead: int = MAX_DAYS_AHEAD) -> str | None:
    """None when `day` is today or at most `ahead` days later, else "past" or "too_far"."""
    if day < today:
        return "past"
    if (day - today).days > ahead:
        return "too_far"
    return None


def coming_days(today: date, count: int) -> list[date]:
    """Today and the `count` days after it."""
    return [today + timedelta(days=n) for n in range(count + 1)]
