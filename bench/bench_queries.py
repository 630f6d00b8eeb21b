"""Queries at province scale: a generated province, and the time of the queries that read it
most: the quota shortfall of every assignment, one officer's /me, a supervisor's digest.

    python bench/bench_queries.py [--villages 52033] [--officers N] [--months 12]
        [--today 2026-11-23] [--runs 5] [--digest-runs 3] [--no-county-digest]

The province is generated in a scratch database with set-based SQL (INSERT … SELECT over
generate_series): 52,033 villages, 20 to a station (2,602 stations); 30,000 officers, three
in four residents of two or three neighbouring villages (every village has one), the rest
contact officers covering five or six villages each (four villages in five have one); 95 %
of the officers bound to a Telegram account; a supervisor per station and a county-wide one;
two villagers per village; a station in twenty on the `changde` profile and a village in
fifty with its own counters. Then `--months` months of work up to `--today`: about 3 million
visit reports (residents 1–7 a month per village, contact officers 0–2; households, 1–3
activities, a location on four in five, 3 % far from the village, photos on one in five,
0.3 % of the photos reused), absences (one assignment-month in ten), hazards (15 % of
village-months; high severity with a re-inspection date, most closed) and villagers' requests
(25 % of village-months) with histories that replay under core.requests (mostly resolved,
some forwarded, reopened or closed, a few left open and overdue). Reports are inserted in
date order, as they arrive, so that ids follow dates, with month_tallies' triggers disabled;
the tallies are then built once by migration 0012's backfill and the triggers enabled. Then
VACUUM ANALYZE (autovacuum's steady state: visibility map set, statistics fresh).

Each measurement calls the production code (storage, bot.progress, scheduler.digests) in a
fresh session per run, as a handler or a job does, and prints the median and the worst of
`--runs` runs (the worst includes the first, cold run). The SQL each one sends is then run
again under EXPLAIN (ANALYZE, BUFFERS), and the plan's key facts are printed: execution
time, buffers, JIT, and every scan: table, index, rows read and kept.

1. quota shortfall of every assignment: storage.pace.assignment_pace as quota-nudges calls
   it (bound officers, this month), then core.nudges.quota_nudge for each row; the
   standings refresh; what month_tallies' triggers add to a report's insert (1,000 reports
   through storage.visits.save_visit with the triggers and without, rolled back);
2. /me of a resident and of a contact officer: what bot/handlers/me.py runs;
3. the weekly digest of the county-wide supervisor and of a one-station supervisor:
   scheduler.digests' data (_gather, and each query in it), text, chart and workbook.

Uses DATABASE_URL's server (a scratch database, dropped at the end), else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from common import plain_url, scratch_database
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.i18n import Translator
from bot.progress import previous_month
from bot.settings import Settings
from core.nudges import quota_nudge
from core.quota import month_bounds, profile
from core.requests import (
    Actor,
    Event,
    HistoryEntry,
    deadline_state,
    most_urgent,
    replay,
    timeline_of,
)
from scheduler import digests
from storage import attention, overview, scores, standings, villages, visits
from storage.absences import absences_in_scope
from storage.db import make_engine
from storage.migrate import upgrade
from storage.pace import assignment_pace
from storage.requests import OPEN_VALUES

OFFICER_ACCOUNTS = 800_000_000  # Telegram ids: officer n is 800,000,000 + n
SUPERVISOR_ACCOUNTS = 900_000_000
VILLAGER_ACCOUNTS = 1_000_000_000
RESIDENT_SHARE = 0.75  # of the officers; the rest are contact officers
PROVINCE_VILLAGES, PROVINCE_OFFICERS = 52_033, 30_000


@dataclass(frozen=True)
class Shape:
    villages: int
    officers: int
    months: int
    today: date  # the day of the measurements; reports go up to the day before
    timezone: str

    @property
    def stations(self) -> int:
        return (self.villages + 19) // 20

    @property
    def residents(self) -> int:
        return round(self.officers * RESIDENT_SHARE)

    @property
    def first_month(self) -> date:
        first = self.today.replace(day=1)
        for _ in range(self.months - 1):
            first = (first - timedelta(days=1)).replace(day=1)
        return first

    @property
    def now(self) -> datetime:
        """08:00 on `today` in county time: when the weekly digest runs."""
        return datetime.combine(self.today, dtime(8), ZoneInfo(self.timezone))


# --------------------------------------------------------------------------- generation

# Each statement takes the shape as named parameters ($1 … in the order of _ARGS).
_ARGS = ("villages", "stations", "officers", "residents", "months", "first", "today", "now", "tz")

# The months of the period: (m, first day, days in the month).
_MONTHS = """
    (SELECT m, (date_trunc('month', $6::date) + m * interval '1 month')::date AS start,
            extract(day from date_trunc('month', $6::date) + (m + 1) * interval '1 month'
                    - interval '1 day')::int AS days
       FROM generate_series(0, $5 - 1) m) months
