"""Filters on the sender's role, checked on the server for every update; and running plain
filters on the event loop."""

from collections.abc import Iterable
from typing import Any

from aiogram import Bot, Router
from aiogram.dispatcher.event.handler import FilterObject
from aiogram.filters import Command, Filter
from aiogram.filters.logic import _AndFilter, _InvertFilter, _OrFilter
from aiogram.types import Message, TelegramObject

from core.roles import Role


class HasRole(Filter):
    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, event: TelegramObject, role: Role | None = None) -> bool:
        return role in self.roles


class CommandOrText(Filter):
    """The command `/name` (as aiogram's Command filter takes it: a caption too, a mention
    of this bot), or a message whose text is one of `texts` (a menu button's labels).

    The same as `or_f(Command(name), F.text.in_(texts))`, but a message that is neither a
    command nor one of the texts, as nearly every answer in the middle of a flow is, is
    refused at once: about a dozen such checks run for each message.
    """

    def __init__(self, name: str, texts: Iterable[str]) -> None:
        self._command = Command(name)
        self._texts = frozenset(texts)

    async def __call__(self, message: Message, bot: Bot) -> bool | dict[str, Any]:
        if message.text in self._texts:
            return True
        text = message.text or message.caption
        if not text or not text.startswith("/"):
            return False
        return await self._command(message, bot)


def run_filters_inline(router: Router) -> None:
    """Make every plain-function filter of `router` and its sub-routers run on the event loop.

    aiogram runs a filter that is not a coroutine function (every `F.…` magic filter, and the
    ones inside or_f/and_f/~) in a worker thread, about twenty times per update here. Ours
    are pure and take microseconds, so the thread hop costs far more than the filter.
    """
    for each in router.chain_tail:
        for observer in each.observers.values():
            for handler in (observer._handler, *observer.handlers):
                for filter_object in handler.filters or ():
                    _inline(filter_object)


def _inline(filter_object: FilterObject) -> None:
    nested = filter_object.callback
    if isinstance(nested, _InvertFilter):
        _inline(nested.target)
    elif isinstance(nested, _AndFilter | _OrFilter):
        for target in nested.targets:
            _inline(target)
    if filter_object.awaitable:
        return
    sync = filter_object.callback

    async def call(*args: Any, **kwargs: Any) -> Any:
        return sync(*args, **kwargs)

    filter_object.callback = call
    filter_object.awaitable = True
