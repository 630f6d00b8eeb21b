"""Access control: every role × every command and every kind of button, forged ids included.

The policy is the two tables below (COMMANDS_MATRIX, BUTTONS_MATRIX): one row per command
or per button data, one column per role, ✓ where the role may use it, · where it is
refused with the role's fallback or the "stale button" answer, ! where the role's rights
let it through but the row's own refusal comes (the request's status does not allow it).
Each cell goes through the real Dispatcher, the Bot talking HTTP to the Bot API test server,
and PostgreSQL: an allowed cell must give its answer and change exactly the tables named for
it; a refused one must answer with nothing but its refusal, send nothing to anyone else and
change nothing (see SNAPSHOT).

All cells share one world, seeded once (see `seed`), each starting with the presser's
conversation at rest. The module ends with invite guessing (cut off after 5 links that led
nowhere), the webhook refusing updates without the right secret, and an officer's old
account released in the middle of a report.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiogram.filters.callback_data import CallbackData
from pydantic import SecretStr
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import bot.handlers  # noqa: F401  (imports every module that defines callback data)
from bot.i18n import Translator, catalogue
from bot.menus import COMMANDS
from bot.runner import run_webhook
from core.requests import Actor, Event, Routed
from core.roles import Role
from core.schedule import week_start
from core.tokens import village_payload
from storage import hazards, invites, spotchecks, visits
from storage import requests as store
from storage.models import Assignment, Base, Officer, VisitReport
from tests.botapi import BotApiServer, Call, SimUser
from tests.botapi.params import read_webhook_reply
from tests.botproc import free_port
from tests.factories import seed_directory
from tests.harness import Chat, make_settings, running_chat

EN = Translator("en")
OK, NO, OWN = "✓", "·", "!"
ROLES = (
    "stranger",  # never joined
    "villager",  # of 张庄村 (station S01)
    "officer",  # 王警官, resident officer of 张庄村 and 李庄村 (S01)
    "officer-S02",  # 孙警官, resident officer of 东关社区 (another station, S02)
    "supervisor-S02",  # supervisor of another station
    "supervisor",  # supervisor of S01, in scope of everything of the S01 villages
    "county",  # county-wide supervisor
)
KIND = {
    "stranger": Role.STRANGER,
    "villager": Role.VILLAGER,
    "officer": Role.OFFICER,
    "officer-S02": Role.OFFICER,
    "supervisor-S02": Role.SUPERVISOR,
    "supervisor": Role.SUPERVISOR,
    "county": Role.SUPERVISOR,
}
STATE = frozenset({"conversation_states"})
EVENT = frozenset({"requests", "request_events", "outbox_messages"})
BIG = "1" + "0" * 40  # an id no database integer holds
FORGED_IDS = ("0", "-1", str(2**31), BIG)  # none, negative, past int4, past int8


@dataclass(frozen=True)
class Cell:
    """One row of a matrix: what is sent (a command, or button data with {placeholders}),
    the mark of each role (in ROLES order), and what the outcome must be."""

    send: str
    marks: str
    ok: tuple[str, ...] = ()  # catalogue keys; an allowed cell answers with one of them
    changes: frozenset[str] = frozenset()  # the tables an allowed cell changes
    refusal: tuple[str, ...] = ()  # the row's own refusal (mark !); a key may end in *
    mentions: str = ""  # a text an allowed answer must contain (a reference)
    setup: tuple[str, ...] = ()  # sent or pressed first by the same user (not asserted)

    def mark(self, role: str) -> str:
        marks = self.marks.split()
        assert len(marks) == len(ROLES) and set(marks) <= {OK, NO, OWN}, self.marks
        return marks[ROLES.index(role)]

    @property
    def id(self) -> str:
        return " > ".join([*self.setup, self.send])


# fmt: off
#                                     stranger
#                                     | villager
#                                     | | officer
#                                     | | | officer-S02
#                                     | | | | supervisor-S02
#                                     | | | | | supervisor (S01)
#                                     | | | | | | county
COMMANDS_MATRIX = (
    Cell("/start",                    "✓ ✓ ✓ ✓ ✓ ✓ ✓", ok=("start.{kind}",)),
    Cell("/help",                     "✓ ✓ ✓ ✓ ✓ ✓ ✓", ok=("help.intro.{kind}",)),
    Cell("/language",                 "✓ ✓ ✓ ✓ ✓ ✓ ✓", ok=("language.choose",)),
    Cell("/cancel",                   "✓ ✓ ✓ ✓ ✓ ✓ ✓", ok=("cancel.nothing",)),
    Cell("/request",                  "· ✓ · · · · ·", ok=("request_flow.ask_category",),
         changes=STATE),
    Cell("/myrequests",               "· ✓ · · · · ·", ok=("request_flow.my_title",)),
    Cell("/village",                  "· ✓ · · · · ·", ok=("village.info",)),
    Cell("/visit",                    "· · ✓ ✓ · · ·", ok=("visit.ask_village", "visit.ask_date"),
         changes=STATE),
    Cell("/hazard",                   "· · ✓ ✓ · · ·",
         ok=("hazard.ask_village", "hazard.ask_category"), changes=STATE),
    Cell("/absence",                  "· · ✓ ✓ · · ·",
         ok=("absence.ask_village", "absence.ask_day"), changes=STATE),
    Cell("/me",                       "· · ✓ ✓ · · ·", ok=("me.title",)),
    Cell("/hazards",                  "· · ✓ ✓ · · ·", ok=("hazard.list_title",)),
    Cell("/villages",                 "· · ✓ ✓ · · ·", ok=("villages.title",)),
    Cell("/requests",                 "· · ✓ ✓ ✓ ✓ ✓", ok=("inbox.list_title", "inbox.none")),
    Cell("/team",                     "· · · · ✓ ✓ ✓", ok=("team.title",)),
    Cell("/overdue",                  "· · · · ✓ ✓ ✓", ok=("overdue.title", "overdue.none")),
    Cell("/digest",                   "· · · · ✓ ✓ ✓", ok=("digest.title_now",)),
    Cell("/spotcheck",                "· · · · ✓ ✓ ✓", ok=("spotcheck.card_title",
                                                           "spotcheck.done")),
    Cell("/absences",                 "· · · · ✓ ✓ ✓", ok=("supervisor.absences_none",)),
    Cell("/scope",                    "· · · · ✓ ✓ ✓", ok=("scope.info",)),
)

# Placeholders: {R_A} a new request in 张庄村 (officer 王, S01), the villager's own for the
# villager and a neighbour's for everyone else; {R_C} a new request in 东关社区 (officer 孙,
# S02); {R_fwd} one of 张庄村 at a department (each role has copies of these three of its
# own: an allowed press changes them); {R_res1}, {R_res2} the villager's resolved ones;
# {H_A}, {H_C} open hazards of 王 and 孙; {V001}… villages; {check_S01}, {check_S02},
# {check_county} a spot check drawn for that supervisor, {my_check}, {my_check2} two of the
# presser's own (S01's for those who have none); {draft} the presser's live draft after the
# setup, {draft0} after its first step; {draft_B} officer 赵's and {draft_V2} another
# villager's live drafts, at their summary; {none} an id nothing has. The ids in FORGED_IDS
# follow each kind of button.
BUTTONS_MATRIX = (
    # /language
    Cell("lang:en",                   "✓ ✓ ✓ ✓ ✓ ✓ ✓", ok=("language.set",)),
    Cell("lang:xx",                   "· · · · · · ·"),
    # joining a village: only the village this account was just offered
    Cell("jv:{V003}:1",               "· · · · · · ·"),
    Cell("jv:{V003}:0",               "✓ ✓ · · · · ·", ok=("join.declined",), changes=STATE,
         setup=("/start {link_V003}",)),
    Cell("jv:{V002}:1",               "· · · · · · ·", setup=("/start {link_V003}",)),
    Cell("jv:-1:1",                   "· · · · · · ·", setup=("/start {link_V003}",)),
    Cell(f"jv:{BIG}:1",               "· · · · · · ·", setup=("/start {link_V003}",)),
    # the flows' buttons belong to one live draft, at one step
    Cell("f:v:{none}:submit:",        "· · · · · · ·"),
    Cell("f:h:{none}:submit:",        "· · · · · · ·"),
    Cell("f:hc:{none}:dept:0",        "· · · · · · ·"),
    Cell("f:a:{none}:submit:",        "· · · · · · ·"),
    Cell("f:r:{none}:submit:",        "· · · · · · ·"),
    Cell("f:ib:{none}:dept:0",        "· · · · · · ·"),
    Cell("f:v:{draft_B}:submit:",     "· · · · · · ·", setup=("/visit",)),
    Cell("f:r:{draft_V2}:submit:",    "· · · · · · ·", setup=("/request",)),
    Cell("f:v:{draft}:village:{V001}", "· · ✓ · · · ·", ok=("visit.ask_date",), changes=STATE,
         setup=("/visit",)),
    Cell("f:v:{draft}:village:{V003}", "· · · · · · ·", setup=("/visit",)),
    Cell("f:v:{draft}:village:-1",    "· · · · · · ·", setup=("/visit",)),
    Cell(f"f:v:{{draft}}:village:{BIG}", "· · · · · · ·", setup=("/visit",)),
    Cell("f:v:{draft}:submit:",       "· · · · · · ·", setup=("/visit",)),
    Cell("f:v:{draft0}:village:{V001}", "· · · · · · ·", setup=("/visit", "/cancel", "/visit")),
    Cell("f:h:{draft}:village:{V001}", "· · ✓ · · · ·", ok=("hazard.ask_category",),
         changes=STATE, setup=("/hazard",)),
    Cell("f:h:{draft}:village:{V003}", "· · · · · · ·", setup=("/hazard",)),
    Cell("f:a:{draft}:village:{V001}", "· · ✓ · · · ·", ok=("absence.ask_day",), changes=STATE,
         setup=("/absence",)),
    Cell("f:a:{draft}:village:{V003}", "· · · · · · ·", setup=("/absence",)),
    Cell("f:r:{draft}:category:dispute", "· ✓ · · · · ·", ok=("request_flow.ask_text",),
         changes=STATE, setup=("/request",)),
    Cell("f:r:{draft}:category:bogus", "· · · · · · ·", setup=("/request",)),
    Cell("f:r:{draft}:submit:",       "· · · · · · ·", setup=("/request",)),
    Cell("f:hc:{draft}:dept:0",       "· · ✓ · · · ·", ok=("hazard.ask_handover_note",),
         changes=STATE, setup=("hz:hand:{H_A}",)),
    Cell("f:hc:{draft}:dept:99",      "· · · · · · ·", setup=("hz:hand:{H_A}",)),
    Cell("f:hc:{draft}:dept:-1",      "· · · · · · ·", setup=("hz:hand:{H_A}",)),
    Cell("f:ib:{draft}:dept:0",       "· · ✓ · · ✓ ✓", ok=("inbox.ask_forward_note",),
         changes=STATE, setup=("rq:fwd:{R_A}",)),
    Cell("f:ib:{draft}:dept:99",      "· · · · · · ·", setup=("rq:fwd:{R_A}",)),
    Cell("f:hc:{draft}:dept:0",       "· · · · · · ·", setup=("rq:fwd:{R_A}",)),
    # hazards: the officer who reported one, or serves its village
    Cell("hz:fix:{H_A}",              "· · ✓ · · · ·", ok=("hazard.ask_after_photo",),
         changes=STATE),
    Cell("hz:hand:{H_A}",             "· · ✓ · · · ·", ok=("hazard.ask_department",),
         changes=STATE),
    Cell("hz:fix:{H_C}",              "· · · ✓ · · ·", ok=("hazard.ask_after_photo",),
         changes=STATE),
    Cell("hz:zap:{H_A}",              "· · · · · · ·"),
    Cell("hz:fix:{none}",             "· · · · · · ·"),
    *(Cell(f"hz:fix:{forged}",        "· · · · · · ·") for forged in FORGED_IDS),
    # the request inbox: the officer it is routed to, and supervisors whose scope holds it
    Cell("rq:open:{R_A}",             "· · ✓ · · ✓ ✓", ok=("request.ref_title",),
         mentions="{ref_R_A}"),
    Cell("rq:open:{R_C}",             "· · · ✓ ✓ · ✓", ok=("request.ref_title",),
         mentions="{ref_R_C}"),
    Cell("rq:ack:{R_A}",              "· · ✓ · · ✓ ✓", ok=("inbox.accepted",), changes=EVENT),
    Cell("rq:ack:{R_C}",              "· · · ✓ ✓ · ✓", ok=("inbox.accepted",), changes=EVENT),
    Cell("rq:reply:{R_A}",            "· · ✓ · · ✓ ✓", ok=("inbox.ask_reply",), changes=STATE),
    Cell("rq:fwd:{R_A}",              "· · ✓ · · ✓ ✓", ok=("inbox.ask_department",),
         changes=STATE),
    Cell("rq:resolve:{R_A}",          "· · ✓ · · ✓ ✓", ok=("inbox.ask_resolve_note",),
         changes=STATE),
    Cell("rq:close:{R_A}",            "· · ✓ · · ✓ ✓", ok=("inbox.ask_close_note",),
         changes=STATE),
    Cell("rq:resolve:{R_C}",          "· · · ✓ ✓ · ✓", ok=("inbox.ask_resolve_note",),
         changes=STATE),
    Cell("rq:back:{R_fwd}",           "· · ✓ · · ✓ ✓", ok=("inbox.returned_done",), changes=EVENT),
    Cell("rq:back:{R_A}",             "· · ! · · ! !", refusal=("inbox.refused.*",)),
    Cell("rq:zap:{R_A}",              "· · · · · · ·"),
    Cell("rq:open:{none}",            "· · · · · · ·"),
    *(Cell(f"rq:open:{forged}",       "· · · · · · ·") for forged in FORGED_IDS),
    # pages of a list replace the message pressed (here a fresh one: /help)
    Cell("rqp:0",                     "· · ✓ ✓ ✓ ✓ ✓", ok=("inbox.list_title", "inbox.none"),
         setup=("/help",)),
    Cell(f"rqp:{BIG}",                "· · ✓ ✓ ✓ ✓ ✓", ok=("inbox.list_title", "inbox.none"),
         setup=("/help",)),
    Cell("rqp:-1",                    "· · · · · · ·", setup=("/help",)),
    # a villager's own requests
    Cell("mr:open:{R_A}:0",           "· ✓ · · · · ·", ok=("request.ref_title",),
         mentions="{ref_R_A}"),
    Cell("mr:open:{R_C}:0",           "· · · · · · ·"),
    Cell("mr:msg:{R_A}:0",            "· ✓ · · · · ·", ok=("request_flow.ask_message",),
         changes=STATE),
    Cell("mr:msg:{R_C}:0",            "· · · · · · ·"),
    Cell("mr:rate:{R_res1}:5",        "· ✓ · · · · ·", ok=("request_flow.rated",), changes=EVENT),
    Cell("mr:rate:{R_A}:5",           "· ! · · · · ·",
         refusal=("request_flow.refused_not_resolved",)),
    Cell("mr:rate:{R_C}:5",           "· · · · · · ·"),
    *(Cell(f"mr:rate:{{R_res2}}:{stars}", "· · · · · · ·") for stars in ("0", "6", "-1", BIG)),
    Cell("mr:unsolved:{R_res2}:0",    "· ✓ · · · · ·", ok=("request_flow.reopened",),
         changes=EVENT),
    Cell("mr:unsolved:{R_C}:0",       "· · · · · · ·"),
    Cell("mr:zap:{R_A}:0",            "· · · · · · ·"),
    Cell("mr:open:{none}:0",          "· · · · · · ·"),
    *(Cell(f"mr:open:{forged}:0",     "· · · · · · ·") for forged in FORGED_IDS),
    Cell("mrp:0",                     "· ✓ · · · · ·", ok=("request_flow.my_title",),
         setup=("/help",)),
    Cell("mrp:7",                     "· · · · · · ·", setup=("/help",)),
    Cell("mrp:-1",                    "· · · · · · ·", setup=("/help",)),
    Cell(f"mrp:{BIG}",                "· · · · · · ·", setup=("/help",)),
    # /team pages are recomputed for the presser's own scope
    Cell("tm:0",                      "· · · · ✓ ✓ ✓", ok=("team.title",), setup=("/help",)),
    Cell(f"tm:{BIG}",                 "· · · · ✓ ✓ ✓", ok=("team.title",), setup=("/help",)),
    Cell("tm:-1",                     "· · · · · · ·", setup=("/help",)),
    # spot checks: only the supervisor the report was drawn for
    Cell("spot:ok:{my_check}",        "· · · · ✓ ✓ ✓", ok=("spotcheck.verified_done",),
         changes=frozenset({"spot_checks"})),
    Cell("spot:flag:{my_check2}",     "· · · · ✓ ✓ ✓", ok=("spotcheck.ask_comment",),
         changes=STATE),
    Cell("spot:ok:{check_S01}",       "· · · · · ✓ ·", ok=("spotcheck.verified_done",),
         changes=frozenset({"spot_checks"})),
    Cell("spot:ok:{check_S02}",       "· · · · ✓ · ·", ok=("spotcheck.verified_done",),
         changes=frozenset({"spot_checks"})),
    Cell("spot:flag:{check_county}",  "· · · · · · ✓", ok=("spotcheck.ask_comment",),
         changes=STATE),
    Cell("spot:zap:{my_check}",       "· · · · · · ·"),
    Cell("spot:ok:{none}",            "· · · · · · ·"),
    *(Cell(f"spot:ok:{forged}",       "· · · · · · ·") for forged in FORGED_IDS),
    # data no button ever carried
    Cell("rq:open:abc",               "· · · · · · ·"),
    Cell("rq:open",                   "· · · · · · ·"),
    Cell("hz:fix:1:2",                "· · · · · · ·"),
    Cell("nonsense",                  "· · · · · · ·"),
)
# fmt: on


# --- the tables that must not change when a cell is refused -----------------------------------


def _digest(table: str, row: str, order: str, where: str = "") -> str:
    return (
        f"SELECT md5(coalesce(string_agg({row}, '|' ORDER BY {order}), '')) FROM {table} x {where}"
    )


SNAPSHOT = {
    # Any insert, update or delete changes a table's row count or its newest row version.
    **{
        table: f"SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM {table}"
        for table in (
            "requests",
            "request_events",
            "hazards",
            "visit_reports",
            "spot_checks",
            "outbox_messages",
            "absences",
            "villager_memberships",
            "photos",
            "invites",
        )
    },
    # Roles only: a first contact adds a stranger, and every update refreshes the name.
    "users": _digest(
        "users",
        "concat_ws(',', id, role, officer_id, supervisor_id)",
        "id",
        "WHERE role <> 'stranger' OR officer_id IS NOT NULL OR supervisor_id IS NOT NULL",
    ),
    "conversation_states": _digest(
        "conversation_states", "concat_ws(',', key, state, data::text)", "key"
    ),
}
_SNAPSHOT_SQL = text("SELECT " + ", ".join(f"({sql}) AS {name}" for name, sql in SNAPSHOT.items()))
_RESET = text("DELETE FROM conversation_states WHERE user_id = :u")
TABLES = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)


async def snapshot(
    sessions: async_sessionmaker[AsyncSession], *, reset: SimUser | None = None
) -> dict[str, str]:
    """The tables' digests; first, with `reset`, that user's conversation is put at rest."""
    async with sessions() as s, s.begin():
        if reset is not None:
            await s.execute(_RESET, {"u": reset.id})
        row = (await s.execute(_SNAPSHOT_SQL)).one()
    return dict(row._mapping)


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> frozenset[str]:
    return frozenset(name for name in before if before[name] != after[name])


# --- answers ---------------------------------------------------------------------------------


def pattern(key: str) -> re.Pattern[str]:
    """A catalogue entry (English) as a pattern: its placeholders match anything."""
    parts = re.split(r"\{[^{}]*\}", catalogue("en")[key])
    return re.compile(".*?".join(re.escape(p) for p in parts), re.S)


def patterns(keys: tuple[str, ...], kind: Role) -> list[re.Pattern[str]]:
    found = []
    for key in (k.replace("{kind}", kind.value) for k in keys):
        if key.endswith("*"):
            found += [pattern(k) for k in catalogue("en") if k.startswith(key[:-1])]
        else:
            found.append(pattern(key))
    return found


@dataclass
class Outcome:
    texts: list[str]  # what the bot said to the presser: callback answer, messages, edits
    to_others: list[str]  # Bot API calls for any other chat
    changed: frozenset[str]


def _texts(calls: list[Call], chat_id: int) -> list[str]:
    said = []
    for call in calls:
        if not call.ok:
            continue
        if call.method == "answerCallbackQuery" or str(call.params.get("chat_id")) == str(chat_id):
            said.append(str(call.params.get("text") or call.params.get("caption") or ""))
    return [t for t in said if t]


def _others(calls: list[Call], chat_id: int) -> list[str]:
    found = []
    for call in calls:
        scope = call.params.get("scope")
        to = call.params.get("chat_id", scope.get("chat_id") if isinstance(scope, dict) else None)
        if to is not None and str(to) != str(chat_id):
            found.append(f"{call.method} to {to}")
    return found


def _last_message_id(server: BotApiServer, user: SimUser) -> int:
    """The bot's latest message to the user (found in the calls: reading the chat copies it)."""
    for call in reversed(server.calls):
        sent = call.result if call.ok else None
        if isinstance(sent, dict) and sent.get("chat", {}).get("id") == user.id:
            return int(sent["message_id"])
    raise AssertionError(f"the bot has sent nothing to {user.id}")


