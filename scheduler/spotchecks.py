"""spot-checks: every Monday, each supervisor's random sample of last week's visit reports
in their scope (storage.spotchecks), and a note telling them it is waiting for /spotcheck."""

from __future__ import annotations

from datetime import date

from bot.i18n import Translator
from bot.notify import tell
from core.schedule import week_start
from scheduler.jobs import JobContext
from storage import spotchecks


def dedup_key(supervisor_id: int, week: date) -> str:
    return f"spot-checks:{supervisor_id}:{week.isoformat()}"


async def draw_spot_checks(ctx: JobContext) -> str:
    """Draw this week's sample for every supervisor; one transaction per supervisor, so that
    one failing keeps the others' samples. A week drawn before is left as it is."""
    week = week_start(ctx.today)
    size = ctx.settings.spot_check_size
    async with ctx.sessions() as session:
        listed = await spotchecks.supervisors(session)
    reports = supervisors = told = 0
    for supervisor_id, account in listed:
        async with ctx.sessions() as session, session.begin():
            drawn = await spotchecks.draw(
                session, supervisor_id=supervisor_id, week=week, tz=ctx.settings.tz, size=size
            )
            if not drawn:
                continue
            reports += drawn
            supervisors += 1
            if account is None:
                continue  # they see the sample when they join and send /spotcheck

            def compose(t: Translator, count: int = drawn) -> tuple[str, None]:
                return t("spotcheck.drawn", count=count), None

            queued = await tell(
                session,
                chat_id=account,
                default_locale=ctx.settings.default_locale,
                compose=compose,
                dedup_key=dedup_key(supervisor_id, week),
                not_before=ctx.send_at,
            )
            told += queued is not None
    return (
        f"{reports} visit reports drawn for {supervisors} supervisors "
        f"(week of {week.isoformat()}); {told} told"
    )
