"""The keys (or guitar): real accompaniment phrases from POP909's PIANO tracks laid over the
requested chords.

The library (model/weights/band_textures.json, built by model/lab/band_textures.py) holds 4-bar
phrases whose notes say which chord tone they play and how high above the phrase's centre. For
each 4 bars of the piece, `keys_notes` retrieves a phrase whose chord rhythm matches the
requested chords' (where the chords change in each bar), whose density suits the style, and,
after the first, from the same song as the last when one fits (a real pianist's phrases follow
each other); then adapts it: every note goes to the tone of the chord sounding at its onset that
its slot names (transposed and re-voiced), at the nearest pitch to its height (voice-leading:
common tones stay, others move the least), ends where the chord changes, and the whole phrase
sits below the melody's register. A note that would rub a semitone against a melody note takes
another chord tone, or stops when that melody note starts. The library loads once per process.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from model.band.grid import Grid, changes
from model.band.parts import BandNote
from model.band.styles import Style
from model.music.chords import QUALITIES, Chord
from model.music.events import STEPS_PER_BAR

TEXTURES = Path(__file__).resolve().parents[1] / "weights" / "band_textures.json"
PHRASE_BARS = 4
SLOT_BASS = 5
FLOOR = 43  # G2: keys below this muddy the bass
GAP = 2  # semitones kept between the keys' top and the melody's low notes
CANDIDATES = 6  # the best phrases a variation chooses among
ROOM = 10  # semitones the keys need under the melody; with less (a melody in the bass's register) they go above
TOP = 96  # the keys' highest note when they play above the melody


class Phrase(NamedTuple):
    rows: list[tuple[int, int, int, int, int, bool]]  # its notes, each with whether it is the low voice
    # of its onset (the lowest note there, well below the centre: a slash chord's bass goes to it)
    top: int  # the highest note's height
    bottom: int  # the lowest note's height
    mean_velocity: float


@dataclass(frozen=True)
class Library:
    masks: np.ndarray  # (P, 4) int: per bar, bit s when the chord changes at step s
    density: np.ndarray  # (P,) mean notes per bar
    songs: np.ndarray  # (P,) source song ids
    centres: np.ndarray  # (P,) the source phrase's centre pitch
    progressions: np.ndarray  # (P, 8) per half bar: root above the phrase's first root, + 12 if minor
    spans: np.ndarray  # (P,) semitones from the phrase's lowest note to its highest
    notes: list[np.ndarray]  # per phrase (n, 5): onset, length, slot, height, velocity
    converted: dict = field(default_factory=dict)  # phrase index -> its Phrase, kept once used
    off_density: dict = field(default_factory=dict)  # (low, high) -> (P,) notes per bar outside low..high

    @functools.cached_property
    def mask_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows of masks, transposed (4, U), U ~ 650 of 2600 phrases, and each phrase's
        row among them (P,): retrieve counts mismatched change steps once per distinct row, summing
        along the rows (numpy's sums across 4 columns cost more than the counting)."""
        rows, row_of = np.unique(self.masks, axis=0, return_inverse=True)
        return np.ascontiguousarray(rows.T), row_of.reshape(-1)

    @functools.cached_property
    def progressions_by_half(self) -> np.ndarray:
        """(8, P) progressions transposed (sums along the phrases, see mask_rows), as int8 (codes
        -1..23): half the time to compare."""
        return np.ascontiguousarray(self.progressions.T, dtype=np.int8)

    def phrase(self, index: int) -> Phrase:
        """A phrase's notes as Python values, converted once."""
        if index not in self.converted:
            notes = self.notes[index]
            self.converted[index] = Phrase(_rows(notes), int(notes[:, 3].max()), int(notes[:, 3].min()),
                                           float(notes[:, 4].mean()))
        return self.converted[index]


