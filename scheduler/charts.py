"""The digest's chart: each officer's month against the quota, as a PNG drawn with Pillow.

Pillow is imported inside the functions, so that `villagebeat jobs` starts fast. Texts
arrive translated; the font must have Chinese glyphs: settings.chart_font, else the Simplified
Chinese face of Noto Sans CJK shipped by the `noto-cjk-sans-otc` package.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from PIL.ImageDraw import ImageDraw
    from PIL.ImageFont import FreeTypeFont

Status = Literal["behind", "on_pace", "met"]
STATUSES: Final[tuple[Status, ...]] = ("behind", "on_pace", "met")

# A chart lists at most this many officers (the lowest first): a county's 340 bars would be
# unreadable on a phone. The caller says so in the subtitle; the workbook has everyone.
MAX_BARS: Final = 30
# The face index of Simplified Chinese in NotoSansCJK-Regular.ttc (JP, KR, SC, TC, HK).
NOTO_SC_INDEX: Final = 2

WIDTH: Final = 1400
_MARGIN = 40
_LABEL_WIDTH = 250
_DETAIL_WIDTH = 500
_HEADER = 130
_ROW = 52
_BAR = 24
_FOOTER = 70
_COLOURS: Final[Mapping[Status, str]] = {
    "behind": "#d64541",
    "on_pace": "#2f6fd0",
    "met": "#2e9b5a",
}
_TRACK, _INK, _MUTED, _RULE = "#e9edf2", "#1f2328", "#5b6470", "#8a94a0"


@dataclass(frozen=True)
class Bar:
    label: str  # the officer, e.g. "王警官 012345"
    share: float  # of the month's quota done, 0..1
    detail: str  # e.g. "下村 1/4 天，入户 3/4 户"
    status: Status


@dataclass(frozen=True)
class ChartText:
    title: str
    subtitle: str
    legend: Mapping[Status, str]
    quota: str  # the label of the 100 % line
    empty: str  # said instead of bars when there are none


def default_font() -> tuple[Path, int]:
    import noto_cjk_sans_otc  # type: ignore[import-untyped]

    return Path(noto_cjk_sans_otc.FONT_PATH), NOTO_SC_INDEX


@functools.cache
def _font(path: Path, index: int, size: int) -> FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size=size, index=index)


def _fit(draw: ImageDraw, text: str, font: FreeTypeFont, width: float) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def progress_chart(
    bars: Sequence[Bar], text: ChartText, *, font: Path | None = None, index: int = 0
) -> bytes:
    """A PNG: a title, one row per officer (name, bar against the quota, what was done) and
    a legend. Only the first MAX_BARS bars are drawn."""
    from PIL import Image, ImageDraw

    path, face = (font, index) if font is not None else default_font()
    title, small, body = (_font(path, face, size) for size in (34, 20, 22))
    shown = list(bars[:MAX_BARS])
    rows = max(len(shown), 1)
    height = _HEADER + rows * _ROW + _FOOTER
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, 28), _fit(draw, text.title, title, WIDTH - 2 * _MARGIN), _INK, title)
    draw.text((_MARGIN, 76), _fit(draw, text.subtitle, small, WIDTH - 2 * _MARGIN), _MUTED, small)

    left = _MARGIN + _LABEL_WIDTH
    right = WIDTH - _MARGIN - _DETAIL_WIDTH
    top = _HEADER
    if not shown:
        draw.text((left, top + 12), text.empty, _MUTED, body)
    for i, bar in enumerate(shown):
        y = top + i * _ROW + (_ROW - _BAR) // 2
        label = _fit(draw, bar.label, body, _LABEL_WIDTH - 16)
        draw.text((_MARGIN, y + _BAR // 2), label, _INK, body, anchor="lm")
        draw.rectangle((left, y, right, y + _BAR), fill=_TRACK)
        share = min(max(bar.share, 0.0), 1.0)
        # At least a sliver in the status colour, so that 0 % still shows who is behind.
        end = max(left + round((right - left) * share), left + 6)
        colour = _COLOURS[bar.status]
        draw.rectangle((left, y, end, y + _BAR), fill=colour)
        percent = f"{round(share * 100)}%"
        draw.text((right + 12, y + _BAR // 2), percent, colour, body, anchor="lm")
        detail = _fit(draw, bar.detail, small, _DETAIL_WIDTH - 96)
        draw.text((right + 96, y + _BAR // 2), detail, _MUTED, small, anchor="lm")
    # The quota: 100 % at the right end of the track.
    bottom = top + rows * _ROW
    draw.line((right, top - 8, right, bottom), fill=_RULE, width=2)
    draw.text((right, top - 10), text.quota, _MUTED, small, anchor="rb")

    x = _MARGIN
    y = bottom + _FOOTER // 2
    for status in STATUSES:
        draw.rectangle((x, y - 9, x + 18, y + 9), fill=_COLOURS[status])
        x += 26
        draw.text((x, y), text.legend[status], _INK, small, anchor="lm")
        x += int(draw.textlength(text.legend[status], font=small)) + 36

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
