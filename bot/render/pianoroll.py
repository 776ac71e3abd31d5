"""Piano-roll pictures of melodies with Pillow (matplotlib is far slower to import and draw).

One panel per variation: time runs left to right with a line at every bar, pitch runs bottom to
top with every C named ("C4" is middle C), the primer region is shaded and its notes are drawn in
a different colour from the continuation. Panels of one request share the pitch range and length,
so stacked they compare at a glance. With chords, a lane above the grid names each chord where it
starts (a symbol that would overlap the previous one is left out). Colours suit Discord's dark theme.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT, events_to_notes, pitch_name

WIDTH = 960  # px; Discord shows it scaled down in the message and full size when clicked
PANEL_HEIGHT = 230  # px per variation
HEADER = 30  # px above the grid: variation number and legend
FOOTER = 20  # px below the grid: bar numbers
GUTTER = 54  # px left of the grid for the note names
MARGIN = 8  # px right of the grid
SEPARATOR = 4  # px between stacked panels
MIN_PITCH_SPAN = 24  # semitones shown at least (two octaves always contain a C to label)
FONT_PX = 17  # text height; still readable when Discord halves the picture
CHORD_LANE = 22  # px between the header and the grid for the chord symbols, when there are chords
CHORD_GAP = 6  # px at least between two chord symbols

BACKGROUND = (30, 31, 34)
GRID = (43, 45, 49)
BLACK_KEY_ROW = (37, 38, 42)
PRIMER_SHADE = (48, 54, 74)  # primer region, blue tint
PRIMER_BLACK_KEY_ROW = (42, 47, 66)
BEAT_LINE = (55, 57, 63)
BAR_LINE = (100, 104, 112)
PRIMER_END_LINE = (140, 160, 220)
PRIMER_NOTE = (130, 155, 215)  # muted blue: the songwriter's notes
CONTINUATION_NOTE = (255, 170, 60)  # orange: the model's notes
CHORD_TEXT = (140, 215, 160)  # green, apart from both note colours
TEXT = (220, 222, 225)
DIM_TEXT = (150, 153, 160)
BLACK_KEYS = {1, 3, 6, 8, 10}  # pitch classes


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: no system font needed


def shared_layout(melodies: list[list[int]]) -> tuple[int, int, int]:
    """(lowest pitch, highest pitch, steps) that fit all melodies, in whole bars."""
    pitches = [note.pitch for events in melodies for note in events_to_notes(events)] or [60]
    low, high = min(pitches) - 1, max(pitches) + 1
    missing = MIN_PITCH_SPAN - (high - low + 1)
    if missing > 0:
        low -= missing // 2
        high += missing - missing // 2
    longest = max((len(events) for events in melodies), default=0)
    steps = max(STEPS_PER_BAR, -(-longest // STEPS_PER_BAR) * STEPS_PER_BAR)
    return max(0, low), min(127, high), steps


def draw_panel(
    events: list[int],
    primer_steps: int,
    layout: tuple[int, int, int],
    label: str = "",
    chords: Sequence | None = None,
) -> Image.Image:
    """One variation's piano roll, PANEL_HEIGHT tall; `chords` (a model.music.chords.Chord or None per
    step) are named above the grid."""
    low, high, steps = layout
    image = Image.new("RGB", (WIDTH, PANEL_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    top = HEADER + (CHORD_LANE if chords is not None else 0)
    left, right, bottom = GUTTER, WIDTH - MARGIN, PANEL_HEIGHT - FOOTER
    step_px = (right - left) / steps
    row_px = (bottom - top) / (high - low + 1)
    primer_x = left + min(primer_steps, steps) * step_px

    def x(step: float) -> int:
        return round(left + step * step_px)

    def y(pitch: int) -> int:  # top edge of the pitch's row
        return round(top + (high - pitch) * row_px)

    draw.rectangle((left, top, right, bottom), fill=GRID)
    draw.rectangle((left, top, primer_x, bottom), fill=PRIMER_SHADE)
    for pitch in range(low, high + 1):
        if pitch % 12 in BLACK_KEYS:
            draw.rectangle((left, y(pitch), right, y(pitch - 1) - 1), fill=BLACK_KEY_ROW)
            if primer_steps > 0:
                draw.rectangle((left, y(pitch), primer_x, y(pitch - 1) - 1), fill=PRIMER_BLACK_KEY_ROW)
        if pitch % 12 == 0:
            draw.line((left, y(pitch - 1) - 1, right, y(pitch - 1) - 1), fill=BEAT_LINE)
            draw.text((left - 6, (y(pitch) + y(pitch - 1)) / 2), pitch_name(pitch), TEXT, _font(FONT_PX - 2), "rm")

    font = _font(FONT_PX)
    bar_every = max(1, round(40 / (STEPS_PER_BAR * step_px)))  # bar numbers at least ~40 px apart
    for step in range(0, steps + 1, STEPS_PER_BEAT):
        if step % STEPS_PER_BAR:
            draw.line((x(step), top, x(step), bottom), fill=BEAT_LINE)
            continue
        draw.line((x(step), top, x(step), bottom + 4), fill=BAR_LINE, width=2)
        bar = step // STEPS_PER_BAR
        if step < steps and bar % bar_every == 0:
            draw.text((x(step) + 4, bottom + 2), str(bar + 1), DIM_TEXT, _font(FONT_PX - 3), "lt")
    if 0 < primer_steps < steps:
        draw.line((primer_x, top, primer_x, bottom), fill=PRIMER_END_LINE, width=3)

    for note in events_to_notes(events):
        colour = PRIMER_NOTE if note.start < primer_steps else CONTINUATION_NOTE
        box = (x(note.start) + 1, y(note.pitch), max(x(note.start) + 2, x(note.end) - 2), y(note.pitch - 1) - 1)
        draw.rectangle(box, fill=colour)

    if chords is not None:
        _chord_symbols(draw, chords[:steps], x, top)
    if label:
        draw.text((GUTTER / 2, HEADER / 2), label, TEXT, _font(FONT_PX + 5), "mm")
    _legend(draw, font, primer_steps > 0)
    return image


def _chord_symbols(draw: ImageDraw.ImageDraw, chords: Sequence, x, top: int) -> None:
    font = _font(FONT_PX - 2)
    free_from = 0.0  # x where the next symbol may start
    for step, chord in enumerate(chords):
        if chord is None or (step > 0 and chords[step - 1] == chord) or x(step) + 2 < free_from:
            continue
        symbol = chord.symbol()
        draw.text((x(step) + 2, top - CHORD_LANE / 2), symbol, CHORD_TEXT, font, "lm")
        free_from = x(step) + 2 + draw.textlength(symbol, font=font) + CHORD_GAP


def _legend(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, with_primer: bool) -> None:
    entries = [("your melody", PRIMER_NOTE)] if with_primer else []
    entries.append(("continuation", CONTINUATION_NOTE))
    x = WIDTH - MARGIN
    for text, colour in reversed(entries):
        x -= draw.textlength(text, font=font)
        draw.text((x, HEADER / 2), text, TEXT, font, "lm")
        x -= 18
        draw.rectangle((x, HEADER / 2 - 6, x + 12, HEADER / 2 + 6), fill=colour)
        x -= 16


def stack(panels: list[Image.Image]) -> Image.Image:
    """Panels one above the other, SEPARATOR px apart."""
    height = len(panels) * PANEL_HEIGHT + (len(panels) - 1) * SEPARATOR
    image = Image.new("RGB", (WIDTH, max(height, 1)), (0, 0, 0))
    for index, panel in enumerate(panels):
        image.paste(panel, (0, index * (PANEL_HEIGHT + SEPARATOR)))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # ~2x faster than the default 6, a bit larger
    return buffer.getvalue()
