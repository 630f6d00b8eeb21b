"""Translation catalogues (TOML, one file per language) and the per-user language choice."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

LOCALES = ("zh", "en")
LOCALE_DIR = Path(__file__).parent / "locales"
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@functools.cache
def catalogue(locale: str) -> dict[str, str]:
    """All of a language's files (`locales/<locale>/*.toml`, one per feature), merged."""
    merged: dict[str, str] = {}
    for path in sorted((LOCALE_DIR / locale).glob("*.toml")):
        with path.open("rb") as fh:
            entries = _flatten(tomllib.load(fh))
        clash = sorted(merged.keys() & entries.keys())
        if clash:
            raise ValueError(f"{path.name} repeats catalogue keys: {', '.join(clash)}")
        merged.update(entries)
    return merged


def pick_locale(chosen: str | None, language_code: str | None, default: str) -> str:
    """The user's /language choice, else Telegram's language, else the county default."""
    if chosen in LOCALES:
        return chosen
    code = (language_code or "").lower()
    for locale in LOCALES:
        if code.startswith(locale):
            return locale
    return default


class Translator:
    __slots__ = ("_catalogue", "locale")

    def __init__(self, locale: str) -> None:
        self.locale = locale
        self._catalogue = catalogue(locale)

    def __call__(self, key: str, /, **values: object) -> str:
        template = self._catalogue[key]
        return template.format(**values) if values else template


def all_labels(key: str) -> frozenset[str]:
    """A button's label in every language, to recognise it whatever the user's language was."""
    return frozenset(catalogue(locale)[key] for locale in LOCALES)
