"""Piano-roll pictures of melodies with Pillow (matplotlib is far slower to import and draw).

One panel per variation: time runs left to right with a line at every bar, pitch runs bottom to
top with every C named ("C4" is middle C), the primer region is shaded and its notes are drawn in
a different colour from the continuation. Panels of one request share the pitch range and length,
so stacked they compare at a glance. With chords, a lane above the grid names each chord where it
starts (a symbol that would overlap the previous one is left out). With a band (an arrangement's
parts besides the melody and plain chords), the panel is taller, the keys (or guitar) and bass
are drawn faint beneath the melody and the drums as ticks in a lane under the grid (kick and
snare longer). Colours suit Discord's dark theme.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT, events_to_notes, pitch_name

NOT_BAND = {"MELODY", "CHORDS"}  # an arrangement's parts that are not drawn as the band

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
BAND_PANEL_HEIGHT = 320  # px per variation with a band: the bass and keys need rows too
DRUM_LANE = 14  # px under the grid for the drum ticks
MAX_BAND_SPAN = 54  # semitones shown at most with a band (the melody's own range is always shown)

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
BAND_NOTE = {"BASS": (88, 78, 122)}  # faint purple; other parts faint green-grey
OTHER_BAND_NOTE = (70, 100, 88)
DRUM_TICK = (120, 124, 134)
STRONG_DRUMS = {35, 36, 37, 38, 40}  # kicks, side stick, snares: the longer ticks
TEXT = (220, 222, 225)
DIM_TEXT = (150, 153, 160)
BLACK_KEYS = {1, 3, 6, 8, 10}  # pitch classes


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: no system font needed


def band_parts(arrangement) -> list:
    """The parts of a model.band.parts.Arrangement drawn as the band (none for plain chords)."""
    return [part for part in arrangement.parts if part.name not in NOT_BAND] if arrangement is not None else []


def shared_layout(melodies: list[list[int]], arrangements: Sequence | None = None) -> tuple[int, int, int]:
    """(lowest pitch, highest pitch, steps) that fit all melodies, in whole bars; with
    arrangements, their bands' pitched notes too (down from the melody, MAX_BAND_SPAN at most)."""
    pitches = [note.pitch for events in melodies for note in events_to_notes(events)] or [60]
    low, high = min(pitches) - 1, max(pitches) + 1
    missing = MIN_PITCH_SPAN - (high - low + 1)
    if missing > 0:
        low -= missing // 2
        high += missing - missing // 2
    band = [n.pitch for a in arrangements or [] for p in band_parts(a) if not p.is_drum for n in p.notes]
    if band:
        high = max(high, min(max(band) + 1, low + MAX_BAND_SPAN - 1))
        low = min(low, max(min(band) - 1, high - MAX_BAND_SPAN + 1))
    longest = max((len(events) for events in melodies), default=0)
    steps = max(STEPS_PER_BAR, -(-longest // STEPS_PER_BAR) * STEPS_PER_BAR)
    return max(0, low), min(127, high), steps


def draw_panel(
    events: list[int],
    primer_steps: int,
    layout: tuple[int, int, int],
    label: str = "",
    chords: Sequence | None = None,
    arrangement=None,
    tall: bool = False,
    labels: Sequence[tuple[int, str]] | None = None,
) -> Image.Image:
    """One variation's piano roll, PANEL_HEIGHT tall (BAND_PANEL_HEIGHT with a band, or `tall`:
    as tall as the other variations' with a band); `chords` (a model.music.chords.Chord or None per
    step) are named above the grid; `arrangement`'s band is drawn faint beneath the melody; `labels`
    ((step, text): a lyric's syllables) under the notes starting at their steps."""
    low, high, steps = layout
    band = band_parts(arrangement)
    height = BAND_PANEL_HEIGHT if band or tall else PANEL_HEIGHT
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    top = HEADER + (CHORD_LANE if chords is not None else 0)
    left, right = GUTTER, WIDTH - MARGIN
    bottom = height - FOOTER - (DRUM_LANE if any(p.is_drum for p in band) else 0)
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
        draw.line((x(step), top, x(step), height - FOOTER + 4), fill=BAR_LINE, width=2)
        bar = step // STEPS_PER_BAR
        if step < steps and bar % bar_every == 0:
            draw.text((x(step) + 4, height - FOOTER + 2), str(bar + 1), DIM_TEXT, _font(FONT_PX - 3), "lt")
    if 0 < primer_steps < steps:
        draw.line((primer_x, top, primer_x, bottom), fill=PRIMER_END_LINE, width=3)

    _band(draw, band, x, y, (low, high, steps), bottom)
    for note in events_to_notes(events):
        colour = PRIMER_NOTE if note.start < primer_steps else CONTINUATION_NOTE
        box = (x(note.start) + 1, y(note.pitch), max(x(note.start) + 2, x(note.end) - 2), y(note.pitch - 1) - 1)
        draw.rectangle(box, fill=colour)

    if labels:
        starts = {note.start: note for note in events_to_notes(events)}
        wanted = [((x(step) + 1, y(starts[step].pitch - 1) + 1), text.strip())
                  for step, text in labels if step in starts and step < steps]
        small = _font(FONT_PX - 5)
        for place, text in label_places(draw, wanted, small, bottom):
            draw.text(place, text, TEXT, small, "lt")
    if chords is not None:
        _chord_symbols(draw, chords[:steps], x, top)
    if label:
        draw.text((GUTTER / 2, HEADER / 2), label, TEXT, _font(FONT_PX + 5), "mm")
    _legend(draw, font, primer_steps > 0, bool(band))
    return image


def label_places(draw: ImageDraw.ImageDraw, wanted: list[tuple[tuple[int, int], str]], font, bottom: int,
                 ) -> list[tuple[tuple[int, int], str]]:
    """Where each lyric label goes: under its note ((left, top) as wanted), or a line lower, or
    the next, where it would overlap a label already placed (syllables on sixteenths run into each
    other), so every syllable stays readable; no lower than `bottom` allows."""
    placed: list[tuple[int, int, int, int]] = []  # boxes of the labels so far, 2 px wider to the right

    def free(x0: int, y0: int, x1: int, y1: int) -> bool:
        return not any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed)

    out = []
    for (left, top), text in wanted:
        x0, y0, x1, y1 = draw.textbbox((left, top), text, font, "lt")
        line = y1 - top + 1
        shift = 0
        while not free(x0, y0 + shift, x1, y1 + shift) and y1 + shift + line <= bottom:
            shift += line
        placed.append((x0, y0 + shift, x1 + 2, y1 + shift))
        out.append(((left, top + shift), text))
    return out


def _band(draw: ImageDraw.ImageDraw, band: list, x, y, layout: tuple[int, int, int], bottom: int) -> None:
    """The band's pitched notes as faint boxes (outside the rows and bars shown: left out), its
    drums as ticks in the lane under the grid."""
    low, high, steps = layout
    for part in band:
        if part.is_drum:
            for note in (n for n in part.notes if n.start < steps):
                tall = DRUM_LANE - 3 if note.pitch in STRONG_DRUMS else DRUM_LANE // 2
                draw.line((x(note.start), bottom + 2, x(note.start), bottom + 1 + tall), fill=DRUM_TICK)
            continue
        colour = BAND_NOTE.get(part.name, OTHER_BAND_NOTE)
        for note in part.notes:
            if low <= note.pitch <= high and note.start < steps:
                end = x(min(note.end, steps)) - 2
                box = (x(note.start) + 1, y(note.pitch), max(x(note.start) + 2, end), y(note.pitch - 1) - 1)
                draw.rectangle(box, fill=colour)


def _chord_symbols(draw: ImageDraw.ImageDraw, chords: Sequence, x, top: int) -> None:
    font = _font(FONT_PX - 2)
    free_from = 0.0  # x where the next symbol may start
    for step, chord in enumerate(chords):
        if chord is None or (step > 0 and chords[step - 1] == chord) or x(step) + 2 < free_from:
            continue
        symbol = chord.symbol()
        draw.text((x(step) + 2, top - CHORD_LANE / 2), symbol, CHORD_TEXT, font, "lm")
        free_from = x(step) + 2 + draw.textlength(symbol, font=font) + CHORD_GAP


def _legend(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, with_primer: bool, with_band: bool) -> None:
    entries = [("your melody", PRIMER_NOTE)] if with_primer else []
    entries.append(("continuation", CONTINUATION_NOTE))
    if with_band:
        entries.append(("band", OTHER_BAND_NOTE))
    x = WIDTH - MARGIN
    for text, colour in reversed(entries):
        x -= draw.textlength(text, font=font)
        draw.text((x, HEADER / 2), text, TEXT, font, "lm")
        x -= 18
        draw.rectangle((x, HEADER / 2 - 6, x + 12, HEADER / 2 + 6), fill=colour)
        x -= 16


def stack(panels: list[Image.Image]) -> Image.Image:
    """Panels one above the other, SEPARATOR px apart."""
    height = sum(panel.height for panel in panels) + (len(panels) - 1) * SEPARATOR
    image = Image.new("RGB", (WIDTH, max(height, 1)), (0, 0, 0))
    top = 0
    for panel in panels:
        image.paste(panel, (0, top))
        top += panel.height + SEPARATOR
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # ~2x faster than the default 6, a bit larger
    return buffer.getvalue()
