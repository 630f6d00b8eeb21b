"""What the benchmarks share: a scratch database, a seeded directory of officers, a minimal
Bot API stub, webhook updates, and `villagebeat` as a child process."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

ROOT = Path(__file__).resolve().parents[1]
# `tests` (the Bot API test server) is not an installed package; a script run as
# `python bench/x.py` only has bench/ on its path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.i18n import Translator  # noqa: E402
from core.roles import AssignmentKind, Role  # noqa: E402
from core.tokens import new_village_token  # noqa: E402
from storage.db import to_async_url  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.models import Assignment, Officer, Station, User, Village  # noqa: E402

BOT_TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Village Beat", "username": "bench_bot"}
WEBHOOK_PATH = "/telegram/hook"
WEBHOOK_SECRET = "bench-secret_0123456789"
FIRST_USER_ID = 700_000_000
STARTUP_TIMEOUT = 90.0  # importing aiogram takes seconds on a busy machine


# -- database -------------------------------------------------------------------------------


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A new database on DATABASE_URL's server (else an embedded one), dropped at the end;
    yields its SQLAlchemy URL."""
    configured = os.environ.get("DATABASE_URL")
    embedded = None
    if configured is None:
        tmp = tempfile.mkdtemp(prefix="vb-bench-")
        embedded = EmbeddedPostgres(Path(tmp) / "pg")
        configured = await embedded.start()
    parts = urlsplit(configured)
    admin_dsn = urlunsplit(parts._replace(scheme="postgresql"))
    name = f"vb_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield to_async_url(urlunsplit(parts._replace(path=f"/{name}")))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if embedded is not None:
            await embedded.stop()


