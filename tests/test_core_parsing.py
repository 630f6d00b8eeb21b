"""Lenient parsing of numbers, dates and free text typed by officers."""

from __future__ import annotations

import unicodedata
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.parsing import (
    MAX_BLANK_LINES,
    check_range,
    check_visit_date,
    chinese_integer,
    clean_text,
    parse_count,
    parse_date,
    parse_hours,
    parse_number,
)

D = Decimal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", D(3)),
        ("３", D(3)),
        ("３户", D(3)),
        (" 3 ", D(3)),
        ("03", D(3)),
        ("3.0", D(3)),
        ("0", D(0)),
        ("零", D(0)),
        ("2.5", D("2.5")),
        ("2.50", D("2.5")),
        (".5", D("0.5")),
        ("２．５", D("2.5")),
        ("2,5", D("2.5")),
        ("2,75", D("2.75")),
        ("２，５", D("2.5")),
        ("2.5h", D("2.5")),
        ("2.5H", D("2.5")),
        ("2.5 小时", D("2.5")),
        ("2.5 hours", D("2.5")),
        ("2.5hrs", D("2.5")),
        ("3 Hour", D(3)),
        ("3个小时", D(3)),
        ("3 个钟头", D(3)),
        ("两个半小时", D("2.5")),
        ("两 个 半 小时", D("2.5")),
        ("两个半", D("2.5")),
        ("1个半小时", D("1.5")),
        ("一个半", D("1.5")),
        ("一个半钟头", D("1.5")),
        ("十个半", D("10.5")),
        ("半小时", D("0.5")),
        ("半个小时", D("0.5")),
        ("半", D("0.5")),
        ("三十户", D(30)),
        ("一百零五", D(105)),
        ("两百", D(200)),
        ("一百五", D(150)),
        ("一百一十五", D(115)),
        ("十一", D(11)),
        ("十", D(10)),
        ("二十", D(20)),
        ("两个", D(2)),
        ("3户人家", D(3)),
        ("5家", D(5)),
        ("3 households", D(3)),
        ("1 household", D(1)),
        ("5hh", D(5)),
        ("5 HH", D(5)),
        ("3次", D(3)),
        ("两场", D(2)),
        ("4处", D(4)),
        ("6人", D(6)),
        ("3 times", D(3)),
        ("共3户", D(3)),
        ("一共 5 户", D(5)),
        ("总共十户", D(10)),
        ("3\n", D(3)),
        ("\t3户", D(3)),
    ],
)
def test_parse_number_understands(text: str, expected: Decimal) -> None:
    value = parse_number(text, allow_fraction=True)
    assert value == expected
    assert isinstance(value, Decimal)
    assert str(value) == str(expected)  # canonical form: "3", not "3.0" or "3E+0"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\x00",
        "3\x00",
        "\x003",
        "👍",
        "3👍",
        "👍👍👍",
        "abc",
        "three",
        "-1",
        "−1",
        "-0.5",
        "+3",
        "3-4",
        "3~4",
        "3～4",
        "3到4",
        "3或4",
        "三四户",
        "3户2人",
        "3 4",
        "3户户",
        "1,000",
        "1,5,0",
        "1e3",
        "NaN",
        "Infinity",
        "inf",
        "3.",
        "3..5",
        "约3户",
        "大概三户",
        "走访3户",
        "hh",
        "个",
        "户",
        "共",
        "半半",
        "个半",
        "2.5个半",
        "一千",
        "百",
        "一百十五",
        "零五",
        "一百零",
        "十十",
        "٣",
        "³",
        "3²",
        "①",
        "½",
        "9" * 4096,
        "3" + "户" * 4095,
        "0x10",
        "3/4",
    ],
)
def test_parse_number_rejects(text: str) -> None:
    assert parse_number(text, allow_fraction=True) is None
    assert parse_number(text, allow_fraction=False) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", D(3)),
        ("3.0", D(3)),
        ("2.5", None),
        ("2,5", None),
        ("两个半", None),
        ("半", None),
        ("三十", D(30)),
    ],
)
def test_parse_number_without_fractions(text: str, expected: Decimal | None) -> None:
    assert parse_number(text, allow_fraction=False) == expected


def test_parse_number_units_are_the_callers_choice() -> None:
    assert parse_number("3户", allow_fraction=False, units={"户"}) == 3
    assert parse_number("3h", allow_fraction=False, units={"户"}) is None
    assert parse_number("3", allow_fraction=False, units=()) == 3
    assert parse_number("3 HH", allow_fraction=False, units={"Hh"}) == 3


