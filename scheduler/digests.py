"""weekly-digest and monthly-digest: each supervisor's digest of their stations, and the same
digest on demand (/digest builds it with build_digest too).

A digest is text (the officers behind quota, least done first; requests past a deadline;
hazards past due; visit reports to check; missed village days; the month's ranking), a chart
(scheduler.charts) and an XLSX workbook with the full tables. Long lists are cut to
MAX_LINES in the text (the workbook has them all), and the text is split between whole lines
into messages Telegram accepts. The job queues every part through the outbox at
`ctx.send_at`, with a dedup key per supervisor, period and part.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from bot.notify import translator_for
from bot.progress import progress_line
from bot.request_texts import handler_label, span, when
from bot.settings import Settings
from bot.texts import MAX_MESSAGE, shorten, split_blocks
from core.quota import COUNTERS, is_met
from core.roles import Role
from core.schedule import week_start
from core.scoring import Item, Source, rank
from scheduler import charts
from scheduler.jobs import JobContext
from storage import attention, exports, outbox, scores
from storage.absences import ScopedAbsence, absences_in_scope
from storage.models import OutboxMessage, User
from storage.villages import stations_in_scope, supervisor_scope

# A section of the text lists at most this many lines; the workbook has all of them.
MAX_LINES = 50
_NAME = 30  # names and places are shortened to this many characters in the text
_REASON = 60

Kind = Literal["weekly", "monthly", "now"]


@dataclass(frozen=True)
class Period:
    """What a digest covers: flagged reports and absences dated `first`..`last`; the quota
    pace and the ranking of `as_of`'s month, judged at the start of `as_of`."""

    kind: Kind
    first: date
    last: date
    as_of: date
    key: str  # names the period in dedup keys and file names


def week_that_ended(today: date) -> Period:
    """Monday to Sunday before `today`'s week. Pace is judged when the week is over (on the
    Monday after), or on the month's last day when the week ended a month."""
    last = week_start(today) - timedelta(days=1)
    first = last - timedelta(days=6)
    after = last + timedelta(days=1)
    as_of = after if after.month == last.month else last
    return Period("weekly", first, last, as_of, f"weekly-{first:%G-W%V}")


def month_before(today: date) -> Period:
    """The calendar month before `today`'s, judged on its last day (the whole quota due)."""
    last = today.replace(day=1) - timedelta(days=1)
    return Period("monthly", last.replace(day=1), last, last, f"monthly-{last:%Y-%m}")


def week_so_far(today: date) -> Period:
    """This week from Monday to `today`, as of today: what /digest shows."""
    return Period("now", week_start(today), today, today, f"now-{today.isoformat()}")


@dataclass(frozen=True)
class Digest:
    texts: list[str]  # each within Telegram's message limit
    chart: bytes  # PNG
    chart_caption: str
    workbook: bytes  # XLSX
    workbook_name: str
    workbook_caption: str


@dataclass(frozen=True)
class _Data:
    county_wide: bool
    stations: str  # the scope's station names
    team: list[scores.TeamRow]
    items: list[Item]
    requests: list[attention.OverdueRequest]
    hazards: list[attention.OverdueHazard]
    flagged: list[attention.FlaggedVisit]
    absences: list[ScopedAbsence]


async def _gather(
    session: AsyncSession,
    supervisor_id: int,
    period: Period,
    t: Translator,
    settings: Settings,
    now: datetime,
) -> _Data:
    scope = await stations_in_scope(session, supervisor_id)
    view = await supervisor_scope(session, supervisor_id)
    names = t("summary.separator").join(name for _, name in view.stations)
    tz = settings.tz
    return _Data(
        county_wide=view.county_wide,
        stations=shorten(names, 200),
        team=await scores.team(
            session,
            as_of=period.as_of,
            tz=tz,
            table=settings.points,
            county_profile=settings.quota_profile,
            scope=scope,
        ),
        items=await scores.month_items(session, month=period.as_of, tz=tz, scope=scope),
        requests=await attention.overdue_requests(
            session, now=now, scope=scope, config=settings.deadlines
        ),
        hazards=await attention.overdue_hazards(session, now=now, scope=scope),
        flagged=await attention.flagged_visits(
            session, first=period.first, last=period.last, scope=scope
        ),
        absences=await absences_in_scope(
            session, supervisor_id=supervisor_id, first=period.first, last=period.last
        ),
    )


