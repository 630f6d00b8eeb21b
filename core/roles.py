"""Who a Telegram user is to the programme."""

from enum import StrEnum


class Role(StrEnum):
    STRANGER = "stranger"
    VILLAGER = "villager"
    OFFICER = "officer"
    SUPERVISOR = "supervisor"


class AssignmentKind(StrEnum):
    RESIDENT = "resident"  # 驻村民警, from the local station
    CONTACT = "contact"  # 包村民警, from county headquarters


class InviteKind(StrEnum):
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