# --- the world ---------------------------------------------------------------------------------


@dataclass
class World:
    chat: Chat
    sessions: async_sessionmaker[AsyncSession]
    users: dict[str, SimUser]
    values: dict[str, Any]  # the placeholders, as seen by everyone
    own: dict[str, dict[str, Any]] = field(default_factory=dict)  # … as seen by one role

    @property
    def server(self) -> BotApiServer:
        return self.chat.server

    def placeholders(self, role: str) -> dict[str, Any]:
        return {**self.values, **self.own[role]}


async def _join_with_invite(chat: Chat, payload: str, name: str) -> SimUser:
    user = chat.server.user(first_name=name, language_code="en")
    await chat.say(user, f"/start {payload}")
    return user


async def _join_village(chat: Chat, token: str, name: str) -> SimUser:
    user = chat.server.user(first_name=name, language_code="en")
    await chat.say(user, f"/start {village_payload(token)}")
    await chat.click(user, EN("join.yes"))
    return user


async def _live_draft(sessions: async_sessionmaker[AsyncSession], user: SimUser) -> str | None:
    async with sessions() as s:
        found = await s.scalar(
            text("SELECT data->>'draft' FROM conversation_states WHERE user_id = :u"),
            {"u": user.id},
        )
    return None if found is None else str(found)