def plain_url(url: str) -> str:
    """The `postgresql://` form, as an operator would put it in DATABASE_URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def seed_officers(
    sessions: async_sessionmaker[AsyncSession], count: int, *, first_user_id: int = FIRST_USER_ID
) -> list[int]:
    """`count` officers, each the resident officer of one village of their own (so /visit
    skips the village step) and bound to a Telegram account; returns the account ids.

    The accounts carry the names the simulated updates use, so that the bot's
    `touch_user` finds nothing to change.
    """
    async with sessions() as session, session.begin():
        stations = (
            await session.scalars(
                insert(Station).returning(Station.id, sort_by_parameter_order=True),
                [{"code": f"S{s:05d}", "name": f"第{s}派出所"} for s in range(count // 20 + 1)],
            )
        ).all()
        villages = (
            await session.scalars(
                insert(Village).returning(Village.id, sort_by_parameter_order=True),
                [
                    {
                        "code": f"V{i:07d}",
                        "name": f"{i}号村",
                        "station_id": stations[i // 20],
                        "latitude": 34.75,
                        "longitude": 113.62,
                        "join_token": new_village_token(),
                    }
                    for i in range(count)
                ],
            )
        ).all()
        officers = (
            await session.scalars(
                insert(Officer).returning(Officer.id, sort_by_parameter_order=True),
                [{"badge": f"B{i:07d}", "name": f"民警{i}"} for i in range(count)],
            )
        ).all()
        await session.execute(
            insert(Assignment),
            [
                {"officer_id": o, "village_id": v, "kind": AssignmentKind.RESIDENT.value}
                for o, v in zip(officers, villages, strict=True)
            ],
        )
        ids = [first_user_id + i for i in range(count)]
        await session.execute(
            insert(User),
            [
                {
                    "id": uid,
                    "role": Role.OFFICER.value,
                    "officer_id": officer,
                    "first_name": first_name(uid),
                    "language_code": "zh-hans",
                }
                for uid, officer in zip(ids, officers, strict=True)
            ],
        )
    return ids


# -- a Bot API that answers everything at once ----------------------------------------------


class StubBotApi:
    """Answers every Bot API call with success at once, and remembers per chat the last
    message the bot sent with inline buttons, so that simulated users can press them.

    Much cheaper than the project's test server (tests/botapi), which validates and
    records every call: the benchmark's load generator shares the CPU with it.
    """

    def __init__(self) -> None:
        self.url = ""
        self.calls: Counter[str] = Counter()
        self.in_answers: Counter[str] = Counter()  # of calls: given in a webhook's HTTP answer
        # chat id -> (message id, {button label: callback data})
        self.buttons: dict[int, tuple[int, dict[str, str]]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            params: dict[str, Any] = await request.json()
        else:
            params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        result = self.run(request.match_info["method"], params)
        return web.json_response({"ok": True, "result": result})

    def run(self, method: str, params: dict[str, Any], *, in_answer: bool = False) -> Any:
        """Carry out a call (a request, or `in_answer`, a method in a webhook's HTTP answer):
        its result."""
        method = method.lower()
        self.calls[method] += 1
        self.in_answers[method] += in_answer
        result: Any = True
        if method == "getme":
            result = BOT_USER
        elif method == "getupdates":
            result = []
        elif method.startswith("send") or method.startswith("edit"):
            chat_id = int(params.get("chat_id", 0))
            message_id = int(params.get("message_id") or next(self._ids))
            result = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT_USER,
                "text": params.get("text", ""),
            }
            self._remember(chat_id, message_id, params.get("reply_markup"))
        return result

    def _remember(self, chat_id: int, message_id: int, markup: Any) -> None:
        if isinstance(markup, str):
            markup = json.loads(markup)
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            self.buttons[chat_id] = (
                message_id,
                {b["text"]: b["callback_data"] for row in markup["inline_keyboard"] for b in row},
            )

    def press(self, chat_id: int, label: str) -> tuple[int, str]:
        """(message id, callback data) of the button `label` last shown in the chat."""
        message_id, buttons = self.buttons.get(chat_id, (0, {}))
        if label not in buttons:
            raise AssertionError(f"chat {chat_id}: no button {label!r} in {sorted(buttons)}")
        return message_id, buttons[label]


@asynccontextmanager
async def stub_bot_api() -> AsyncIterator[StubBotApi]:
    stub = StubBotApi()
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


# -- updates and the webhook ----------------------------------------------------------------


_update_ids = itertools.count(1)


def first_name(user_id: int) -> str:
    return f"警员{user_id - FIRST_USER_ID}"


def _sender(user_id: int) -> dict[str, Any]:
    return {
        "id": user_id,
        "is_bot": False,
        "first_name": first_name(user_id),
        "language_code": "zh-hans",
    }


def text_update(user_id: int, text: str) -> dict[str, Any]:
    update_id = next(_update_ids)
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": first_name(user_id)},
            "from": _sender(user_id),
            "text": text,
        },
    }


def callback_update(user_id: int, message_id: int, data: str) -> dict[str, Any]:
    update_id = next(_update_ids)
    return {
        "update_id": update_id,
        "callback_query": {
            "id": str(update_id),
            "from": _sender(user_id),
            "chat_instance": str(user_id),
            "data": data,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": first_name(user_id)},
                "from": BOT_USER,
                "text": "…",
            },
        },
    }


class Webhook:
    """Posts updates to a bot's webhook as Telegram does (JSON body, secret token header)
    and times each one until its HTTP answer. A method in the HTTP answer is carried out by
    `stub`, as Telegram would."""

    def __init__(self, url: str, *, connections: int, stub: StubBotApi) -> None:
        self.url = url
        self._stub = stub
        self.latencies: list[float] = []
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            headers={
                "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET,
                "Content-Type": "application/json",
            },
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def post(self, update: dict[str, Any]) -> None:
        body = json.dumps(update, ensure_ascii=False).encode()
        started = time.perf_counter()
        async with self._http.post(self.url, data=body) as response:
            answer = await response.read()
            if response.status != 200:
                raise AssertionError(f"update {update['update_id']}: HTTP {response.status}")
        self.latencies.append(time.perf_counter() - started)
        params = json.loads(answer) if answer else {}
        if params.get("method"):
            self._stub.run(params.pop("method"), params, in_answer=True)

    async def close(self) -> None:
        await self._http.close()


Step = tuple[str, str]  # ("say", text) or ("press", the label of an inline button)


def visit_report(t: Translator) -> list[Step]:
    """A complete visit report by an officer with one village (no village step)."""
    return [
        ("say", "/visit"),
        ("press", t("visit.today")),
        ("say", "2"),
        ("say", "3"),
        ("press", t("visit.activities_done")),
        ("say", t("flow.skip")),
        ("say", t("flow.no_photos")),
        ("say", t("flow.skip")),
        ("press", t("flow.submit")),
    ]


async def converse(hook: Webhook, stub: StubBotApi, user_id: int, steps: Sequence[Step]) -> int:
    """One user's updates, each after the previous one's answer; how many were sent."""
    for kind, value in steps:
        if kind == "press":
            message_id, data = stub.press(user_id, value)
            await hook.post(callback_update(user_id, message_id, data))
        else:
            await hook.post(text_update(user_id, value))
    return len(steps)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def wait_healthy(url: str, child: Child) -> None:
    """Poll `url` until it answers 200; fail with the child's log if it exits first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if child.proc.returncode is not None:
                raise RuntimeError(f"the child exited with {child.proc.returncode}:\n{child.log()}")
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {STARTUP_TIMEOUT}s:\n{child.log()}")


# -- child processes ------------------------------------------------------------------------


@dataclass
class Child:
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def terminate(self, grace: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit status (None if killed)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            await self.kill()
            return None


async def spawn(args: Sequence[str], *, env: dict[str, str], workdir: Path, name: str) -> Child:
    """`python ARGS` in `workdir` (so that no developer's .env is read), output to a log."""
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env={**os.environ, **env},
            cwd=workdir,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    return Child(proc, log_path)


def villagebeat_env(*, database_url: str, api_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_API_URL": api_url,
        "DATABASE_URL": plain_url(database_url),
        "DATA_DIR": str(data_dir),
        "BOT_USERNAME": BOT_USER["username"],
        "WEBHOOK_URL": "",
    }


async def start_webhook_bot(
    *, database_url: str, api_url: str, workdir: Path, port: int, **env: str
) -> Child:
    """`villagebeat run` in webhook mode, ready once /healthz answers."""
    settings = villagebeat_env(database_url=database_url, api_url=api_url, data_dir=workdir)
    settings.update(
        WEBHOOK_URL=f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_HOST="127.0.0.1",
        WEBHOOK_PORT=str(port),
        **env,
    )
    child = await spawn(["-m", "bot", "run"], env=settings, workdir=workdir, name="villagebeat")
    await wait_healthy(f"http://127.0.0.1:{port}/healthz", child)
    return child


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- resources of a process -----------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (None when the process is gone or
    not readable): [1] the parent, [11] [12] user and system ticks, [13] [14] those of the
    children that ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _seconds(fields: list[str] | None, user: int) -> float:
    if fields is None:
        return 0.0
    return (int(fields[user]) + int(fields[user + 1])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone or not readable)."""
    return _seconds(_stat(pid), 11)


def reaped_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process's children that have ended (and been waited for)."""
    return _seconds(_stat(pid), 13)


def parent_pid(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc/<pid>/status memory figure in KiB: VmRSS now, VmHWM the peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)
