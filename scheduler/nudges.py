"""quota-nudges and village-day-reminders: officers hear before they fall short.

Both read every assignment in one query (storage.pace) and write one outbox message per
officer and reason, held until the end of the quiet hours, with a key (core.nudges) that
the outbox stores once: a second run, or a second process, queues nothing new. A province
has tens of thousands of officers, so the messages are written in batches
(storage.outbox.enqueue_texts) in each officer's language, which the query read with the
assignments, rather than one by one through bot.notify.tell.
"""

from __future__ import annotations

from datetime import date

from bot.i18n import Translator, pick_locale
from bot.progress import days_left_text, progress_line
from core.nudges import QuotaNudge, quota_nudge, quota_nudge_key, village_day_key
from core.quota import month_bounds, profile
from core.schedule import weekday_number
from scheduler.jobs import JobContext
from storage.outbox import TextMessage, enqueue_texts
from storage.pace import AssignmentPace, assignment_pace, village_day_rounds


def _translator(ctx: JobContext, locale: str | None, language_code: str | None) -> Translator:
    return Translator(pick_locale(locale, language_code, ctx.settings.default_locale))


def nudge_text(t: Translator, row: AssignmentPace, nudge: QuotaNudge, today: date) -> str:
    """'张庄村：下村 1/4 天，入户 2/4 户，本月还剩 6 天。' and what is still missing."""
    missing = t("summary.separator").join(
        t(f"nudge.missing.{name}", count=count) for name, count in nudge.missing.items()
    )
    text = t(
        "nudge.quota",
        village=row.village_name,
        progress=progress_line(t, row.quota, row.progress),
        days_left=days_left_text(t, today),
        missing=missing,
    )
    if row.absences:
        text += "\n" + t("nudge.quota_absences", count=row.absences)
    return text


async def quota_nudges(ctx: JobContext) -> str:
    today = ctx.today
    if today.day < ctx.settings.nudge_from_day:
        return f"no nudges before day {ctx.settings.nudge_from_day} of the month ({today})"
    first, last = month_bounds(today)
    async with ctx.sessions() as session, session.begin():
        rows = await assignment_pace(
            session,
            first=first,
            last=last,
            county=profile(ctx.settings.quota_profile),
            bound_only=True,
        )
        messages = []
        for row in rows:
            nudge = quota_nudge(
                row.quota,
                row.progress,
                today,
                absences=row.absences,
                from_day=ctx.settings.nudge_from_day,
            )
            if nudge is None or row.account is None:
                continue
            t = _translator(ctx, row.locale, row.language_code)
            messages.append(
                TextMessage(
                    chat_id=row.account,
                    text=nudge_text(t, row, nudge, today),
                    dedup_key=quota_nudge_key(row.officer_id, row.village_id, today, nudge.behind),
                )
            )
        queued = await enqueue_texts(session, messages, not_before=ctx.send_at)
    return f"{len(rows)} assignments checked, {len(messages)} behind pace, {queued} nudges queued"


async def village_day_reminders(ctx: JobContext) -> str:
    today = ctx.today
    if today.weekday() != weekday_number(ctx.settings.village_day):
        return f"{today} is not the village day ({ctx.settings.village_day})"
    async with ctx.sessions() as session, session.begin():
        rounds = await village_day_rounds(session, day=today)
        messages = []
        for officer in rounds:
            t = _translator(ctx, officer.locale, officer.language_code)
            villages = t("summary.separator").join(officer.villages)
            messages.append(
                TextMessage(
                    chat_id=officer.account,
                    text=t("nudge.village_day", villages=villages),
                    dedup_key=village_day_key(officer.officer_id, today),
                )
            )
        queued = await enqueue_texts(session, messages, not_before=ctx.send_at)
    return f"{len(rounds)} officers with villages today, {queued} reminders queued"