async def seed(chat: Chat, sessions: async_sessionmaker[AsyncSession]) -> World:
    """Two stations: S01 with 张庄村 (officers 王, resident, and 赵, contact) and 李庄村 (王);
    S02 with 东关社区 (孙). Everyone has joined; the villagers' requests, the officers'
    hazards and last week's visit reports are there, with each supervisor's spot checks."""
    now = chat.clock()
    async with sessions() as s, s.begin():
        d = await seed_directory(s)
        sun = Officer(badge="055555", name="孙警官")
        spare = Officer(badge="099999", name="钱警官")  # joins in the guessing test
        moved = Officer(badge="077777", name="周警官")  # changes account in another test
        s.add_all([sun, spare, moved])
        await s.flush()
        s.add(Assignment(officer_id=sun.id, village_id=d.villages[2].id, kind="resident"))
        s.add(Assignment(officer_id=moved.id, village_id=d.villages[1].id, kind="contact"))
        week = timedelta(days=7)
        staff = {}
        for name, badge in (
            ("officer", "012345"),
            ("officer-B", "067890"),
            ("officer-S02", "055555"),
        ):
            staff[name], _ = await invites.create_officer_invite(s, badge=badge, now=now, ttl=week)
        for name, codes in (("supervisor", ["S01"]), ("supervisor-S02", ["S02"]), ("county", [])):
            staff[name], _ = await invites.create_supervisor_invite(
                s, station_codes=codes, county_wide=not codes, name=name, now=now, ttl=week
            )
    v1, v2, v3 = d.villages
    users = {name: await _join_with_invite(chat, i.payload, name) for name, i in staff.items()}
    users["villager"] = await _join_village(chat, v1.join_token, "Li")
    users["villager2"] = await _join_village(chat, v3.join_token, "Zhou")  # of 东关社区
    # Neighbours of the villager and of Zhou: what is not the presser's is mostly theirs.
    users["villager3"] = await _join_village(chat, v1.join_token, "Wu")
    users["villager4"] = await _join_village(chat, v3.join_token, "Zheng")
    users["stranger"] = chat.server.user(first_name="Eve", language_code="en")
    await chat.say(users["stranger"], "/start")

    values: dict[str, Any] = {
        "V001": v1.id,
        "V002": v2.id,
        "V003": v3.id,
        "link_V003": village_payload(v3.join_token),
        "none": 999_999,
        "spare_badge": spare.badge,
        "moved_badge": moved.badge,
    }
    own: dict[str, dict[str, Any]] = {role: {} for role in ROLES}
    wang = d.officers[0].id
    async with sessions() as s, s.begin():
        for role in ROLES:
            mine = users["villager" if role == "villager" else "villager3"].id
            for name, villager, village in (
                ("R_A", mine, v1),
                ("R_fwd", mine, v1),
                ("R_C", users["villager4"].id, v3),
            ):
                own[role][name] = await _request(s, villager, village.id, now)
                own[role][f"ref_{name}"] = store.reference(own[role][name])
            await _record(s, own[role]["R_fwd"], Event.FORWARDED, wang, now)
        for name in ("R_res1", "R_res2", "R_hook"):
            villager = users["villager3" if name == "R_hook" else "villager"].id
            values[name] = await _request(s, villager, v1.id, now)
            values[f"ref_{name}"] = store.reference(values[name])
        for name in ("R_res1", "R_res2"):
            await _record(s, values[name], Event.RESOLVED, wang, now)
        values["H_A"] = await _hazard(s, wang, v1.id, now)
        values["H_C"] = await _hazard(s, sun.id, v3.id, now)
        # Last week's reports, three per station, from which this week's checks are drawn.
        this_week = week_start(now.astimezone(chat.tz).date())
        submitted = datetime.combine(this_week - timedelta(days=5), time(10), chat.tz)
        for officer, village in ((wang, v1), (wang, v2), (wang, v1)) + ((sun.id, v3),) * 3:
            await _visit(s, officer, village.id, submitted)
        checks = {}
        for name in ("supervisor", "supervisor-S02", "county"):
            supervisor = await s.scalar(
                text("SELECT supervisor_id FROM users WHERE id = :u"), {"u": users[name].id}
            )
            await spotchecks.draw(s, supervisor_id=supervisor, week=this_week, tz=chat.tz, size=10)
            checks[name] = list(
                await s.scalars(
                    text("SELECT id FROM spot_checks WHERE supervisor_id = :s ORDER BY id"),
                    {"s": supervisor},
                )
            )
    values["check_S01"] = checks["supervisor"][2]
    values["check_S02"] = checks["supervisor-S02"][2]
    values["check_county"] = checks["county"][2]
    for role in ROLES:
        first, second = checks.get(role, checks["supervisor"])[:2]
        own[role].update(my_check=first, my_check2=second)

    # Live drafts of others, at their summary: officer 赵's visit report, a villager's request.
    b = users["officer-B"]
    await chat.say(b, "/visit")  # one village: straight to the date
    await chat.click(b, EN("visit.today"))
    await chat.say(b, "2")
    await chat.say(b, "3")
    for label in ("visit.activities_done", "flow.skip", "flow.no_photos", "flow.skip"):
        await chat.click(b, EN(label))
    v = users["villager2"]
    await chat.say(v, "/request")
    await chat.click(v, EN("request_category.dispute"))
    await chat.say(v, "The neighbour's dog barks all night.")
    for label in ("flow.no_photos", "flow.skip", "request_flow.with_name"):
        await chat.click(v, EN(label))
    for name, user in (("draft_B", b), ("draft_V2", v)):
        assert EN("flow.submit") in str(chat.server.last_message_to(user).reply_markup)
        values[name] = await _live_draft(sessions, user)
    return World(chat, sessions, users, values, own)


