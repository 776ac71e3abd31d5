"""An engraved lead sheet: the melody in notation with chord symbols above, as PNG and PDF.

The melody's sixteenth grid becomes MEI (the music encoding verovio reads): each bar's notes and
rests split into written values on the beat structure (ties across bar lines and beats), pitches
spelled in the key that model.music.keys.detect_key finds (its key signature; accidentals written
once per bar), 4/4, the tempo, and each chord symbol (a `harm`) where its chord starts. verovio
engraves it to SVG and CairoSVG turns that into PNG and PDF, all in this process.

verovio was picked over LilyPond by measuring 32 bars here: ~0.02 s to lay out (+ ~0.12 s for
each of PNG and PDF) against ~2.0 s for a LilyPond run (BENCHMARKS.md). verovio cannot be
interrupted inside a call, so the deadline is checked between the steps and the input is bounded
(MAX_BARS), which bounds each step to a few seconds (32 bars: 0.4 s for the PNG).
"""

from __future__ import annotations

import base64
import importlib.resources
import threading
import time
from collections.abc import Sequence
from xml.sax.saxutils import escape

from bot.render.errors import RenderError
from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT, events_to_notes

MAX_BARS = 128  # bars a lead sheet may have (a whole pop song: ~2.5 s to engrave, ~5000 px tall)
DEFAULT_TIMEOUT_S = 30.0  # seconds for the whole engraving
PAGE_WIDTH = 2100  # verovio units (tenths of a staff space at scale 100): A4-like proportions
PAGE_HEIGHT_MAX = 60000  # one tall page: the PNG is one picture and the PDF one page
SCALE = 45  # verovio's scale in percent: ~4 bars a line
PNG_ZOOM = 1.5  # CairoSVG scale for the PNG (the SVG is ~950 px wide): ~1400 px, crisp in Discord

# Written values in steps, longest first, each with the grid it must start on so that the beat
# structure stays visible (a dotted quarter starts on a beat, a half on beat 1 or 3, ...); the
# dotted ones (12, 6, 3) are not powers of two.
VALUES = ((16, 16), (12, 16), (8, 8), (6, 4), (4, 4), (3, 2), (2, 2), (1, 1))
# Steps -> (MEI @dur, dots): whole, dotted half, half, dotted quarter, ... sixteenth.
MEI_DURATION = {16: ("1", 0), 12: ("2", 1), 8: ("2", 0), 6: ("4", 1), 4: ("4", 0), 3: ("8", 1), 2: ("8", 0),
                1: ("16", 0)}

LETTERS = "cdefgab"
NATURAL_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
SHARP_ORDER, FLAT_ORDER = "fcgdaeb", "beadgcf"
# Major key (tonic pitch class) -> key signature in fifths (+ sharps, - flats); Db, Gb and Cb
# over C#, F# (6 sharps kept) and B to stay readable.
MAJOR_FIFTHS = {0: 0, 1: -5, 2: 2, 3: -3, 4: 4, 5: -1, 6: 6, 7: 1, 8: -4, 9: 3, 10: -2, 11: 5}
ACCID = {-1: "f", 0: "n", 1: "s"}
BASS_CLEF_BELOW = 55  # MIDI pitch: a melody whose median pitch lies below G3 is written in the bass clef

_LOCK = threading.Lock()  # one verovio toolkit at a time: its resources are process-wide


def load_engraver():
    """(verovio, cairosvg), or a RenderError saying how to install them."""
    try:
        import verovio
    except ImportError as error:
        raise RenderError(f"the lead-sheet engraver is not installed: pip install verovio ({error})") from error
    try:
        import cairosvg
    except (ImportError, OSError) as error:  # OSError: cairocffi finds no libcairo
        raise RenderError(
            f"CairoSVG cannot run: pip install cairosvg and apt-get install libcairo2 ({error})"
        ) from error
    return verovio, cairosvg


def key_fifths(events: list[int]) -> int:
    """Key signature (fifths) of the melody's key as model.music.keys.detect_key finds it (the sampler's)."""
    from model.music.keys import detect_key

    key = detect_key(events)
    if key is None:
        return 0
    return MAJOR_FIFTHS[(key.tonic + 3) % 12 if key.minor else key.tonic]


def spell(pitch: int, fifths: int) -> tuple[str, int, int]:
    """(letter, octave, alteration -1/0/+1) for a MIDI pitch: the key's own note if it has one,
    else the natural note, else a sharp in sharp keys (and C major) and a flat in flat keys."""
    signature = _signature(fifths)
    pc = pitch % 12
    candidates = [(letter, signature[letter]) for letter in LETTERS]  # the key's notes first
    candidates += [(letter, 0) for letter in LETTERS] + [(letter, 1 if fifths >= 0 else -1) for letter in LETTERS]
    letter, alteration = next((name, shift) for name, shift in candidates if (NATURAL_PC[name] + shift) % 12 == pc)
    octave = (pitch - NATURAL_PC[letter] - alteration) // 12 - 1  # MIDI 60 = C4; B#3 sounds as C4
    return letter, octave, alteration


