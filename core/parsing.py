"""Lenient reading of what officers type on their phones, in Chinese or English.

Every parser returns None for anything it does not understand rather than guessing; the bot
then asks again. Checks return stable reason codes the bot maps to translated messages.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Collection
from datetime import date, timedelta
from decimal import Decimal
from typing import Final

HOUSEHOLD_UNITS: Final[frozenset[str]] = frozenset(
    {"户", "家", "户人家", "家人", "households", "household", "hh"}
)
HOUR_UNITS: Final[frozenset[str]] = frozenset(
    {
        "h",
        "hr",
        "hrs",
        "hour",
        "hours",
        "小时",
        "个小时",
        "钟头",
        "个钟头",
        "个钟",
    }
)
TIMES_UNITS: Final[frozenset[str]] = frozenset(
    {"次", "个", "起", "场", "份", "处", "条", "人", "times"}
)
ALL_UNITS: Final[frozenset[str]] = HOUSEHOLD_UNITS | HOUR_UNITS | TIMES_UNITS

# "共3户" / "一共3户": harmless words for "in all" in front of the number.
_PREFIXES: Final = ("一共", "总共", "共")
# No honest answer is longer; it also keeps digit strings within Decimal's 28-digit precision.
MAX_NUMBER_INPUT: Final = 20
MAX_DATE_INPUT: Final = 32

_ARABIC = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")
# A comma is a decimal separator only when it cannot be a thousands separator: "2,5", "2,75".
_COMMA_DECIMAL = re.compile(r"([0-9]+),([0-9]{1,2})")
_INTEGER = re.compile(r"[0-9]+")
_HALF = re.compile(r"(?P<whole>.+?)个?半")
_SPACES = re.compile(r"\s+")

_CN_DIGITS: Final[dict[str, int]] = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}


def _usable(char: str) -> bool:
    category = unicodedata.category(char)
    # "No" (superscripts, circled digits, vulgar fractions): NFKC would turn "3²" into "32"
    return char.isspace() or category not in ("Cc", "Cs", "No")


def _normalise(text: str) -> str | None:
    """NFKC (full-width digits and letters to ASCII), lower case, trimmed; None if unusable."""
    if not text or not all(_usable(c) for c in text):
        return None
    return unicodedata.normalize("NFKC", text).strip().lower()


def _cn_digit(text: str, *, zero: bool = False) -> int | None:
    value = _CN_DIGITS.get(text) if len(text) == 1 else None
    if value is None or (value == 0 and not zero):
        return None
    return value


def chinese_integer(text: str) -> int | None:
    """A Chinese numeral below 1000 (十一, 二十, 两百, 一百零五, 一百五), or None."""
    if text in ("零", "〇"):
        return 0
    total = 0
    rest = text
    if "百" in rest:
        head, _, rest = rest.partition("百")
        hundreds = _cn_digit(head)
        if hundreds is None:
            return None
        total = hundreds * 100
        if not rest:
            return total
        if rest[0] in ("零", "〇"):
            units = _cn_digit(rest[1:])
            return None if units is None else total + units
        if "十" not in rest:
            # 一百五 is colloquial for 150
            tens = _cn_digit(rest)
            return None if tens is None else total + tens * 10
    if "十" in rest:
        head, _, tail = rest.partition("十")
        # 十五 stands alone, but after hundreds it is 一百一十五
        tens = _cn_digit(head) if head else (1 if total == 0 else None)
        units = _cn_digit(tail) if tail else 0
        if tens is None or units is None:
            return None
        return total + tens * 10 + units
    if total:
        return None
    return _cn_digit(rest)


def _integer(text: str) -> int | None:
    if _INTEGER.fullmatch(text):
        return int(text)
    return chinese_integer(text)


def _plain_number(text: str) -> Decimal | None:
    if _ARABIC.fullmatch(text):
        return Decimal(text)
    comma = _COMMA_DECIMAL.fullmatch(text)
    if comma:
        return Decimal(f"{comma.group(1)}.{comma.group(2)}")
    value = chinese_integer(text)
    return None if value is None else Decimal(value)


def _strip_unit(text: str, units: Collection[str]) -> str:
    for unit in sorted((u.lower() for u in units), key=len, reverse=True):
        if text.endswith(unit) and len(text) > len(unit):
            return text[: -len(unit)].rstrip()
    return text


def _canonical(value: Decimal) -> Decimal:
    if value == value.to_integral_value():
        return Decimal(int(value))
    return value.normalize()


def parse_number(
    text: str, *, allow_fraction: bool, units: Collection[str] = ALL_UNITS
) -> Decimal | None:
    """A single non-negative number, possibly with one unit, or None.

    Accepts "3", "３", "2.5", "2,5" (a comma followed by one or two digits only), "３户",
    "2.5 h", "三十户", "一百零五", "两个半小时", "半小时", "一个半", "共3户". Rejects
    negatives, ranges, several numbers, other words, emoji, control characters. `units` are
    the unit words accepted after the number (case-insensitive). Integers come back as
    integral Decimals ("3.0" gives Decimal(3)), fractions normalised ("2.50" gives 2.5).
    """
    normal = _normalise(text)
    if not normal or len(normal) > MAX_NUMBER_INPUT:
        return None
    for prefix in _PREFIXES:
        if normal.startswith(prefix):
            normal = normal[len(prefix) :].lstrip()
            break
    core = _strip_unit(normal, units)
    if _SPACES.search(core):
        # "2 个半" is one number spaced out; "3 4" is two numbers
        core = re.sub(r"\s*([个半])", r"\1", core)
        if _SPACES.search(core):
            return None
    value: Decimal | None
    if core in ("半", "半个"):
        value = Decimal("0.5")
    elif core.endswith("半"):
        half = _HALF.fullmatch(core)
        whole = None if half is None else _integer(half.group("whole"))
        value = None if whole is None else whole + Decimal("0.5")
    else:
        if core.endswith("个") and len(core) > 1:
            core = core[:-1]
        value = _plain_number(core)
    if value is None:
        return None
    value = _canonical(value)
    if not allow_fraction and value != value.to_integral_value():
        return None
    return value


def parse_hours(text: str) -> Decimal | None:
    """Hours on site: a number with at most one decimal place, with or without an hour unit."""
    value = parse_number(text, allow_fraction=True, units=HOUR_UNITS)
    if value is None or value != value.quantize(Decimal("0.1")):
        return None
    return value


def parse_count(text: str) -> int | None:
    """A count of households or things: a whole number, with or without a unit."""
    value = parse_number(text, allow_fraction=False, units=HOUSEHOLD_UNITS | TIMES_UNITS)
    return None if value is None else int(value)


_RELATIVE_DAYS: Final[dict[str, int]] = {
    "今天": 0,
    "今日": 0,
    "today": 0,
    "昨天": 1,
    "昨日": 1,
    "yesterday": 1,
    "前天": 2,
    "前日": 2,
    "day before yesterday": 2,
    "the day before yesterday": 2,
}
_NUM = r"[0-9]{1,2}|[零〇一二两三四五六七八九十]{1,3}"
_SEP = r"\s*[-/.]\s*"
_FULL_DATE = (
    re.compile(rf"(?P<y>[0-9]{{4}}){_SEP}(?P<m>[0-9]{{1,2}}){_SEP}(?P<d>[0-9]{{1,2}})"),
    re.compile(r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})"),
    re.compile(rf"(?P<y>[0-9]{{4}})\s*年\s*(?P<m>{_NUM})\s*月\s*(?P<d>{_NUM})\s*[日号]?"),
)
_MONTH_DAY = (
    re.compile(rf"(?P<m>[0-9]{{1,2}}){_SEP}(?P<d>[0-9]{{1,2}})"),
    re.compile(rf"(?P<m>{_NUM})\s*月\s*(?P<d>{_NUM})\s*[日号]?"),
)
_DAY = re.compile(rf"(?P<d>{_NUM})\s*[日号]")


def _date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _month_day_before(month: int, day: int, today: date) -> date | None:
    """The latest date with this month and day that is not after today."""
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(2000, month)[1]):
        return None
    # 29 February recurs within 8 years
    for year in range(today.year, max(today.year - 8, 0), -1):
        candidate = _date(year, month, day)
        if candidate is not None and candidate <= today:
            return candidate
    return None


def _day_before(day: int, today: date) -> date | None:
    """The latest date with this day of the month that is not after today."""
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    for _ in range(3):  # of any three months in a row, at least one has 31 days
        candidate = _date(year, month, day)
        if candidate is not None and candidate <= today:
            return candidate
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return None


def parse_date(text: str, *, today: date) -> date | None:
    """A day the officer means, or None.

    Accepts 2026-11-20, 2026/11/20, 2026.11.20, 20261120, 2026年11月20日, 11-20, 11/20,
    11月20日, 11月20号, 十一月二十日, 20日, 20号, 今天/昨天/前天, today/yesterday. Without a
    year, the latest such date not after today (in January "12-30" is last year); without a
    month, the latest such day of a month. Whether the date is allowed is check_visit_date's
    business.
    """
    normal = _normalise(text)
    if not normal or len(normal) > MAX_DATE_INPUT:
        return None
    normal = _SPACES.sub(" ", normal)
    if normal in _RELATIVE_DAYS:
        return today - timedelta(days=_RELATIVE_DAYS[normal])
    for pattern in _FULL_DATE:
        match = pattern.fullmatch(normal)
        if match:
            year = int(match["y"])
            month, day = _integer(match["m"]), _integer(match["d"])
            if month is None or day is None:
                return None
            return _date(year, month, day)
    for pattern in _MONTH_DAY:
        match = pattern.fullmatch(normal)
        if match:
            month, day = _integer(match["m"]), _integer(match["d"])
            if month is None or day is None:
                return None
            return _month_day_before(month, day, today)
    match = _DAY.fullmatch(normal)
    if match:
        day = _integer(match["d"])
        return None if day is None else _day_before(day, today)
    return None


def check_visit_date(day: date, *, today: date, backdate_days: int) -> str | None:
    """None when a visit may be reported for `day`, else "future" or "too_old".

    `backdate_days` is how many days back a report may be dated (0: today only).
    """
    if day > today:
        return "future"
    if (today - day).days > backdate_days:
        return "too_old"
    return None


def check_range(
    value: Decimal | int, low: Decimal | int | None, high: Decimal | int | None
) -> str | None:
    """None when low <= value <= high (a None bound is open), else "too_small" / "too_large"."""
    if low is not None and value < low:
        return "too_small"
    if high is not None and value > high:
        return "too_large"
    return None


# Kept besides newline and tab: everything else in Cc is invisible noise or worse. Bidi
# overrides and isolates can make a note read differently from what is stored.
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_BLANK_LINES: Final = 2


def _keep(char: str) -> bool:
    if char in "\n\t":
        return True
    if char in _BIDI_CONTROLS:
        return False
    return unicodedata.category(char) not in ("Cc", "Cs")


def clean_text(text: str, *, max_len: int) -> tuple[str | None, str | None]:
    """Free text made safe to store: (cleaned, None), or (None, "empty" / "too_long").

    Line breaks are unified to "\\n"; control characters other than newline and tab,
    lone surrogates and bidi overrides are removed; trailing spaces on each line are dropped;
    runs of more than MAX_BLANK_LINES blank lines are cut to MAX_BLANK_LINES; the whole is
    stripped. Length is counted in characters after cleaning.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n")
    text = "".join(c for c in text if _keep(c))
    lines: list[str] = []
    blank_run = 0
    for line in text.split("\n"):
        line = line.rstrip()
        if line:
            blank_run = 0
        else:
            blank_run += 1
            if blank_run > MAX_BLANK_LINES:
                continue
        lines.append(line)
    cleaned = "\n".join(lines).strip()
    if not cleaned:
        return None, "empty"
    if len(cleaned) > max_len:
        return None, "too_long"
    return cleaned, None