def _chinese(n: int) -> str:
    """A reference spelling of 0..999 in the standard written form."""
    digits = "零一二三四五六七八九"
    if n == 0:
        return "零"
    hundreds, rest = divmod(n, 100)
    tens, units = divmod(rest, 10)
    text = ""
    if hundreds:
        text = digits[hundreds] + "百"
        if rest == 0:
            return text
        if tens == 0:
            return text + "零" + digits[units]
        text += digits[tens] + "十"
    elif tens:
        text = ("" if tens == 1 else digits[tens]) + "十"
    return text + (digits[units] if units else "")


def test_every_chinese_numeral_below_a_thousand() -> None:
    for n in range(1000):
        assert chinese_integer(_chinese(n)) == n, _chinese(n)
        assert parse_count(_chinese(n) + "户") == n
        assert parse_count(str(n)) == n
        assert (
            parse_count(str(n).translate(str.maketrans("0123456789", "０１２３４５６７８９"))) == n
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("两", 2), ("两百", 200), ("两百零两", 202), ("一十五", 15), ("〇", 0), ("一百〇五", 105)],
)
def test_chinese_integer_variants(text: str, expected: int) -> None:
    assert chinese_integer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", D(3)),
        ("0", D(0)),
        ("2.5", D("2.5")),
        ("2.50", D("2.5")),
        ("2,5", D("2.5")),
        ("2.5h", D("2.5")),
        ("2.5 小时", D("2.5")),
        ("两个半小时", D("2.5")),
        ("半小时", D("0.5")),
        ("一个半钟头", D("1.5")),
        ("3 个小时", D(3)),
        ("三个", D(3)),
        ("24", D(24)),  # the range is the caller's business
        ("2.25", None),  # more than one decimal place
        ("0.05", None),
        ("3户", None),
        ("3次", None),
        ("3 households", None),
        ("-2", None),
        ("", None),
        ("\x00", None),
        ("👍", None),
    ],
)
def test_parse_hours(text: str, expected: Decimal | None) -> None:
    assert parse_hours(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("３户", 3),
        ("三十户", 30),
        ("一百零五", 105),
        ("0", 0),
        ("两个", 2),
        ("5家", 5),
        ("5 households", 5),
        ("3次", 3),
        ("3.0", 3),
        ("2.5", None),
        ("半", None),
        ("3h", None),
        ("3小时", None),
        ("3户2人", None),
        ("3-4", None),
        ("-1", None),
        ("abc", None),
        ("", None),
        ("\x00", None),
        ("👍", None),
    ],
)
def test_parse_count(text: str, expected: int | None) -> None:
    value = parse_count(text)
    assert value == expected
    assert value is None or type(value) is int


@settings(database=None, deadline=None, max_examples=300)
@given(st.text(max_size=40))
def test_parsers_never_raise(text: str) -> None:
    value = parse_number(text, allow_fraction=True)
    assert value is None or value >= 0
    whole = parse_count(text)
    assert whole is None or whole >= 0
    hours = parse_hours(text)
    assert hours is None or hours == hours.quantize(D("0.1"))
    day = parse_date(text, today=date(2026, 1, 10))
    assert day is None or isinstance(day, date)


JAN_10 = date(2026, 1, 10)


