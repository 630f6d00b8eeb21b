"""Hazards found in villages: their classification, status and re-inspection deadline."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final


class HazardCategory(StrEnum):
    FIRE = "fire"
    TRAFFIC = "traffic"
    PUBLIC_SECURITY = "public_security"
    ELECTRICAL = "electrical"
    FLOOD_GEOLOGICAL = "flood_geological"
    OTHER = "other"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class HazardStatus(StrEnum):
    OPEN = "open"
    RECTIFIED = "rectified"
    HANDED_OVER = "handed_over"


CLOSED_STATUSES: Final[frozenset[HazardStatus]] = frozenset(
    {HazardStatus.RECTIFIED, HazardStatus.HANDED_OVER}
)

DEFAULT_HIGH_DAYS: Final = 7

# Where a hazard or a villager's request outside police duty is handed over (综治联动);
# labels are in the catalogues.
DEFAULT_DEPARTMENTS: Final[tuple[str, ...]] = (
    "civil_affairs",
    "natural_resources",
    "labour",
    "health",
    "emergency_management",
    "township_government",
    "housing_construction",
    "water_resources",
    "market_regulation",
    "transport",
    "education",
    "power_supply",
    "other",
)


def reinspection_due(
    reported_at: datetime, severity: Severity, *, high_days: int = DEFAULT_HIGH_DAYS
) -> datetime | None:
    """When a hazard must have been re-inspected, or None when it has no deadline.

    Only a high-severity hazard gets one, `high_days` after it was reported (same time zone
    awareness as `reported_at`): those are the ones the county office chases in /overdue and
    the digests. Low and medium hazards stay open without a clock until closed.
    """
    if high_days < 1:
        raise ValueError(f"high_days must be at least 1, got {high_days}")
    if Severity(severity) is not Severity.HIGH:
        return None
    return reported_at + timedelta(days=high_days)
