"""Download report and hazard photos in the background, never blocking officers.

The bot stores a photo as Telegram ids in the report's transaction. This worker claims due
photos in a short transaction (storage.photos.claim_pending leases them, so other workers
leave them alone), downloads each outside any transaction, writes it as
`<media_dir>/<sha[:2]>/<sha>.jpg` (identical pictures share one file) and records the
outcome in another short transaction. Failures are retried with exponential backoff capped
at an hour, forever: a file_id stays valid, so a later attempt can still succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import tempfile
from datetime import timedelta
from io import BytesIO
from pathlib import Path

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import Clock
from storage.photos import (
    CLAIM_LEASE,
    MAX_RETRY_DELAY,
    PendingPhoto,
    claim_pending,
    mark_downloaded,
    mark_failed,
    retry_delay,
)

log = logging.getLogger(__name__)


class IncompleteDownload(Exception):
    """Fewer bytes arrived than getFile announced."""


def media_path(sha256: str) -> str:
    """Where a picture with this digest lives, relative to the media directory."""
    return f"{sha256[:2]}/{sha256}.jpg"


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _failure_delay(exc: BaseException, attempts: int) -> timedelta:
    """The wait before the next attempt, `attempts` counting this failure."""
    if isinstance(exc, TelegramBadRequest):
        # "file is too big", "wrong file_id": retrying soon will not change the answer.
        return MAX_RETRY_DELAY
    delay = retry_delay(attempts)
    if isinstance(exc, TelegramRetryAfter):
        delay = max(delay, timedelta(seconds=exc.retry_after))
    return delay


class MediaDownloader:
    """Claim pending photos, download them, store them by content hash, record the outcome.

    Several downloaders (in one process or several) may run against the same database;
    each photo is downloaded by one of them at a time.
    """

    def __init__(
        self,
        bot: Bot,
        sessions: async_sessionmaker[AsyncSession],
        media_dir: Path,
        *,
        clock: Clock,
        batch: int = 10,
        idle_interval: float = 5.0,
        download_timeout: float = 60.0,
        lease: timedelta = CLAIM_LEASE,
        stop_grace: float = 5.0,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if lease.total_seconds() <= download_timeout:
            raise ValueError("the claim lease must outlast a download")
        self.bot = bot
        self.sessions = sessions
        self.media_dir = media_dir
        self.clock = clock
        self.batch = batch
        self.idle_interval = idle_interval
        self.download_timeout = download_timeout
        self.lease = lease
        self.stop_grace = stop_grace

    async def run_once(self) -> int:
        """Claim up to `batch` due photos and try each once (concurrently).

        Returns how many were handled, i.e. downloaded or counted as failed.
        """
        async with self.sessions() as session, session.begin():
            pending = await claim_pending(
                session, now=self.clock(), limit=self.batch, lease=self.lease
            )
        if not pending:
            return 0
        outcomes = await asyncio.gather(
            *(self._handle(photo) for photo in pending), return_exceptions=True
        )
        handled = 0
        for photo, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                # Recording the outcome failed (database away): the lease runs out and
                # the photo is tried again then.
                log.error("photo %s: could not record the outcome", photo.id, exc_info=outcome)
            else:
                handled += 1
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        """Download until `stop` is set; an error is logged and the loop goes on.

        A pass under way when `stop` is set gets `stop_grace` seconds to finish, then it is
        cancelled (its photos come due again when their lease ends).
        """
        log.info("media downloader started (%s)", self.media_dir)
        while not stop.is_set():
            handled = await self._pass(stop)
            if handled == 0 and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.idle_interval)
        log.info("media downloader stopped")

    async def _pass(self, stop: asyncio.Event) -> int:
        work = asyncio.create_task(self.run_once())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await asyncio.wait({work}, timeout=self.stop_grace)
        finally:
            stopping.cancel()
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
        if work.cancelled():
            return 0
        error = work.exception()
        if error is not None:
            log.error("media download pass failed", exc_info=error)
            return 0
        return work.result()

    async def _handle(self, photo: PendingPhoto) -> None:
        try:
            async with asyncio.timeout(self.download_timeout):
                data = await self._fetch(photo.file_id)
            sha256 = hashlib.sha256(data).hexdigest()
            path = await asyncio.to_thread(self._store, sha256, data)
        except Exception as exc:
            attempts = photo.attempts + 1
            delay = _failure_delay(exc, attempts)
            log.warning(
                "photo %s: download attempt %d failed (%s); next in %s",
                photo.id,
                attempts,
                _describe(exc),
                delay,
            )
            async with self.sessions() as session, session.begin():
                await mark_failed(
                    session,
                    photo_id=photo.id,
                    error=_describe(exc),
                    now=self.clock(),
                    retry_in=delay,
                )
            return
        async with self.sessions() as session, session.begin():
            reused = await mark_downloaded(
                session,
                photo_id=photo.id,
                sha256=sha256,
                path=path,
                size=len(data),
                now=self.clock(),
            )
        if reused:
            log.info("photo %s: the same picture is in another report", photo.id)

    async def _fetch(self, file_id: str) -> bytes:
        file = await self.bot.get_file(file_id)
        if file.file_path is None:
            raise IncompleteDownload("getFile gave no file_path")
        buffer = BytesIO()
        await self.bot.download_file(
            file.file_path, destination=buffer, timeout=math.ceil(self.download_timeout)
        )
        data = buffer.getvalue()
        if file.file_size is not None and len(data) != file.file_size:
            raise IncompleteDownload(f"got {len(data)} of {file.file_size} bytes")
        return data

    def _store(self, sha256: str, data: bytes) -> str:
        """Write the picture under its digest (temp file, fsync, rename); blocking."""
        relative = media_path(sha256)
        target = self.media_dir / relative
        with contextlib.suppress(FileNotFoundError):
            if target.stat().st_size == len(data):
                return relative  # the same picture is already there
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{sha256[:12]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _sync_directory(target.parent)
        return relative


def _sync_directory(directory: Path) -> None:
    """Make a rename durable where the platform allows syncing a directory."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    fd = os.open(directory, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