# --------------------------------------------------------------------------- shared texts


def pace_status(row: scores.TeamRow) -> charts.Status:
    if row.behind:
        return "behind"
    if all(is_met(v.quota, v.progress) for v in row.villages):
        return "met"
    return "on_pace"


def progress_text(t: Translator, row: scores.TeamRow) -> str:
    """'下村 1/8 天，入户 11/8 户' over all the officer's villages."""
    return progress_line(t, row.quota, row.progress) or t("team.no_quota")


def counters_text(t: Translator, names: Sequence[str]) -> str:
    return t("summary.separator").join(t(f"me.counter.{name}") for name in names)


def behind_text(t: Translator, row: scores.TeamRow) -> str:
    """'李庄村（下村天数、入户户数）': where the officer is behind, and on what."""
    return t("digest.behind_separator").join(
        t("digest.behind_in", village=shorten(village, _NAME), counters=counters_text(t, names))
        for village, names in row.behind_in
    )


def month_label(t: Translator, day: date) -> str:
    return t("digest.month", year=day.year, month=day.month)


def _ref(prefix: str, number: int) -> str:
    return f"{prefix}{number:06d}"


def _distance(t: Translator, metres: int) -> str:
    if metres >= 1000:
        return t("digest.distance_km", km=f"{metres / 1000:.1f}")
    return t("digest.distance_m", m=metres)


def _flags(t: Translator, visit: attention.FlaggedVisit) -> str:
    reasons = []
    if visit.far_from_village:
        reasons.append(
            t("digest.flag_far_unknown")
            if visit.distance_m is None
            else t("digest.flag_far", distance=_distance(t, visit.distance_m))
        )
    if visit.reused_photo:
        reasons.append(t("digest.flag_reused"))
    return t("summary.separator").join(reasons)


def _section(t: Translator, title: str, lines: Sequence[str], empty: str) -> list[str]:
    """Blocks of at most one message each: the title, then whole lines; a block that
    would grow too long is continued in the next one under the title again."""
    if not lines:
        return [empty]
    shown = list(lines[:MAX_LINES])
    if len(lines) > MAX_LINES:
        shown.append(t("digest.more", count=len(lines) - MAX_LINES))
    blocks, current = [], title
    for line in shown:
        if len(current) + 1 + len(line) > MAX_MESSAGE:
            blocks.append(current)
            current = f"{title} {t('digest.continued')}"
        current = f"{current}\n{line}"
    return [*blocks, current]


def _title(t: Translator, period: Period, now: datetime, settings: Settings) -> str:
    if period.kind == "monthly":
        return t("digest.title_monthly", month=month_label(t, period.first))
    first, last = f"{period.first:%m-%d}", f"{period.last:%m-%d}"
    if period.kind == "weekly":
        return t("digest.title_weekly", first=first, last=last)
    clock = f"{now.astimezone(settings.tz):%H:%M}"
    return t("digest.title_now", first=first, last=last, time=clock)