"""

GENERATE: list[tuple[str, str]] = [
    (
        "stations",
        """INSERT INTO stations (id, code, name)
           SELECT s, 'S' || lpad(s::text, 5, '0'), '第' || s || '派出所'
             FROM generate_series(1, $2) s""",
    ),
    (
        "villages",
        """INSERT INTO villages (id, code, name, station_id, latitude, longitude, join_token)
           SELECT v, 'V' || lpad(v::text, 7, '0'), v || '号村', (v - 1) / 20 + 1,
                  31.5 + (v % 400) * 0.01, 110.5 + (v / 400) * 0.01, md5('village-' || v)
             FROM generate_series(1, $1) v""",
    ),
    (
        "officers",
        """INSERT INTO officers (id, badge, name)
           SELECT o, 'B' || lpad(o::text, 6, '0'), '民警' || o FROM generate_series(1, $3) o""",
    ),
    (
        "assignments",
        # Residents: consecutive villages, two or three each. Contact officers: a run of
        # about seven villages, of which every fifth has none.
        """INSERT INTO assignments (officer_id, village_id, kind)
           SELECT 1 + ((v - 1)::bigint * $4 / $1), v, 'resident' FROM generate_series(1, $1) v
           UNION ALL
           SELECT $4 + 1 + ((v - 1)::bigint * ($3 - $4) / $1), v, 'contact'
             FROM generate_series(1, $1) v WHERE v % 5 <> 0""",
    ),
    (
        "officers' accounts",
        f"""INSERT INTO users (id, role, officer_id, first_name, language_code)
            SELECT {OFFICER_ACCOUNTS} + o, 'officer', o, '民警' || o, 'zh-hans'
              FROM generate_series(1, $3) o WHERE o % 20 <> 0""",
    ),
    (
        "supervisors",
        """INSERT INTO supervisors (id, name, county_wide)
           SELECT s, '所长' || s, false FROM generate_series(1, $2) s
           UNION ALL SELECT $2 + 1, '督导', true""",
    ),
    (
        "supervisor_stations",
        "INSERT INTO supervisor_stations SELECT s, s FROM generate_series(1, $2) s",
    ),
    (
        "supervisors' accounts",
        f"""INSERT INTO users (id, role, supervisor_id, first_name, language_code)
            SELECT {SUPERVISOR_ACCOUNTS} + s, 'supervisor', s, '督导' || s, 'zh-hans'
              FROM generate_series(1, $2 + 1) s""",
    ),
    (
        "villagers",
        f"""INSERT INTO users (id, role, first_name, language_code)
            SELECT {VILLAGER_ACCOUNTS} + k, 'villager', '村民' || k, 'zh-hans'
              FROM generate_series(1, 2 * $1) k""",
    ),
    (
        "villager_memberships",
        f"""INSERT INTO villager_memberships (user_id, village_id, joined_at)
            SELECT {VILLAGER_ACCOUNTS} + k, (k - 1) % $1 + 1, $6::date
              FROM generate_series(1, 2 * $1) k""",
    ),
    (
        "quota_overrides",
        """INSERT INTO quota_overrides (station_id, profile)
           SELECT s, 'changde' FROM generate_series(1, $2) s WHERE s % 20 = 0;
           INSERT INTO quota_overrides (village_id, visit_days, households)
           SELECT v, 6, 8 FROM generate_series(1, $1) v WHERE v % 50 = 7""",
    ),
    (
        "visit_reports",
        # Ids in date order, as reports arrive; nothing dated today (it is 08:00).
        f"""INSERT INTO visit_reports (id, draft_id, officer_id, village_id, visit_date, hours,
                households, latitude, longitude, distance_m, far_from_village, notes,
                submitted_by, submitted_at)
            SELECT n, 'bench-v' || n, officer_id, village_id, visit_date,
                   1.0 + floor(r2 * 10) / 2, floor(r1 * 9)::int,
                   CASE WHEN distance IS NOT NULL THEN 31.5 END,
                   CASE WHEN distance IS NOT NULL THEN 110.5 END,
                   distance, coalesce(distance > 2000, false),
                   CASE WHEN r1 < 0.3 THEN '走访群众，了解社情民意' END,
                   {OFFICER_ACCOUNTS} + officer_id,
                   (visit_date + time '17:30') AT TIME ZONE $9 + floor(r3 * 2) * interval '1 day'
              FROM (SELECT row_number() OVER (ORDER BY visit_date, officer_id, village_id) n, *,
                           CASE WHEN r2 < 0.2 THEN NULL
                                WHEN r3 < 0.03 THEN 2100 + (r3 * 500000)::int
                                ELSE (r3 * 1500)::int END AS distance
                      FROM (SELECT a.officer_id, a.village_id,
                                   months.start + floor(random() * months.days)::int visit_date,
                                   random() r1, random() r2, random() r3
                              FROM assignments a
                             CROSS JOIN {_MONTHS}
                             CROSS JOIN LATERAL generate_series(1,
                                   CASE WHEN a.kind = 'resident' THEN 1 + floor(random() * 7)
                                        ELSE floor(random() * 3) END::int) k) drawn
                     WHERE visit_date < $7) dated""",
    ),
    (
        "visit_activities",
        # household_visit when households were visited; a patrol on two in five; one more
        # activity on three in five.
        """INSERT INTO visit_activities (report_id, code, count)
           SELECT id, a.code, a.n
             FROM (SELECT id, households, random() p, random() q, random() x, random() y
                     FROM visit_reports) r
            CROSS JOIN LATERAL (VALUES
                  ('household_visit', 1, households > 0),
                  ('patrol', 1 + (y < 0.3)::int, p < 0.4),
                  ((ARRAY['dispute_mediation', 'legal_publicity', 'info_collection',
                          'hazard_inspection', 'resident_service', 'hardship_help',
                          'clue_collected', 'school_duty', 'venue_inspection',
                          'linkage_matter', 'other'])[1 + floor(x * 11)::int],
                   CASE WHEN x >= 7.0 / 11 AND x < 8.0 / 11 OR x >= 10.0 / 11 THEN 1
                        ELSE 1 + floor(y * 3)::int END,
                   q < 0.6)) a(code, n, keep)
            WHERE a.keep
            ORDER BY id""",
    ),
    (
        "photos (visits)",
        """INSERT INTO photos (visit_report_id, role, position, file_id, file_unique_id,
                sha256, path, size, reused, next_attempt_at, downloaded_at, created_at)
           SELECT id, 'evidence', p - 1, 'AgACAgUAAx' || md5('f' || id || '-' || p),
                  md5('u' || id || '-' || p), md5('a' || id || p) || md5('b' || id || p),
                  'media/' || id || '-' || p || '.jpg', 150000, random() < 0.003,
                  submitted_at, submitted_at + interval '1 minute', submitted_at
             FROM (SELECT id, submitted_at, random() AS pick, random() AS two
                     FROM visit_reports) r
            CROSS JOIN LATERAL generate_series(1,
                  CASE WHEN pick < 0.2 THEN 1 + (two < 0.5)::int ELSE 0 END) p""",
    ),
    (
        "absences",
        f"""INSERT INTO absences (draft_id, officer_id, village_id, day, reason, reported_at)
            SELECT 'bench-a' || row_number() OVER (ORDER BY day), officer_id, village_id, day,
                   '参加县局集中培训', (day - 1 + time '20:00') AT TIME ZONE $9
              FROM (SELECT a.officer_id, a.village_id, random() p,
                           months.start + floor(random() * months.days)::int AS day
                      FROM assignments a CROSS JOIN {_MONTHS}) drawn
             WHERE p < 0.1 AND day < $7""",
    ),
    (
        "hazards",
        # Reported by the resident officer; most are closed 1–21 days later, one in ten
        # stays open; high severity has a re-inspection date a week on.
        f"""INSERT INTO hazards (id, draft_id, officer_id, village_id, category, severity,
                description, latitude, longitude, distance_m, status, reported_by, reported_at,
                due_at, closed_at, closed_how, closing_note)
            SELECT n, 'bench-h' || n, officer_id, village_id,
                   (ARRAY['fire', 'traffic', 'public_security', 'electrical',
                          'flood_geological', 'other'])[1 + floor(s1 * 6)::int],
                   severity, '发现安全隐患，已告知村委会', 31.5, 110.5, 300, status,
                   {OFFICER_ACCOUNTS} + officer_id, reported_at,
                   CASE WHEN severity = 'high' THEN reported_at + interval '7 days' END,
                   CASE WHEN status <> 'open' THEN closes END,
                   CASE status WHEN 'rectified' THEN 'rectified'
                               WHEN 'handed_over' THEN 'township_government' END,
                   CASE WHEN status <> 'open' THEN '已整改' END
              FROM (SELECT row_number() OVER (ORDER BY reported_at) n, *,
                           CASE WHEN s4 < 0.2 THEN 'high' WHEN s4 < 0.6 THEN 'medium'
                                ELSE 'low' END severity,
                           CASE WHEN closes >= $8 OR s2 >= 0.9 THEN 'open'
                                WHEN s1 < 0.6 THEN 'rectified' ELSE 'handed_over' END status
                      FROM (SELECT officer_id, village_id, reported_at, s1, s2, s4,
                                   reported_at + (1 + s3 * 20) * interval '1 day' closes
                              FROM (SELECT a.officer_id, a.village_id, random() p,
                                           random() s1, random() s2, random() s3, random() s4,
                                           (months.start + time '09:00') AT TIME ZONE $9
                                           + random() * months.days * interval '1 day'
                                           AS reported_at
                                      FROM assignments a CROSS JOIN {_MONTHS}
                                     WHERE a.kind = 'resident') drawn
                             WHERE p < 0.15 AND reported_at < $8) dated) decided""",
    ),
    (
        "photos (hazards)",
        """INSERT INTO photos (hazard_id, role, position, file_id, file_unique_id, sha256,
                path, size, next_attempt_at, downloaded_at, created_at)
           SELECT id, role, 0, 'AgACAgUAAx' || md5(role || id), md5('h' || role || id),
                  md5('c' || role || id) || md5('d' || role || id),
                  'media/h' || id || role || '.jpg', 150000, at, at, at
             FROM (SELECT id, 'evidence' AS role, reported_at AS at FROM hazards
                   UNION ALL
                   SELECT id, 'after', closed_at FROM hazards WHERE status = 'rectified') p""",
    ),
    # Requests: a path through the lifecycle each (core.requests' transitions), chosen so
    # that every event lies before now: 1 resolved and rated, 2 resolved, 3 closed as not a
    # police matter, 4 forwarded, returned and resolved, 5 open at a department, 6 answered,
    # 7 acknowledged, 8 new, 9 resolved, reopened and resolved again.
    (
        "requests",
        f"""CREATE TEMP TABLE bench_requests AS
            SELECT row_number() OVER (ORDER BY created_at) id, *,
                   CASE WHEN created_at + (ARRAY[60, 30, 5, 120, 10, 12, 5, 0, 90])[chosen]
                             * interval '1 hour' <= $8 THEN chosen
                        WHEN created_at + interval '12 hours' <= $8 THEN 6
                        WHEN created_at + interval '5 hours' <= $8 THEN 7
                        ELSE 8 END AS path
              FROM (SELECT village_id, officer_id, created_at, q,
                           {VILLAGER_ACCOUNTS} + village_id + (q < 0.5)::int * $1 villager_id,
                           CASE WHEN p < 0.55 THEN 1 WHEN p < 0.75 THEN 2 WHEN p < 0.83 THEN 3
                                WHEN p < 0.91 THEN 4 WHEN p < 0.985 THEN 9
                                WHEN p < 0.99 THEN 5 WHEN p < 0.994 THEN 6
                                WHEN p < 0.997 THEN 7 ELSE 8 END chosen
                      FROM (SELECT a.village_id, a.officer_id, random() p, random() q, random() w,
                                   (months.start + time '07:00') AT TIME ZONE $9
                                   + random() * months.days * interval '1 day' AS created_at
                              FROM assignments a CROSS JOIN {_MONTHS}
                             WHERE a.kind = 'resident') drawn
                     WHERE w < 0.25 AND created_at < $8) dated;
            INSERT INTO requests (id, draft_id, villager_id, village_id, officer_id, category,
                   body, anonymous, status, department, rating, created_at, updated_at)
            SELECT id, 'bench-r' || id, villager_id, village_id, officer_id,
                   (ARRAY['dispute', 'safety', 'registration', 'hardship', 'other'])
                   [1 + floor(q * 5)::int], '邻里因宅基地边界发生纠纷，请民警帮助调解',
                   q < 0.2,
                   (ARRAY['resolved', 'resolved', 'closed', 'resolved', 'forwarded',
                          'answered', 'acknowledged', 'new', 'resolved'])[path],
                   CASE WHEN path IN (4, 5) THEN 'township_government' END,
                   CASE WHEN path = 1 THEN 4 + (q < 0.7)::int END,
                   created_at,
                   created_at + (ARRAY[60, 30, 5, 120, 10, 12, 5, 0, 90])[path]
                   * interval '1 hour'
              FROM bench_requests ORDER BY id""",
    ),
    (
        "request_events",
        f"""INSERT INTO request_events (request_id, at, event, actor, user_id, officer_id,
                body, department, rating)
            SELECT r.id, r.created_at + s.hours * interval '1 hour', s.event, s.actor,
                   CASE WHEN s.actor = 'villager' THEN r.villager_id
                        ELSE {OFFICER_ACCOUNTS} + r.officer_id END,
                   CASE WHEN s.actor = 'officer' THEN r.officer_id END,
                   CASE WHEN s.event IN ('replied', 'closed_not_police')
                        THEN '您好，已了解情况，正在处理' END,
                   CASE WHEN s.event = 'forwarded' THEN 'township_government' END,
                   CASE WHEN s.event = 'rated' THEN 4 + (r.q < 0.7)::int END
              FROM bench_requests r
              JOIN (VALUES
                    (1, 1, 'created', 'villager', 0), (1, 2, 'acknowledged', 'officer', 2),
                    (1, 3, 'replied', 'officer', 20), (1, 4, 'resolved', 'officer', 40),
                    (1, 5, 'rated', 'villager', 60),
                    (2, 1, 'created', 'villager', 0), (2, 2, 'acknowledged', 'officer', 3),
                    (2, 3, 'resolved', 'officer', 30),
                    (3, 1, 'created', 'villager', 0), (3, 2, 'acknowledged', 'officer', 1),
                    (3, 3, 'closed_not_police', 'officer', 5),
                    (4, 1, 'created', 'villager', 0), (4, 2, 'acknowledged', 'officer', 2),
                    (4, 3, 'forwarded', 'officer', 10), (4, 4, 'returned', 'officer', 100),
                    (4, 5, 'resolved', 'officer', 120),
                    (5, 1, 'created', 'villager', 0), (5, 2, 'acknowledged', 'officer', 2),
                    (5, 3, 'forwarded', 'officer', 10),
                    (6, 1, 'created', 'villager', 0), (6, 2, 'replied', 'officer', 12),
                    (7, 1, 'created', 'villager', 0), (7, 2, 'acknowledged', 'officer', 5),
                    (8, 1, 'created', 'villager', 0),
                    (9, 1, 'created', 'villager', 0), (9, 2, 'acknowledged', 'officer', 2),
                    (9, 3, 'replied', 'officer', 20), (9, 4, 'resolved', 'officer', 40),
                    (9, 5, 'reopened', 'villager', 60), (9, 6, 'replied', 'officer', 70),
                    (9, 7, 'resolved', 'officer', 90)
                   ) s(path, seq, event, actor, hours) ON s.path = r.path
             ORDER BY r.id, s.seq""",
    ),
]

_SEQUENCES = ("stations", "villages", "officers", "supervisors", "visit_reports", "hazards")
_TALLIED = ("visit_reports", "visit_activities")  # the tables with month_tallies' triggers


def _tallies_migration() -> ModuleType:
    """Migration 0012, for its BACKFILL and TRIGGERS."""
    path = Path(__file__).resolve().parents[1] / "storage/migrations/versions/0012_month_tallies.py"
    spec = importlib.util.spec_from_file_location("month_tallies_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def tally_triggers(conn: asyncpg.Connection, enable: bool) -> None:
    """month_tallies' triggers (migration 0012) on or off."""
    for table, _, kind, _ in _tallies_migration().TRIGGERS:
        action = "ENABLE" if enable else "DISABLE"
        await conn.execute(f"ALTER TABLE {table} {action} TRIGGER month_tallies_{kind.lower()}")


