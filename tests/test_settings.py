"""Settings are validated at start-up and explained in one line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.settings import DEFAULT_API_URL, SettingsError, load_settings

ENV = [
    "BOT_TOKEN", "DATABASE_URL", "DATABASE_POOL_SIZE", "TELEGRAM_API_URL", "DATA_DIR", "TIMEZONE",
    "DEFAULT_LOCALE",
    "WEBHOOK_URL", "WEBHOOK_SECRET", "WEBHOOK_HOST", "WEBHOOK_PORT", "BOT_USERNAME",
    "INVITE_TTL_DAYS", "QUOTA_PROFILE", "VISIT_BACKDATE_DAYS", "LOCATION_RADIUS_M",
    "HAZARD_REINSPECTION_DAYS", "DEPARTMENTS", "OUTBOX_GLOBAL_RATE", "OUTBOX_CHAT_RATE",
    "REQUEST_ACK_HOURS", "REQUEST_ANSWER_HOURS", "DEPARTMENT_ANSWER_HOURS", "REQUEST_MAX_OPEN",
    "VILLAGER_MESSAGES_PER_MINUTE",
]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url is None and settings.database_pool_size == 20
    assert settings.telegram_api_url == DEFAULT_API_URL
    assert settings.timezone == "Asia/Shanghai"
    assert settings.default_locale == "zh"
    assert settings.webhook_url is None
    assert (settings.webhook_host, settings.webhook_port) == ("0.0.0.0", 8080)
    assert settings.invite_ttl_days == 7
    assert settings.quota_profile == "xi" and settings.visit_backdate_days == 7
    assert settings.location_radius_m == 2000 and settings.hazard_reinspection_days == 7
    assert "township_government" in settings.department_codes
    assert (settings.deadlines.ack, settings.deadlines.answer) == (
        timedelta(hours=24),
        timedelta(days=3),
    )
    assert settings.deadlines.department == timedelta(days=7)
    assert (settings.limits.max_open, settings.limits.messages_per_minute) == (5, 10)


def test_request_deadlines_and_limits_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_ACK_HOURS", "12")
    monkeypatch.setenv("REQUEST_ANSWER_HOURS", "48")
    monkeypatch.setenv("REQUEST_MAX_OPEN", "2")
    settings = load_settings()
    assert (settings.deadlines.ack, settings.deadlines.answer) == (
        timedelta(hours=12),
        timedelta(hours=48),
    )
    assert settings.limits.max_open == 2


def test_reads_dotenv_file(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    Path(".env").write_text("TIMEZONE=Asia/Urumqi\nDEFAULT_LOCALE=en\n", encoding="utf-8")
    settings = load_settings()
    assert (settings.timezone, settings.default_locale) == ("Asia/Urumqi", "en")


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    Path(".env").write_text("TIMEZONE=Asia/Urumqi\n", encoding="utf-8")
    monkeypatch.setenv("TIMEZONE", "Asia/Shanghai")
    assert load_settings().timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("DATABASE_URL", "mysql://root@localhost/x", "DATABASE_URL is invalid"),
        ("DATABASE_URL", "postgresql://localhost", "must name a database"),
        ("DATABASE_POOL_SIZE", "1", "DATABASE_POOL_SIZE is invalid"),
        ("TIMEZONE", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("DEFAULT_LOCALE", "fr", "DEFAULT_LOCALE is invalid"),
        ("WEBHOOK_PORT", "99999", "WEBHOOK_PORT is invalid"),
        ("TELEGRAM_API_URL", "ftp://x", "TELEGRAM_API_URL is invalid"),
        ("WEBHOOK_URL", "https://bot.example.org/tg", "WEBHOOK_SECRET is required"),
        ("DEPARTMENTS", "health,ministry_of_magic", "unknown department ministry_of_magic"),
        ("QUOTA_PROFILE", "mars", "QUOTA_PROFILE is invalid"),
        ("VISIT_BACKDATE_DAYS", "-1", "VISIT_BACKDATE_DAYS is invalid"),
        ("REQUEST_ACK_HOURS", "0", "REQUEST_ACK_HOURS is invalid"),
        ("VILLAGER_MESSAGES_PER_MINUTE", "lots", "VILLAGER_MESSAGES_PER_MINUTE is invalid"),
    ],
)
def test_bad_values_give_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_URL", "https://bot.example.org/tg")
    monkeypatch.setenv("WEBHOOK_SECRET", "has spaces!")
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET must be"):
        load_settings()


def test_webhook_path_and_accepted_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_URL", "https://bot.example.org/tg/hook/")
    monkeypatch.setenv("WEBHOOK_SECRET", "s3cret_-")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@db:5432/vb")
    settings = load_settings()
    assert settings.webhook_path == "/tg/hook"
    assert settings.database_url == "postgresql+asyncpg://u:p@db:5432/vb"


def test_token_required_for_run() -> None:
    with pytest.raises(SettingsError, match="BOT_TOKEN is not set"):
        load_settings().require_token()


def test_malformed_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", "nocolon")
    with pytest.raises(SettingsError, match="BOT_TOKEN is malformed"):
        load_settings().require_token()
