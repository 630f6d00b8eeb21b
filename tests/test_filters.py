"""`CommandOrText` takes exactly what `or_f(Command(name), F.text.in_(texts))` takes; a
flow's buttons pack as aiogram packs them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiogram import Bot, F
from aiogram.filters import Command, or_f
from aiogram.filters.callback_data import CallbackData
from aiogram.types import Chat, Message

from bot.filters import CommandOrText
from bot.flows.kit import FlowCb
from bot.i18n import all_labels

BOT = Bot("42:TEST")
LABELS = all_labels("button.visit")


def _message(text: str | None = None, caption: str | None = None) -> Message:
    return Message(
        message_id=1,
        date=datetime(2026, 12, 2, tzinfo=UTC),
        chat=Chat(id=5, type="private"),
        text=text,
        caption=caption,
    )


async def _composed(message: Message) -> Any:
    composed = or_f(Command("visit"), F.text.in_(LABELS))
    return await composed(message, bot=BOT)


@pytest.mark.parametrize(
    "message",
    [
        _message("/visit"),
        _message("/visit now"),
        _message("/VISIT"),
        _message("/visits"),
        _message("/help"),
        _message("visit"),
        _message("2"),
        _message("两个半小时"),
        _message(""),
        _message(caption="/visit"),
        _message(caption="走访"),
        _message(),
        *(_message(label) for label in LABELS),
        *(_message(f"/{label}") for label in LABELS),
    ],
    ids=lambda m: repr(m.text or m.caption),
)
async def test_takes_what_the_composed_filter_takes(message: Message) -> None:
    expected = await _composed(message)
    got = await CommandOrText("visit", LABELS)(message, BOT)
    assert bool(got) == bool(expected)
    if isinstance(expected, dict):  # a command: the parsed command comes with it
        assert isinstance(got, dict) and got["command"].command == expected["command"].command


@pytest.mark.parametrize(
    "values",
    [
        ("visit", "a1b2c3d4", "hours", "2"),
        ("visit", "a1b2c3d4", "act_done", ""),
        ("hazard", "x", "date", "2026-12-02"),
        ("request", "草稿", "cat", "纠纷"),
    ],
)
def test_flow_buttons_pack_as_aiogram_packs_them(values: tuple[str, str, str, str]) -> None:
    flow, draft, action, value = values
    button = FlowCb(flow=flow, draft=draft, action=action, value=value)
    assert button.pack() == CallbackData.pack(button)
    assert FlowCb.unpack(button.pack()) == button


@pytest.mark.parametrize("value", ["a:b", "长" * 30])
def test_flow_buttons_refuse_what_aiogram_refuses(value: str) -> None:
    button = FlowCb(flow="visit", draft="d", action="notes", value=value)
    with pytest.raises(ValueError) as ours:
        button.pack()
    with pytest.raises(ValueError) as aiograms:
        CallbackData.pack(button)
    assert str(ours.value) == str(aiograms.value)