async def generate(conn: asyncpg.Connection, shape: Shape) -> None:
    """The province, table by table, each with its time and row count."""
    args = {
        "villages": shape.villages,
        "stations": shape.stations,
        "officers": shape.officers,
        "residents": shape.residents,
        "months": shape.months,
        "first": shape.first_month,
        "today": shape.today,
        "now": shape.now,
        "tz": shape.timezone,
    }
    await conn.execute("SELECT setseed(0.6)")  # the same province every time
    # The reports arrive in bulk: month_tallies is built once at the end, not recomputed
    # by its triggers at each statement.
    await tally_triggers(conn, enable=False)
    started = time.perf_counter()
    for label, sql in GENERATE:
        step = time.perf_counter()
        for statement in sql.split(";"):
            used = sorted({int(n) for n in _placeholders(statement)})
            # asyncpg wants exactly the parameters a statement uses, so renumber them.
            for new, old in enumerate(used, start=1):
                statement = statement.replace(f"${old}", f"$§{new}")
            statement = statement.replace("$§", "$")
            await conn.execute(statement, *(args[_ARGS[n - 1]] for n in used))
        print(f"  {label:<24} {time.perf_counter() - step:7.1f} s")
    for table in _SEQUENCES:
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
        )
    step = time.perf_counter()
    fixed = await derive_open_requests(conn, shape)
    print(f"  {'open requests due_at':<24} {time.perf_counter() - step:7.1f} s ({fixed:,} open)")
    step = time.perf_counter()
    await conn.execute(_tallies_migration().BACKFILL)
    await tally_triggers(conn, enable=True)
    print(f"  {'month_tallies (backfill)':<24} {time.perf_counter() - step:7.1f} s")
    print(f"generated in {time.perf_counter() - started:.0f} s")
    step = time.perf_counter()
    await conn.execute("VACUUM ANALYZE")
    print(f"VACUUM ANALYZE in {time.perf_counter() - step:.0f} s")


