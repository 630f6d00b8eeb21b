"""/me: an officer's own progress, this month and last, per village, and the month's score and
ranks, in one message."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from aiogram import Router
from aiogram.filters import StateFilter
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.i18n import Translator
from bot.menus import command_or_button, main_menu
from bot.progress import days_left_text, previous_month, progress_line
from bot.replies import Replies
from bot.settings import Settings
from bot.texts import split_blocks
from core.clock import Clock
from core.quota import Progress, Quota, behind_pace, is_met, profile, shortfall
from core.roles import Role
from storage import overview, scores
from storage.models import User


def counters_text(t: Translator, names: Sequence[str]) -> str:
    return t("summary.separator").join(t(f"me.counter.{name}") for name in names)


def _done_text(t: Translator, quota: Quota, progress: Progress) -> str:
    return progress_line(t, quota, progress) or t("summary.none")


def village_block(
    t: Translator,
    name: str,
    *,
    today: date,
    now: tuple[Quota, Progress, int],
    before: tuple[Quota, Progress, int],
) -> list[str]:
    quota, progress, absent = now
    lines = [t("me.village", village=name), t("me.this_month", progress=_done_text(t, *now[:2]))]
    behind = behind_pace(quota, progress, today, absences=absent)
    if behind:
        lines.append(t("me.behind", counters=counters_text(t, behind)))
    elif is_met(quota, progress):
        lines.append(t("me.met"))
    else:
        lines.append(t("me.on_pace"))
    if absent:
        lines.append(t("me.village_absences", count=absent))
    last_quota, last_progress, _ = before
    missing = list(shortfall(last_quota, last_progress).missing())
    verdict = t("me.missed", counters=counters_text(t, missing)) if missing else t("me.met")
    lines.append(t("me.last_month", progress=_done_text(t, *before[:2]), verdict=verdict))
    return lines


async def score_lines(
    session: AsyncSession, t: Translator, settings: Settings, officer_id: int, today: date
) -> list[str]:
    """The month's points so far (exact), the ranks in the station and the county as of the
    last refresh of the standings, and where the points came from."""
    score = await scores.officer_score(
        session, officer_id=officer_id, month=today, tz=settings.tz, table=settings.points
    )
    lines = [t("score.me", points=score.points)]
    ranks = score.ranks
    if ranks is None:
        lines.append(t("score.ranks_pending"))
    else:
        lines.append(
            t(
                "score.ranks",
                time=f"{ranks.refreshed_at.astimezone(settings.tz):%m-%d %H:%M}",
                station_rank=ranks.station_rank,
                station_size=ranks.station_size,
                county_rank=ranks.county_rank,
                county_size=ranks.county_size,
            )
        )
    parts = [
        t("score.part", source=t(f"score_source.{source.value}"), points=points)
        for source, points in score.by_source.items()
        if points
    ]
    if parts:
        lines.append(t("score.me_parts", parts=t("score.separator").join(parts)))
    return lines


async def show_progress(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.officer_id is not None
    today = clock().astimezone(settings.tz).date()
    mine = await overview.officer_overview(
        session,
        officer_id=user.officer_id,
        today=today,
        previous=previous_month(today),
        county=profile(settings.quota_profile),
    )
    if not mine.villages:
        replies.add(message.answer(t("villages.none"), reply_markup=main_menu(Role.OFFICER, t)))
        return
    blocks = [[t("me.title", date=today.isoformat(), days_left=days_left_text(t, today))]]
    blocks += [
        village_block(t, v.name, today=today, now=v.now, before=v.before) for v in mine.villages
    ]
    blocks.append(
        [
            *await score_lines(session, t, settings, user.officer_id, today),
            t("me.absences", count=sum(v.now[2] for v in mine.villages)),
            t("me.hazards", count=mine.open_hazards),
        ]
    )
    for text in split_blocks(["\n".join(block) for block in blocks]):
        replies.add(message.answer(text, reply_markup=main_menu(Role.OFFICER, t)))


def build_router() -> Router:
    router = Router(name="me")
    router.message.register(
        show_progress, command_or_button("me"), HasRole(Role.OFFICER), StateFilter(None)
    )
    return router