async def _request(s: AsyncSession, villager_id: int, village_id: int, now: datetime) -> int:
    routed = await store.route_for_village(s, village_id)
    assert isinstance(routed, Routed)
    saved = await store.create_request(
        s,
        store.NewRequest(
            draft_id=secrets.token_hex(8),
            villager_id=villager_id,
            village_id=village_id,
            category="dispute",
            body="Our neighbours quarrel over the boundary wall.",
            photos=(),
            latitude=None,
            longitude=None,
            anonymous=False,
            created_at=now,
        ),
        routed,
    )
    return saved.id


async def _record(
    s: AsyncSession, request_id: int, event: Event, officer: int, now: datetime
) -> None:
    await store.record_event(
        s,
        request_id=request_id,
        event=event,
        actor=Actor.OFFICER,
        now=now,
        officer_id=officer,
        department="civil_affairs" if event is Event.FORWARDED else None,
    )


async def _hazard(s: AsyncSession, officer_id: int, village_id: int, now: datetime) -> int:
    saved = await hazards.save_hazard(
        s,
        hazards.NewHazard(
            draft_id=secrets.token_hex(8),
            officer_id=officer_id,
            village_id=village_id,
            category="fire",
            severity="medium",
            description="Straw piled against the transformer.",
            latitude=None,
            longitude=None,
            distance_m=None,
            reported_by=1,
            reported_at=now,
            due_at=None,
            photos=[(f"photo-{secrets.token_hex(4)}", secrets.token_hex(8))],
        ),
    )
    return saved.id