def _placeholders(statement: str) -> Iterator[str]:
    i = statement.find("$")
    while i >= 0:
        j = i + 1
        while j < len(statement) and statement[j].isdigit():
            j += 1
        if j > i + 1:
            yield statement[i + 1 : j]
        i = statement.find("$", j)


async def derive_open_requests(conn: asyncpg.Connection, shape: Shape) -> int:
    """Every history replayed by core.requests, which must give the stored status (a check
    on the generator); the open requests' first deadline stored from it, as
    storage.requests does at every event."""
    rows = await conn.fetch(
        "SELECT request_id, at, event, actor FROM request_events ORDER BY request_id, id"
    )
    history: dict[int, list[HistoryEntry]] = {}
    for row in rows:
        entry = HistoryEntry(row["at"], Event(row["event"]), Actor(row["actor"]))
        history.setdefault(row["request_id"], []).append(entry)
    stored = dict(await conn.fetch("SELECT id, status FROM requests"))
    config = Settings(_env_file=None).deadlines
    updates = []
    for request_id, entries in history.items():
        status = replay(entries)
        if status.value != stored[request_id]:
            raise AssertionError(f"request {request_id}: {status} replayed, {stored[request_id]}")
        if status.value in OPEN_VALUES:
            urgent = most_urgent(deadline_state(timeline_of(entries), shape.now, config))
            due, clock = (None, None) if urgent is None else (urgent[1], urgent[0].value)
            updates.append((request_id, due, clock))
    await conn.executemany("UPDATE requests SET due_at = $2, due_clock = $3 WHERE id = $1", updates)
    return len(updates)


