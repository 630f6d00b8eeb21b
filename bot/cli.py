"""The `villagebeat` command. Only `run` and `worker` import aiogram (seconds of start-up);
the rest answer in well under two seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.settings import Settings
    from storage.directory import AfterImport, ImportReport


class CommandError(Exception):
    """Bad input or an unmet precondition: one line for the operator, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="villagebeat",
        description="Village Beat: the 'one village, one officer' bot and its back office.",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    run = commands.add_parser("run", help="run the bot (migrates the database first)")
    run.set_defaults(handler=_run)
    worker = commands.add_parser(
        "worker",
        help="outbox delivery, photo downloads, housekeeping and the scheduler, without the bot",
        description="The background work of `run` without receiving updates, for deployments "
        "that run the bot and the background work as separate processes. Migrates the "
        "database first; needs BOT_TOKEN; stops on SIGTERM or SIGINT.",
    )
    worker.set_defaults(handler=_worker)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(
        dest="db_command", metavar="ACTION", required=True, parser_class=_Parser
    )
    db_commands.add_parser("upgrade", help="apply database migrations").set_defaults(
        handler=_db_upgrade
    )

    imp = commands.add_parser("import", help="import reference data")
    imp_commands = imp.add_subparsers(
        dest="import_kind", metavar="KIND", required=True, parser_class=_Parser
    )
    directory = imp_commands.add_parser(
        "directory",
        help="stations, villages, officers and assignments from a CSV or XLSX file",
        description="Columns: station_code, station_name, village_code, village_name, latitude, "
        "longitude, officer_badge, officer_name, assignment (resident|contact). "
        "All-or-nothing; re-importing the same file changes nothing.",
    )
    directory.add_argument("file", type=Path, metavar="FILE")
    directory.set_defaults(handler=_import_directory)

    invite = commands.add_parser("invite", help="one-time join links for officers and supervisors")
    invite_kinds = invite.add_subparsers(
        dest="invite_kind", metavar="ROLE", required=True, parser_class=_Parser
    )
    officer = invite_kinds.add_parser("officer", help="an officer's invite link, by badge number")
    officer.add_argument("badge", metavar="BADGE")
    officer.add_argument(
        "--json", action="store_true", help="print link, payload and expiry as JSON"
    )
    officer.set_defaults(handler=_invite_officer)
    supervisor = invite_kinds.add_parser(
        "supervisor", help="a supervisor's invite link, scoped to stations or the county"
    )
    scope = supervisor.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--station", action="append", metavar="CODE", help="a station in scope (repeatable)"
    )
    scope.add_argument("--county", action="store_true", help="the whole county")
    supervisor.add_argument("--name", help="the supervisor's name, shown in digests")
    supervisor.add_argument(
        "--json", action="store_true", help="print link, payload and expiry as JSON"
    )
    supervisor.set_defaults(handler=_invite_supervisor)

    link = commands.add_parser("village-link", help="the villagers' public join link for a village")
    link.add_argument("village_code", metavar="VILLAGE_CODE")
    link.add_argument("--json", action="store_true", help="print the link as JSON")
    link.set_defaults(handler=_village_link)

    export = commands.add_parser(
        "export",
        help="a month of visit reports, hazards, villagers' requests or scores as CSV or XLSX",
        description="CSV is UTF-8 with a BOM, yes/no for true/false; XLSX has real dates, "
        "numbers and booleans. Times are in the county's time zone (TIMEZONE). The file is "
        "replaced only by a complete export.",
    )
    export.add_argument(
        "kind", choices=["visits", "hazards", "requests", "scores"], help="what to export"
    )
    export.add_argument("--month", required=True, metavar="YYYY-MM", help="the calendar month")
    export.add_argument("--station", metavar="CODE", help="only this station's villages")
    export.add_argument("--format", required=True, choices=["csv", "xlsx"], help="file format")
    export.add_argument("--out", required=True, type=Path, metavar="FILE", help="file to write")
    export.set_defaults(handler=_export)
    from bot.cli_jobs import add_parser as add_jobs_parser
    from bot.cli_quota import add_parser as add_quota_parser

    add_quota_parser(commands, _Parser)
    add_jobs_parser(commands, _Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from bot.settings import SettingsError

    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        code = handler(args)
    except (CommandError, SettingsError) as exc:
        print(f"villagebeat: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)


def _run(args: argparse.Namespace) -> int:
    from bot.settings import load_settings

    settings = load_settings()
    settings.require_token()
    from bot.serve import serve  # aiogram: seconds to import, so only once settings are good

    return asyncio.run(serve(settings))


def _worker(args: argparse.Namespace) -> int:
    from bot.settings import load_settings

    settings = load_settings()
    settings.require_token()
    from bot.serve import work  # aiogram, as for `run`: only once settings are good

    return asyncio.run(work(settings))


def _with_database(
    work: Callable[[Any, Any], Coroutine[Any, Any, Any]], *, migrate: bool = True
) -> Any:
    """Run `work(db, settings)` on a migrated database (or as it is, for a read that may
    fail); connection failures in one line."""
    from bot.settings import load_settings

    settings = load_settings()

    async def go() -> Any:
        from storage.db import open_database
        from storage.migrate import upgrade

        async with open_database(settings.database_url, settings.data_dir, pool_size=4) as db:
            if migrate:
                await upgrade(db.engine)
            return await work(db, settings)

    try:
        return asyncio.run(go())
    except (OSError, ConnectionError) as exc:
        raise CommandError(f"cannot reach the database: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "asyncpg")):
            raise CommandError(f"database error: {str(exc).splitlines()[0]}") from None
        raise


def _db_upgrade(args: argparse.Namespace) -> None:
    from storage.migrate import head_revision

    _with_database(_noop)
    print(f"database is at revision {head_revision()}")


async def _noop(db: Any, settings: Any) -> None:
    return None


def _import_directory(args: argparse.Namespace) -> None:
    from core.directory import DirectoryError
    from storage.directory import import_directory

    if not args.file.is_file():
        raise CommandError(f"{args.file}: no such file")

    moves = RequestMoves()

    async def work(db: Any, settings: Any) -> Any:
        return await import_directory(
            db.sessions, args.file, after=move_requests_after_import(settings, moves)
        )

    try:
        report = _with_database(work)
    except DirectoryError as exc:
        for problem in exc.problems:
            where = f"line {problem.line}: " if problem.line is not None else ""
            print(f"{args.file}: {where}{problem.message}", file=sys.stderr)
        raise CommandError(f"{len(exc.problems)} problem(s) found; nothing was imported") from None
    for line in [*report.lines(), *moves.lines()]:
        print(line)


@dataclass
class RequestMoves:
    """What an import did to villagers' open requests, for its summary."""

    to_officer: int = 0
    to_supervisor: int = 0
    stranded: int = 0
    notes: int = 0

    def lines(self) -> list[str]:
        lines = []
        if self.to_officer:
            lines.append(f"open requests moved to their new officer: {self.to_officer}")
        if self.to_supervisor:
            lines.append(f"open requests moved to a supervisor: {self.to_supervisor}")
        if self.stranded:
            lines.append(
                f"open requests with nobody to handle them: {self.stranded}"
                " (no officer in the village, no supervisor for its station or the county)"
            )
        return lines


def move_requests_after_import(settings: Settings, moves: RequestMoves) -> AfterImport:
    """The import's hook: the open requests of villages whose officers changed go to whoever
    their route leads to now, with notes to both handlers and the villager, in the import's
    transaction. `moves` collects the counts."""

    async def after(session: AsyncSession, report: ImportReport) -> None:
        from bot.request_texts import note_reassignments
        from core.clock import system_clock
        from core.requests import RouteKind
        from storage.requests import reroute_open_requests, village_ids_by_code

        # A post filled for the first time counts too: the village's requests were with a
        # supervisor until now.
        codes = {r.village_code for r in report.reassignments}
        if not codes:
            return
        rerouting = await reroute_open_requests(
            session,
            village_ids=await village_ids_by_code(session, codes),
            now=system_clock(),
            config=settings.deadlines,
        )
        officers = sum(m.new.kind is RouteKind.OFFICER for m in rerouting.moved)
        moves.to_officer += officers
        moves.to_supervisor += len(rerouting.moved) - officers
        moves.stranded += len(rerouting.stranded)
        moves.notes += await note_reassignments(
            session, rerouting, default_locale=settings.default_locale
        )

    return after


def _invite_officer(args: argparse.Namespace) -> None:
    from bot.joinlinks import officer_invite

    _print_link(
        _with_database(lambda db, settings: officer_invite(db, settings, args.badge)), args.json
    )


def _invite_supervisor(args: argparse.Namespace) -> None:
    from bot.joinlinks import supervisor_invite

    stations = sorted(set(args.station or []))
    _print_link(
        _with_database(
            lambda db, settings: supervisor_invite(db, settings, stations, args.county, args.name)
        ),
        args.json,
    )


def _village_link(args: argparse.Namespace) -> None:
    from bot.joinlinks import village_link

    _print_link(
        _with_database(lambda db, settings: village_link(db, settings, args.village_code)),
        args.json,
    )


def _export(args: argparse.Namespace) -> None:
    from bot.cli_export import run_export

    run_export(args)


def _print_link(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "notes"}, ensure_ascii=False))
        return
    print(result["link"])
    for note in result.get("notes", []):
        print(note, file=sys.stderr)
