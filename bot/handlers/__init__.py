"""Feature routers, and the one place that fixes the order they are tried in."""

from aiogram import Router

from bot.flows import absence, hazard, request, visit
from bot.handlers import (
    common,
    fallback,
    inbox,
    me,
    membership,
    onboarding,
    profile,
    spotcheck,
    supervisor,
    team,
)


def get_routers() -> list[Router]:
    """Fresh routers in the order they are tried (a router can serve one Dispatcher only).

    /cancel, /help and /language come first: they work from any step of any flow. The
    fallback comes last: it answers whatever nothing else took.
    """
    return [
        membership.build_router(),
        common.build_router(),
        onboarding.build_router(),
        profile.build_router(),
        visit.build_router(),
        hazard.build_router(),
        absence.build_router(),
        request.build_router(),
        inbox.build_router(),
        me.build_router(),
        supervisor.build_router(),
        team.build_router(),
        spotcheck.build_router(),
        fallback.build_router(),
    ]