async def table_sizes(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        """SELECT c.relname, c.reltuples::bigint AS n,
                  pg_total_relation_size(c.oid) AS bytes
             FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
            WHERE s.nspname = 'public' AND c.relkind = 'r' AND c.reltuples > 0
            ORDER BY pg_total_relation_size(c.oid) DESC"""
    )
    total = sum(r["bytes"] for r in rows)
    print(f"database: {total / 2**30:.2f} GiB")
    print(
        "  " + ", ".join(f"{r['relname']} {r['n']:,} ({r['bytes'] / 2**20:,.0f} MiB)" for r in rows)
    )


# --------------------------------------------------------------------------- plans


@dataclass
class Capture:
    """The SQL statements sent through the engine while `on`, and those sent to a
    session's driver connection directly (`driver`)."""

    on: bool = False
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def attach(self, engine: AsyncEngine) -> None:
        def before(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if self.on:
                self.statements.append((statement, params))

        event.listen(engine.sync_engine, "before_cursor_execute", before)

    def driver(self, record: asyncpg.connection.LoggedQuery) -> None:
        """A query logger for asyncpg (called soon after each query, not within it)."""
        if self.on:
            self.statements.append((record.query, record.args))


async def explain(session: AsyncSession, statement: str, params: Any) -> dict[str, Any]:
    raw = await session.connection()
    driver = (await raw.get_raw_connection()).driver_connection
    assert driver is not None
    args = list(params) if params else []
    found = await driver.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", *args)
    # SQLAlchemy's asyncpg dialect decodes json itself; a bare connection gives text.
    plans = json.loads(found) if isinstance(found, str) else found
    plan: dict[str, Any] = plans[0]
    return plan


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def plan_facts(plan: dict[str, Any]) -> list[str]:
    """Execution time, buffers, JIT, spills and every scan with the rows it read."""
    root = plan["Plan"]
    jit = plan.get("JIT", {}).get("Timing", {}).get("Total")
    head = (
        f"{plan['Execution Time']:.1f} ms executing, {plan['Planning Time']:.1f} ms planning"
        f"; buffers {root.get('Shared Hit Blocks', 0):,} hit, "
        f"{root.get('Shared Read Blocks', 0):,} read"
    )
    if jit is not None:
        head += f"; JIT {jit:.0f} ms"
    lines = [head]
    for node in _nodes(root):
        kind = node["Node Type"]
        loops = node.get("Actual Loops", 1)
        kept = int(node.get("Actual Rows", 0) * loops)
        removed = int(
            (node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0))
            * loops
        )
        if "Relation Name" in node:
            what = f"{kind} on {node['Relation Name']}"
            if node.get("Index Name"):
                what += f" using {node['Index Name']}"
            if kind == "Bitmap Heap Scan":
                indexes = [c["Index Name"] for c in _nodes(node) if c.get("Index Name")]
                what += f" (bitmap of {', '.join(indexes)})"
            # Per-loop figures are rounded averages: over many loops, the totals are about.
            about = "~" if loops > 1 and not node.get("Parallel Aware") else ""
            read = f"{about}{kept + removed:,} rows read"
            if removed:
                read += f", {about}{kept:,} kept"
            if node.get("Parallel Aware"):
                read += " (parallel)"
            elif loops > 1:
                read += f" in {loops:,} loops"
            lines.append(f"  {what}: {read}")
        if node.get("Sort Space Type") == "Disk":
            lines.append(f"  Sort spilled to disk: {node.get('Sort Space Used', 0):,} kB")
        if node.get("Hash Batches", 1) > 1:
            lines.append(f"  Hash in {node['Hash Batches']} batches (spilled)")
        if node.get("Workers Launched"):
            lines.append(f"  {kind}: {node['Workers Launched']} parallel workers")
    return lines