def _texts(
    t: Translator, data: _Data, period: Period, now: datetime, settings: Settings
) -> list[str]:
    tz = settings.tz
    behind = [row for row in data.team if row.behind]
    header = "\n".join(
        [
            _title(t, period, now, settings),
            t("digest.scope_county")
            if data.county_wide
            else t("digest.scope_stations", stations=data.stations),
            t(
                "digest.summary",
                officers=len(data.team),
                behind=len(behind),
                requests=len(data.requests),
                hazards=len(data.hazards),
                flagged=len(data.flagged),
                absences=len(data.absences),
            ),
        ]
    )
    month = month_label(t, period.as_of)
    behind_title = (
        t("digest.missed_title", month=month, count=len(behind))
        if period.kind == "monthly"
        else t("digest.behind_title", count=len(behind))
    )

    def officer(row: scores.TeamRow) -> dict[str, str]:
        member = row.standing.member
        return {
            "name": shorten(member.name, _NAME),
            "badge": member.badge,
            "station": shorten(member.station_name, _NAME),
        }

    def request_line(item: attention.OverdueRequest) -> str:
        due = min(item.due(clock) for clock in item.overdue)
        clocks = t("summary.separator").join(
            t(f"request_clock.{clock.value}") for clock in item.overdue
        )
        return t(
            "digest.request_line",
            ref=item.request.ref,
            village=shorten(item.request.village_name, _NAME),
            handler=shorten(handler_label(t, item.request), _NAME),
            clocks=clocks,
            due=when(due, tz),
            late=span(t, now - due),
        )

    ranks = rank({row.standing.member.officer_id: row.standing.points for row in data.team})
    ranking = sorted(data.team, key=lambda r: (r.standing.county_rank, r.standing.member.badge))
    blocks = [header]
    blocks += _section(
        t,
        behind_title,
        [
            t(
                "digest.behind_line",
                progress=progress_text(t, row),
                counters=behind_text(t, row),
                **officer(row),
            )
            for row in behind
        ],
        t("digest.behind_none"),
    )
    blocks += _section(
        t,
        t("digest.requests_title", count=len(data.requests)),
        [request_line(item) for item in data.requests],
        t("digest.requests_none"),
    )
    blocks += _section(
        t,
        t("digest.hazards_title", count=len(data.hazards)),
        [
            t(
                "digest.hazard_line",
                ref=_ref("H", h.id),
                village=shorten(h.village_name, _NAME),
                category=t(f"hazard_category.{h.category}"),
                severity=t(f"severity.{h.severity}"),
                officer=shorten(h.officer_name, _NAME),
                due=f"{h.due_at.astimezone(tz):%m-%d}",
            )
            for h in data.hazards
        ],
        t("digest.hazards_none"),
    )
    blocks += _section(
        t,
        t("digest.flagged_title", count=len(data.flagged)),
        [
            t(
                "digest.flagged_line",
                ref=_ref("V", v.id),
                day=f"{v.visit_date:%m-%d}",
                officer=shorten(v.officer_name, _NAME),
                village=shorten(v.village_name, _NAME),
                reasons=_flags(t, v),
            )
            for v in data.flagged
        ],
        t("digest.flagged_none"),
    )
    blocks += _section(
        t,
        t("digest.absences_title", count=len(data.absences)),
        [
            t(
                "digest.absence_line",
                day=f"{a.day:%m-%d}",
                officer=shorten(a.officer_name, _NAME),
                village=shorten(a.village_name, _NAME),
                reason=shorten(a.reason, _REASON),
            )
            for a in data.absences
        ],
        t("digest.absences_none"),
    )
    blocks += _section(
        t,
        t("digest.ranking_title", month=month),
        [
            t(
                "digest.ranking_line",
                rank=ranks[row.standing.member.officer_id],
                points=row.standing.points,
                station_rank=row.standing.station_rank,
                county_rank=row.standing.county_rank,
                **officer(row),
            )
            for row in ranking
        ],
        t("digest.ranking_none"),
    )
    return split_blocks(blocks)


# --------------------------------------------------------------------------- chart, workbook


def _chart(t: Translator, data: _Data, period: Period, settings: Settings) -> bytes:
    bars = [
        charts.Bar(
            label=f"{row.standing.member.name} {row.standing.member.badge}",
            share=row.done,
            detail=progress_text(t, row),
            status=pace_status(row),
        )
        for row in data.team
    ]
    values = {
        "scope": t("digest.chart.scope_county") if data.county_wide else data.stations,
        "count": len(bars),
        "day": f"{period.as_of:%m-%d}",
    }
    subtitle = (
        t("digest.chart.subtitle_lowest", shown=charts.MAX_BARS, **values)
        if len(bars) > charts.MAX_BARS
        else t("digest.chart.subtitle", **values)
    )
    text = charts.ChartText(
        title=t("digest.chart.title", month=month_label(t, period.as_of)),
        subtitle=subtitle,
        legend={status: t(f"digest.chart.{status}") for status in charts.STATUSES},
        quota=t("digest.chart.quota"),
        empty=t("digest.chart.empty"),
    )
    return charts.progress_chart(bars, text, font=settings.chart_font)


