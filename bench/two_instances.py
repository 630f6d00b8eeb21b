"""Two `villagebeat run` processes in webhook mode behind nginx, on one PostgreSQL: a
scripted run that prints what it checked (PASS/FAIL) and exits non-zero on any failure.

    python bench/two_instances.py [--officers 30] [--villagers 20] [--kill-after 0.3]

Needs nginx from Debian's packages (`sudo apt-get install -y nginx`); nothing runs as root.
Uses DATABASE_URL's server (a scratch database is created and dropped), else an embedded one.

1. A scratch database: `--officers` officers, each the resident officer of a village of
   their own and bound to a Telegram account; `--villagers` villagers, who join two to a
   village through the bot (/start with the village's link).
2. The project's Bot API test server (tests/botapi) runs in this process and delivers the
   webhook to nginx as Telegram does: each chat's updates one at a time and in order,
   different chats at once (up to 40 connections), delivering again what is not answered
   2xx.
3. nginx runs in the foreground from a generated config in a temporary folder, on a free
   localhost port: upstream = the two bot processes, for the webhook path and /healthz, the
   secret header passed through.
4. Two `villagebeat run` processes: the same DATABASE_URL, WEBHOOK_URL (nginx's) and
   WEBHOOK_SECRET, each its own WEBHOOK_PORT, SCHEDULER_ENABLED=true, OUTBOX_GLOBAL_RATE
   split between them.
5. Round 1: every officer files a visit report while every villager joins and sends a
   request, all at once. Checked: each user's answers came once each and in order, what
   they typed is what was stored, both processes served requests, every outbox row was sent
   once, and there is one scheduler leader (the logs and pg_locks agree).
6. Round 2: the same again (a report for yesterday, a second request), and once
   `--kill-after` of its answers have come the leader is SIGKILLed. Checked: the other logs
   that it leads within 30 s, nginx takes the dead process out, the updates it left
   unanswered are delivered again and applied once, nothing is lost, and no answer is
   sent twice but to an update the dead process had committed (it may have sent the answer
   just before it died).
7. Everything started here is stopped and the scratch database dropped, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from common import (
    FIRST_USER_ID,
    Child,
    first_name,
    free_port,
    plain_url,
    scratch_database,
    seed_officers,
    spawn,
)
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.i18n import Translator
from core.tokens import village_payload
from scheduler.leader import APPLICATION_NAME, SCHEDULER_LOCK
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import (
    FailedUpdate,
    JobRun,
    OutboxMessage,
    ProcessedUpdate,
    Request,
    User,
    Village,
    VisitReport,
)
from tests.botapi import DEFAULT_TOKEN, BotApiServer, Call, SimUser

WEBHOOK_PATH = "/telegram/hook"
WEBHOOK_SECRET = "two-instances_0123456789"
BOT_USERNAME = "village_beat_bot"
LEADER = "this process is the scheduler leader now"
STANDING_BY = "standing by: another process holds the scheduler lock"
TAKEOVER_GOAL = 30.0
ANSWER_WAIT = 45.0  # a redelivery after the kill waits out the test server's backoff
STARTUP_WAIT = 90.0  # two processes importing aiogram at once on two cores
GLOBAL_RATE = 30.0  # Telegram's overall limit, split between the two processes
CHAT_RATE = 1.0
ZH = Translator("zh")


def lead(key: str) -> str:
    """A catalogue entry's opening words, up to its first placeholder or line break: what
    identifies the bot's answer in a chat."""
    return ZH(key).split("{")[0].split("\n")[0][:16]


# -- what the users do ----------------------------------------------------------------------

# (how, what, the answer expected): "say" sends a text, "click" presses a button by its label.
Step = tuple[str, str, str]


def visit_report(hours: str, households: str, day: str) -> list[Step]:
    return [
        ("say", "/visit", lead("visit.ask_date")),
        ("click", ZH(day), lead("visit.ask_hours")),
        ("say", hours, lead("visit.ask_households")),
        ("say", households, lead("visit.ask_activities")),
        ("click", ZH("visit.activities_done"), lead("visit.ask_location")),
        ("click", ZH("flow.skip"), lead("visit.ask_photos")),
        ("click", ZH("flow.no_photos"), lead("visit.ask_notes")),
        ("click", ZH("flow.skip"), lead("visit.summary_title")),
        ("click", ZH("flow.submit"), lead("visit.saved")),
    ]


def joining(join_token: str) -> list[Step]:
    return [
        ("say", f"/start {village_payload(join_token)}", lead("join.confirm")),
        ("click", ZH("join.yes"), lead("join.ask_phone")),
        ("click", ZH("join.skip_phone"), lead("join.phone_skipped")),
    ]


