"""Join-link payloads: random, URL-safe, short enough for Telegram's /start parameter."""

import hashlib
import re
import secrets

# Telegram allows up to 64 characters of [A-Za-z0-9_-] in a /start parameter.
PAYLOAD_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INVITE_PREFIX = "i-"
VILLAGE_PREFIX = "v-"


def new_invite_payload() -> str:
    """An invite payload with 192 random bits (32 characters after the prefix)."""
    return INVITE_PREFIX + secrets.token_urlsafe(24)


def new_village_token() -> str:
    """A village's public join token: 128 random bits, so villages cannot be enumerated."""
    return secrets.token_urlsafe(16)


def village_payload(token: str) -> str:
    return VILLAGE_PREFIX + token


def hash_payload(payload: str) -> bytes:
    return hashlib.sha256(payload.encode("ascii")).digest()


def is_valid_payload(payload: str) -> bool:
    return bool(PAYLOAD_RE.match(payload))


# Guessing join links: after this many links that led nowhere within the window, an account's
# further links are refused unread until the window has passed. With 192 (invites) or 128
# (villages) random bits a guess cannot succeed anyway; this keeps the attempt cheap for us.
GUESS_LIMIT = 5
GUESS_WINDOW_SECONDS = 15 * 60


def guessing(failures_in_window: int) -> bool:
    """Whether an account with this many failed links in the window is cut off."""
    return failures_in_window >= GUESS_LIMIT