def _sheets(t: Translator, data: _Data, settings: Settings) -> list[exports.Sheet]:
    tz = settings.tz

    def columns(*names: str) -> list[str]:
        return [t(f"digest.col.{name}") for name in names]

    team = exports.Sheet(
        t("digest.sheet.team"),
        columns(
            "badge",
            "name",
            "station",
            *(part for name in COUNTERS for part in (name, f"quota_{name}")),
            "done",
            "status",
            "behind",
            "absences",
            "points",
            "station_rank",
            "county_rank",
        ),
        [
            (
                row.standing.member.badge,
                row.standing.member.name,
                row.standing.member.station_name,
                *(
                    value
                    for name in COUNTERS
                    for value in (getattr(row.progress, name), getattr(row.quota, name))
                ),
                round(row.done * 100),
                t(f"digest.chart.{pace_status(row)}"),
                behind_text(t, row),
                sum(v.absences for v in row.villages),
                row.standing.points,
                row.standing.station_rank,
                row.standing.county_rank,
            )
            for row in data.team
        ],
    )
    ranked = sorted(data.team, key=lambda r: (r.standing.county_rank, r.standing.member.badge))
    ranks = rank({r.standing.member.officer_id: r.standing.points for r in data.team})
    ranking = exports.Sheet(
        t("digest.sheet.ranking"),
        [
            *columns("rank", "badge", "name", "station"),
            *(t(f"score_source.{source.value}") for source in Source),
            *columns("points", "station_rank", "county_rank"),
        ],
        [
            (
                ranks[r.standing.member.officer_id],
                r.standing.member.badge,
                r.standing.member.name,
                r.standing.member.station_name,
                *(r.standing.by_source[source] for source in Source),
                r.standing.points,
                r.standing.station_rank,
                r.standing.county_rank,
            )
            for r in ranked
        ],
    )
    members = {r.standing.member.officer_id: r.standing.member for r in data.team}
    table = settings.points

    def item_label(item: Item) -> str:
        if item.source is Source.ACTIVITY:
            return t(f"activity.{item.code}")
        return t(f"score_source.{item.code}")

    items = exports.Sheet(
        t("digest.sheet.items"),
        columns("badge", "name", "source", "code", "record", "units", "points"),
        [
            (
                members[i.officer_id].badge,
                members[i.officer_id].name,
                t(f"score_source.{i.source.value}"),
                item_label(i),
                i.record,
                i.units,
                i.points(table),
            )
            for i in data.items
            if i.officer_id in members
        ],
    )
    requests = exports.Sheet(
        t("digest.sheet.requests"),
        columns("ref", "village", "handler", "category", "request_status", "overdue", "due"),
        [
            (
                item.request.ref,
                item.request.village_name,
                handler_label(t, item.request),
                t(f"request_category.{item.request.category}"),
                t(f"request_status.{item.request.status.value}"),
                t("summary.separator").join(t(f"request_clock.{c.value}") for c in item.overdue),
                min(item.due(c) for c in item.overdue).astimezone(tz),
            )
            for item in data.requests
        ],
    )
    hazards = exports.Sheet(
        t("digest.sheet.hazards"),
        columns(
            "ref",
            "village",
            "station",
            "officer",
            "badge",
            "category",
            "severity",
            "reported",
            "due",
            "description",
        ),
        [
            (
                _ref("H", h.id),
                h.village_name,
                h.station_name,
                h.officer_name,
                h.officer_badge,
                t(f"hazard_category.{h.category}"),
                t(f"severity.{h.severity}"),
                h.reported_at.astimezone(tz),
                h.due_at.astimezone(tz),
                h.description,
            )
            for h in data.hazards
        ],
    )
    flagged = exports.Sheet(
        t("digest.sheet.flagged"),
        columns("ref", "day", "officer", "badge", "village", "distance_m", "far", "reused"),
        [
            (
                _ref("V", v.id),
                v.visit_date,
                v.officer_name,
                v.officer_badge,
                v.village_name,
                v.distance_m,
                v.far_from_village,
                v.reused_photo,
            )
            for v in data.flagged
        ],
    )
    absences = exports.Sheet(
        t("digest.sheet.absences"),
        columns("day", "officer", "badge", "village", "station", "reason"),
        [
            (a.day, a.officer_name, a.officer_badge, a.village_name, a.station_name, a.reason)
            for a in data.absences
        ],
    )
    return [team, ranking, items, requests, hazards, flagged, absences]