def villager_request(body: str) -> list[Step]:
    return [
        ("say", "/request", lead("request_flow.ask_category")),
        ("click", ZH("request_category.dispute"), lead("request_flow.ask_text")),
        ("say", body, lead("request_flow.ask_photos")),
        ("click", ZH("flow.no_photos"), lead("request_flow.ask_location")),
        ("click", ZH("flow.skip"), lead("request_flow.ask_anonymous")),
        ("click", ZH("request_flow.with_name"), lead("request_flow.summary_title")),
        ("click", ZH("flow.submit"), lead("request_flow.sent")),
    ]


@dataclass
class Person:
    user: SimUser
    kind: str  # "officer" or "villager"
    index: int
    village_token: str = ""
    steps: list[Step] = field(default_factory=list)  # everything asked of the bot so far
    answered: int = 0
    stuck: str | None = None  # why the conversation could not go on
    stuck_update: int | None = None
    repeats: int = 0  # answers that came a second time

    def officer_values(self, round_no: int) -> tuple[str, str]:
        """Hours and households, different for each officer and round, so that a step
        applied twice or out of order shows in what was stored."""
        return f"{1 + (self.index + round_no) % 10}.5", str(10 * round_no + self.index % 9 + 1)

    def request_body(self, round_no: int) -> str:
        name = self.user.first_name
        return f"第{round_no}件：{name}家门口的路灯坏了，晚上看不清路（编号{self.index}）"

    def round_steps(self, round_no: int) -> list[Step]:
        if self.kind == "officer":
            hours, households = self.officer_values(round_no)
            day = "visit.today" if round_no == 1 else "visit.yesterday"
            return visit_report(hours, households, day)
        steps = joining(self.village_token) if round_no == 1 else []
        return steps + villager_request(self.request_body(round_no))


# -- the bot's answers, per chat ------------------------------------------------------------


def answer_text(call: Call) -> str:
    return str(call.params.get("text") or call.params.get("caption") or "")


