"""The operator's command line: help, one-line errors, links, start-up time, embedded database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.tokens import hash_payload, is_valid_payload
from storage.models import Invite
from tests.factories import seed_directory

ROOT = Path(__file__).resolve().parents[1]
# Prints whether aiogram got imported, after the command ran.
PROBE = (
    "import atexit, sys; "
    "atexit.register(lambda: print("
    "'AIOGRAM-IMPORTED' if 'aiogram' in sys.modules else '', file=sys.stderr)); "
    "from bot.cli import main; main(sys.argv[1:])"
)


def villagebeat(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in {"BOT_TOKEN", "WEBHOOK_URL"}}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=full_env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    async with sessions() as s, s.begin():
        await seed_directory(s)
    return sessions


def test_help_lists_every_command_fast_and_without_aiogram() -> None:
    started = time.monotonic()
    result = villagebeat("--help")
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    for command in ("run", "worker", "db", "import", "invite", "village-link", "export"):
        assert command in result.stdout
    assert "AIOGRAM-IMPORTED" not in result.stderr
    assert elapsed < 2.0


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["worker"],
        ["db"],
        ["db", "upgrade"],
        ["import", "directory"],
        ["invite", "officer"],
        ["invite", "supervisor"],
        ["village-link"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = villagebeat(*args, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: villagebeat " + " ".join(args))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["frobnicate"], "invalid choice"),
        (["invite", "supervisor", "--station", "S01", "--county"], "not allowed with argument"),
        (["invite", "supervisor"], "one of the arguments --station --county is required"),
        (["village-link"], "the following arguments are required"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], fragment: str) -> None:
    result = villagebeat(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line != "" and "AIOGRAM" not in line]
    assert len(lines) == 1 and fragment in lines[0]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"BOT_TOKEN": ""}, "BOT_TOKEN is not set"),
        ({"BOT_TOKEN": "1:x", "DATABASE_URL": "mysql://x/y"}, "DATABASE_URL is invalid"),
        ({"BOT_TOKEN": "1:x", "TIMEZONE": "Nowhere/Land"}, "unknown time zone"),
    ],
)
@pytest.mark.parametrize("command", ["run", "worker"])
def test_run_refuses_bad_settings_in_one_line(
    env: dict[str, str], fragment: str, command: str, tmp_path: Path
) -> None:
    result = villagebeat(command, env=env, cwd=tmp_path)
    assert result.returncode == 1
    # One line only: the probe's AIOGRAM-IMPORTED would be a second, and settings come first.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("seeded")
def test_invites_and_village_link(db_env: dict[str, str], database_url: str) -> None:
    started = time.monotonic()
    result = villagebeat("invite", "officer", "012345", "--json", env=db_env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "AIOGRAM-IMPORTED" not in result.stderr
    assert elapsed < 2.0
    data = json.loads(result.stdout)
    assert set(data) == {"link", "payload", "expires_at"}
    assert is_valid_payload(data["payload"]) and len(data["payload"]) <= 64
    assert data["link"] == f"https://t.me/village_beat_bot?start={data['payload']}"

    plain = villagebeat(
        "invite",
        "supervisor",
        "--station",
        "S01",
        "--station",
        "S02",
        "--name",
        "刘所长",
        env=db_env,
    )
    assert plain.returncode == 0, plain.stderr
    link = plain.stdout.strip()
    payload = parse_qs(urlsplit(link).query)["start"][0]
    assert is_valid_payload(payload) and payload != data["payload"]

    county = villagebeat("invite", "supervisor", "--county", "--json", env=db_env)
    assert county.returncode == 0 and json.loads(county.stdout)["link"].startswith("https://t.me/")

    village = villagebeat("village-link", "V001", "--json", env=db_env)
    assert village.returncode == 0, village.stderr
    info = json.loads(village.stdout)
    assert info["village_name"] == "张庄村" and info["payload"].startswith("v-")
    again = villagebeat("village-link", "V001", env=db_env)
    assert again.stdout.strip() == info["link"]  # a village's public link is stable


async def test_invite_payloads_are_stored_hashed(
    seeded: async_sessionmaker[AsyncSession], db_env: dict[str, str]
) -> None:
    result = villagebeat("invite", "officer", "012345", "--json", env=db_env)
    payload = json.loads(result.stdout)["payload"]
    async with seeded() as s:
        hashes = list(await s.scalars(select(Invite.token_hash)))
    assert hashes == [hash_payload(payload)]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["invite", "officer", "999999"], "no officer with badge '999999'"),
        (["invite", "supervisor", "--station", "S99"], "no station with code 'S99'"),
        (["village-link", "V999"], "no village with code 'V999'"),
    ],
)
def test_unknown_targets_fail_in_one_line(
    db_env: dict[str, str], args: list[str], fragment: str
) -> None:
    result = villagebeat(*args, env=db_env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"villagebeat: {fragment}" + lines[0].split(fragment, 1)[1]]


def test_username_must_be_known(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "BOT_USERNAME": "", "BOT_TOKEN": ""}
    result = villagebeat("village-link", "V001", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot tell the bot's username" in result.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing", "BOT_USERNAME": "b"}
    result = villagebeat("db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the database" in lines[0]


def test_import_directory_command(db_env: dict[str, str], tmp_path: Path) -> None:
    csv = tmp_path / "dir.csv"
    csv.write_text(
        "station_code,station_name,village_code,village_name,latitude,longitude,officer_badge,officer_name,assignment\n"
        "S01,城关派出所,V001,张庄村,34.1,113.2,012345,王警官,resident\n",
        encoding="utf-8-sig",
    )
    first = villagebeat("import", "directory", str(csv), env=db_env)
    assert first.returncode == 0, first.stderr
    assert "1 created" in first.stdout
    second = villagebeat("import", "directory", str(csv), env=db_env)
    assert second.returncode == 0 and "nothing changed" in second.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(
        csv.read_text(encoding="utf-8-sig").replace("resident", "boss"), encoding="utf-8"
    )
    third = villagebeat("import", "directory", str(bad), env=db_env)
    assert third.returncode == 1
    assert "line 2" in third.stderr and "boss" in third.stderr
    assert "nothing was imported" in third.stderr
    missing = villagebeat("import", "directory", str(tmp_path / "nope.csv"), env=db_env)
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_embedded_database_when_database_url_is_unset(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "",
        "DATA_DIR": str(tmp_path / "var"),
        "BOT_USERNAME": "village_beat_bot",
    }
    upgrade = villagebeat("db", "upgrade", env=env, cwd=tmp_path, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "database is at revision" in upgrade.stdout
    assert (tmp_path / "var" / "postgres" / "PG_VERSION").exists()
    missing = villagebeat("village-link", "V001", env=env, cwd=tmp_path, timeout=120)
    assert missing.returncode == 1 and "no village with code 'V001'" in missing.stderr
    # Stopped on exit: no server is left running on this data directory.
    assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()


async def test_import_moves_open_requests_and_says_so(
    db_env: dict[str, str], sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    from tests.test_request_backoffice import (
        B_CONTACT,
        C_RESIDENT,
        handlers,
        seed_world,
        write_directory,
    )

    async with sessions() as s, s.begin():
        world = await seed_world(s)
    path = write_directory(tmp_path / "dir.csv", [C_RESIDENT, B_CONTACT])
    result = villagebeat("import", "directory", str(path), env=db_env)
    assert result.returncode == 0, result.stderr
    assert "AIOGRAM-IMPORTED" not in result.stderr
    lines = result.stdout.splitlines()
    assert "  V001 resident: 012345 -> 055555" in lines
    assert lines[-1] == "open requests moved to their new officer: 2"
    assert await handlers(sessions, world.v001_open) == [(world.new_officer, None)] * 2
    again = villagebeat("import", "directory", str(path), env=db_env)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "nothing changed"
