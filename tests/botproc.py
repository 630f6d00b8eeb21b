"""`villagebeat run` (or `worker`) as a child process, for end-to-end tests over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.botapi import BotApiServer

STARTUP_TIMEOUT = 60.0  # importing aiogram alone takes seconds on a slow machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BotProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, command: str = "run") -> None:
        self.env = {**os.environ, **env}
        self.command = command
        self.data_dir = Path(self.env.get("DATA_DIR", "var"))
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            self.command,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a power cut."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"bot did not stop within {timeout}s on SIGTERM\n{self.log()}"
            ) from None

    async def ready(self, server: BotApiServer, method: str, *, since: int | None = None) -> None:
        """Wait for the call that shows the bot is up; fail at once, with its log, if it died."""
        assert self.proc is not None
        call = asyncio.ensure_future(
            server.wait_for_call(method, since=since, timeout=STARTUP_TIMEOUT)
        )
        exited = asyncio.ensure_future(self.proc.wait())
        await asyncio.wait({call, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not call.done():
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            raise AssertionError(f"the bot exited with {self.proc.returncode}:\n{self.log()}")
        exited.cancel()
        call.result()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None
