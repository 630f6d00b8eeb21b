"""`villagebeat run` with DATABASE_URL unset: the embedded PostgreSQL under DATA_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.botapi import BotApiServer
from tests.e2e import EN, bot_process, say

pytestmark = pytest.mark.timeout(180)


async def test_run_on_embedded_database_and_stop_it(server: BotApiServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    async with bot_process(server, "", data_dir) as bot:
        await bot.ready(server, "deleteWebhook")
        user = server.user(language_code="en")
        assert await say(server, user, "/start") == EN("start.stranger")
        assert (data_dir / "postgres" / "postmaster.pid").exists()
        assert await bot.terminate(timeout=15) == 0
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # stopped on exit
