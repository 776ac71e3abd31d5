"""Chord symbols: what songwriters type ("C | G | Am F | F"), POP909's labels ("F#:maj7/5"), and
chords laid on the melody's sixteenth grid.

A `Chord` is a root pitch class, one canonical quality (a key of QUALITIES) and an optional slash
bass. `parse_chord` reads lead-sheet spellings (Cm, C-, CM7, CΔ, Cø, C°7, Cm(maj7), C/E, N for no
chord) and raises one `ChordError` whose message names the symbol. Per-step chord lists (one
Chord or None per sixteenth step) are what the network, the renderer and the evaluation share.
No torch here: the bot process imports this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from model.defaults import MAX_CHORD_BARS, MAX_CHORDS_PER_BAR, MAX_LEAD_SHEET_CHARS
from model.music.events import STEPS_PER_BAR, events_to_notes

NOTE_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]  # how symbol() spells roots
FLAT_NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]  # ... of a chord typed with flats
SHARP_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]  # ... typed with sharps
LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

# quality -> intervals from the root (semitones; the first is the root)
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "dim": (0, 3, 6),
    "dim7": (0, 3, 6, 9),
    "hdim7": (0, 3, 6, 10),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "7sus4": (0, 5, 7, 10),
    "6": (0, 4, 7, 9),
    "min6": (0, 3, 7, 9),
    "minmaj7": (0, 3, 7, 11),
    "9": (0, 4, 7, 10, 14),
    "add9": (0, 4, 7, 14),
    "maj9": (0, 4, 7, 11, 14),
    "min9": (0, 3, 7, 10, 14),
    "69": (0, 4, 7, 9, 14),
    "5": (0, 7),
}

# quality -> its lead-sheet suffix (what symbol() writes; parse_chord reads every one back)
SUFFIXES = {
    "maj": "", "min": "m", "7": "7", "maj7": "maj7", "min7": "m7", "dim": "dim", "dim7": "dim7",
    "hdim7": "m7b5", "aug": "aug", "sus2": "sus2", "sus4": "sus4", "7sus4": "7sus4", "6": "6",
    "min6": "m6", "minmaj7": "mMaj7", "9": "9", "add9": "add9", "maj9": "maj9", "min9": "m9",
    "69": "6/9", "5": "5",
}

# What musicians type after the root (parentheses already removed, ° ø Δ kept), case-sensitive:
# "M7" is major seventh, "m7" minor seventh.
_SPELLINGS = {
    "maj": ["", "M", "maj", "Maj", "major", "Major"],
    "min": ["m", "min", "mi", "-", "minor"],
    "7": ["7", "dom7", "dom", "13", "7b9", "7#9", "7#11", "7b13", "7alt", "alt"],  # extensions read as their 7th
    "maj7": ["maj7", "Maj7", "M7", "ma7", "j7", "Δ", "Δ7", "major7", "maj13", "maj7#11", "M7#11"],
    "min7": ["m7", "min7", "mi7", "-7", "minor7", "m11", "min11", "-11", "m13"],
    "dim": ["dim", "°", "o"],
    "dim7": ["dim7", "°7", "o7"],
    "hdim7": ["m7b5", "min7b5", "mi7b5", "-7b5", "ø", "ø7", "hdim7", "hdim"],
    "aug": ["aug", "+", "+5", "#5", "augmented"],
    "sus2": ["sus2"],
    "sus4": ["sus4", "sus"],
    "7sus4": ["7sus4", "7sus", "9sus4", "9sus", "11"],
    "6": ["6", "maj6", "M6", "add6"],
    "min6": ["m6", "min6", "mi6", "-6"],
    "minmaj7": ["mMaj7", "mmaj7", "mM7", "minmaj7", "minMaj7", "-maj7", "-M7", "-Δ", "-Δ7", "mΔ", "mΔ7", "mMa7"],
    "9": ["9", "dom9"],
    "add9": ["add9", "add2", "2"],
    "maj9": ["maj9", "Maj9", "M9", "Δ9"],
    "min9": ["m9", "min9", "mi9", "-9"],
    "69": ["6/9", "69", "6add9"],
    "5": ["5"],
}
_BY_SPELLING = {spelling: quality for quality, spellings in _SPELLINGS.items() for spelling in spellings}
# A spelling typed in another case ("MAJ7", "Sus4") is read when its lower case means one quality only.
_lower: dict[str, set[str]] = {}
for _spelling, _quality in _BY_SPELLING.items():
    _lower.setdefault(_spelling.lower(), set()).add(_quality)
_BY_LOWER = {spelling: next(iter(qs)) for spelling, qs in _lower.items() if len(qs) == 1}
NO_CHORD_SYMBOLS = {"n", "nc", "n.c.", "n.c", "no chord"}

HELP = "a chord is a note letter A-G, maybe # or b, then a kind such as m, 7, maj7, m7, dim, sus4 (C, F#m, Bb7, C/E)"


class ChordError(ValueError):
    """A chord symbol or lead sheet that cannot be read, with a message naming what was wrong."""

    def __init__(self, message: str, symbol: str | None = None, bar: int | None = None):
        super().__init__(message)
        self.symbol, self.bar = symbol, bar


@dataclass(frozen=True)
class Chord:
    root: int  # pitch class 0..11, C = 0
    quality: str  # a key of QUALITIES
    bass: int | None = None  # slash-chord bass pitch class; None when it is the root
    # how symbol() spells black keys: True flats (Db), False sharps (C#), None NOTE_NAMES; not part of
    # the chord's identity (Chord(1, "maj", flats=True) == Chord(1, "maj"))
    flats: bool | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.quality not in QUALITIES:
            raise ValueError(f"unknown chord quality {self.quality!r}")
        object.__setattr__(self, "root", self.root % 12)
        if self.bass is not None:
            object.__setattr__(self, "bass", None if self.bass % 12 == self.root else self.bass % 12)

    @property
    def pitch_classes(self) -> frozenset[int]:
        """The chord's pitch classes, the slash bass included."""
        tones = {(self.root + interval) % 12 for interval in QUALITIES[self.quality]}
        if self.bass is not None:
            tones.add(self.bass)
        return frozenset(tones)

    def symbol(self) -> str:
        """Lead-sheet spelling: "C", "Am7", "F#dim", "Bbmaj7", "C/E" (black keys as typed: "Db7")."""
        names = NOTE_NAMES if self.flats is None else FLAT_NAMES if self.flats else SHARP_NAMES
        slash = f"/{names[self.bass]}" if self.bass is not None else ""
        return names[self.root] + SUFFIXES[self.quality] + slash

    def __str__(self) -> str:
        return self.symbol()


