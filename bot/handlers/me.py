"""Placeholder: being written (issue 3)."""

from aiogram import Router


def build_router() -> Router:
    return Router(name="me")