async def _visit(s: AsyncSession, officer_id: int, village_id: int, submitted: datetime) -> None:
    saved = await visits.save_visit(
        s,
        visits.NewVisit(
            draft_id=secrets.token_hex(8),
            officer_id=officer_id,
            village_id=village_id,
            visit_date=submitted.date(),
            hours=Decimal("2"),
            households=3,
            activities={"patrol": 1},
            latitude=None,
            longitude=None,
            distance_m=None,
            far_from_village=False,
            notes=None,
            submitted_by=1,
            photos=(),
        ),
    )
    assert saved is not None  # the officer is assigned to the village
    report_id, _ = saved
    # The bot stamps submitted_at with the database's clock; the draw looks at last week.
    await s.execute(
        update(VisitReport).where(VisitReport.id == report_id).values(submitted_at=submitted)
    )


@pytest.fixture(scope="module")
async def world(botapi: BotApiServer, engine: AsyncEngine) -> AsyncIterator[World]:
    """The seeded world, shared by the module. Other modules leave the database empty, and so
    does this one."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with running_chat(botapi, sessions) as chat:
            yield await seed(chat, sessions)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


# --- running a cell ----------------------------------------------------------------------------


async def _act(world: World, user: SimUser, what: str) -> dict[str, Any]:
    """Send a command, or press a button with this data on the user's latest message (which
    need not have had it: a forged button)."""
    if what.startswith("/"):
        return await world.chat.say(user, what)
    pressed = _last_message_id(world.server, user)
    return await world.chat.send(await world.server.press(user, pressed, what, force=True))


async def run(world: World, role: str, cell: Cell) -> Outcome:
    """The cell, from a conversation at rest: its setup first, then what it sends."""
    user, server = world.users[role], world.server
    values = world.placeholders(role)
    if cell.setup:
        async with world.sessions() as s, s.begin():
            await s.execute(_RESET, {"u": user.id})
        drafts: list[str] = []
        for step in cell.setup:
            await _act(world, user, step.format_map(values))
            drafts.append(await _live_draft(world.sessions, user) or "0" * 16)
        values |= {"draft": drafts[-1], "draft0": drafts[0]}
        before = await snapshot(world.sessions)
    else:
        before = await snapshot(world.sessions, reset=user)
    start = len(server.calls)
    await _act(world, user, cell.send.format_map(values))
    after = await snapshot(world.sessions)
    calls = server.calls[start:]
    return Outcome(_texts(calls, user.id), _others(calls, user.id), changed(before, after))


async def check(world: World, role: str, cell: Cell, *, refusal: tuple[str, ...]) -> None:
    kind, mark = KIND[role], cell.mark(role)
    outcome = await run(world, role, cell)
    where = f"{role} × {cell.id}: {outcome}"
    assert not outcome.to_others, where
    if mark == OK:
        wanted = patterns(cell.ok, kind)
        assert any(p.search(t) for t in outcome.texts for p in wanted), where
        if cell.mentions:
            reference = cell.mentions.format_map(world.placeholders(role))
            assert any(reference in t for t in outcome.texts), where
        assert outcome.changed == cell.changes, where
        return
    wanted = patterns(cell.refusal if mark == OWN else refusal, kind)
    assert outcome.texts, where
    assert all(any(p.fullmatch(t) for p in wanted) for t in outcome.texts), where
    assert outcome.changed == frozenset(), where


# --- the matrix --------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [pytest.param(c, id=c.id) for c in COMMANDS_MATRIX])
@pytest.mark.parametrize("role", ROLES)
async def test_command(world: World, role: str, cell: Cell) -> None:
    fallback = "fallback.stranger" if role == "stranger" else "fallback.unknown"
    await check(world, role, cell, refusal=(fallback,))


@pytest.mark.parametrize("cell", [pytest.param(c, id=c.id) for c in BUTTONS_MATRIX])
@pytest.mark.parametrize("role", ROLES)
async def test_button(world: World, role: str, cell: Cell) -> None:
    await check(world, role, cell, refusal=("callback.stale",))


def test_the_command_matrix_is_the_menus() -> None:
    """Every command of each role's menu is allowed to it, and only those (and /start and
    /cancel, which every account may send)."""
    assert {c.send for c in COMMANDS_MATRIX} == {
        f"/{name}" for names in COMMANDS.values() for name in names
    } | {"/start"}
    for role in ROLES:
        allowed = {c.send[1:] for c in COMMANDS_MATRIX if c.mark(role) == OK}
        assert allowed == set(COMMANDS[KIND[role]]) | {"start", "cancel"}, role


def _callback_classes(cls: type[CallbackData]) -> set[type[CallbackData]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _callback_classes(sub)
    return found


def test_every_kind_of_button_is_in_the_matrix() -> None:
    prefixes = {cls.__prefix__ for cls in _callback_classes(CallbackData)}
    assert prefixes >= {"f", "hz", "jv", "lang", "rq", "rqp", "mr", "mrp", "tm", "spot"}
    tried = {c.send.split(":")[0] for c in BUTTONS_MATRIX}
    assert prefixes <= tried, prefixes - tried


# --- guessing join links -----------------------------------------------------------------------


async def test_guessing_links_is_cut_off(world: World) -> None:
    """After 5 links that led nowhere within 15 minutes, an account's links are refused
    unread, a real invite too; another account is not affected; after the window, it works."""
    chat, clock = world.chat, world.chat.clock
    async with world.sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge=world.values["spare_badge"], now=clock(), ttl=timedelta(days=7)
        )
    guesser = chat.server.user(first_name="Mallory", language_code="en")
    guesses = (
        f"i-{secrets.token_urlsafe(24)}",  # an invite that does not exist
        f"v-{secrets.token_urlsafe(16)}",  # a village that does not exist
        "i-" + issued.payload[2:-1],  # the real invite, one character short
        "hello",
        "x" * 65,
    )
    for guess in guesses:
        await chat.say(guesser, f"/start {guess}")
        assert chat.last_text(guesser) in (EN("start.invite_unknown"), EN("start.link_invalid"))
    cut_off = EN("start.too_many_attempts", minutes=15)
    started = clock.now
    try:
        for real in (issued.payload, world.values["link_V003"]):
            before = await snapshot(world.sessions)
            await chat.say(guesser, f"/start {real}")
            assert chat.last_text(guesser) == cut_off
            assert changed(before, await snapshot(world.sessions)) == frozenset()
        clock.now = started + timedelta(minutes=14, seconds=59)
        await chat.say(guesser, f"/start {issued.payload}")
        assert chat.last_text(guesser) == cut_off
        # Counted per account: someone else's link still works meanwhile.
        neighbour = chat.server.user(first_name="Wu", language_code="en")
        await chat.say(neighbour, f"/start {world.values['link_V003']}")
        assert chat.last_text(neighbour) == EN(
            "join.confirm", village="东关社区", station="东关派出所"
        )
        clock.now = started + timedelta(minutes=15)
        await chat.say(guesser, f"/start {issued.payload}")
        assert chat.last_text(guesser).startswith(
            EN("start.officer_welcome", name="钱警官", badge=world.values["spare_badge"])
        )
    finally:
        clock.now = started
    async with world.sessions() as s:
        role = await s.scalar(text("SELECT role FROM users WHERE id = :u"), {"u": guesser.id})
        failures = await s.scalar(
            text("SELECT count(*) FROM join_failures WHERE user_id = :u"), {"u": guesser.id}
        )
    assert (role, failures) == (Role.OFFICER.value, len(guesses))


# --- the webhook -------------------------------------------------------------------------------

SECRET = "access-secret_0123456789"


async def test_webhook_without_the_secret_gets_401_and_does_nothing(
    world: World, engine: AsyncEngine
) -> None:
    """`run_webhook` as `villagebeat run` serves it: an update claiming to be officer 王
    accepting a request is refused unless it carries the secret Telegram was given."""
    chat, server = world.chat, world.server
    officer = world.users["officer"]
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    settings = make_settings(
        webhook_url=url,
        webhook_secret=SecretStr(SECRET),
        webhook_host="127.0.0.1",
        webhook_port=port,
    )
    # A real callback query (so that the bot can answer it), kept out of the server's queue:
    # only this test posts to the webhook.
    server.queue.drop_pending()
    last = server.last_message_to(officer).message_id
    forged = await server.press(officer, last, f"rq:ack:{world.values['R_hook']}", force=True)
    server.queue.drop_pending()
    stop = asyncio.Event()
    serving = asyncio.create_task(run_webhook(chat.bot, chat.dp, settings, engine, stop))
    try:
        await server.wait_for_call("setWebhook", timeout=10)
        async with aiohttp.ClientSession() as http:
            for headers in (
                {},
                {"X-Telegram-Bot-Api-Secret-Token": ""},
                {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                {"X-Telegram-Bot-Api-Secret-Token": SECRET.upper()},
                {"X-Telegram-Bot-Api-Secret-Token": SECRET[:-1]},
            ):
                before, start = await snapshot(world.sessions), len(server.calls)
                async with http.post(url, json=forged, headers=headers) as response:
                    assert response.status == 401, headers
                assert changed(before, await snapshot(world.sessions)) == frozenset(), headers
                assert server.calls[start:] == [], headers
                assert not await _processed(world, forged["update_id"]), headers
            # With the secret, the same update is applied: the test can see a difference.
            before = await snapshot(world.sessions)
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            async with http.post(url, json=forged, headers=headers) as response:
                assert response.status == 200
                # The button's acknowledgement comes in the HTTP answer: run it, as Telegram.
                reply = await read_webhook_reply(response)
            assert reply is not None and reply[0]["method"] == "answerCallbackQuery"
            await server.run_webhook_reply(*reply)
        assert changed(before, await snapshot(world.sessions)) == EVENT
        assert await _processed(world, forged["update_id"])
        answer = server.callback_answer(forged)
        assert answer is not None
        assert answer["text"] == EN("inbox.accepted", ref=world.values["ref_R_hook"])
    finally:
        stop.set()
        await serving
        await chat.bot.delete_webhook()


async def _processed(world: World, update_id: int) -> bool:
    async with world.sessions() as s:
        found = await s.scalar(
            text("SELECT count(*) FROM processed_updates WHERE update_id = :u"), {"u": update_id}
        )
    return bool(found)


# --- an account released -----------------------------------------------------------------------


async def test_an_officers_old_account_is_a_stranger_at_once(world: World) -> None:
    """An officer moved to a new account (a new invite): the old account is released in the
    middle of a visit report, and what it sends next is a stranger's, its report too."""
    chat = world.chat

    async def invite() -> str:
        async with world.sessions() as s, s.begin():
            issued, _ = await invites.create_officer_invite(
                s, badge=world.values["moved_badge"], now=chat.clock(), ttl=timedelta(days=7)
            )
        return issued.payload

    old = await _join_with_invite(chat, await invite(), "Zhou")
    await chat.say(old, "/visit")  # one village: straight to the date
    await chat.click(old, EN("visit.today"))
    await chat.say(old, "2")
    await chat.say(old, "3")
    await chat.click(old, EN("visit.activities_done"))
    assert EN("visit.ask_location") in chat.last_text(old)
    draft = await _live_draft(world.sessions, old)
    new = await _join_with_invite(chat, await invite(), "Zhou")
    assert chat.last_text(new).startswith(
        EN("start.officer_welcome", name="周警官", badge=world.values["moved_badge"])
    )
    assert await _live_draft(world.sessions, old) is None  # its conversation is over
    stranger = pattern("fallback.stranger")
    sends: list[Callable[[], Awaitable[dict[str, Any]]]] = [
        lambda: chat.server.send_location(old, 34.2, 113.3),  # the step it was at
        lambda: chat.server.send_text(old, "/visit"),
        lambda: chat.server.press(
            old, _last_message_id(chat.server, old), f"f:v:{draft}:submit:", force=True
        ),
    ]
    for send in sends:
        before, start = await snapshot(world.sessions), len(chat.server.calls)
        await chat.send(await send())
        said = _texts(chat.server.calls[start:], old.id)
        assert said and all(stranger.fullmatch(t) or t == EN("callback.stale") for t in said), said
        assert changed(before, await snapshot(world.sessions)) == frozenset()
