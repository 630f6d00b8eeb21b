"""Filters on the sender's role, checked on the server for every update."""

from aiogram.filters import Filter
from aiogram.types import TelegramObject

from core.roles import Role


class HasRole(Filter):
    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, event: TelegramObject, role: Role | None = None) -> bool:
        return role in self.roles
