"""The advisory lock keys (storage.locks): none shares a key with another use or with a
Telegram id, and the month tallies' triggers use the class the registry gives them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from scheduler.leader import SCHEDULER_LOCK
from storage import directory, locks

# Telegram user and chat ids fit in 52 bits, with a sign for group chats.
TELEGRAM_IDS = range(-(2**53), 2**53)


def _keys() -> dict[str, int]:
    return {
        name: value
        for name, value in vars(locks).items()
        if name.isupper() and isinstance(value, int)
    }


BIGINT = {"MIGRATIONS", "DIRECTORY_IMPORT", "STANDINGS_REFRESH", "SCHEDULER"}


def test_every_key_is_listed_as_one_kind_or_the_other() -> None:
    classes = set(_keys()) - BIGINT
    assert classes == {"PHOTO_SHA256", "PHOTO_FILE_UNIQUE_ID", "SPOT_CHECK_DRAW", "MONTH_TALLY"}


def test_bigint_keys_are_distinct_and_no_telegram_id() -> None:
    values = [locks.__dict__[name] for name in BIGINT]
    assert len(set(values)) == len(values)
    for value in values:
        assert value not in TELEGRAM_IDS
        assert -(2**63) <= value < 0  # a PostgreSQL bigint


def test_two_int_classes_are_distinct_int4() -> None:
    values = [value for name, value in _keys().items() if name not in BIGINT]
    assert len(set(values)) == len(values)
    assert all(-(2**31) <= value < 2**31 for value in values)


def test_the_users_of_the_keys_take_them_from_the_registry() -> None:
    assert SCHEDULER_LOCK == locks.SCHEDULER
    assert directory.IMPORT_LOCK == locks.DIRECTORY_IMPORT
    path = Path(__file__).resolve().parents[1] / "storage/migrations/versions/0012_month_tallies.py"
    spec = importlib.util.spec_from_file_location("month_tallies_migration", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.LOCK_CLASS == locks.MONTH_TALLY