def _note_name(text: str) -> tuple[int, str] | None:
    """A note name at the start of `text` -> (pitch class, the rest), or None."""
    if not text or text[0].upper() not in LETTERS:
        return None
    pc, i = LETTERS[text[0].upper()], 1
    while i < len(text) and text[i] in "#b":
        pc += 1 if text[i] == "#" else -1
        i += 1
    return pc % 12, text[i:]


def parse_chord(symbol: str) -> Chord | None:
    """A lead-sheet chord symbol -> Chord, or None for "N" / "NC" (no chord). Raises ChordError."""
    text = symbol.strip()
    if text.lower() in NO_CHORD_SYMBOLS:
        return None
    norm = text.replace("♯", "#").replace("♭", "b").replace("∆", "Δ").replace("º", "°").replace("Ø", "ø")
    norm = norm.replace("(", "").replace(")", "").replace(" ", "").replace("6/9", "69")
    head = _note_name(norm)
    if head is None:
        raise ChordError(f'I can\'t read the chord "{text}": {HELP}', text)
    root, rest = head
    accidentals = norm[1 : len(norm) - len(rest)]  # as typed, for the spelling
    bass = None
    if "/" in rest:
        rest, _, bass_text = rest.rpartition("/")
        parsed = _note_name(bass_text)
        if parsed is None or parsed[1]:
            raise ChordError(f'I can\'t read the chord "{text}": the bass after "/" must be a note name such as '
                             f"E or Bb", text)
        bass = parsed[0]
        accidentals += bass_text[1:]
    quality = _BY_SPELLING.get(rest) or _BY_LOWER.get(rest.lower())
    if quality is None and rest != "":
        kinds = ", ".join(s for s in dict.fromkeys(SUFFIXES.values()) if s)
        raise ChordError(f'I can\'t read the chord "{text}": I don\'t know the chord kind "{rest}" '
                         f"(I know {kinds}, and C for major)", text)
    flats = True if "b" in accidentals else False if "#" in accidentals else None  # the spelling they chose
    return Chord(root, quality or "maj", bass, flats)