@functools.cache
def load_library(path: str | Path = TEXTURES) -> Library:
    data = json.loads(Path(path).read_text())
    phrases = data["phrases"]
    notes = []
    for phrase in phrases:
        raw = np.frombuffer(base64.b64decode(phrase["notes"]), dtype=np.uint8).reshape(-1, 5).astype(np.int16)
        raw[:, 3] -= 64
        notes.append(raw)
    return Library(
        masks=np.array([p["masks"] for p in phrases], dtype=np.int64),
        density=np.array([sum(p["counts"]) / len(p["counts"]) for p in phrases], dtype=float),
        songs=np.array([int(p["song"]) for p in phrases]),
        centres=np.array([p["centre"] for p in phrases]),
        progressions=np.array([p.get("chords", [-1] * 2 * PHRASE_BARS) for p in phrases], dtype=np.int64),
        spans=np.array([int(n[:, 3].max() - n[:, 3].min()) for n in notes]),
        notes=notes,
    )


def _rows(notes: np.ndarray) -> list[tuple[int, int, int, int, int, bool]]:
    """Phrase.rows, converted."""
    lowest: dict[int, int] = {}
    for onset, _, _, height, _ in notes.tolist():
        lowest[onset] = min(lowest.get(onset, 99), height)
    return [(o, d, s, h, v, h == lowest[o] and h <= -5) for o, d, s, h, v in notes.tolist()]


def change_mask(chords: Sequence[Chord | None], begin: int) -> int:
    """Bit s set when the chord changes at step s of the bar starting at `begin`."""
    mask = 0
    for s in range(1, STEPS_PER_BAR):
        if begin + s < len(chords) and changes(chords[begin + s - 1], chords[begin + s]):
            mask |= 1 << s
    return mask


def progression_codes(chords: Sequence[Chord | None], begin: int) -> list[int]:
    """The 4 bars from `begin` as the library's progression codes (see band_textures): per half
    bar, its chord's root above the window's first root, + 12 if minor; -1 for no chord."""
    first = next((c for c in chords[begin : begin + PHRASE_BARS * STEPS_PER_BAR] if c is not None), None)
    codes = []
    for half in range(begin, begin + PHRASE_BARS * STEPS_PER_BAR, STEPS_PER_BAR // 2):
        chord = chords[half] if half < len(chords) else None
        if chord is None or first is None:
            codes.append(-1)
            continue
        intervals = QUALITIES[chord.quality]
        codes.append((chord.root - first.root) % 12 + 12 * (len(intervals) > 1 and intervals[1] == 3))
    return codes


_POPCOUNT = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.int64)


def retrieve(library: Library, masks: Sequence[int], density: tuple[float, float], previous: int | None,
             rng: random.Random, progression: Sequence[int] | None = None, room: int | None = None) -> int:
    """The index of a phrase for 4 bars with these chord-change masks: fewest mismatched change
    steps, then the same chord progression (root motion and minor chords, half bar by half bar),
    density inside the style's range, a span that fits the `room` under the melody, the previous
    phrase's song preferred; a random one of the best CANDIDATES, so variations differ."""
    target = np.array(list(masks) + [0] * (PHRASE_BARS - len(masks)), dtype=np.int64)[: PHRASE_BARS]
    used = len(masks)
    rows, row_of = library.mask_rows
    mismatch = _POPCOUNT[(rows[:used] ^ target[:used, None]) & 0xFFFF].sum(0)[row_of]  # (P,)
    low, high = density
    off = library.off_density.get((low, high))
    if off is None:  # once per style
        off = np.maximum(low - library.density, 0) + np.maximum(library.density - high, 0)
        library.off_density[(low, high)] = off
    score = 3.0 * mismatch + off
    if progression is not None:
        target_codes = np.array(progression, dtype=np.int8)
        known = target_codes >= 0
        differ = library.progressions_by_half[known] != target_codes[known, None]  # (known half bars, P)
        score = score + 0.35 * differ.sum(0, dtype=np.int8)  # at most 8: int8 saves a cast of (8, P)
    if room is not None:
        score = score + 0.25 * np.maximum(library.spans - room, 0)
    if previous is not None:
        score = score - 1.0 * (library.songs == library.songs[previous])
        score[previous] += 5.0  # not the same phrase again (+ 0.0 elsewhere: left out)
    best = np.argpartition(score, CANDIDATES)[:CANDIDATES] if len(score) > CANDIDATES else np.arange(len(score))
    best = best[np.argsort(score[best], kind="stable")]
    return int(best[min(len(best) - 1, int(rng.random() ** 2 * len(best)))])  # the best ones most often