def _signature(fifths: int) -> dict[str, int]:
    order = SHARP_ORDER if fifths >= 0 else FLAT_ORDER
    altered = set(order[: abs(fifths)])
    return {letter: (1 if fifths > 0 else -1) if letter in altered else 0 for letter in LETTERS}


def split_value(position: int, length: int) -> list[int]:
    """A note or rest of `length` steps starting `position` steps into a bar (not crossing it) ->
    written values (steps) to tie together: each starts on its own grid (VALUES), and a dotted
    value only ends the note, so the beats stay visible (from beat 2, 12 steps are 4 + 8)."""
    values = []
    while length > 0:
        value = next(
            v for v, grid in VALUES if v <= length and position % grid == 0 and (v & (v - 1) == 0 or v == length)
        )
        values.append(value)
        position, length = position + value, length - value
    return values


def melody_mei(events: list[int], chords: Sequence | None, bpm: float, title: str, fifths: int) -> str:
    """The MEI document of the lead sheet."""
    notes = events_to_notes(events)
    steps = max(len(events), notes[-1].end if notes else 0)
    bars = max(1, -(-steps // STEPS_PER_BAR))
    if bars > MAX_BARS:
        raise RenderError(f"the song has {bars} bars; a lead sheet holds at most {MAX_BARS}")
    sounding: list[tuple[int, int] | None] = [None] * (bars * STEPS_PER_BAR)  # (pitch, note start) per step
    for note in notes:
        sounding[note.start : note.end] = [(note.pitch, note.start)] * (note.end - note.start)
    pitches = sorted(note.pitch for note in notes)
    low = bool(pitches) and pitches[len(pitches) // 2] < BASS_CLEF_BELOW
    clef = 'clef.shape="F" clef.line="4"' if low else 'clef.shape="G" clef.line="2"'
    key = f"{abs(fifths)}{'s' if fifths > 0 else 'f'}" if fifths else "0"
    measures = []
    for bar in range(bars):
        layer = _beamed(_bar_items(sounding, bar * STEPS_PER_BAR, fifths))
        harms = _harms(chords, bar * STEPS_PER_BAR) if chords is not None else ""
        # "120 bpm", not a note glyph: verovio's SMuFL text font is a web font CairoSVG cannot draw.
        tempo = f'<tempo staff="1" tstamp="1" midi.bpm="{bpm:g}" place="above">{bpm:g} bpm</tempo>'
        ending = ' right="end"' if bar == bars - 1 else ""
        measures.append(
            f'<measure n="{bar + 1}"{ending}><staff n="1"><layer n="1">{layer}</layer></staff>'
            f"{harms}{tempo if bar == 0 else ''}</measure>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<mei xmlns="http://www.music-encoding.org/ns/mei" meiversion="5.0">'
        f"<meiHead><fileDesc><titleStmt><title>{escape(title)}</title></titleStmt><pubStmt/></fileDesc></meiHead>"
        "<music><body><mdiv><score>"
        f'<scoreDef meter.count="4" meter.unit="4" key.sig="{key}"><staffGrp>'
        f'<staffDef n="1" lines="5" {clef}/></staffGrp></scoreDef>'
        f"<section>{''.join(measures)}</section>"
        "</score></mdiv></body></music></mei>"
    )


def _bar_items(sounding: list, offset: int, fifths: int) -> list[tuple[int, int, str, bool]]:
    """One bar's notes and rests as (position, value, MEI element, is a note), in order."""
    signature = _signature(fifths)
    items, shown = [], {}  # shown: (letter, octave) -> alteration in force in this bar
    position = 0
    while position < STEPS_PER_BAR:
        here = sounding[offset + position]
        length = 1
        while position + length < STEPS_PER_BAR and sounding[offset + position + length] == here:
            length += 1
        values = split_value(position, length)
        at = position
        if here is None:
            for value in values:
                items.append((at, value, _duration("rest", value), False))
                at += value
        else:
            pitch, start = here
            letter, octave, alteration = spell(pitch, fifths)
            carried = start < offset + position  # tied over from the bar before: no accidental
            following = offset + position + length
            continues = following < len(sounding) and sounding[following] == here  # tied into the next bar
            attributes = f' pname="{letter}" oct="{octave}"'
            if alteration:
                attributes += f' accid.ges="{ACCID[alteration]}"'
            accidental = ""
            if shown.get((letter, octave), signature[letter]) != alteration and not carried:
                accidental = f' accid="{ACCID[alteration]}"'  # written once, on the first of tied values
            shown[(letter, octave)] = alteration
            for index, value in enumerate(values):
                begins = index == 0 and not carried
                ends = index == len(values) - 1 and not continues
                tie = {(True, True): "", (True, False): "i", (False, True): "t"}.get((begins, ends), "m")
                extra = (accidental if index == 0 else "") + (f' tie="{tie}"' if tie else "")
                items.append((at, value, _duration("note", value, attributes + extra), True))
                at += value
        position += length
    return items


def _beamed(items: list[tuple[int, int, str, bool]]) -> str:
    """The bar's elements, eighths and sixteenths of one beat beamed together (2 notes or more;
    rests inside a beam stay in it, rests before or after it stay out)."""
    out: list[str] = []
    group: list[tuple[int, int, str, bool]] = []

    def flush() -> None:
        rests = _trailing_rests(group)
        if sum(item[3] for item in group) >= 2:
            out.append("<beam>" + "".join(item[2] for item in group) + "</beam>")
        else:
            out.extend(item[2] for item in group)
        out.extend(rests)
        group.clear()

    for item in items:
        position, value, element, is_note = item
        beat = position // STEPS_PER_BEAT
        fits = value < STEPS_PER_BEAT and (position + value - 1) // STEPS_PER_BEAT == beat
        if group and (not fits or group[0][0] // STEPS_PER_BEAT != beat):
            flush()
        if fits and (group or is_note):
            group.append(item)
        else:
            out.append(element)
    flush()
    return "".join(out)


def _trailing_rests(group: list) -> list[str]:
    rests = []
    while group and not group[-1][3]:
        rests.insert(0, group.pop()[2])
    return rests


def _duration(element: str, value: int, attributes: str = "") -> str:
    dur, dots = MEI_DURATION[value]
    return f'<{element} dur="{dur}"{f" dots={chr(34)}{dots}{chr(34)}" if dots else ""}{attributes}/>'


def _harms(chords: Sequence, offset: int) -> str:
    harms = []
    for position in range(STEPS_PER_BAR):
        step = offset + position
        if step >= len(chords) or chords[step] is None:
            continue
        if step > 0 and chords[step - 1] == chords[step]:
            continue  # the same chord goes on (also over a bar line): a lead sheet names it once
        tstamp = 1 + position / STEPS_PER_BEAT
        harms.append(f'<harm staff="1" tstamp="{tstamp:g}" place="above">{escape(chords[step].symbol())}</harm>')
    return "".join(harms)


def engrave_lead_sheet(
    events: list[int],
    chords: Sequence | None,
    bpm: float,
    title: str,
    *,
    pdf: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[bytes, bytes | None]:
    """The melody's events (sixteenth grid) and per-step chords (model.music.chords.Chord or None; or
    no chords at all) -> (PNG, PDF or None when pdf=False) of a one-page lead sheet."""
    png, pdf_bytes, _ = engrave(events, chords, bpm, title, pdf=pdf, timeout=timeout)
    return png, pdf_bytes


def engrave(
    events: list[int], chords: Sequence | None, bpm: float, title: str, *, pdf: bool = True, timeout: float
) -> tuple[bytes, bytes | None, bytes]:
    """engrave_lead_sheet, and the MIDI verovio makes of its notation (to check it against)."""
    deadline = time.monotonic() + timeout
    verovio, cairosvg = load_engraver()
    document = melody_mei(events, chords, bpm, title, key_fifths(events))
    with _LOCK:
        # verovio keeps its default resource path per thread (set on import, in the importing
        # thread): set it in this one, or engraving from another thread finds no fonts.
        verovio.setDefaultResourcePath(str(importlib.resources.files("verovio") / "data"))
        toolkit = verovio.toolkit()
        toolkit.setOptions(
            {
                "pageWidth": PAGE_WIDTH,
                "pageHeight": PAGE_HEIGHT_MAX,
                "adjustPageHeight": True,
                "scale": SCALE,
                "footer": "none",
                "breaks": "auto",
                "xmlIdSeed": 1,  # the same song engraves to the same SVG
            }
        )
        if not toolkit.loadData(document):
            raise RenderError("verovio could not read the lead sheet it was given")
        _check(deadline, "laying out the lead sheet")
        svg = toolkit.renderToSVG(1)
        _check(deadline, "drawing the lead sheet")
        midi = base64.b64decode(toolkit.renderToMIDI())
    try:
        png = cairosvg.svg2png(bytestring=svg.encode(), background_color="white", scale=PNG_ZOOM)
        _check(deadline, "converting the lead sheet to PNG")
        pdf_bytes = cairosvg.svg2pdf(bytestring=svg.encode()) if pdf else None
    except (ValueError, OSError) as error:
        raise RenderError(f"CairoSVG could not convert the lead sheet: {error}") from error
    _check(deadline, "converting the lead sheet to PDF")
    return png, pdf_bytes, midi


def _check(deadline: float, stage: str) -> None:
    if time.monotonic() > deadline:
        raise RenderError(f"engraving took longer than its timeout allowed ({stage})")