# --------------------------------------------------------------------------- measuring

Step = Callable[[AsyncSession], Awaitable[Any]]


async def select_one(session: AsyncSession) -> Any:
    return await session.execute(text("SELECT 1"))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


@dataclass
class Bench:
    sessions: async_sessionmaker[AsyncSession]
    capture: Capture
    runs: int

    async def time(self, label: str, step: Step, runs: int | None = None) -> float:
        """`step` in a fresh session `runs` times; prints and returns the median."""
        samples = []
        for _ in range(runs or self.runs):
            async with self.sessions() as session:
                started = time.perf_counter()
                await step(session)
                samples.append(time.perf_counter() - started)
        median = statistics.median(samples)
        print(f"  {label}: median {ms(median)}, worst {ms(max(samples))} ({len(samples)} runs)")
        return median

    async def plans(self, label: str, step: Step) -> None:
        """Run `step` once recording its SQL, then EXPLAIN (ANALYZE, BUFFERS) each statement."""
        self.capture.statements.clear()
        async with self.sessions() as session:
            connection = await session.connection()
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            self.capture.on = True
            try:
                with driver.query_logger(self.capture.driver):
                    await step(session)
                    await asyncio.sleep(0)  # the logger's calls
            finally:
                self.capture.on = False
            # Queries only: a SET or the like has no plan.
            recorded = [
                (statement, params)
                for statement, params in self.capture.statements
                if statement.lstrip().upper().startswith(("SELECT", "WITH"))
            ]
            for number, (statement, params) in enumerate(recorded, start=1):
                plan = await explain(session, statement, params)
                name = f"{label} #{number}" if len(recorded) > 1 else label
                print(f"    plan {name}: {' '.join(statement.split())[:90]}…")
                for line in plan_facts(plan):
                    print(f"      {line}")


async def bench_pace(bench: Bench, settings: Settings, today: date) -> None:
    first, last = month_bounds(today)
    county = profile(settings.quota_profile)

    async def pace(session: AsyncSession) -> Any:
        return await assignment_pace(
            session, first=first, last=last, county=county, bound_only=True
        )

    async with bench.sessions() as session:
        rows = await pace(session)
    print(f"1. quota shortfall of every assignment, {today} ({len(rows):,} assignments)")
    await bench.time("assignment_pace (query and rows), goal < 0.5 s", pace)
    samples, behind = [], 0
    for _ in range(bench.runs):
        started = time.perf_counter()
        behind = sum(
            quota_nudge(
                r.quota, r.progress, today, absences=r.absences, from_day=settings.nudge_from_day
            )
            is not None
            for r in rows
        )
        samples.append(time.perf_counter() - started)
    print(
        f"  core.nudges.quota_nudge for every row: median {ms(statistics.median(samples))}, "
        f"worst {ms(max(samples))} ({behind:,} behind pace)"
    )
    await bench.plans("assignment_pace", pace)


async def bench_refresh(bench: Bench, settings: Settings, today: date) -> None:
    """The standings-refresh job's work: the county's points and ranks, stored."""

    async def refresh(session: AsyncSession) -> Any:
        async with session.begin():
            return await standings.refresh(
                session,
                month=today,
                tz=settings.tz,
                table=settings.points,
                now=datetime.now(ZoneInfo(settings.timezone)),
            )

    print(
        f"1b. standings-refresh (the month's points and ranks of every officer, stored); {load()}"
    )
    await bench.time("standings.refresh", refresh, 3)