POWER = {1: 2, 3: 0, 4: 2}  # power chords: third -> fifth, seventh -> root, ninth -> fifth


def slot_pitch_class(chord: Chord, slot: int, low_voice: bool, power: bool = False) -> int:
    """The pitch class a slot plays over `chord` (a slash chord's bass in the low voice)."""
    if chord.bass is not None and (slot == SLOT_BASS or (low_voice and slot == 0)):
        return chord.bass
    tones = QUALITIES[chord.quality]
    if slot == SLOT_BASS:
        return chord.root
    if power and len(tones) >= 3:  # a "5" chord has no third to spare
        slot = POWER.get(slot, slot)
    return (chord.root + tones[slot % len(tones)]) % 12


def snap(pitch_class: int, near: float) -> int:
    """The pitch of pitch_class nearest to `near` (ties go down: keys stay under the melody)."""
    base = int(round(near))
    delta = (pitch_class - base) % 12
    return base + delta if delta < 6 else base + delta - 12


def melody_low(melody: Sequence, begin: int, end: int) -> int | None:
    """The melody's low register over begin..end: its second-lowest note there (one low passing
    note does not push the whole band down)."""
    pitches = sorted(m.pitch for m in melody if m.start < end and m.end > begin)
    if not pitches:
        return None
    return pitches[min(1, len(pitches) - 1)]


def keys_notes(style: Style, chords: Sequence[Chord | None], melody: Sequence, rng: random.Random,
               library: Library | None = None, grid: Grid | None = None) -> list[BandNote]:
    """The keys (or guitar) part over the chords, 4 bars at a time (see the module doc)."""
    library = library or load_library()
    steps = len(chords)
    out: list[BandNote] = []
    previous = None
    overall_low = melody_low(melody, 0, steps)
    grid = grid or Grid.of(melody, chords)
    under = [128 if p is None else p for p in grid.sounding]  # the melody note a keys note must stay under
    for begin in range(0, steps, PHRASE_BARS * STEPS_PER_BAR):
        end = min(steps, begin + PHRASE_BARS * STEPS_PER_BAR)
        if all(c is None for c in chords[begin:end]):
            previous = None
            continue
        masks = [change_mask(chords, b) for b in range(begin, end, STEPS_PER_BAR)]
        low = melody_low(melody, begin, end) or overall_low
        room = None if low is None else max(0, low - GAP - FLOOR)
        index = retrieve(library, masks, style.density, previous, rng, progression_codes(chords, begin), room)
        previous = index
        rows, top, bottom, mean_velocity = library.phrase(index)
        if low is not None and low - GAP - FLOOR < ROOM:  # a melody down in the bass's register: keys above it
            high = max(m.pitch for m in melody if m.start < end and m.end > begin) if any(
                m.start < end and m.end > begin for m in melody) else low
            out += _adapt(rows, mean_velocity, chords, begin, end, high + GAP - bottom, 127, style,
                          under, grid.span_end, above=True)
            continue
        centre = style.keys_centre
        if low is not None:
            centre = min(centre, low - GAP - top)
        centre = max(centre, FLOOR - bottom - 6)  # a low melody: fold the top instead (below)
        ceiling = (low - GAP) if low is not None else 127
        out += _adapt(rows, mean_velocity, chords, begin, end, centre, ceiling, style, under,
                      grid.span_end)
    kept = _avoid_clashes(out, chords, grid)
    return kept if kept or all(c is None for c in chords) else held_chords(style, chords, grid, under)


