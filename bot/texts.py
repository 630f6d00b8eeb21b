"""Long answers cut into messages Telegram accepts, and long texts shortened for lists."""

from __future__ import annotations

from collections.abc import Sequence

# Telegram refuses a longer message text.
MAX_MESSAGE = 4096


def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters: whitespace collapsed, an ellipsis if cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def split_blocks(blocks: Sequence[str], *, separator: str = "\n\n") -> list[str]:
    """Blocks joined by `separator`, cut between blocks only when a message would be too long
    (a single block longer than a message is cut at the limit)."""
    messages: list[str] = []
    current = ""
    for text in blocks:
        joined = f"{current}{separator}{text}" if current else text
        if current and len(joined) > MAX_MESSAGE:
            messages.append(current)
            joined = text
        current = joined
    return [m[:MAX_MESSAGE] for m in [*messages, current]]