async def bench_trigger_cost(
    bench: Bench, conn: asyncpg.Connection, shape: Shape, reports: int = 1000
) -> None:
    """What month_tallies' triggers add to a report's insert: `reports` reports stored one
    by one through storage.visits.save_visit (the report, then its lines), into this month's
    assignments, with the triggers on and off, each batch in a transaction rolled back."""
    pairs = await conn.fetch(
        "SELECT officer_id, village_id FROM assignments ORDER BY officer_id, village_id LIMIT $1",
        reports,
    )
    day = shape.today - timedelta(days=1)
    lines = [{"patrol": 1, "household_visit": 2}, {"dispute_mediation": 1}, {"legal_publicity": 2}]

    async def batch(on: bool, run: int) -> float:
        async with bench.sessions() as session, session.begin():
            if not on:
                for table, _, kind, _ in _tallies_migration().TRIGGERS:
                    await session.execute(
                        text(f"ALTER TABLE {table} DISABLE TRIGGER month_tallies_{kind.lower()}")
                    )
            started = time.perf_counter()
            for n, (officer, village) in enumerate(pairs):
                await visits.save_visit(
                    session,
                    visits.NewVisit(
                        draft_id=f"bench-t{run}-{n}",
                        officer_id=officer,
                        village_id=village,
                        visit_date=day,
                        hours=Decimal("2.0"),
                        households=2,
                        activities=lines[n % len(lines)],
                        latitude=None,
                        longitude=None,
                        distance_m=None,
                        far_from_village=False,
                        notes=None,
                        submitted_by=OFFICER_ACCOUNTS + officer,
                        photos=[],
                    ),
                )
            took = time.perf_counter() - started
            await session.rollback()
        return took

    print(f"1c. month_tallies' triggers on a report's insert ({len(pairs):,} reports); {load()}")
    took: dict[bool, list[float]] = {True: [], False: []}
    for run in range(4):
        on = run % 2 == 0
        took[on].append(await batch(on, run))
    with_, without = min(took[True]), min(took[False])
    print(
        f"  save_visit: {ms(with_ / len(pairs))} a report with the triggers, "
        f"{ms(without / len(pairs))} without: {ms((with_ - without) / len(pairs))} added "
        f"(best of 2 batches each)"
    )


async def pick_officers(conn: asyncpg.Connection, shape: Shape) -> list[tuple[str, int]]:
    """The resident and the contact officer of the middle village."""
    middle = shape.villages // 2
    rows = await conn.fetch(
        """SELECT a.kind, a.officer_id,
                  (SELECT count(*) FROM assignments b WHERE b.officer_id = a.officer_id) n
             FROM assignments a WHERE a.village_id = $1 ORDER BY a.kind DESC""",
        middle,
    )
    return [
        (f"{r['kind']} officer {r['officer_id']} ({r['n']} villages)", r["officer_id"])
        for r in rows
    ]


async def bench_me(bench: Bench, settings: Settings, today: date, officer_id: int) -> None:
    async def mine(session: AsyncSession) -> Any:
        return await overview.officer_overview(
            session,
            officer_id=officer_id,
            today=today,
            previous=previous_month(today),
            county=profile(settings.quota_profile),
        )

    async def score(session: AsyncSession) -> Any:
        return await scores.officer_score(
            session, officer_id=officer_id, month=today, tz=settings.tz, table=settings.points
        )

    steps: list[tuple[str, Step]] = [
        ("overview.officer_overview (villages, this month and last, open hazards)", mine),
        ("scores.officer_score (live points, stored ranks)", score),
    ]

    async def everything(session: AsyncSession) -> None:
        for _, step in steps:
            await step(session)

    await bench.time("a session with SELECT 1 (the floor: checkout, ping, round trip)", select_one)
    await bench.time("all of /me, goal < 5 ms", everything)
    for label, step in steps:
        await bench.time(label, step)
    for label, step in steps:
        await bench.plans(label, step)


