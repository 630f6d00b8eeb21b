"""Feature routers, and the one place that fixes the order they are tried in."""

from aiogram import Router

from bot.handlers import common, fallback, onboarding, profile


def get_routers() -> list[Router]:
    # /cancel, /help and /language first: they work from any step of any flow.
    # The fallback last: it answers whatever nothing else took.
    return [common.router, onboarding.router, profile.router, fallback.router]