def held_chords(style: Style, chords: Sequence[Chord | None], grid: Grid, under: list[int]) -> list[BandNote]:
    """The fallback when no retrieved phrase survived the melody (a short piece whose melody
    rubs against every phrase): each chord held as its tones under the melody, none rubbing, so
    the keys never fall silent under chords."""
    from model.band.bass import chord_spans  # noqa: PLC0415 - the one home of chord runs

    out = []
    for start, end, chord in chord_spans(chords):
        if chord is None:
            continue
        top = min(min(under[start:end]) - GAP, style.keys_centre + 6)
        pitches = [snap(pc, top - 4) for pc in sorted(chord.pitch_classes)]
        pitches = [p if p < top else p - 12 for p in pitches]
        out += [BandNote(p, float(start), float(end), 60) for p in pitches if not grid.rubs(p, start, end)]
    return out


def _adapt(rows: list[tuple], mean_velocity: float, chords: Sequence[Chord | None], begin: int, end: int,
           centre: int, ceiling: int, style: Style, under: list[int], span_end: list[int],
           above: bool = False) -> list[BandNote]:
    placed: dict[tuple[int, int], BandNote] = {}
    for onset, length, slot, height, velocity, low_voice in rows:
        step = begin + onset
        if step >= end or chords[step] is None:
            continue
        chord = chords[step]
        stop = min(step + length, end, span_end[step])  # a note ends where its chord does
        pitch = snap(slot_pitch_class(chord, slot, low_voice, style.power), centre + height)
        if above:  # never below a melody note it sounds with
            over = max((p for p in under[step:stop] if p < 128), default=0)
            while pitch <= over:
                pitch += 12
            if pitch <= TOP:
                placed[(step, pitch)] = BandNote(pitch, float(step), float(stop),
                                                 _velocity(style.velocity, velocity, mean_velocity))
            continue
        while pitch > ceiling and pitch - 12 >= FLOOR - 5:
            pitch -= 12
        while pitch < FLOOR - 5:
            pitch += 12
        below = min(ceiling + GAP, min(under[step:stop]))  # never above a melody note it sounds with
        while pitch >= below and pitch - 12 >= FLOOR - 5:
            pitch -= 12
        if pitch >= below:
            continue  # no room under the melody here
        placed[(step, pitch)] = BandNote(pitch, float(step), float(stop),
                                         _velocity(style.velocity, velocity, mean_velocity))
    return sorted(placed.values(), key=attrgetter("start", "pitch"))


def _velocity(base: int, velocity: int, mean_velocity: float) -> int:
    """A phrase note's velocity in the band: the style's, moved by half the note's accent in its
    phrase, 20..120 (inline comparisons: builtin max and min cost 3 times as much)."""
    level = base + 0.5 * (velocity - mean_velocity)
    return int(20 if level < 20 else 120 if level > 120 else level)


def _avoid_clashes(notes: list[BandNote], chords: Sequence[Chord | None], grid: Grid) -> list[BandNote]:
    """No accompaniment note rubs a semitone (any octave) against a melody note that starts while
    it sounds: it takes the nearest lower tone of its chord that does not, else it stops there."""
    out = []
    for note in notes:
        start, end = int(note.start), math.ceil(note.end)
        if not grid.rubs(note.pitch, start, end):
            out.append(note)
            continue
        chord = chords[start]
        below = sorted((note.pitch - (note.pitch - pc) % 12 for pc in chord.pitch_classes), reverse=True)
        fitting = [p for p in below if p != note.pitch and not grid.rubs(p, start, end)]  # down: under the melody
        if fitting:
            out.append(BandNote(fitting[0], note.start, note.end, note.velocity))
            continue
        first = next((s for s in range(start + 1, end) if grid.onset[s] is not None
                      and (grid.onset[s] - note.pitch) % 12 in (1, 11)), None)
        if first is not None:
            out.append(BandNote(note.pitch, note.start, float(first), note.velocity))
    return out