@pytest.mark.parametrize(
    ("text", "today", "expected"),
    [
        ("2026-11-20", JAN_10, date(2026, 11, 20)),  # the future is check_visit_date's business
        ("2026/11/20", JAN_10, date(2026, 11, 20)),
        ("2026.11.20", JAN_10, date(2026, 11, 20)),
        ("2026-1-5", JAN_10, date(2026, 1, 5)),
        ("2026 - 11 - 20", JAN_10, date(2026, 11, 20)),
        ("20261120", JAN_10, date(2026, 11, 20)),
        ("２０２６－１１－２０", JAN_10, date(2026, 11, 20)),
        ("2026年11月20日", JAN_10, date(2026, 11, 20)),
        ("2025年12月31号", JAN_10, date(2025, 12, 31)),
        # month and day: the latest such date not after today, across the year end
        ("11-20", JAN_10, date(2025, 11, 20)),
        ("12-30", JAN_10, date(2025, 12, 30)),
        ("1-10", JAN_10, date(2026, 1, 10)),
        ("1-11", JAN_10, date(2025, 1, 11)),
        ("01-09", JAN_10, date(2026, 1, 9)),
        ("11/20", JAN_10, date(2025, 11, 20)),
        ("11.20", JAN_10, date(2025, 11, 20)),
        ("11月20日", JAN_10, date(2025, 11, 20)),
        ("11月20号", JAN_10, date(2025, 11, 20)),
        ("11月20", JAN_10, date(2025, 11, 20)),
        ("１１月２０日", JAN_10, date(2025, 11, 20)),
        ("十二月三十一日", JAN_10, date(2025, 12, 31)),
        ("一月九号", JAN_10, date(2026, 1, 9)),
        # day only: the latest such day not after today
        ("20日", JAN_10, date(2025, 12, 20)),
        ("20号", JAN_10, date(2025, 12, 20)),
        ("10号", JAN_10, date(2026, 1, 10)),
        ("11号", JAN_10, date(2025, 12, 11)),
        ("二十号", JAN_10, date(2025, 12, 20)),
        ("31号", date(2026, 5, 5), date(2026, 3, 31)),  # April has no 31st
        ("31号", date(2026, 3, 5), date(2026, 1, 31)),  # nor February
        ("29号", date(2027, 3, 5), date(2027, 1, 29)),  # not in a common-year February
        ("29号", date(2028, 3, 5), date(2028, 2, 29)),  # but in a leap one
        ("1号", date(2026, 1, 1), date(2026, 1, 1)),
        ("31号", date(2026, 1, 1), date(2025, 12, 31)),
        # relative days, across year ends and leap days
        ("今天", JAN_10, JAN_10),
        ("今日", JAN_10, JAN_10),
        ("昨天", JAN_10, date(2026, 1, 9)),
        ("前天", JAN_10, date(2026, 1, 8)),
        ("Today", JAN_10, JAN_10),
        (" yesterday ", JAN_10, date(2026, 1, 9)),
        ("day before yesterday", JAN_10, date(2026, 1, 8)),
        ("昨天", date(2026, 1, 1), date(2025, 12, 31)),
        ("前天", date(2026, 1, 1), date(2025, 12, 30)),
        ("昨天", date(2028, 3, 1), date(2028, 2, 29)),
        ("昨天", date(2027, 3, 1), date(2027, 2, 28)),
        # leap days
        ("2028-02-29", JAN_10, date(2028, 2, 29)),
        ("2-29", date(2028, 3, 1), date(2028, 2, 29)),
        ("2-29", date(2028, 2, 29), date(2028, 2, 29)),
        ("2-29", date(2028, 2, 28), date(2024, 2, 29)),
        ("2-29", date(2027, 3, 1), date(2024, 2, 29)),
        ("2月29日", date(2029, 1, 1), date(2028, 2, 29)),
    ],
)
def test_parse_date(text: str, today: date, expected: date) -> None:
    assert parse_date(text, today=today) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "\x00",
        "2026-11-20\x00",
        "👍",
        "abc",
        "tomorrow",
        "明天",
        "20",
        "1120",
        "2026-11",
        "26-11-20",
        "2026-02-30",
        "2027-02-29",
        "2100-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-11-00",
        "20261320",
        "0000-01-01",
        "13-01",
        "0-10",
        "2-30",
        "2月30日",
        "32号",
        "0号",
        "三十二号",
        "十三月一日",
        "11月",
        "2026-11-20-01",
        "11-20-2026",
        "3-4天",
        "1" * 4096,
        "1¹-2⁰",
    ],
)
def test_parse_date_rejects(text: str) -> None:
    assert parse_date(text, today=JAN_10) is None


def test_parse_date_does_not_search_before_year_one() -> None:
    assert parse_date("12-31", today=date(1, 1, 5)) is None
    assert parse_date("1-4", today=date(1, 1, 5)) == date(1, 1, 4)


@pytest.mark.parametrize(
    ("day", "today", "backdate_days", "reason"),
    [
        (date(2026, 1, 2), date(2026, 1, 1), 7, "future"),
        (date(2027, 1, 1), date(2026, 1, 1), 7, "future"),
        (date(2026, 1, 1), date(2026, 1, 1), 7, None),
        (date(2025, 12, 31), date(2026, 1, 1), 7, None),
        (date(2025, 12, 25), date(2026, 1, 1), 7, None),
        (date(2025, 12, 24), date(2026, 1, 1), 7, "too_old"),
        (date(2026, 1, 1), date(2026, 1, 1), 0, None),
        (date(2025, 12, 31), date(2026, 1, 1), 0, "too_old"),
        (date(2028, 2, 29), date(2028, 3, 1), 1, None),
        (date(2028, 2, 28), date(2028, 3, 1), 1, "too_old"),
        (date(2028, 2, 28), date(2028, 3, 1), 2, None),
    ],
)
def test_check_visit_date(day: date, today: date, backdate_days: int, reason: str | None) -> None:
    assert check_visit_date(day, today=today, backdate_days=backdate_days) == reason


