"""Formatted text the way Telegram sees it: parse modes, entities, UTF-16 offsets.

The parsers follow tdlib's (MessageEntity.cpp) rules and error wording closely enough
that text which Telegram rejects is rejected here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, bad_request

Entity = dict[str, Any]

HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_HTML_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)
_WHITESPACE = " \t\n\r"


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


@dataclass
class FormattedText:
    text: str
    entities: list[Entity] = field(default_factory=list)


def _entities_error(message: str) -> ApiError:
    return bad_request(f"can't parse entities: {message}")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


class _Builder:
    """Accumulates plain text while tracking the UTF-16 offset."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.offset = 0
        self.chars = 0

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.offset += utf16_len(chunk)
        self.chars += len(chunk)

    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class _Open:
    tag: str
    offset: int
    byte_offset: int
    attrs: dict[str, str]
    language: str | None = None


def parse_html(text: str) -> FormattedText:
    out = _Builder()
    entities: list[Entity] = []
    stack: list[_Open] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "&":
            decoded, end = _decode_html_entity(text, i)
            if decoded is not None:
                out.add(decoded)
                i = end
                continue
        if ch != "<":
            out.add(ch)
            i += 1
            continue
        begin = i
        where = f"at byte offset {_byte_offset(text, begin)}"
        i += 1
        if i >= n or text[i] != "/":
            j = i
            while j < n and not text[j].isspace() and text[j] != ">":
                j += 1
            if j >= n:
                raise _entities_error(f"Unclosed start tag {where}")
            tag = text[i:j].lower()
            if tag not in HTML_TAGS:
                raise _entities_error(f'Unsupported start tag "{tag}" {where}')
            attrs, i = _parse_attributes(text, j, tag, where)
            _check_start_tag(tag, attrs, where)
            stack.append(_Open(tag, out.offset, _byte_offset(text, begin), attrs))
            continue
        if not stack:
            raise _entities_error(f"Unexpected end tag {where}")
        i += 1
        j = i
        while j < n and not text[j].isspace() and text[j] != ">":
            j += 1
        end_name = text[i:j].lower()
        while j < n and text[j].isspace():
            j += 1
        if j >= n or text[j] != ">":
            raise _entities_error(f"Unclosed end tag {where}")
        opened = stack.pop()
        if end_name and end_name != opened.tag:
            raise _entities_error(
                f'Unmatched end tag {where}, expected "</{opened.tag}>", found "</{end_name}>"'
            )
        i = j + 1
        _close_html_entity(opened, stack, out.offset, entities)
    if stack:
        raise _entities_error(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    return FormattedText(out.text(), _sorted(entities))


def _parse_attributes(text: str, i: int, tag: str, where: str) -> tuple[dict[str, str], int]:
    n = len(text)
    attrs: dict[str, str] = {}
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise _entities_error(f"Unclosed start tag {where}")
        if text[i] == ">":
            return attrs, i + 1
        start = i
        while i < n and not text[i].isspace() and text[i] not in "=>":
            i += 1
        name = text[start:i].lower()
        if not name:
            raise _entities_error(f'Empty attribute name in the tag "{tag}" {where}')
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise _entities_error(f"Unclosed start tag {where}")
        if text[i] != "=":
            attrs[name] = ""
            continue
        i += 1
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise _entities_error(f"Unclosed start tag {where}")
        if text[i] in "\"'":
            quote = text[i]
            end = text.find(quote, i + 1)
            if end < 0:
                raise _entities_error(f"Unclosed start tag {where}")
            attrs[name] = _decode_all_entities(text[i + 1 : end])
            i = end + 1
        else:
            start = i
            while i < n and (text[i].isalnum() or text[i] in ".-"):
                i += 1
            if i == start:
                raise _entities_error(
                    f'Expected quote in declaration of an attribute of the tag "{tag}" {where}'
                )
            attrs[name] = text[start:i]


def _check_start_tag(tag: str, attrs: dict[str, str], where: str) -> None:
    if tag == "span" and attrs.get("class") != "tg-spoiler":
        raise _entities_error(f'Tag "span" must have class "tg-spoiler" {where}')
    if tag == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
        raise _entities_error("Invalid custom emoji identifier specified")


def _close_html_entity(opened: _Open, stack: list[_Open], end: int, out: list[Entity]) -> None:
    length = end - opened.offset
    tag = opened.tag
    if tag == "code" and stack and stack[-1].tag == "pre":
        language = opened.attrs.get("class", "")
        if language.startswith("language-") and stack[-1].offset == opened.offset:
            stack[-1].language = language.removeprefix("language-")
            return
    if length <= 0:
        return
    entity: Entity = {"offset": opened.offset, "length": length}
    if tag == "a":
        href = opened.attrs.get("href", "")
        if not href:
            return
        match = re.fullmatch(r"tg://user\?id=(\d+)", href)
        if match:
            entity.update(type="text_mention", user={"id": int(match.group(1))})
        else:
            entity.update(type="text_link", url=href)
    elif tag == "blockquote":
        entity["type"] = "expandable_blockquote" if "expandable" in opened.attrs else "blockquote"
    elif tag == "tg-emoji":
        entity.update(type="custom_emoji", custom_emoji_id=opened.attrs["emoji-id"])
    else:
        entity["type"] = _HTML_TYPES[tag]
        if tag == "pre" and opened.language:
            entity["language"] = opened.language
    out.append(entity)


def _decode_html_entity(text: str, i: int) -> tuple[str | None, int]:
    end = text.find(";", i + 1, i + 12)
    if end < 0:
        return None, i
    name = text[i + 1 : end]
    if name in _NAMED_ENTITIES:
        return _NAMED_ENTITIES[name], end + 1
    try:
        if re.fullmatch(r"#[0-9]{1,7}", name):
            return chr(int(name[1:])), end + 1
        if re.fullmatch(r"#[xX][0-9a-fA-F]{1,6}", name):
            return chr(int(name[2:], 16)), end + 1
    except (ValueError, OverflowError):
        return None, i
    return None, i


def _decode_all_entities(value: str) -> str:
    parts: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            decoded, end = _decode_html_entity(value, i)
            if decoded is not None:
                parts.append(decoded)
                i = end
                continue
        parts.append(value[i])
        i += 1
    return "".join(parts)


_V2_RESERVED = "_*[]()~`>#+-=|{}.!"
_V2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


def _reserved_error(ch: str) -> ApiError:
    return _entities_error(
        f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
    )


def _char_at(text: str, i: int) -> str:
    return text[i] if i < len(text) else ""


def parse_markdown_v2(text: str) -> FormattedText:
    out = _Builder()
    entities: list[Entity] = []
    # (type, utf16 offset, byte offset of the marker, index in the plain text, argument)
    stack: list[tuple[str, int, int, int, str]] = []
    quote_start: int | None = None
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        at_line_start = i == 0 or text[i - 1] == "\n"
        if at_line_start and i > 0 and quote_start is not None and ch != ">":
            _add_quote(entities, quote_start, out.offset - 1)  # without the newline
            quote_start = None
        if ch == "\\" and 0 < ord(_char_at(text, i + 1) or "\0") <= 126:
            out.add(text[i + 1])
            i += 2
            continue
        in_code = bool(stack) and stack[-1][0] in ("code", "pre")
        reserved = "`" if in_code else _V2_RESERVED
        if ch not in reserved:
            out.add(ch)
            i += 1
            continue
        if ch == ">" and at_line_start and not stack:
            if quote_start is None:
                quote_start = out.offset
            i += 1
            continue
        closing = bool(stack) and _closes(stack[-1][0], text, i)
        if not closing:
            kind, argument, after_marker = _open_marker(text, i)
            stack.append((kind, out.offset, _byte_offset(text, i), out.chars, argument))
            i = after_marker
            continue
        kind, offset, _, plain_start, argument = stack.pop()
        i += 1
        entity: Entity = {"type": kind, "offset": offset, "length": out.offset - offset}
        if kind in ("underline", "spoiler"):
            i += 1
        elif kind == "pre":
            i += 2
            if argument:
                entity["language"] = argument
        elif kind in ("text_link", "custom_emoji"):
            url, i = _read_url(text, i, out.text()[plain_start:])
            if kind == "custom_emoji":
                match = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
                if not match:
                    raise _entities_error("Custom emoji entity must contain a tg://emoji URL")
                entity["custom_emoji_id"] = match.group(1)
            else:
                entity["url"] = url
        if entity["length"] > 0:
            entities.append(entity)
    if stack:
        kind, _, byte_offset, _, _ = stack[-1]
        raise _entities_error(
            f"Can't find end of {_V2_NAMES[kind]} entity at byte offset {byte_offset}"
        )
    if quote_start is not None:
        _add_quote(entities, quote_start, out.offset)
    return FormattedText(out.text(), _sorted(entities))


def _add_quote(entities: list[Entity], start: int, end: int) -> None:
    if end > start:
        entities.append({"type": "blockquote", "offset": start, "length": end - start})


def _closes(kind: str, text: str, i: int) -> bool:
    ch = text[i]
    nxt = _char_at(text, i + 1)
    return {
        "bold": ch == "*",
        "italic": ch == "_" and nxt != "_",
        "code": ch == "`",
        "pre": text[i : i + 3] == "```",
        "text_link": ch == "]",
        "custom_emoji": ch == "]",
        "underline": text[i : i + 2] == "__",
        "strikethrough": ch == "~",
        "spoiler": text[i : i + 2] == "||",
    }[kind]


def _open_marker(text: str, i: int) -> tuple[str, str, int]:
    """Entity kind, its argument and the index right after the opening marker."""
    ch = text[i]
    nxt = _char_at(text, i + 1)
    if ch == "_":
        return ("underline", "", i + 2) if nxt == "_" else ("italic", "", i + 1)
    if ch == "*":
        return "bold", "", i + 1
    if ch == "~":
        return "strikethrough", "", i + 1
    if ch == "|" and nxt == "|":
        return "spoiler", "", i + 2
    if ch == "[":
        return "text_link", "", i + 1
    if ch == "!" and nxt == "[":
        return "custom_emoji", "", i + 2
    if ch == "`":
        if text[i : i + 3] != "```":
            return "code", "", i + 1
        j = i + 3
        end = j
        while end < len(text) and not text[end].isspace() and text[end] != "`":
            end += 1
        language = ""
        if end != j and end < len(text) and text[end] != "`":
            language = text[j:end]
            j = end
        if _char_at(text, j) in ("\n", "\r"):
            j += 2 if _char_at(text, j + 1) in ("\n", "\r") and text[j] != text[j + 1] else 1
        return "pre", language, j
    raise _reserved_error(ch)


def _read_url(text: str, i: int, inner_text: str) -> tuple[str, int]:
    if _char_at(text, i) != "(":
        return inner_text, i
    i += 1
    start = i
    url: list[str] = []
    while i < len(text) and text[i] != ")":
        if text[i] == "\\" and 0 < ord(_char_at(text, i + 1) or "\0") <= 126:
            url.append(text[i + 1])
            i += 2
            continue
        url.append(text[i])
        i += 1
    if i >= len(text):
        raise _entities_error(f"Can't find end of a URL at byte offset {_byte_offset(text, start)}")
    return "".join(url), i + 1


def parse_markdown(text: str) -> FormattedText:
    """Legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url)."""
    out = _Builder()
    entities: list[Entity] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "\\" and _char_at(text, i + 1) in ("_", "*", "`", "["):
            out.add(text[i + 1])
            i += 2
            continue
        if ch not in "_*`[":
            out.add(ch)
            i += 1
            continue
        begin = i
        end_char = "]" if ch == "[" else ch
        i += 1
        is_pre = False
        language = ""
        if ch == "`" and text[i : i + 2] == "``":
            i += 2
            is_pre = True
            end = i
            while end < n and not text[end].isspace() and text[end] != "`":
                end += 1
            if end != i and end < n and text[end] != "`":
                language = text[i:end]
                i = end
            if _char_at(text, i) in ("\n", "\r"):
                i += 2 if _char_at(text, i + 1) in ("\n", "\r") and text[i] != text[i + 1] else 1
        offset = out.offset
        inner_start = i
        while i < n and (text[i] != end_char or (is_pre and text[i : i + 3] != "```")):
            out.add(text[i])
            i += 1
        if i >= n:
            raise _entities_error(
                f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}"
            )
        inner = text[inner_start:i]
        length = out.offset - offset
        entity: Entity = {"offset": offset, "length": length}
        if ch == "_":
            entity["type"] = "italic"
        elif ch == "*":
            entity["type"] = "bold"
        elif ch == "[":
            url = inner
            if _char_at(text, i + 1) == "(":
                close = text.find(")", i + 2)
                url = text[i + 2 : close if close >= 0 else n]
                i = close if close >= 0 else n - 1
            entity.update(type="text_link", url=url)
        elif is_pre:
            entity["type"] = "pre"
            if language:
                entity["language"] = language
            i += 2
        else:
            entity["type"] = "code"
        if length > 0:
            entities.append(entity)
        i += 1
    return FormattedText(out.text(), _sorted(entities))


