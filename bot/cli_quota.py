"""`villagebeat quota set|clear|show`: where a station's or village's quota differs."""

from __future__ import annotations

import argparse
from typing import Any

from bot.cli import CommandError, _with_database
from core.quota import COUNTERS, PROFILES, QuotaOverride, profile


def add_parser(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    quota = commands.add_parser(
        "quota",
        help="quota overrides per station or village",
        description="The county's quota is QUOTA_PROFILE (xi: 4 days and 4 households a month; "
        "changde: 4 days, 10 households, 2 patrols, 5 problems solved). A station or a village "
        "may have its own: a profile, and/or single counters; a village's wins over its station's.",
    )
    actions = quota.add_subparsers(
        dest="quota_action", metavar="ACTION", required=True, parser_class=parser_class
    )
    for name, help_text in (("set", "set an override"), ("clear", "remove an override")):
        action = actions.add_parser(name, help=help_text)
        scope = action.add_mutually_exclusive_group(required=True)
        scope.add_argument("--station", metavar="CODE")
        scope.add_argument("--village", metavar="CODE")
        if name == "set":
            action.add_argument("--profile", choices=sorted(PROFILES))
            for counter in COUNTERS:
                action.add_argument(f"--{counter.replace('_', '-')}", type=_count, metavar="N")
        action.set_defaults(handler=_set if name == "set" else _clear)
    actions.add_parser("show", help="list the overrides").set_defaults(handler=_show)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) > 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 1000, got {text!r}")
    return int(text)


def _set(args: argparse.Namespace) -> None:
    from storage.quotas import UnknownScopeError, set_override

    counters = {c: getattr(args, c) for c in COUNTERS}
    if args.profile is None and all(v is None for v in counters.values()):
        raise CommandError("give --profile and/or at least one counter, e.g. --households 10")
    override = QuotaOverride(profile=args.profile, **counters)

    async def work(db: Any, settings: Any) -> None:
        async with db.sessions() as session, session.begin():
            await set_override(
                session, station=args.station, village=args.village, override=override
            )

    try:
        _with_database(work)
    except UnknownScopeError as exc:
        raise CommandError(str(exc)) from None
    print(f"{_scope(args)}: {describe(override)}")


def _clear(args: argparse.Namespace) -> None:
    from storage.quotas import UnknownScopeError, clear_override

    async def work(db: Any, settings: Any) -> bool:
        async with db.sessions() as session, session.begin():
            return await clear_override(session, station=args.station, village=args.village)

    try:
        removed = _with_database(work)
    except UnknownScopeError as exc:
        raise CommandError(str(exc)) from None
    print(f"{_scope(args)}: {'override removed' if removed else 'had no override'}")


def _show(args: argparse.Namespace) -> None:
    from storage.quotas import list_overrides

    async def work(db: Any, settings: Any) -> tuple[str, list[Any]]:
        async with db.sessions() as session:
            return settings.quota_profile, await list_overrides(session)

    county, overrides = _with_database(work)
    print(f"county: {county} ({describe(QuotaOverride(), base=county)})")
    for view in overrides:
        print(f"{view.scope} {view.code} {view.name}: {describe(view.override)}")


def _scope(args: argparse.Namespace) -> str:
    return f"station {args.station}" if args.station else f"village {args.village}"


def describe(override: QuotaOverride, base: str | None = None) -> str:
    """'profile changde, households 12'; with `base`, the full quota of that profile."""
    name = override.profile or base
    parts = [f"profile {name}"] if name else []
    full = profile(base) if base is not None else None
    for counter in COUNTERS:
        value = getattr(override, counter)
        if value is None and full is not None:
            value = getattr(full, counter)
        if value is not None:
            parts.append(f"{counter.replace('_', ' ')} {value}")
    return ", ".join(parts)