async def bench_digest(
    bench: Bench, settings: Settings, shape: Shape, supervisor_id: int, runs: int
) -> float:
    """Prints the digest's parts; returns the time of the whole digest (sum of medians)."""
    t = Translator("zh")
    period = digests.week_that_ended(shape.today)
    now = shape.now
    holder: dict[str, Any] = {}

    async def gather(session: AsyncSession) -> Any:
        holder["data"] = await digests._gather(session, supervisor_id, period, t, settings, now)
        return holder["data"]

    total = await bench.time("data (digests._gather)", gather, runs)
    data = holder["data"]
    print(
        f"    {len(data.team):,} officers, {len(data.items):,} score items, "
        f"{len(data.requests):,} overdue requests, {len(data.hazards):,} hazards past due, "
        f"{len(data.flagged):,} reports to check, {len(data.absences):,} absences"
    )
    for label, work in (
        ("text", lambda: digests._texts(t, data, period, now, settings)),
        ("chart", lambda: digests._chart(t, data, period, settings)),
        ("workbook", lambda: digests._workbook(digests._sheets(t, data, settings))),
    ):
        samples, size = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            out = work()
            samples.append(time.perf_counter() - started)
            size = sum(len(x) for x in out) if isinstance(out, list) else len(out)
        print(
            f"  {label}: median {ms(statistics.median(samples))}, worst {ms(max(samples))}"
            f" ({runs} runs; {size:,} {'characters' if label == 'text' else 'bytes'})"
        )
        total += statistics.median(samples)
    print(f"  the whole digest: {ms(total)}")

    scope_holder: dict[str, Any] = {}

    async def scope(session: AsyncSession) -> Any:
        scope_holder["scope"] = await villages.stations_in_scope(session, supervisor_id)
        return await villages.supervisor_scope(session, supervisor_id)

    async with bench.sessions() as session:
        await scope(session)
    where = scope_holder["scope"]
    parts: list[tuple[str, Step]] = [
        ("stations_in_scope, supervisor_scope", scope),
        (
            "scores.team",
            lambda s: scores.team(
                s,
                as_of=period.as_of,
                tz=settings.tz,
                table=settings.points,
                county_profile=settings.quota_profile,
                scope=where,
            ),
        ),
        (
            "scores.month_items",
            lambda s: scores.month_items(s, month=period.as_of, tz=settings.tz, scope=where),
        ),
        (
            "attention.overdue_requests",
            lambda s: attention.overdue_requests(
                s, now=now, scope=where, config=settings.deadlines
            ),
        ),
        (
            "attention.overdue_hazards",
            lambda s: attention.overdue_hazards(s, now=now, scope=where),
        ),
        (
            "attention.flagged_visits",
            lambda s: attention.flagged_visits(
                s, first=period.first, last=period.last, scope=where
            ),
        ),
        (
            "absences_in_scope",
            lambda s: absences_in_scope(
                s, supervisor_id=supervisor_id, first=period.first, last=period.last
            ),
        ),
    ]
    for label, step in parts:
        await bench.time(label, step, runs)
    for label, step in parts:
        await bench.plans(label, step)
    return total


# --------------------------------------------------------------------------- main


async def server_facts(conn: asyncpg.Connection) -> None:
    names = (
        "server_version",
        "shared_buffers",
        "work_mem",
        "effective_cache_size",
        "jit",
        "max_parallel_workers_per_gather",
        "random_page_cost",
    )
    values = [f"{n} {await conn.fetchval(f'SHOW {n}')}" for n in names]
    print("server: " + ", ".join(values))


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def pace_step(settings: Settings, today: date, scope: Sequence[int] | None = None) -> Step:
    first, last = month_bounds(today)

    async def step(session: AsyncSession) -> Any:
        return await assignment_pace(
            session,
            first=first,
            last=last,
            county=profile(settings.quota_profile),
            scope=scope,
            bound_only=scope is None,
        )

    return step


async def measure(url: str, shape: Shape, runs: int, digest_runs: int, county_digest: bool) -> None:
    settings = Settings(_env_file=None, timezone=shape.timezone)
    engine = make_engine(url, pool_size=4)
    capture = Capture()
    capture.attach(engine)
    bench = Bench(async_sessionmaker(engine, expire_on_commit=False), capture, runs)
    conn = await asyncpg.connect(plain_url(url))
    try:
        await server_facts(conn)
        await table_sizes(conn)
        print(load())
        await bench_pace(bench, settings, shape.today)
        await bench_refresh(bench, settings, shape.today)
        await bench_trigger_cost(bench, conn, shape)
        officers = await pick_officers(conn, shape)
        for label, officer_id in officers:
            print(f"2. /me of the {label}, {shape.today}; {load()}")
            await bench_me(bench, settings, shape.today, officer_id)
        period = digests.week_that_ended(shape.today)
        station = (shape.villages // 2 - 1) // 20 + 1
        took = []
        supervisors = [(f"supervisor of station {station}", station)]
        if county_digest:
            supervisors.insert(0, ("county-wide supervisor", shape.stations + 1))
        for label, supervisor_id in supervisors:
            print(f"3. weekly digest {period.key} of the {label}; {load()}")
            took.append(await bench_digest(bench, settings, shape, supervisor_id, digest_runs))
        job = (took[0] if county_digest else 0) + shape.stations * took[-1]
        print(
            f"  the weekly-digest job, one digest after another, for the county-wide and the "
            f"{shape.stations:,} station supervisors: about {job / 3600:.1f} h"
        )
    finally:
        await conn.close()
        await engine.dispose()


async def main(args: argparse.Namespace) -> None:
    shape = Shape(
        villages=args.villages,
        officers=args.officers or round(args.villages * PROVINCE_OFFICERS / PROVINCE_VILLAGES),
        months=args.months,
        today=args.today,
        timezone="Asia/Shanghai",
    )
    print(
        f"province: {shape.villages:,} villages, {shape.stations:,} stations, "
        f"{shape.officers:,} officers; {shape.months} months from {shape.first_month} "
        f"to {shape.today - timedelta(days=1)}"
    )
    async with scratch_database() as url:
        engine = make_engine(url, pool_size=2)
        await upgrade(engine)
        await engine.dispose()
        conn = await asyncpg.connect(plain_url(url))
        try:
            await generate(conn, shape)
        finally:
            await conn.close()
        await measure(url, shape, args.runs, args.digest_runs, not args.no_county_digest)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--villages", type=int, default=PROVINCE_VILLAGES)
    parser.add_argument("--officers", type=int, help="default: 30,000 for 52,033 villages")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--today", type=date.fromisoformat, default=date(2026, 11, 23))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--digest-runs", type=int, default=3)
    parser.add_argument(
        "--no-county-digest",
        action="store_true",
        help="skip the county-wide supervisor's digest (its workbook takes minutes)",
    )
    asyncio.run(main(parser.parse_args()))