class Transcripts:
    """Every successful send/edit call of the bot, per chat, as the test server records it.
    Waiting for an answer looks at the user's own chat only (the server's own wait_for
    scans every call of the run each time)."""

    def __init__(self, server: BotApiServer) -> None:
        self.by_chat: dict[int, list[Call]] = {}
        self.answered = 0  # answers that conversations waited for
        self.round_over = False
        self._events: dict[int, asyncio.Event] = {}
        self._progress = asyncio.Event()
        server.on_call(self._record)

    def _record(self, call: Call) -> None:
        if not call.ok or not call.method.startswith(("send", "edit")):
            return
        try:
            chat = int(call.params.get("chat_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        self.by_chat.setdefault(chat, []).append(call)
        event = self._events.pop(chat, None)
        if event is not None:
            event.set()

    def count(self, chat: int) -> int:
        return len(self.by_chat.get(chat, []))

    async def wait(self, chat: int, since: int, needle: str, seconds: float) -> Call:
        deadline = time.monotonic() + seconds
        while True:
            for call in self.by_chat.get(chat, [])[since:]:
                if needle in answer_text(call):
                    self.answered += 1
                    self._progress.set()
                    return call
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(needle)
            event = self._events.setdefault(chat, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def until_answered(self, count: int) -> bool:
        """Wait for `count` answers in all; False when the round ended short of them."""
        while self.answered < count and not self.round_over:
            self._progress.clear()
            await self._progress.wait()
        return self.answered >= count

    def end_round(self, over: bool) -> None:
        self.round_over = over
        self._progress.set()

    def show(self, chat: int, last: int = 10) -> str:
        lines = [f"    #{c.seq} {c.method}: {answer_text(c)[:60]!r}" for c in self.by_chat[chat]]
        return "\n".join(lines[-last:])


async def converse(
    server: BotApiServer, calls: Transcripts, person: Person, steps: Sequence[Step]
) -> None:
    """One user's steps, each after the bot's answer to the previous one, as a person does."""
    for how, what, expected in steps:
        if person.stuck is not None:
            return
        since = calls.count(person.user.id)
        person.steps.append((how, what, expected))
        if how == "say":
            update = await server.send_text(person.user, what)
        else:
            update = await server.click(person.user, what)
        try:
            await calls.wait(person.user.id, since, expected, ANSWER_WAIT)
        except TimeoutError:
            person.stuck_update = int(update["update_id"])
            person.stuck = (
                f"user {person.user.id}, update {update['update_id']} ({how} {what!r}): no "
                f"answer with {expected!r} in {ANSWER_WAIT:.0f} s; the chat ends with\n"
                + calls.show(person.user.id)
            )
            return
        person.answered += 1


# -- nginx ----------------------------------------------------------------------------------

NGINX_CONF = """\
# Written by bench/two_instances.py; started as
#   nginx -p {prefix} -c nginx.conf -g 'daemon off;'
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 512; }}

http {{
    log_format upstreams '$msec $request_method $uri $status '
                         'upstream=$upstream_addr upstream_status=$upstream_status '
                         'time=$request_time';
    access_log {prefix}/access.log upstreams;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    upstream villagebeat {{
        # One failure takes a process out for fail_timeout; then it is tried again.
        server 127.0.0.1:{port_a} max_fails=1 fail_timeout=10s;
        server 127.0.0.1:{port_b} max_fails=1 fail_timeout=10s;
        keepalive 8;
    }}

    server {{
        listen 127.0.0.1:{port};
        # The bot answers only after the update committed: give it time.
        proxy_read_timeout 60s;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        # A request not yet sent (connection refused) goes to the other process. One that
        # reached a process which then died is answered 502, and Telegram delivers it again.
        proxy_next_upstream error timeout;

        # X-Telegram-Bot-Api-Secret-Token passes through like every request header.
        location = {path} {{ proxy_pass http://villagebeat; }}
        location = /healthz {{ proxy_pass http://villagebeat; }}
        location / {{ return 404; }}
    }}
}}
"""


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found is None:  # /usr/sbin is not on everyone's PATH
        found = next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None)
    return found


def write_nginx_conf(prefix: Path, port: int, upstreams: tuple[int, int]) -> None:
    prefix.mkdir()
    prefix.chmod(0o755)  # started by root, nginx's workers run as `nobody`
    (prefix / "tmp").mkdir()
    conf = NGINX_CONF.format(
        prefix=prefix, port=port, port_a=upstreams[0], port_b=upstreams[1], path=WEBHOOK_PATH
    )
    (prefix / "nginx.conf").write_text(conf)


@dataclass
class Nginx:
    proc: asyncio.subprocess.Process
    prefix: Path
    port: int

    def access_lines(self) -> list[str]:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


async def wait_listening(port: int, proc: asyncio.subprocess.Process, out: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{read(out)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


@asynccontextmanager
async def nginx(
    binary: str, prefix: Path, port: int, upstreams: tuple[int, int]
) -> AsyncIterator[Nginx]:
    write_nginx_conf(prefix, port, upstreams)
    args = ["-p", str(prefix), "-c", "nginx.conf"]
    check = await asyncio.create_subprocess_exec(
        binary, "-t", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await check.communicate()
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the config:\n{output.decode(errors='replace')}")
    out = prefix / "nginx.out"
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            binary, *args, "-g", "daemon off;", stdout=sink, stderr=sink, start_new_session=True
        )
    try:
        await wait_listening(port, proc, out)
        yield Nginx(proc, prefix, port)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # the master stops its workers
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def count_upstreams(lines: Sequence[str], ports: dict[int, str]) -> Counter[str]:
    """Webhook requests per process and status in nginx's access log ('a 200', 'b 502')."""
    counts: Counter[str] = Counter()
    for line in lines:
        found = re.search(r" upstream=(.+?) upstream_status=(.+?) time=", line)
        if f" {WEBHOOK_PATH} " not in line or found is None:
            continue
        for addr, status in zip(found[1].split(", "), found[2].split(", "), strict=False):
            port = int(addr.rsplit(":", 1)[1]) if ":" in addr else 0
            counts[f"{ports.get(port, addr)} {status}"] += 1
    return counts


# -- the bot processes ----------------------------------------------------------------------


@dataclass
class BotInstance:
    name: str
    port: int
    child: Child

    def log(self) -> str:
        return self.child.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def running(self) -> bool:
        return self.child.proc.returncode is None

    def lock_backend(self) -> int | None:
        """The server pid of the scheduler lock's connection, from the last 'leader' line."""
        found = re.findall(r"scheduler leader now \(lock held by backend (\d+)\)", self.log())
        return int(found[-1]) if found else None


async def wait_healthy(instance: BotInstance) -> None:
    url = f"http://127.0.0.1:{instance.port}/healthz"
    deadline = time.monotonic() + STARTUP_WAIT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not instance.running:
                raise RuntimeError(f"{instance.name} exited:\n{instance.log()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{instance.name} not healthy after {STARTUP_WAIT:.0f} s")


def instance_env(
    *, port: int, database_url: str, api_url: str, public_url: str, data_dir: Path
) -> dict[str, str]:
    return {
        "BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_URL": api_url,
        "DATABASE_URL": plain_url(database_url),
        "DATA_DIR": str(data_dir),  # the same for both, so that photos end up in one place
        "BOT_USERNAME": BOT_USERNAME,
        "WEBHOOK_URL": public_url,  # nginx's, the same for both
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(port),
        "SCHEDULER_ENABLED": "true",
        "RUN_BACKGROUND": "true",
        "OUTBOX_GLOBAL_RATE": str(GLOBAL_RATE / 2),
        "OUTBOX_CHAT_RATE": str(CHAT_RATE),
        "LOG_LEVEL": "INFO",
    }


@asynccontextmanager
async def bot_instance(name: str, env: dict[str, str], workdir: Path) -> AsyncIterator[BotInstance]:
    child = await spawn(["-m", "bot", "run"], env=env, workdir=workdir, name=name)
    instance = BotInstance(name, int(env["WEBHOOK_PORT"]), child)
    try:
        yield instance
    finally:
        await child.terminate(15.0)


async def log_says(instance: BotInstance, line: str, seconds: float) -> float:
    """Seconds until `line` is in the instance's log."""
    started = time.monotonic()
    while line not in instance.log():
        if time.monotonic() - started > seconds:
            raise TimeoutError(f"{instance.name} did not log {line!r} within {seconds:.0f} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# -- the database's view --------------------------------------------------------------------


async def lock_holder(engine: AsyncEngine) -> int | None:
    """The server pid holding the scheduler's advisory lock in this database (pg_locks)."""
    key = SCHEDULER_LOCK & 0xFFFF_FFFF_FFFF_FFFF
    async with engine.connect() as conn:
        pid = await conn.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 1 AND classid = :high AND objid = :low"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"high": key >> 32, "low": key & 0xFFFF_FFFF},
        )
    return None if pid is None else int(pid)


async def lock_connections(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": APPLICATION_NAME},
        )
    return int(count or 0)


async def outbox_settled(sessions: async_sessionmaker[AsyncSession], seconds: float) -> int:
    """Wait until every outbox row that is due has been sent; returns how many wait for a
    later time (scheduled messages written in the quiet hours wait for their end)."""
    deadline = time.monotonic() + seconds
    pending = OutboxMessage.status == "pending"
    while True:
        async with sessions() as s:
            unsent = await s.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    pending, (OutboxMessage.not_before <= func.now()) | (OutboxMessage.attempts > 0)
                )
            )
            later = await s.scalar(select(func.count()).select_from(OutboxMessage).where(pending))
        if not unsent:
            return int(later or 0)
        if time.monotonic() > deadline:
            raise TimeoutError(f"outbox: {unsent} rows due and still unsent after {seconds:.0f} s")
        await asyncio.sleep(0.2)


# -- checks ---------------------------------------------------------------------------------


@dataclass
class Report:
    results: list[bool] = field(default_factory=list)

    def check(self, ok: bool, name: str, detail: str = "") -> bool:
        self.results.append(ok)
        print(
            f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""), flush=True
        )
        return ok

    @staticmethod
    def figure(line: str) -> None:
        print(f"  ....  {line}", flush=True)

    @property
    def failed(self) -> int:
        return self.results.count(False)


def out_of_order(expected: Sequence[str], answers: Sequence[Call]) -> tuple[str | None, int]:
    """Why a chat's answers are not each step's answer in the order asked (None: they are),
    and how many answers repeated one to an earlier step. A prompt may come back in a later
    round, so an answer matches the earliest step not yet answered that it fits."""
    position, repeats = 0, 0
    for call in answers:
        hits = [i for i, needle in enumerate(expected) if needle in answer_text(call)]
        if not hits:
            continue
        if min((i for i in hits if i >= position), default=None) == position:
            position += 1
        elif min(hits) < position:
            repeats += 1
        else:
            return f"an answer for step(s) {hits} came when step {position} was due", repeats
    if position != len(expected):
        return f"{position} of {len(expected)} steps answered", repeats
    return None, repeats


def content_key(method: str, params: dict[str, Any]) -> str:
    for name in ("text", "caption", "photo", "document"):
        if params.get(name):
            return f"{method}:{params[name]}"
    return f"{method}:{params.get('latitude')},{params.get('longitude')}"


@dataclass
class Run:
    """Everything the checks look at."""

    report: Report
    server: BotApiServer
    calls: Transcripts
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    proxy: Nginx
    bots: list[BotInstance]
    people: list[Person]

    @property
    def names(self) -> dict[int, str]:
        return {b.port: b.name for b in self.bots}

    async def check_conversations(self, rounds: int, *, may_repeat: int = 0) -> None:
        """Every step answered, in order. An answer may come twice only for an update the
        dead process had committed (`may_repeat` of them): it may have sent the answer and
        died before recording that it had, and then the update's redelivery sends it again."""
        report, people = self.report, self.people
        stuck = [p for p in people if p.stuck is not None]
        detail = f"{sum(p.answered for p in people)} answers to {len(people)} users"
        if stuck:
            async with self.sessions() as s:
                applied = set(
                    await s.scalars(
                        select(ProcessedUpdate.update_id).where(
                            ProcessedUpdate.update_id.in_([p.stuck_update for p in stuck])
                        )
                    )
                )
            detail += (
                f"; {len(stuck)} user(s) stuck without an answer to update(s) "
                f"{sorted(p.stuck_update or 0 for p in stuck)}, of which {len(applied)} had "
                f"been applied (so their redelivery was skipped); first: {stuck[0].stuck}"
            )
        report.check(not stuck, "every step of every conversation answered", detail)
        left_out = f"({len(stuck)} stuck user(s) left out)" if stuck else ""
        disorder = []
        for person in self.going:
            why, person.repeats = out_of_order(
                [needle for _, _, needle in person.steps],
                self.calls.by_chat.get(person.user.id, []),
            )
            if why is not None:
                disorder.append(f"user {person.user.id}: {why}")
        repeats = sum(p.repeats for p in self.going)
        report.check(
            not disorder,
            "each user's answers came in order",
            "; ".join(line for line in [*disorder[:3], left_out] if line),
        )
        report.check(
            repeats <= may_repeat,
            "no answer sent twice, but for updates the dead process had committed",
            f"{repeats} answer(s) sent twice, to "
            f"{sum(p.repeats > 0 for p in self.going)} user(s); at most {may_repeat} allowed",
        )
        await self.check_stored(rounds, left_out)

    @property
    def going(self) -> list[Person]:
        """The users whose conversations did not get stuck."""
        return [p for p in self.people if p.stuck is None]

    async def check_stored(self, rounds: int, left_out: str) -> None:
        """What each user typed was stored once, round by round."""
        async with self.sessions() as s:
            reports = (await s.scalars(select(VisitReport).order_by(VisitReport.id))).all()
            requests = (await s.scalars(select(Request).order_by(Request.id))).all()
            officer_of = {
                o: u for o, u in (await s.execute(select(User.officer_id, User.id))).all()
            }
        stored: dict[int, list[tuple[str, str]]] = {}
        for row in reports:
            stored.setdefault(officer_of[row.officer_id], []).append(
                (f"{row.hours:.1f}", str(row.households))
            )
        for request in requests:
            stored.setdefault(request.villager_id, []).append((request.body, ""))
        wrong = []
        for person in self.going:
            if person.kind == "officer":
                typed = [person.officer_values(r) for r in range(1, rounds + 1)]
            else:
                typed = [(person.request_body(r), "") for r in range(1, rounds + 1)]
            if stored.get(person.user.id, []) != typed:
                wrong.append(
                    f"user {person.user.id}: typed {typed}, stored {stored.get(person.user.id)}"
                )
        self.report.check(
            not wrong,
            "what each user typed was stored once",
            f"{len(reports)} visit reports, {len(requests)} requests"
            + "".join(f"; {line}" for line in [*wrong[:3], left_out] if line),
        )

    async def check_outbox(self) -> Counter[int]:
        """Every sent outbox row reached the Bot API exactly once; how close together two
        processes sent one chat's messages. Returns the outbox calls per chat."""
        async with self.sessions() as s:
            rows = (await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        statuses = Counter(row.status for row in rows)
        doubled: list[str] = []
        sent_at: dict[int, list[float]] = {}
        for row in rows:
            if row.status != "sent":
                continue
            key = content_key(row.method, row.payload)
            chat = self.calls.by_chat.get(row.chat_id, [])
            matching = [c.at for c in chat if content_key(c.method, c.params) == key]
            if len(matching) != 1:
                doubled.append(
                    f"row {row.id} ({row.method} to {row.chat_id}): {len(matching)} calls"
                )
            sent_at.setdefault(row.chat_id, []).extend(matching)
        self.report.check(
            not doubled and not statuses["failed"],
            "every outbox row sent exactly once",
            f"{statuses['sent']} rows sent, {dict(statuses)}"
            + ("; " + "; ".join(doubled[:3]) if doubled else ""),
        )
        gaps = [b - a for times in sent_at.values() for a, b in itertools.pairwise(sorted(times))]
        every = sorted(t for times in sent_at.values() for t in times)
        busiest = max(
            (sum(1 for u in every[i:] if u - t < 1.0) for i, t in enumerate(every)), default=0
        )
        close = sum(gap < 1 / CHAT_RATE - 0.05 for gap in gaps)
        self.report.figure(
            f"outbox: {len(gaps)} gaps between two messages to one chat, shortest "
            f"{min(gaps, default=0):.2f} s, {close} under 1/OUTBOX_CHAT_RATE; busiest second: "
            f"{busiest} sends (OUTBOX_GLOBAL_RATE {GLOBAL_RATE / 2:.0f} per process)"
        )
        return Counter({chat: len(times) for chat, times in sent_at.items()})

    def check_chat_totals(self, outbox: Counter[int]) -> None:
        """Users who did the same thing got the same number of calls, besides the outbox's:
        nothing answered twice or left out, answers to the steps or not."""
        totals: dict[str, Counter[int]] = {}
        for person in self.going:
            if person.repeats:
                continue  # answered twice, within what check_conversations allows
            calls = self.calls.count(person.user.id) - outbox[person.user.id]
            totals.setdefault(person.kind, Counter())[calls] += 1
        self.report.check(
            all(len(counts) == 1 for counts in totals.values()),
            "every user got the same calls as the others of their kind",
            "; ".join(
                f"{kind}s: " + ", ".join(f"{n} calls x{users}" for n, users in counts.items())
                for kind, counts in totals.items()
            )
            + " (outbox messages apart)",
        )

    async def check_updates(self) -> None:
        """Every update the server made was delivered, recorded as applied, and none failed."""
        made = set(self.server.queue.history)
        async with self.sessions() as s:
            applied = set(
                await s.scalars(
                    select(ProcessedUpdate.update_id).where(ProcessedUpdate.update_id.in_(made))
                )
            )
            failed = (await s.scalars(select(FailedUpdate.update_id))).all()
        undelivered = made - self.server.queue.delivered
        self.report.check(
            applied == made and not undelivered and not failed,
            "every update delivered and applied",
            f"{len(made)} updates, {len(applied)} applied, {len(undelivered)} undelivered, "
            f"{len(failed)} in failed_updates",
        )

    async def check_leader(
        self, name: str, leader: BotInstance, others: Sequence[BotInstance]
    ) -> bool:
        holder = await lock_holder(self.engine)
        connections = await lock_connections(self.engine)
        return self.report.check(
            holder is not None
            and holder == leader.lock_backend()
            and all(LEADER not in b.log() for b in others),
            name,
            f"{leader.name} leads, lock held by backend {holder}, {connections} lock connection(s)",
        )


# -- the run --------------------------------------------------------------------------------


async def run_round(
    run: Run, round_no: int, during: Callable[[int], Coroutine[Any, Any, None]] | None = None
) -> float:
    """Every user's conversation of the round at once; `during(total answers)` alongside."""

    async def one(person: Person) -> None:
        await converse(run.server, run.calls, person, person.round_steps(round_no))

    total = run.calls.answered + sum(len(p.round_steps(round_no)) for p in run.people)
    started = time.monotonic()
    run.calls.end_round(False)
    side = asyncio.create_task(during(total)) if during is not None else None
    await asyncio.gather(*(one(p) for p in run.people))
    elapsed = time.monotonic() - started
    run.calls.end_round(True)
    if side is not None:
        await side
    return elapsed


async def seed(
    sessions: async_sessionmaker[AsyncSession], server: BotApiServer, officers: int, villagers: int
) -> list[Person]:
    ids = await seed_officers(sessions, officers, first_user_id=FIRST_USER_ID)
    async with sessions() as s:
        tokens = (await s.scalars(select(Village.join_token).order_by(Village.id))).all()
    people = [
        Person(server.user(id=uid, first_name=first_name(uid)), "officer", i)
        for i, uid in enumerate(ids)
    ]
    for j in range(villagers):
        # Two villagers to a village: their officer gets two notifications close together.
        user = server.user(first_name=f"村民{j}")
        people.append(Person(user, "villager", j, village_token=tokens[(j // 2) % len(tokens)]))
    return people


async def start(stack: AsyncExitStack, args: argparse.Namespace, binary: str, workdir: Path) -> Run:
    url = await stack.enter_async_context(scratch_database())
    engine = make_engine(url, pool_size=8)
    stack.push_async_callback(engine.dispose)
    await upgrade(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    # As Telegram does: each chat's updates one at a time, different chats at once.
    server = BotApiServer(bot_username=BOT_USERNAME, webhook_parallel=True)
    await server.start()
    stack.push_async_callback(server.stop)
    calls = Transcripts(server)
    people = await seed(sessions, server, args.officers, args.villagers)

    port_a, port_b, port = free_port(), free_port(), free_port()
    proxy = await stack.enter_async_context(
        nginx(binary, workdir / "nginx", port, (port_a, port_b))
    )
    public = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    print(f"nginx: 127.0.0.1:{port} -> a on :{port_a}, b on :{port_b}; config {proxy.prefix}")
    bots = []
    for name, bot_port in (("a", port_a), ("b", port_b)):
        env = instance_env(
            port=bot_port,
            database_url=url,
            api_url=server.url,
            public_url=public,
            data_dir=workdir / "data",
        )
        bots.append(await stack.enter_async_context(bot_instance(name, env, workdir)))
    return Run(Report(), server, calls, engine, sessions, proxy, bots, people)


async def startup_checks(run: Run) -> BotInstance | None:
    """Both healthy and registered, one leader; returns the leader."""
    report, bots = run.report, run.bots
    started = time.monotonic()
    await asyncio.gather(*(wait_healthy(b) for b in bots))
    await run.server.wait_for(
        lambda c: len([x for x in run.server.calls_of("setWebhook") if x.ok]) >= 2,
        STARTUP_WAIT,
    )
    report.figure(f"both processes up {time.monotonic() - started:.1f} s after they were started")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{run.proxy.port}/healthz") as response,
    ):
        report.check(
            response.status == 200, "GET /healthz through nginx", f"HTTP {response.status}"
        )
    webhook = run.server.queue.webhook
    report.check(
        webhook is not None
        and webhook.url == f"http://127.0.0.1:{run.proxy.port}{WEBHOOK_PATH}"
        and webhook.secret_token == WEBHOOK_SECRET,
        "both set the webhook to nginx's URL with the secret",
        f"{len(run.server.calls_of('setWebhook'))} setWebhook calls",
    )
    deadline = time.monotonic() + STARTUP_WAIT
    while not all(LEADER in b.log() or STANDING_BY in b.log() for b in bots):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    leaders = [b for b in bots if LEADER in b.log()]
    if len(leaders) != 1:
        report.check(False, "exactly one scheduler leader", f"{len(leaders)} logged {LEADER!r}")
        return None
    [leader] = leaders
    others = [b for b in bots if b is not leader]
    if not await run.check_leader(
        "exactly one scheduler leader (logs and pg_locks)", leader, others
    ):
        return None
    report.check(all(STANDING_BY in b.log() for b in others), "the other stands by")
    return leader


async def round_one(run: Run, leader: BotInstance, args: argparse.Namespace) -> None:
    report = run.report
    print(
        f"round 1: {args.officers} officers file a visit report while {args.villagers} "
        "villagers join and send a request"
    )
    elapsed = await run_round(run, 1)
    report.figure(f"round 1: {run.calls.answered} answers in {elapsed:.1f} s")
    waiting = await outbox_settled(run.sessions, 60)
    # The bots keep no access log (bot.runner); nginx's names the process that answered.
    upstreams = count_upstreams(run.proxy.access_lines(), run.names)
    served = {b.name: upstreams[f"{b.name} 200"] for b in run.bots}
    report.check(
        all(served.values()),
        "both processes served webhook requests",
        ", ".join(f"{n}: {c} answered 200" for n, c in served.items())
        + f" (nginx: {dict(upstreams)})",
    )
    await run.check_conversations(1)
    run.check_chat_totals(await run.check_outbox())
    if waiting:
        report.figure(f"{waiting} outbox rows wait for a later time (the quiet hours)")
    others = [b for b in run.bots if b is not leader]
    await run.check_leader("still the one leader after round 1", leader, others)


async def round_two(run: Run, leader: BotInstance, args: argparse.Namespace) -> None:
    report, proxy = run.report, run.proxy
    [survivor] = [b for b in run.bots if b is not leader]
    before = run.calls.answered
    attempts_before = len(run.server.webhook_attempts)
    killed: dict[str, float] = {}

    async def kill_the_leader(total: int) -> None:
        if not await run.calls.until_answered(before + round(args.kill_after * (total - before))):
            return  # the round ended short of it: reported below
        # An answer has just been sent; without a random pause the kill would always land
        # in the same phase of an update (after its answer, before its HTTP response).
        await asyncio.sleep(random.uniform(0, 0.2))
        killed["access"] = len(proxy.access_lines())
        killed["at"] = time.monotonic()
        killed["wall"] = time.time()
        await leader.child.kill()
        report.figure(
            f"SIGKILL {leader.name} (the leader) after {run.calls.answered - before} of "
            f"{total - before} answers of round 2"
        )
        with contextlib.suppress(TimeoutError):
            killed["takeover"] = await log_says(survivor, LEADER, TAKEOVER_GOAL + 30)

    print("round 2: the same again (yesterday's visit, a second request); the leader is killed")
    elapsed = await run_round(run, 2, kill_the_leader)
    report.figure(f"round 2: {run.calls.answered - before} answers in {elapsed:.1f} s")
    if "at" not in killed:
        report.check(
            False, "the leader was killed during round 2", "round 2 ended before that many answers"
        )
        return
    takeover = killed.get("takeover")
    report.check(
        takeover is not None and takeover < TAKEOVER_GOAL,
        f"{survivor.name} took over the scheduler within {TAKEOVER_GOAL:.0f} s of the SIGKILL",
        f"{takeover:.2f} s" if takeover is not None else "it never logged that it leads",
    )
    await run.check_leader(
        "exactly one leader after the takeover (logs and pg_locks)", survivor, []
    )
    waiting = await outbox_settled(run.sessions, 90)

    after = count_upstreams(proxy.access_lines()[int(killed["access"]) :], run.names)
    failures = [a for a in run.server.webhook_attempts[attempts_before:] if not a.ok]
    errors = proxy.error_log()
    marked = errors.count("upstream server temporarily disabled")
    refused = errors.count("Connection refused")
    report.check(
        after[f"{leader.name} 200"] <= 1 and after[f"{survivor.name} 200"] > 0 and marked > 0,
        "nginx took the dead process out and sent the rest to the survivor",
        f"after the kill: {dict(after)}; nginx marked a server failed {marked} time(s), "
        f"{refused} refused connection(s) passed on to the other",
    )
    redelivered = {a.update_id for a in failures}
    why = Counter(str(a.status or a.error) for a in failures)
    report.check(
        redelivered <= run.server.queue.delivered,
        "updates the dead process did not answer were delivered again",
        f"{len(failures)} failed deliveries ({dict(why)}) of {len(redelivered)} update(s), "
        "all delivered later",
    )
    async with run.sessions() as s:
        applied = (
            await s.execute(
                select(ProcessedUpdate.processed_at).where(
                    ProcessedUpdate.update_id.in_(redelivered)
                )
            )
        ).all()
    by_dead = sum(at.timestamp() < killed["wall"] for (at,) in applied)
    report.figure(
        f"updates in flight at the kill: {len(redelivered)}; committed by {leader.name} before "
        f"it died (the redelivery skipped): {by_dead}; applied by {survivor.name}: "
        f"{len(redelivered) - by_dead}"
    )
    await run.check_conversations(2, may_repeat=by_dead)
    run.check_chat_totals(await run.check_outbox())
    if waiting:
        report.figure(f"{waiting} outbox rows wait for a later time (the quiet hours)")
    await run.check_updates()
    async with run.sessions() as s:
        runs = (await s.execute(select(JobRun.name, JobRun.slot, JobRun.outcome))).all()
    report.figure(
        f"scheduled runs recorded: {len(runs)}"
        + "".join(
            f"\n          {name} {slot:%m-%d %H:%M} UTC: {outcome}"
            for name, slot, outcome in runs[:6]
        )
    )
    status = await survivor.child.terminate(15.0)
    report.check(status == 0, f"{survivor.name} stops on SIGTERM", f"exit status {status}")


def log_errors(bots: Sequence[BotInstance]) -> list[str]:
    return [
        f"{b.name}: {line[:200]}"
        for b in bots
        for line in b.log().splitlines()
        if " ERROR " in line or line.startswith("Traceback")
    ]


async def main(args: argparse.Namespace) -> int:
    binary = find_nginx()
    if binary is None:
        print(
            "nginx is not installed. On Debian or Ubuntu:\n"
            "    sudo apt-get install -y nginx\n"
            "The script starts nginx itself, as you, on a free port: its service is not used.",
            file=sys.stderr,
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="vb-two-instances-"))
    print(f"logs and nginx config in {workdir}")
    async with AsyncExitStack() as stack:
        run = await start(stack, args, binary, workdir)
        try:
            leader = await startup_checks(run)
            if leader is not None:
                await round_one(run, leader, args)
                await round_two(run, leader, args)
        except Exception as exc:  # a step that could not finish is a failed check
            run.report.check(False, "the run went to the end", f"{type(exc).__name__}: {exc}")
        finally:
            errors = log_errors(run.bots)
            run.report.check(not errors, "no errors in the bots' logs", "; ".join(errors[:3]))
            failed = run.report.failed
            print(f"\n{len(run.report.results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--officers", type=int, default=30, help="officers filing visit reports")
    parser.add_argument("--villagers", type=int, default=20, help="villagers sending requests")
    parser.add_argument(
        "--kill-after", type=float, default=0.3, help="share of round 2's answers before the kill"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
