"""Filters on the sender's role, checked on the server for every update; and running plain
filters on the event loop."""

from typing import Any

from aiogram import Router
from aiogram.dispatcher.event.handler import FilterObject
from aiogram.filters import Filter
from aiogram.filters.logic import _AndFilter, _InvertFilter, _OrFilter
from aiogram.types import TelegramObject

from core.roles import Role


class HasRole(Filter):
    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, event: TelegramObject, role: Role | None = None) -> bool:
        return role in self.roles


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
