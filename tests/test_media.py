"""The background photo downloader against the fake Bot API, and the photo repository."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import BufferedInputFile
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.session import BotSession
from scheduler.media import MediaDownloader, media_path
from storage.models import Hazard, Photo, VisitReport
from storage.photos import (
    CLAIM_LEASE,
    MAX_RETRY_DELAY,
    claim_pending,
    flag_reused_file_ids,
    mark_failed,
    retry_delay,
)
from tests.botapi import DEFAULT_TOKEN, BotApiServer, SimUser
from tests.factories import Directory

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

FileRef = tuple[str, str]  # (file_id, file_unique_id)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
async def bot(botapi: BotApiServer) -> AsyncIterator[Bot]:
    await botapi.reset()
    bot = Bot(DEFAULT_TOKEN, session=BotSession(api=TelegramAPIServer.from_base(botapi.url)))
    yield bot
    await bot.session.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def media_dir(tmp_data_dir: Path) -> Path:
    return tmp_data_dir / "media"


def downloader(
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    media_dir: Path,
    clock: Clock,
    **kwargs: Any,
) -> MediaDownloader:
    return MediaDownloader(bot, sessions, media_dir, clock=clock, **kwargs)


async def user_photo(server: BotApiServer, user: SimUser) -> FileRef:
    """The largest size of a photo the user sends, as the bot would store it."""
    update = await server.send_photo(user)
    largest = update["message"]["photo"][-1]
    return largest["file_id"], largest["file_unique_id"]


async def upload_again(bot: Bot, user: SimUser, data: bytes) -> FileRef:
    """The same bytes as a new Telegram file (another file_id and file_unique_id)."""
    message = await bot.send_photo(user.id, BufferedInputFile(data, "again.jpg"))
    assert message.photo is not None
    largest = message.photo[-1]
    return largest.file_id, largest.file_unique_id


async def add_report(
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    draft_id: str,
    files: Sequence[FileRef],
    *,
    due: Sequence[datetime] | None = None,
) -> list[int]:
    """A visit report with these photos, pending since T0 (or `due`); their ids."""
    async with sessions() as s, s.begin():
        report = VisitReport(
            draft_id=draft_id,
            officer_id=directory.officers[0].id,
            village_id=directory.villages[0].id,
            visit_date=date(2025, 3, 1),
            hours=Decimal("2.5"),
            households=4,
            submitted_by=100_000_001,
        )
        s.add(report)
        await s.flush()
        photos = [
            Photo(
                visit_report_id=report.id,
                position=i,
                file_id=file_id,
                file_unique_id=unique_id,
                next_attempt_at=due[i] if due else T0,
            )
            for i, (file_id, unique_id) in enumerate(files)
        ]
        s.add_all(photos)
        await s.flush()
        return [p.id for p in photos]


async def add_hazard(
    sessions: async_sessionmaker[AsyncSession], directory: Directory, files: Sequence[FileRef]
) -> list[int]:
    async with sessions() as s, s.begin():
        hazard = Hazard(
            draft_id="hz-1",
            officer_id=directory.officers[0].id,
            village_id=directory.villages[0].id,
            category="fire",
            severity="high",
            description="灶台旁堆放柴草",
            reported_by=100_000_001,
        )
        s.add(hazard)
        await s.flush()
        photos = [
            Photo(hazard_id=hazard.id, position=i, file_id=f, file_unique_id=u, next_attempt_at=T0)
            for i, (f, u) in enumerate(files)
        ]
        s.add_all(photos)
        await s.flush()
        return [p.id for p in photos]


async def load(sessions: async_sessionmaker[AsyncSession], ids: Sequence[int]) -> list[Photo]:
    async with sessions() as s:
        rows = await s.scalars(select(Photo).where(Photo.id.in_(ids)))
        by_id = {p.id: p for p in rows}
    return [by_id[i] for i in ids]


def get_file_calls(server: BotApiServer) -> Counter[str]:
    return Counter(str(c.params["file_id"]) for c in server.calls_of("getFile"))


def stored_files(media_dir: Path) -> list[Path]:
    return sorted(p for p in media_dir.rglob("*") if p.is_file())


# -- downloading --------------------------------------------------------------------------


async def test_run_once_downloads_pending_photos(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    files = [await user_photo(botapi, user), await user_photo(botapi, user)]
    ids = await add_report(sessions, directory, "d-1", files)
    worker = downloader(bot, sessions, media_dir, clock)

    assert await worker.run_once() == 2

    for photo, (file_id, _) in zip(await load(sessions, ids), files, strict=True):
        data = botapi.file_data(file_id)
        sha = hashlib.sha256(data).hexdigest()
        assert photo.sha256 == sha
        assert photo.path == f"{sha[:2]}/{sha}.jpg" == media_path(sha)
        assert (media_dir / photo.path).read_bytes() == data
        assert photo.size == len(data)
        assert photo.downloaded_at == T0
        assert (photo.attempts, photo.last_error, photo.reused) == (0, None, False)
    assert len(stored_files(media_dir)) == 2  # no temporary files left behind
    assert await worker.run_once() == 0
    assert sorted(get_file_calls(botapi).values()) == [1, 1]


async def test_failed_get_file_is_retried_with_backoff(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    file_id, _ = await user_photo(botapi, user)
    [photo_id] = await add_report(sessions, directory, "d-1", [(file_id, "u")])
    worker = downloader(bot, sessions, media_dir, clock)
    botapi.fail_next("getFile", status=500)

    assert await worker.run_once() == 1
    [photo] = await load(sessions, [photo_id])
    assert (photo.sha256, photo.path, photo.downloaded_at) == (None, None, None)
    assert photo.attempts == 1
    assert photo.last_error is not None and "Internal Server Error" in photo.last_error
    assert photo.next_attempt_at == T0 + retry_delay(1) > clock.now
    assert stored_files(media_dir) == []

    assert await worker.run_once() == 0  # not due yet
    clock.advance(retry_delay(1))
    assert await worker.run_once() == 1
    [photo] = await load(sessions, [photo_id])
    assert photo.sha256 == hashlib.sha256(botapi.file_data(file_id)).hexdigest()
    assert (photo.attempts, photo.last_error) == (1, None)
    assert get_file_calls(botapi)[file_id] == 2


async def test_bad_request_is_retried_at_the_cap_forever(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    [photo_id] = await add_report(sessions, directory, "d-1", [("AgACnot-a-file", "u")])
    worker = downloader(bot, sessions, media_dir, clock)
    for attempt in range(1, 4):
        assert await worker.run_once() == 1
        [photo] = await load(sessions, [photo_id])
        assert photo.attempts == attempt
        assert photo.last_error is not None and "invalid file_id" in photo.last_error
        assert photo.next_attempt_at == clock.now + MAX_RETRY_DELAY
        assert await worker.run_once() == 0
        clock.advance(MAX_RETRY_DELAY)
    assert photo.sha256 is None


async def test_file_too_big_waits_the_cap_then_succeeds(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    file_id, unique_id = await user_photo(botapi, user)
    [photo_id] = await add_report(sessions, directory, "d-1", [(file_id, unique_id)])
    worker = downloader(bot, sessions, media_dir, clock)
    botapi.fail_next("getFile", status=400, description="Bad Request: file is too big")

    assert await worker.run_once() == 1
    [photo] = await load(sessions, [photo_id])
    assert photo.last_error is not None and "file is too big" in photo.last_error
    assert photo.next_attempt_at == T0 + MAX_RETRY_DELAY
    clock.advance(MAX_RETRY_DELAY - timedelta(seconds=1))
    assert await worker.run_once() == 0
    clock.advance(timedelta(seconds=1))
    assert await worker.run_once() == 1
    [photo] = await load(sessions, [photo_id])
    assert photo.sha256 is not None and photo.downloaded_at == clock.now


async def test_retry_delay_doubles_up_to_an_hour(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays[:4] == [timedelta(seconds=s) for s in (30, 60, 120, 240)]
    assert delays[-1] == MAX_RETRY_DELAY == timedelta(hours=1)
    assert all(a <= b for a, b in pairwise(delays))
    assert retry_delay(10_000) == MAX_RETRY_DELAY

    [photo_id] = await add_report(sessions, directory, "d-1", [("f", "u")])
    async with sessions() as s, s.begin():
        await mark_failed(
            s, photo_id=photo_id, error="x" * 5000, now=T0, retry_in=timedelta(days=1)
        )
    [photo] = await load(sessions, [photo_id])
    assert photo.next_attempt_at == T0 + MAX_RETRY_DELAY
    assert photo.attempts == 1 and photo.last_error == "x" * 2000


# -- reuse --------------------------------------------------------------------------------


async def test_same_bytes_under_another_file_are_flagged_reused(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    first = await user_photo(botapi, user)
    picture = botapi.file_data(first[0])
    again = await upload_again(bot, user, picture)
    assert again[0] != first[0] and again[1] != first[1]
    other = await user_photo(botapi, user)
    other_again = await upload_again(bot, user, botapi.file_data(other[0]))

    [a] = await add_report(sessions, directory, "d-1", [first])
    # The second report repeats report 1's picture, and one of its own twice (not a reuse).
    b, c, d = await add_report(sessions, directory, "d-2", [again, other, other_again])

    assert await downloader(bot, sessions, media_dir, clock).run_once() == 4

    photos = await load(sessions, [a, b, c, d])
    assert [p.reused for p in photos] == [True, True, False, False]
    assert photos[0].path == photos[1].path and photos[2].path == photos[3].path
    assert photos[0].sha256 == hashlib.sha256(picture).hexdigest()
    assert len(stored_files(media_dir)) == 2  # one file per distinct picture


async def test_reuse_is_found_when_the_earlier_photo_is_downloaded_later(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    first = await user_photo(botapi, user)
    again = await upload_again(bot, user, botapi.file_data(first[0]))
    [a] = await add_report(sessions, directory, "d-1", [first], due=[T0 + timedelta(hours=1)])
    [b] = await add_report(sessions, directory, "d-2", [again])
    worker = downloader(bot, sessions, media_dir, clock)

    assert await worker.run_once() == 1
    assert [p.reused for p in await load(sessions, [a, b])] == [False, False]
    clock.advance(timedelta(hours=1))
    assert await worker.run_once() == 1
    assert [p.reused for p in await load(sessions, [a, b])] == [True, True]


async def test_flag_reused_file_ids(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await botapi.reset()
    user = botapi.user()
    shared, fresh = await user_photo(botapi, user), await user_photo(botapi, user)
    older = await add_report(sessions, directory, "d-1", [shared])
    # A hazard reported with the report's picture (forwarded: same Telegram file) and a new one.
    newer = await add_hazard(sessions, directory, [shared, fresh])
    async with sessions() as s, s.begin():
        assert await flag_reused_file_ids(s, photo_ids=[]) == 0
        assert await flag_reused_file_ids(s, photo_ids=newer) == 1
    photos = await load(sessions, [*older, *newer])
    assert [p.reused for p in photos] == [True, True, False]

    # A later report with the hazard's new picture, twice: both photos are reuses.
    doubled = await add_report(sessions, directory, "d-2", [fresh, fresh])
    async with sessions() as s, s.begin():
        assert await flag_reused_file_ids(s, photo_ids=doubled) == 2
    photos = await load(sessions, [*older, *newer, *doubled])
    assert [p.reused for p in photos] == [True, True, True, True, True]


async def test_flag_reused_file_ids_ignores_one_owner(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await botapi.reset()
    user = botapi.user()
    picture = await user_photo(botapi, user)
    ids = await add_report(sessions, directory, "d-1", [picture, picture])
    async with sessions() as s, s.begin():
        assert await flag_reused_file_ids(s, photo_ids=ids) == 0
    assert [p.reused for p in await load(sessions, ids)] == [False, False]


# -- several workers ----------------------------------------------------------------------


async def test_claims_skip_locked_rows_and_lease_the_rest(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    due = [T0 - timedelta(minutes=m) for m in (1, 4, 3, 2)]
    ids = await add_report(
        sessions, directory, "d-1", [(f"f{i}", f"u{i}") for i in range(4)], due=due
    )
    by_age = [ids[1], ids[2], ids[3], ids[0]]

    async with sessions() as first, first.begin():
        claimed = await claim_pending(first, now=T0, limit=2)
        assert [p.id for p in claimed] == by_age[:2]
        assert [p.file_id for p in claimed] == ["f1", "f2"]
        # While the first transaction holds its rows, a second one takes the others.
        async with sessions() as second, second.begin(), asyncio.timeout(5):
            assert [p.id for p in await claim_pending(second, now=T0, limit=10)] == by_age[2:]

    async with sessions() as s, s.begin():
        # Committed: no locks any more, but the lease keeps them from everybody else.
        assert await claim_pending(s, now=T0 + CLAIM_LEASE - timedelta(seconds=1), limit=10) == []
    async with sessions() as s, s.begin():
        again = await claim_pending(s, now=T0 + CLAIM_LEASE, limit=10)
        assert sorted(p.id for p in again) == sorted(ids)


async def test_two_downloaders_download_each_photo_once(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    files = [await user_photo(botapi, user) for _ in range(6)]
    ids = await add_report(sessions, directory, "d-1", files)
    one = downloader(bot, sessions, media_dir, clock, batch=4)
    two = downloader(bot, sessions, media_dir, clock, batch=4)

    handled = await asyncio.gather(one.run_once(), two.run_once(), one.run_once(), two.run_once())

    assert sum(handled) == 6
    assert get_file_calls(botapi) == Counter({file_id: 1 for file_id, _ in files})
    assert all(p.sha256 is not None for p in await load(sessions, ids))
    assert len(stored_files(media_dir)) == 6


class GatedDownloader(MediaDownloader):
    """Holds its downloads until the gate opens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def _fetch(self, file_id: str) -> bytes:
        self.entered.set()
        await self.gate.wait()
        return await super()._fetch(file_id)