@pytest.mark.parametrize(
    ("value", "low", "high", "reason"),
    [
        (3, 1, 10, None),
        (1, 1, 10, None),
        (10, 1, 10, None),
        (0, 1, 10, "too_small"),
        (11, 1, 10, "too_large"),
        (-1, 0, None, "too_small"),
        (10**9, 0, None, None),
        (-(10**9), None, 5, None),
        (6, None, 5, "too_large"),
        (D("0.5"), D("0.5"), 24, None),
        (D("0.4"), D("0.5"), 24, "too_small"),
        (D("24.5"), D("0.5"), 24, "too_large"),
        (D(24), D("0.5"), D(24), None),
        (0, None, None, None),
    ],
)
def test_check_range(
    value: Decimal | int, low: Decimal | int | None, high: Decimal | int | None, reason: str | None
) -> None:
    assert check_range(value, low, high) == reason


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("hello", "hello"),
        ("  hello  ", "hello"),
        ("\n\nhello\n\n", "hello"),
        ("a\x00b", "ab"),
        ("\x00a", "a"),
        ("a\x07\x08\x1b[0mb", "a[0mb"),
        ("a\x7f\x85b", "ab"),
        ("a\r\nb", "a\nb"),
        ("a\rb", "a\nb"),
        ("a\u2028b", "a\nb"),
        ("a\tb", "a\tb"),
        ("a  \nb", "a\nb"),
        ("a\nb", "a\nb"),
        ("a\n\nb", "a\n\nb"),
        ("a\n\n\nb", "a\n\n\nb"),  # two blank lines are kept
        ("a\n\n\n\nb", "a\n\n\nb"),  # three are cut to two
        ("a\n\n \n\t\n\n\nb", "a\n\n\nb"),  # blank means only whitespace
        ("a\n\n\n\nb\n\n\n\n\nc", "a\n\n\nb\n\n\nc"),
        ("\u202eevil\u202c", "evil"),
        ("a\u2066b\u2069", "ab"),
        ("a\ud800b", "ab"),
        ("👍", "👍"),
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # joiners inside emoji stay
        ("３户，ＯＫ", "３户，ＯＫ"),  # user text is not NFKC-folded
        ("张三家 漏水", "张三家 漏水"),
    ],
)
def test_clean_text(text: str, cleaned: str) -> None:
    assert clean_text(text, max_len=100) == (cleaned, None)


@pytest.mark.parametrize("text", ["", " ", "\n\t \r\n", "\x00", "\x00\x01\x02", "\u202e", "\ud800"])
def test_clean_text_empty(text: str) -> None:
    assert clean_text(text, max_len=100) == (None, "empty")


@pytest.mark.parametrize(
    ("text", "max_len", "expected"),
    [
        ("x" * 4096, 4096, ("x" * 4096, None)),
        ("x" * 4097, 4096, (None, "too_long")),
        ("中" * 4096, 4096, ("中" * 4096, None)),  # characters, not bytes
        ("中" * 4097, 4096, (None, "too_long")),
        ("\x00" * 10 + "x" * 4096 + "\x00" * 10, 4096, ("x" * 4096, None)),  # after cleaning
        ("  " + "x" * 4096 + "  ", 4096, ("x" * 4096, None)),
        ("abc", 3, ("abc", None)),
        ("abcd", 3, (None, "too_long")),
    ],
)
def test_clean_text_length(
    text: str, max_len: int, expected: tuple[str | None, str | None]
) -> None:
    assert clean_text(text, max_len=max_len) == expected


@settings(database=None, deadline=None, max_examples=300)
@given(st.text(max_size=200))
def test_clean_text_is_safe_and_idempotent(text: str) -> None:
    cleaned, reason = clean_text(text, max_len=10_000)
    if cleaned is None:
        assert reason == "empty"
        assert not text.strip() or all(
            c.isspace() or unicodedata.category(c) in ("Cc", "Cs", "Cf") for c in text
        )
        return
    assert reason is None
    assert cleaned == cleaned.strip()
    assert not any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in cleaned)
    assert "\n" * (MAX_BLANK_LINES + 2) not in cleaned
    assert clean_text(cleaned, max_len=10_000) == (cleaned, None)
