"""Callback data. Every id carried here is re-checked against the user's rights and state."""

from aiogram.filters.callback_data import CallbackData


class JoinVillageCb(CallbackData, prefix="jv"):
    village_id: int
    join: bool


class LanguageCb(CallbackData, prefix="lang"):
    code: str