async def test_a_photo_being_downloaded_is_left_to_its_worker(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    files = [await user_photo(botapi, user) for _ in range(3)]
    ids = await add_report(sessions, directory, "d-1", files)
    slow = GatedDownloader(bot, sessions, media_dir, clock=clock, batch=2)
    other = downloader(bot, sessions, media_dir, clock)

    first = asyncio.create_task(slow.run_once())
    await asyncio.wait_for(slow.entered.wait(), 5)
    # The claim is committed and its row locks are gone; the lease still holds the photos.
    assert await other.run_once() == 1
    assert await other.run_once() == 0
    slow.gate.set()
    assert await first == 2

    assert get_file_calls(botapi) == Counter({file_id: 1 for file_id, _ in files})
    assert all(p.sha256 is not None for p in await load(sessions, ids))


# -- the loop -----------------------------------------------------------------------------


async def wait_downloaded(sessions: async_sessionmaker[AsyncSession], photo_id: int) -> None:
    async with asyncio.timeout(10):
        while True:
            [photo] = await load(sessions, [photo_id])
            if photo.sha256 is not None:
                return
            await asyncio.sleep(0.02)


async def test_run_stops_promptly(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    user = botapi.user()
    [photo_id] = await add_report(sessions, directory, "d-1", [await user_photo(botapi, user)])
    stop = asyncio.Event()
    task = asyncio.create_task(
        downloader(bot, sessions, media_dir, clock, idle_interval=60).run(stop)
    )
    await wait_downloaded(sessions, photo_id)
    await asyncio.sleep(0.05)  # now idle, for a minute
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert task.done() and task.exception() is None


class HangingDownloader(MediaDownloader):
    async def _fetch(self, file_id: str) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_stop_cancels_a_hanging_download_after_the_grace(
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
) -> None:
    [photo_id] = await add_report(sessions, directory, "d-1", [("f", "u")])
    stop = asyncio.Event()
    worker = HangingDownloader(bot, sessions, media_dir, clock=clock, stop_grace=0.1)
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 1.0)
    [photo] = await load(sessions, [photo_id])
    # Claimed (leased) but neither downloaded nor counted as failed: it comes back later.
    assert (photo.sha256, photo.attempts) == (None, 0)
    assert photo.next_attempt_at == T0 + CLAIM_LEASE


class FlakyDownloader(MediaDownloader):
    failures = 2

    async def run_once(self) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("database away")
        return await super().run_once()


async def test_run_survives_errors(
    botapi: BotApiServer,
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    media_dir: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = botapi.user()
    [photo_id] = await add_report(sessions, directory, "d-1", [await user_photo(botapi, user)])
    stop = asyncio.Event()
    worker = FlakyDownloader(bot, sessions, media_dir, clock=clock, idle_interval=0.01)
    with caplog.at_level(logging.ERROR, logger="scheduler.media"):
        task = asyncio.create_task(worker.run(stop))
        try:
            await wait_downloaded(sessions, photo_id)
        finally:
            stop.set()
            await asyncio.wait_for(task, 2.0)
    assert worker.failures == 0
    errors = [r for r in caplog.records if r.getMessage() == "media download pass failed"]
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["database away"] * 2


async def test_lease_must_outlast_a_download(bot: Bot, media_dir: Path, clock: Clock) -> None:
    with pytest.raises(ValueError, match="lease"):
        MediaDownloader(
            bot,
            async_sessionmaker(),
            media_dir,
            clock=clock,
            download_timeout=600,
            lease=timedelta(minutes=5),
        )