def parse_lead_sheet(text: str) -> list[list[Chord | None]]:
    """ "C | G | Am F | F" -> bars of chords: bars split by "|", a bar's chords by spaces or
    commas; empty bars (leading/trailing "|", "||") are skipped; "%" repeats the bar before."""
    if len(text) > MAX_LEAD_SHEET_CHARS:
        raise ChordError(f"the chords are {len(text)} characters long; the limit is {MAX_LEAD_SHEET_CHARS}")
    bars: list[list[Chord | None]] = []
    for part in re.split(r"\|", text.replace(":", " ")):
        symbols = part.replace(",", " ").split()
        if not symbols:
            continue
        number = len(bars) + 1
        if symbols == ["%"]:
            if not bars:
                raise ChordError('the chords start with "%" (repeat the bar before), but no bar comes before it',
                                 "%", number)
            bars.append(list(bars[-1]))
            continue
        if len(symbols) > MAX_CHORDS_PER_BAR:
            raise ChordError(f"bar {number} has {len(symbols)} chords; the limit is {MAX_CHORDS_PER_BAR} a bar",
                             bar=number)
        bar = []
        for symbol in symbols:
            try:
                bar.append(parse_chord(symbol))
            except ChordError as error:
                message = str(error).replace(f'"{error.symbol}"', f'"{error.symbol}" (bar {number})', 1)
                raise ChordError(message, error.symbol, number) from None
        bars.append(bar)
        if len(bars) > MAX_CHORD_BARS:
            raise ChordError(f"the chords have more than {MAX_CHORD_BARS} bars; the limit is {MAX_CHORD_BARS}")
    if not bars:
        raise ChordError('no chords given: write them as bars split by "|", e.g. "C | G | Am F | F"')
    return bars