_AUTO_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bot_command", re.compile(r"(?<![\w/])/[a-zA-Z0-9_]{1,64}(?:@[a-zA-Z0-9_]{3,32})?(?![\w/])")),
    ("url", re.compile(r"\bhttps?://[^\s<>\"]+[^\s<>\".,;:!?)\]]")),
    ("mention", re.compile(r"(?<![\w@])@[a-zA-Z0-9_]{5,32}\b")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d]\w*")),
)
_MASKING = frozenset({"code", "pre", "text_link", "text_mention", "url"})


def detect_entities(text: str, existing: list[Entity] | None = None) -> list[Entity]:
    """Entities Telegram adds on its own (commands, links, mentions, hashtags)."""
    taken = [
        (e["offset"], e["offset"] + e["length"]) for e in existing or [] if e["type"] in _MASKING
    ]
    found: list[Entity] = []
    for kind, pattern in _AUTO_PATTERNS:
        for match in pattern.finditer(text):
            start = utf16_len(text[: match.start()])
            end = start + utf16_len(match.group())
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            taken.append((start, end))
            found.append({"type": kind, "offset": start, "length": end - start})
    return found


def _sorted(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"]))


def _trim(formatted: FormattedText) -> FormattedText:
    """Drop surrounding whitespace like Telegram does and clip entities to what is left."""
    text = formatted.text
    stripped = text.strip(_WHITESPACE)
    if stripped == text:
        return formatted
    left = utf16_len(text[: len(text) - len(text.lstrip(_WHITESPACE))])
    total = utf16_len(stripped)
    entities: list[Entity] = []
    for entity in formatted.entities:
        start = max(entity["offset"] - left, 0)
        end = min(entity["offset"] + entity["length"] - left, total)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return FormattedText(stripped, entities)


def check_entities(value: Any) -> list[Entity]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("can't parse entities JSON object")
    result: list[Entity] = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_request("can't parse MessageEntity: expected an Object")
        for key in ("offset", "length"):
            if not isinstance(item.get(key), int) or isinstance(item.get(key), bool):
                raise bad_request(
                    f'can\'t parse MessageEntity: Field "{key}" must be a valid Number'
                )
        if item.get("type") not in ENTITY_TYPES:
            raise bad_request("can't parse MessageEntity: Unsupported type specified")
        result.append(dict(item))
    return result


def format_text(text: str, parse_mode: Any, entities: Any = None) -> FormattedText:
    """Apply parse_mode (or explicit entities) and Telegram's own entity detection."""
    mode = parse_mode.lower() if isinstance(parse_mode, str) else ""
    if text and mode not in ("", "none"):
        if mode == "html":
            formatted = parse_html(text)
        elif mode == "markdownv2":
            formatted = parse_markdown_v2(text)
        elif mode == "markdown":
            formatted = parse_markdown(text)
        else:
            raise bad_request("unsupported parse_mode")
    else:
        formatted = FormattedText(text, _sorted(check_entities(entities)))
    formatted = _trim(formatted)
    auto = detect_entities(formatted.text, formatted.entities)
    return FormattedText(formatted.text, _sorted(formatted.entities + auto))