def _workbook(sheets: Sequence[exports.Sheet]) -> bytes:
    out = io.BytesIO()
    exports.write_workbook(out, sheets)
    return out.getvalue()


async def build_digest(
    session: AsyncSession,
    *,
    supervisor_id: int,
    period: Period,
    t: Translator,
    settings: Settings,
    now: datetime,
) -> Digest:
    """The supervisor's digest for `period` in `t`'s language, as of `now`."""
    data = await _gather(session, supervisor_id, period, t, settings, now)
    # Drawing and zipping take a moment of CPU: off the event loop.
    chart = await asyncio.to_thread(_chart, t, data, period, settings)
    workbook = await asyncio.to_thread(_workbook, _sheets(t, data, settings))
    month = month_label(t, period.as_of)
    return Digest(
        texts=_texts(t, data, period, now, settings),
        chart=chart,
        chart_caption=t("digest.chart_caption", month=month),
        workbook=workbook,
        workbook_name=f"digest-{period.key}.xlsx",
        workbook_caption=t("digest.workbook_caption"),
    )


# --------------------------------------------------------------------------- the jobs


async def _queue(
    session: AsyncSession, chat_id: int, key: str, digest: Digest, not_before: datetime
) -> None:
    for number, text in enumerate(digest.texts, start=1):
        await outbox.enqueue(
            session, chat_id=chat_id, text=text, dedup_key=f"{key}:text{number}",
            not_before=not_before,
        )  # fmt: skip
    await outbox.enqueue(
        session,
        chat_id=chat_id,
        method="sendPhoto",
        payload={"photo": outbox.attachment(digest.chart, "digest.png")},
        text=digest.chart_caption,
        dedup_key=f"{key}:chart",
        not_before=not_before,
    )
    await outbox.enqueue(
        session,
        chat_id=chat_id,
        method="sendDocument",
        payload={"document": outbox.attachment(digest.workbook, digest.workbook_name)},
        text=digest.workbook_caption,
        dedup_key=f"{key}:workbook",
        not_before=not_before,
    )


async def send_digests(ctx: JobContext, period: Period) -> str:
    """The digest of `period` to every supervisor with an account (not blocked), one
    transaction each. A supervisor whose digest was queued already is skipped before any
    work, and every part's dedup key keeps a concurrent run from doubling it."""
    async with ctx.sessions() as session:
        recipients = (
            await session.execute(
                select(User.id, User.supervisor_id)
                .where(
                    User.role == Role.SUPERVISOR.value,
                    User.supervisor_id.is_not(None),
                    User.blocked_at.is_(None),
                )
                .order_by(User.supervisor_id)
            )
        ).all()
    queued = skipped = 0
    for chat_id, supervisor_id in recipients:
        assert supervisor_id is not None
        key = f"digest:{period.key}:supervisor-{supervisor_id}"
        async with ctx.sessions() as session, session.begin():
            done = await session.scalar(
                select(OutboxMessage.id).where(OutboxMessage.dedup_key == f"{key}:text1")
            )
            if done is not None:
                skipped += 1
                continue
            t = await translator_for(session, chat_id, ctx.settings.default_locale)
            digest = await build_digest(
                session,
                supervisor_id=supervisor_id,
                period=period,
                t=t,
                settings=ctx.settings,
                now=ctx.now,
            )
            await _queue(session, chat_id, key, digest, ctx.send_at)
            queued += 1
    return f"{period.key}: {queued} digest(s) queued, {skipped} already queued"


async def weekly_digest(ctx: JobContext) -> str:
    return await send_digests(ctx, week_that_ended(ctx.today))


async def monthly_digest(ctx: JobContext) -> str:
    return await send_digests(ctx, month_before(ctx.today))
