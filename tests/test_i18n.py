"""Every user-facing string comes from both catalogues, with the same placeholders."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from bot.i18n import LOCALES, Translator, catalogue, pick_locale
from bot.menus import COMMANDS, MENU_ROWS
from core.roles import AssignmentKind, Role
from storage.invites import Refusal

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "bot").rglob("*.py")) + sorted((ROOT / "scheduler").rglob("*.py"))


def _placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def test_catalogues_have_the_same_keys() -> None:
    zh, en = catalogue("zh"), catalogue("en")
    assert sorted(set(zh) - set(en)) == [], "missing in en.toml"
    assert sorted(set(en) - set(zh)) == [], "missing in zh.toml"


def test_catalogues_have_the_same_placeholders() -> None:
    zh, en = catalogue("zh"), catalogue("en")
    mismatched = [k for k in zh if _placeholders(zh[k]) != _placeholders(en[k])]
    assert mismatched == []


def test_no_entry_is_empty() -> None:
    for locale in LOCALES:
        assert [k for k, v in catalogue(locale).items() if not v.strip()] == []


def _literal_keys() -> set[str]:
    keys: set[str] = set()
    pattern = re.compile(r"""\b(?:t|Translator\([^)]*\)|all_labels)\(\s*"([a-z0-9_.]+)"\s*[,)]""")
    for path in SOURCES:
        keys |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return keys


def test_every_literal_key_used_in_code_exists() -> None:
    used = _literal_keys()
    assert len(used) > 30  # the scan found the code's keys
    for locale in LOCALES:
        assert sorted(used - set(catalogue(locale))) == [], locale


@pytest.mark.parametrize("locale", LOCALES)
def test_every_composed_key_exists(locale: str) -> None:
    t = Translator(locale)
    for role in Role:
        t(f"help.intro.{role.value}")
        for name in COMMANDS[role]:
            t(f"cmd.{name}")
        for row in MENU_ROWS[role]:
            for name in row:
                t(f"button.{name}")
    for kind in AssignmentKind:
        t(f"assignment.{kind.value}")
    for refusal in Refusal:
        t(f"start.invite_{refusal.value}")


TEXT_CALLS = {"answer", "edit_text", "send_message", "reply", "SendMessage", "edit_caption"}


def test_no_string_literal_is_sent_to_users() -> None:
    offenders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name not in TEXT_CALLS:
                continue
            args = list(node.args[:1]) + [k.value for k in node.keywords if k.arg == "text"]
            if any(isinstance(a, ast.Constant | ast.JoinedStr) for a in args):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize(
    ("chosen", "telegram", "default", "expected"),
    [
        (None, "zh-hans", "en", "zh"),
        (None, "zh-TW", "en", "zh"),
        (None, "en-GB", "zh", "en"),
        (None, "ru", "zh", "zh"),
        (None, "ru", "en", "en"),
        (None, None, "zh", "zh"),
        ("en", "zh-hans", "zh", "en"),
        ("xx", "en", "zh", "en"),
    ],
)
def test_pick_locale(chosen: str | None, telegram: str | None, default: str, expected: str) -> None:
    assert pick_locale(chosen, telegram, default) == expected
