"""`villagebeat export`: a month of visits, hazards, requests or scores as CSV or XLSX (no
aiogram here)."""

from __future__ import annotations

import argparse
import functools
import os
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.cli import CommandError, _with_database
from storage import exports

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


class RowsQuery(Protocol):
    def __call__(
        self, session: AsyncSession, *, month: date, station_code: str | None, tz: str
    ) -> Awaitable[list[exports.Row]]: ...


@dataclass(frozen=True)
class ExportKind:
    columns: Sequence[str]
    rows: RowsQuery
    singular: str
    plural: str


KINDS: dict[str, ExportKind] = {
    "visits": ExportKind(exports.VISIT_COLUMNS, exports.visit_rows, "visit", "visits"),
    "hazards": ExportKind(exports.HAZARD_COLUMNS, exports.hazard_rows, "hazard", "hazards"),
    "requests": ExportKind(exports.REQUEST_COLUMNS, exports.request_rows, "request", "requests"),
}


def rows_query(kind: str, settings: Any) -> RowsQuery:
    """The kind's query; requests' *_met columns are judged against the deadlines in force,
    as of the time of the export."""
    if kind == "requests":
        return functools.partial(
            exports.request_rows, now=datetime.now(UTC), deadlines=settings.deadlines
        )
    return KINDS[kind].rows


_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$", re.ASCII)


def parse_month(text: str) -> date:
    """'2026-11' → date(2026, 11, 1); anything else is a CommandError."""
    match = _MONTH_RE.match(text.strip())
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1:
        raise CommandError(f"invalid month {text!r}: expected YYYY-MM, e.g. 2026-11")
    return date(int(match[1]), int(match[2]), 1)


def check_output(path: Path) -> None:
    """Refuse, before any work, a path the export could not be renamed onto."""
    parent = path.parent
    try:
        if path.is_dir():
            raise CommandError(f"cannot write {path}: it is a directory")
        if not parent.exists():
            raise CommandError(f"cannot write {path}: no such directory {str(parent)!r}")
        if not parent.is_dir():
            raise CommandError(f"cannot write {path}: {str(parent)!r} is not a directory")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write {path}: permission denied")


def run_export(args: argparse.Namespace) -> None:
    if args.kind == "scores":
        run_scores_export(args)
        return
    kind = KINDS[args.kind]
    month = parse_month(args.month)
    out: Path = args.out
    check_output(out)

    async def work(db: Any, settings: Any) -> list[exports.Row]:
        async with db.sessions() as session:
            try:
                return await rows_query(args.kind, settings)(
                    session, month=month, station_code=args.station, tz=settings.timezone
                )
            except exports.UnknownStationError as exc:
                raise CommandError(f"{exc}; import the directory first") from None

    rows: list[exports.Row] = _with_database(work)
    try:
        exports.write_file(out, args.format, kind.columns, rows, title=f"{args.kind} {month:%Y-%m}")
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from None
    noun = kind.singular if len(rows) == 1 else kind.plural
    station = f" (station {args.station})" if args.station else ""
    print(f"wrote {len(rows)} {noun} for {month:%Y-%m}{station} to {out}")


def run_scores_export(args: argparse.Namespace) -> None:
    """The month's ranking, one row per officer; XLSX adds a sheet with every item behind
    the points (CSV holds the ranking only)."""
    month = parse_month(args.month)
    out: Path = args.out
    check_output(out)

    async def work(db: Any, settings: Any) -> tuple[list[exports.Row], list[exports.Row]]:
        async with db.sessions() as session:
            try:
                return await exports.score_rows(
                    session,
                    month=month,
                    station_code=args.station,
                    tz=settings.timezone,
                    table=settings.points,
                )
            except exports.UnknownStationError as exc:
                raise CommandError(f"{exc}; import the directory first") from None

    ranking, items = _with_database(work)
    try:
        if args.format == "csv":
            exports.write_file(out, "csv", exports.SCORE_COLUMNS, ranking)
        else:
            exports.write_workbook_file(
                out,
                [
                    exports.Sheet(f"scores {month:%Y-%m}", exports.SCORE_COLUMNS, ranking),
                    exports.Sheet(f"items {month:%Y-%m}", exports.SCORE_ITEM_COLUMNS, items),
                ],
            )
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from None
    noun = "officer" if len(ranking) == 1 else "officers"
    station = f" (station {args.station})" if args.station else ""
    detail = f" and {len(items)} score items" if args.format == "xlsx" else ""
    print(f"wrote {len(ranking)} {noun}{detail} for {month:%Y-%m}{station} to {out}")
