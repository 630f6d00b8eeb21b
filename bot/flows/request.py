"""/request: a villager's request to their village's officer; /myrequests and the villager's
side of a request (adding messages, rating, "not solved"). Being written."""

from __future__ import annotations

from aiogram import Router


def build_router() -> Router:
    return Router(name="request")
