"""The embedded PostgreSQL used when DATABASE_URL is unset (from the `pgserver` wheel)."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

DATABASE_NAME = "villagebeat"
log = logging.getLogger(__name__)


class EmbeddedPostgres:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: Any = None

    async def start(self) -> str:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(self._start_server)
        socket_dir = parse_qs(urlsplit(self._server.get_uri()).query)["host"][0]
        conn = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            await conn.close()
        return f"postgresql+asyncpg://postgres@/{DATABASE_NAME}?host={socket_dir}"

    def _start_server(self) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            from pgserver.postgres_server import get_server

            logging.getLogger("pgserver").setLevel(logging.WARNING)
            return get_server(self.pgdata, cleanup_mode="stop")

    async def stop(self) -> None:
        """Stop the server unless another process of ours still uses it."""
        if self._server is not None:
            await asyncio.to_thread(self._server._cleanup)
            self._server = None
