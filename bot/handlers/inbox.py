"""/requests: the officer's (or supervisor's) inbox of villagers' requests and the actions
on one request. Being written."""

from __future__ import annotations

from aiogram import Router


def build_router() -> Router:
    return Router(name="inbox")
