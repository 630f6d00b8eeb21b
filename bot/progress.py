"""An officer's month against the quota, per village, as short lines for the chat."""

from __future__ import annotations

from datetime import date, timedelta

from bot.i18n import Translator
from core.quota import COUNTERS, Progress, Quota, days_left


def progress_line(t: Translator, quota: Quota, progress: Progress) -> str:
    """'3 of 4 days, 11 of 4 households': only the counters the quota asks for."""
    parts = [
        t(f"quota.{name}", done=getattr(progress, name), needed=getattr(quota, name))
        for name in COUNTERS
        if getattr(quota, name) > 0
    ]
    return t("quota.separator").join(parts)


def days_left_text(t: Translator, today: date) -> str:
    return t("quota.days_left", days=days_left(today))


def previous_month(day: date) -> date:
    return day.replace(day=1) - timedelta(days=1)