def chords_per_step(bars: Sequence[Sequence[Chord | None]], steps: int, start: int = 0,
                    steps_per_bar: int = STEPS_PER_BAR) -> list[Chord | None]:
    """One chord (or None) per step for `steps` steps. A bar's chords share it evenly; the bars
    repeat to cover. Entry i is the sheet's step `start + i` (counted from its first bar line,
    wrapping): start=0 begins the list at the sheet's first bar, a negative start delays the sheet
    (start=-32 gives 2 bars of the sheet's end, then its first bar at entry 32)."""
    grid = []
    for bar in bars:
        if not bar:
            continue
        grid += [bar[step * len(bar) // steps_per_bar] for step in range(steps_per_bar)]
    if not grid:
        return [None] * steps
    return [grid[(start + i) % len(grid)] for i in range(steps)]


def lead_sheet(chords: Sequence[Chord | None], steps_per_bar: int = STEPS_PER_BAR) -> str:
    """Per-step chords -> "C | G | Am F | F": each bar written as the fewest equal parts that hold
    its changes (a change off those parts goes to the nearest), N where no chord sounds."""
    bars = []
    for begin in range(0, len(chords), steps_per_bar):
        bar = list(chords[begin : begin + steps_per_bar])
        bar += [bar[-1]] * (steps_per_bar - len(bar))
        bars.append(" ".join("N" if c is None else c.symbol() for c in _bar_parts(bar)))
    return " | ".join(bars)


def _bar_parts(bar: list[Chord | None]) -> list[Chord | None]:
    """The fewest chords that, shared evenly as chords_per_step shares them, give `bar`; a bar
    no such split reproduces is written in the quarters, halves... that fit it best."""
    size = len(bar)
    for parts in range(1, MAX_CHORDS_PER_BAR + 1):
        chords = [bar[-(-p * size // parts)] for p in range(parts)]  # each part's first step
        if all(bar[step] == chords[step * parts // size] for step in range(size)):
            return chords

    def misses(parts: int) -> int:
        chords = [bar[(2 * p + 1) * size // (2 * parts)] for p in range(parts)]  # each part's middle
        return sum(bar[step] != chords[step * parts // size] for step in range(size))
    best = min((2, 4, 8), key=misses)
    return [bar[(2 * p + 1) * size // (2 * best)] for p in range(best)]


def chord_tone_share(events: Sequence[int], chords: Sequence[Chord | None]) -> float | None:
    """The chord-tone protocol of EVALUATION.md on one piece: the duration-weighted share of notes
    whose pitch class is in the chord sounding at the note's onset (chords[i] for step i; steps
    past its end and no-chord steps are left out). None when no note counts."""
    inside = total = 0
    for note in events_to_notes(list(events)):
        chord = chords[note.start] if note.start < len(chords) else None
        if chord is None:
            continue
        length = note.end - note.start
        total += length
        inside += length if note.pitch % 12 in chord.pitch_classes else 0
    return inside / total if total else None


def best_chord(weights: Sequence[float], min_classes: int = 3, bass: int | None = None) -> Chord | None:
    """Template matching: the chord whose pitch classes best fit a 12-bin pitch-class weight
    profile (weight inside minus weight outside, a small cost per chord tone not sounding, a
    small bonus for a root in the bass, which settles C6 against Am7), or None when fewer than
    `min_classes` pitch classes sound."""
    present = [pc for pc in range(12) if weights[pc] > 0]
    if len(present) < min_classes:
        return None
    total = sum(weights)
    best, best_score = None, -math.inf
    for quality in _TEMPLATE_QUALITIES:
        for root in range(12):
            tones = {(root + i) % 12 for i in QUALITIES[quality]}
            inside = sum(weights[pc] for pc in tones)
            missing = sum(1 for pc in tones if weights[pc] <= 0)
            score = inside - (total - inside) - 0.3 * missing * total / len(tones) - 0.01 * len(tones) * total
            if root == bass:
                score += 0.1 * total
            if score > best_score + 1e-9:
                best, best_score = Chord(root, quality), score
    return best


_TEMPLATE_QUALITIES = ["maj", "min", "7", "maj7", "min7", "dim", "dim7", "hdim7", "aug", "sus2", "sus4", "7sus4",
                       "6", "min6", "minmaj7", "9", "add9"]


def chords_from_tracks(tracks, melody_index: int | None, steps: int | None = None,
                       steps_per_chord: int = STEPS_PER_BAR // 2) -> list[Chord | None]:
    """Chords a MIDI sketch's other tracks hold (model.music.midi_io.Track objects, notes on the grid
    from the file's start): for each span of `steps_per_chord` steps (default half a bar), the
    duration-weighted pitch classes sounding in the non-melody, non-drum tracks -> best_chord;
    None where fewer than 3 pitch classes sound. A change that keeps the chord the same span
    after span is one chord; a lowest note that is a chord tone but not the root makes a slash
    chord. Returns one entry per step from the file's step 0 for `steps` steps (default: up to
    the last accompaniment note); a primer's events start at its offset (model.music.events
    notes_to_events), so crop the list there."""
    notes = [n for i, t in enumerate(tracks) if i != melody_index and not t.is_drum for n in t.notes]
    if steps is None:
        steps = max((n.end for n in notes), default=0)
    result: list[Chord | None] = []
    for begin in range(0, steps, steps_per_chord):
        end = min(begin + steps_per_chord, steps)
        weights = [0.0] * 12
        lowest = None
        for n in notes:
            overlap = min(n.end, end) - max(n.start, begin)
            if overlap > 0:
                weights[n.pitch % 12] += overlap
                if lowest is None or n.pitch < lowest:
                    lowest = n.pitch
        chord = best_chord(weights, bass=None if lowest is None else lowest % 12)
        if chord is not None and lowest is not None and lowest % 12 in chord.pitch_classes - {chord.root}:
            chord = Chord(chord.root, chord.quality, lowest % 12)  # an inversion: a slash chord
        result += [chord] * (end - begin)
    return result


__all__ = ["QUALITIES", "Chord", "ChordError", "best_chord", "chord_tone_share", "chords_from_tracks",
           "chords_per_step", "lead_sheet", "parse_chord", "parse_lead_sheet"]
