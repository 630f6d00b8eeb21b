"""Settings from the environment and `.env`, validated once at start-up."""

from __future__ import annotations

import re
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.requests import DeadlineConfig, LimitConfig
from core.schedule import QuietHours, parse_quiet_hours
from core.scoring import parse_points

DEFAULT_API_URL = "https://api.telegram.org"
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    bot_token: SecretStr | None = None
    database_url: str | None = None
    # Connections to PostgreSQL kept by one `villagebeat run` (storage.db.make_engine).
    database_pool_size: int = Field(default=20, ge=2, le=500)
    telegram_api_url: str = DEFAULT_API_URL
    data_dir: Path = Path("./var")
    timezone: str = "Asia/Shanghai"
    default_locale: Literal["zh", "en"] = "zh"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_host: str = "0.0.0.0"
    webhook_port: int = Field(default=8080, ge=1, le=65535)
    bot_username: str | None = None
    invite_ttl_days: int = Field(default=7, ge=1, le=365)
    # Field reports (issue 3).
    quota_profile: Literal["xi", "changde"] = "xi"
    visit_backdate_days: int = Field(default=7, ge=0, le=62)
    location_radius_m: int = Field(default=2000, ge=50, le=100_000)
    hazard_reinspection_days: int = Field(default=7, ge=1, le=365)
    departments: str = (
        "civil_affairs,natural_resources,labour,health,emergency_management,"
        "township_government,housing_construction,water_resources,market_regulation,"
        "transport,education,power_supply,other"
    )
    # Outbox delivery (issue 4): Telegram allows about 30 messages a second, 1 per chat.
    outbox_global_rate: float = Field(default=30, gt=0, le=1000)
    outbox_chat_rate: float = Field(default=1, gt=0, le=30)
    # Villagers' requests (issue 4): deadlines in hours, abuse limits.
    request_ack_hours: int = Field(default=24, ge=1, le=24 * 30)
    request_answer_hours: int = Field(default=72, ge=1, le=24 * 60)
    department_answer_hours: int = Field(default=168, ge=1, le=24 * 180)
    request_max_open: int = Field(default=5, ge=1, le=100)
    villager_messages_per_minute: int = Field(default=10, ge=1, le=600)
    # The scheduler (issue 5); off: no process of this deployment runs scheduled jobs
    # (`villagebeat jobs run` still does).
    scheduler_enabled: bool = True
    quiet_hours: str = "21:00-08:00"  # nothing scheduled is sent in this local window
    village_day: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "tuesday"
    nudge_from_day: int = Field(default=10, ge=1, le=28)  # quota nudges from this day of the month
    spot_check_size: int = Field(
        default=5, ge=0, le=100
    )  # visit reports a supervisor reviews a week
    score_points: str = ""  # overrides of core.scoring.DEFAULT_POINTS: "patrol=3,household=2"
    chart_font: Path | None = None  # a font with Chinese glyphs for digest charts
    # `run` also does the background work (delivery, downloads, the scheduler); off when a
    # separate `villagebeat worker` does it.
    run_background: bool = True
    log_level: str = "INFO"

    @field_validator("bot_token", "webhook_secret", "bot_username", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("departments")
    @classmethod
    def _check_departments(cls, value: str) -> str:
        from core.hazards import DEFAULT_DEPARTMENTS

        codes = [c.strip() for c in value.split(",") if c.strip()]
        unknown = [c for c in codes if c not in DEFAULT_DEPARTMENTS]
        if not codes or unknown:
            known = ", ".join(DEFAULT_DEPARTMENTS)
            raise ValueError(f"unknown department {', '.join(unknown) or '(none)'}; known: {known}")
        return ",".join(codes)

    @property
    def department_codes(self) -> tuple[str, ...]:
        return tuple(self.departments.split(","))

    @property
    def deadlines(self) -> DeadlineConfig:
        return DeadlineConfig(
            ack=timedelta(hours=self.request_ack_hours),
            answer=timedelta(hours=self.request_answer_hours),
            department=timedelta(hours=self.department_answer_hours),
        )

    @property
    def limits(self) -> LimitConfig:
        return LimitConfig(
            max_open=self.request_max_open,
            messages_per_minute=self.villager_messages_per_minute,
        )

    @field_validator("quiet_hours")
    @classmethod
    def _check_quiet_hours(cls, value: str) -> str:
        parse_quiet_hours(value)  # ValueError with the reason
        return value.strip()

    @field_validator("score_points")
    @classmethod
    def _check_score_points(cls, value: str) -> str:
        parse_points(value)
        return value

    @field_validator("chart_font", mode="before")
    @classmethod
    def _empty_font_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def quiet(self) -> QuietHours:
        return parse_quiet_hours(self.quiet_hours)

    @property
    def points(self) -> dict[str, int]:
        return parse_points(self.score_points)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError("must start with postgresql:// or postgresql+asyncpg://")
        if not parts.path.strip("/") and "host=" not in parts.query:
            raise ValueError("must name a database, e.g. postgresql://user@host:5432/villagebeat")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("default_locale", mode="before")
    @classmethod
    def _normalise_locale(cls, value: object) -> object:
        return value.strip().lower()[:2] if isinstance(value, str) else value

    @field_validator("telegram_api_url", "webhook_url")
    @classmethod
    def _check_http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return DEFAULT_API_URL if info.field_name == "telegram_api_url" else None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_webhook(self) -> Settings:
        if self.webhook_url is None:
            return self
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if not secret:
            raise ValueError("WEBHOOK_SECRET is required when WEBHOOK_URL is set")
        if not _SECRET_RE.match(secret):
            raise ValueError("WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return self

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def webhook_path(self) -> str:
        assert self.webhook_url
        return urlsplit(self.webhook_url).path or "/"

    def require_token(self) -> str:
        if self.bot_token is None or not self.bot_token.get_secret_value().strip():
            raise SettingsError(
                "BOT_TOKEN is not set: put the bot's token in the environment or .env"
            )
        token = self.bot_token.get_secret_value().strip()
        if ":" not in token:
            raise SettingsError(
                "BOT_TOKEN is malformed: expected '<digits>:<secret>' from @BotFather"
            )
        return token


def load_settings() -> Settings:
    """Read settings, turning pydantic's report into one line an operator can act on."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:
            raise SettingsError(message) from None
        name = str(first["loc"][0]).upper()
        raise SettingsError(f"{name} is invalid: {message}") from None
