"""Primers: typed note names or a MIDI sketch -> melody events on the sixteenth grid.

Typed notes (`parse_notes`, the notation is `NOTATION`, shown by the bot's help):

- A note is a letter A-G (any case), an optional sharp `#`/`♯` or flat `b`/`♭`, and an optional
  octave 0-9 in scientific pitch notation (middle C is C4): `C4`, `F#3`, `Bb4`, `eb`, `G♭5`.
- A note without an octave takes the octave nearest to the previous note (a tritone away goes
  up), so `C D E F G A B C` climbs a scale; the first note without one is in octave 4.
- `r`, `rest` or `-` is a rest.
- `:beats` after a note or rest sets its length in beats (quarter notes): `C4:2`, `E:0.5`,
  `G:1/2`, `r:1.5`. The default is one beat. A length is a whole number of sixteenths (a
  multiple of 1/4 beat) from 1/4 to 8 beats.
- Tokens are separated by spaces and/or commas; `|` may mark bar lines (not checked).
- The first token starts on a downbeat. Notes must lie between C2 and C7 (MIDI 36..96). At most
  64 notes and rests, at least one note.

A MIDI sketch (`primer_from_midi`): the melody is the first non-drum track whose name contains
"melody" (any case); otherwise the most melodic non-drum track (see `pick_melody`). The track is
reduced to its top line (`model.music.events.monophonic`), quantised to the grid through ticks
(`model.music.midi_io.read_midi`), and a sketch longer than `max_bars` keeps its last `max_bars` bars,
since the continuation follows the end of the sketch (its last note counts for at most two bars).
Bars are counted as 4 beats (the grid's bars) whatever the file's time signature. The tempo is the
sketch's tempo at its first note. Its chords: the chord symbols in its markers or text events (the
bot writes one at each change), else guessed from its other non-drum tracks.

Typed-note mistakes raise `PrimerError`, unusable files `MidiError`; both are `ValueError`s with a
message meant for the songwriter.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction

from model.defaults import BPM_RANGE, DEFAULT_BPM
from model.music.chords import ChordError, chords_from_tracks, parse_chord
from model.music.events import (
    MAX_PITCH,
    MIN_PITCH,
    NO_EVENT,
    STEPS_PER_BAR,
    STEPS_PER_BEAT,
    Note,
    is_note_on,
    monophonic,
    notes_to_events,
    pitch_name,
)
from model.music.midi_io import MidiError, Track, read_midi

MAX_TYPED_TOKENS = 64  # notes and rests together in typed primers
MIN_LENGTH = Fraction(1, STEPS_PER_BEAT)  # beats, inclusive: one sixteenth
MAX_LENGTH = Fraction(8)  # beats, inclusive: two bars
DEFAULT_LENGTH = Fraction(1)  # beats
DEFAULT_OCTAVE = 4  # for a first note written without an octave
DEFAULT_MAX_BARS = 16  # bars of a MIDI sketch kept (its last ones)
MAX_HELD_STEPS = 2 * STEPS_PER_BAR  # a sketch's last note is cut to this length
MELODY_NAME = "melody"  # a track whose name contains this (any case) is the melody
MONOPHONIC_SHARE = 0.8  # a track is "monophonic" when this share of its notes start alone
BUSY_SHARE = 0.25  # a candidate track has at least this share of the busiest track's top-line notes
REST_WORDS = ("r", "rest", "-")
SEPARATORS = re.compile(r"[\s,|]+")

NOTATION = """\
Notes: letter A-G, optional # or b (sharp/flat), optional octave (middle C is C4): C4 F#3 Bb4 eb
No octave: the one nearest the previous note (the first note: octave 4), so C D E F G climbs.
Rests: r, rest or -
Lengths: :beats after a note or rest, default 1 beat: C4:2 E:0.5 G:1/2 r:1.5 (1/4 to 8 beats)
Separate with spaces or commas; | for bar lines is allowed. Range C2 to C7, at most 64 notes and rests.
Example: C4 E G A:2 | G:0.5 F:0.5 E D C:2 r"""

_HINT = 'Use note names A-G with optional # or b and an octave 0-9, e.g. C4 F#3 Bb, "r" for a rest, ' \
        'and ":beats" for a length, e.g. C4:2'
_NOTE = re.compile(r"(?P<letter>[a-g])(?P<accidental>[#♯b♭]?)(?P<octave>[0-9]?)")
_LENGTH = re.compile(r"[0-9]+(\.[0-9]+)?|\.[0-9]+|[0-9]+/[0-9]+")
_SEMITONES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}


class PrimerError(ValueError):
    """Typed notes that cannot be read, with a message that names the token and what is allowed."""


@dataclass
class Primer:
    events: list[int]  # melody events on the grid, starting at a bar line
    bpm: float  # tempo for the primer and its continuations
    source: str  # where the melody came from, for the reply: "typed notes", the track's name or "track N"
    notes: int  # notes in `events`
    program: int = 0  # General MIDI program of the source track (0 for typed notes)
    trimmed_bars: int = 0  # bars cut from the front of a long sketch
    chords: list | None = None  # a sketch's own chords under `events` (model.music.chords.Chord or None per step)
    file_bpm: float | None = None  # the sketch's tempo when outside BPM_RANGE (`bpm` is then the nearest end)
    meter: tuple[int, int] = (4, 4)  # the sketch's time signature at its first note

    @property
    def tempo_remark(self) -> str | None:
        """What to tell the songwriter about a tempo that was moved into range."""
        if self.file_bpm is None:
            return None
        return (f"the sketch's tempo ({self.file_bpm:g} BPM) is outside {BPM_RANGE[0]:g}-{BPM_RANGE[1]:g} BPM, "
                f"so I used {self.bpm:g} BPM (bpm= sets another)")

    @property
    def meter_remark(self) -> str | None:
        """What to tell the songwriter about a sketch in a meter 4/4 bars do not fit (3/4, 6/8, 5/4):
        the grid's bars are 4 beats (the network learned 4/4 pop), so the answer will not keep it.
        Bars of 2 or 4 quarter notes (2/4, 2/2) fit."""
        numerator, denominator = self.meter
        if Fraction(4 * numerator, denominator) in (2, 4):
            return None
        return (f"the sketch is in {numerator}/{denominator}, but I write in 4/4 (bars of 4 beats), so the "
                f"continuation will not keep its meter")


# -- typed notes ---------------------------------------------------------------------------------
def parse_notes(text: str, default_octave: int = DEFAULT_OCTAVE) -> list[int]:
    """Typed notes (see NOTATION) -> events. The sequence starts at the first token's downbeat and
    keeps trailing rests (NO_EVENTs after the last NOTE_OFF), so the continuation starts after them."""
    tokens = [t for t in SEPARATORS.split(text) if t]
    notes: list[Note] = []
    now, previous = 0, None  # steps; previous pitch
    for position, token in enumerate(tokens, 1):
        if position > MAX_TYPED_TOKENS:
            raise PrimerError(f"too many notes: at most {MAX_TYPED_TOKENS} notes and rests (token {position} is "
                              f"{_quote(token)})")
        word, colon, length_text = token.partition(":")
        rest = word.lower() in REST_WORDS
        pitch = None if rest else _pitch(word, previous, default_octave, token, position)
        steps = _length_steps(token, length_text, position) if colon else int(DEFAULT_LENGTH * STEPS_PER_BEAT)
        if pitch is not None:
            notes.append(Note(now, now + steps, pitch))
            previous = pitch
        now += steps
    if not notes:
        raise PrimerError("no notes given" if not tokens else "only rests given; the melody needs at least one note, "
                          "e.g. C4 E4 G4")
    events, _ = notes_to_events(notes)
    # The last NOTE_OFF is the first step of a trailing rest. (A rest of one step alone is lost:
    # prepare_primer drops a final NOTE_OFF so that the network decides how the last note ends.)
    trailing = now - notes[-1].end
    return events + [NO_EVENT] * max(0, trailing - 1)


def primer_from_text(text: str, bpm: float = DEFAULT_BPM, default_octave: int = DEFAULT_OCTAVE) -> Primer:
    """Typed notes as a Primer (at `bpm`)."""
    events = parse_notes(text, default_octave)
    return Primer(events, bpm, "typed notes", sum(is_note_on(e) for e in events))


def _pitch(word: str, previous: int | None, default_octave: int, token: str, position: int) -> int:
    match = _NOTE.fullmatch(word.lower())
    if match is None:
        raise PrimerError(f"{_quote(token)} is not a note (token {position}). {_HINT}")
    pitch_class = _SEMITONES[match["letter"]] + _ACCIDENTALS[match["accidental"]]
    if match["octave"]:
        pitch = 12 * (int(match["octave"]) + 1) + pitch_class
    elif previous is None:
        pitch = 12 * (default_octave + 1) + pitch_class
    else:  # the nearest octave in range; a tritone away goes up
        candidates = [12 * (octave + 1) + pitch_class for octave in range(-1, 10)]
        candidates = [p for p in candidates if MIN_PITCH <= p <= MAX_PITCH]
        pitch = min(candidates, key=lambda p: (abs(p - previous), previous - p))
    if not MIN_PITCH <= pitch <= MAX_PITCH:
        raise PrimerError(f"{_quote(token)} is out of range (token {position}): notes must lie between "
                          f"{pitch_name(MIN_PITCH)} and {pitch_name(MAX_PITCH)}")
    return pitch


def _length_steps(token: str, text: str, position: int) -> int:
    try:
        beats = Fraction(text) if _LENGTH.fullmatch(text) else None
    except ZeroDivisionError:  # 1/0
        beats = None
    if beats is None:
        raise PrimerError(f"{_quote(token)} has a length that is not a number of beats (token {position}). "
                          f"Write it after a colon: C4:2, C4:0.5 or C4:1/2")
    if not MIN_LENGTH <= beats <= MAX_LENGTH:
        raise PrimerError(f"{_quote(token)} has a length out of range (token {position}): a length must be "
                          f"between 1/4 beat and {MAX_LENGTH} beats")
    steps = beats * STEPS_PER_BEAT
    if steps.denominator != 1:
        raise PrimerError(f"{_quote(token)} does not fit the grid (token {position}): a length must be a "
                          f"multiple of 1/4 beat, e.g. 0.25, 0.5, 0.75, 1.5")
    return int(steps)


def _quote(token: str, limit: int = 20) -> str:
    return f'"{token if len(token) <= limit else token[: limit - 1] + "…"}"'


# -- MIDI sketches -------------------------------------------------------------------------------
def primer_from_midi(source: bytes | str | os.PathLike, max_bars: int = DEFAULT_MAX_BARS) -> Primer:
    """A MIDI sketch (bytes or path) -> its melody's last `max_bars` bars as a Primer.
    Raises MidiError with a message for the songwriter when the file cannot be used."""
    if max_bars < 1:
        raise ValueError(f"max_bars must be at least 1, not {max_bars}")
    midi = read_midi(bytes(source) if isinstance(source, bytearray | memoryview) else source)
    index, track = pick_melody(midi.tracks)
    notes = monophonic(track.notes)
    # The window ends with the last note, held for at most MAX_HELD_STEPS: a long last note would
    # push the rest of the tune out of the window (and a hostile one would cost memory). The
    # network decides how the last note ends anyway (`model.melody.sampling.prepare_primer`).
    end = min(notes[-1].end, notes[-1].start + MAX_HELD_STEPS)
    first_bar = max(0, min((end - 1) // STEPS_PER_BAR - max_bars + 1, notes[-1].start // STEPS_PER_BAR))
    kept = [n for n in notes if n.start >= first_bar * STEPS_PER_BAR]
    kept[-1] = Note(kept[-1].start, end, kept[-1].pitch, kept[-1].velocity)
    events, offset = notes_to_events(kept)
    low, high = BPM_RANGE
    bpm = min(max(midi.bpm, low), high)
    chords = chords_from_markers(midi.markers, offset + len(events))
    if chords is None:  # no chord symbols: guessed from the other tracks' notes
        chords = chords_from_tracks(midi.tracks, index, steps=offset + len(events))
    chords = chords[offset:]
    return Primer(
        events=events,
        bpm=bpm,
        chords=chords if any(chords) else None,
        file_bpm=midi.bpm if bpm != midi.bpm else None,
        source=track.name or f"track {index + 1}",
        notes=len(kept),
        program=track.program,
        trimmed_bars=offset // STEPS_PER_BAR - notes[0].start // STEPS_PER_BAR,
        meter=midi.meter,
    )


def chords_from_markers(markers: list[tuple[int, str]], steps: int) -> list | None:
    """Per-step chords from a file's chord-symbol markers or text events (as the bot writes them:
    one at each change, "N.C." for none), each lasting to the next; None when no marker reads as
    a chord (section names such as "Verse" are passed over)."""
    changes = []
    for step, text in markers:
        try:
            changes.append((step, parse_chord(text)))
        except ChordError:
            continue
    if not any(chord is not None for _, chord in changes):
        return None
    chords: list = [None] * steps
    for number, (step, chord) in enumerate(changes):
        end = changes[number + 1][0] if number + 1 < len(changes) else steps
        for i in range(max(step, 0), min(end, steps)):
            chords[i] = chord
    return chords


def pick_melody(tracks: list[Track]) -> tuple[int, Track]:
    """(index, track) of the melody among a file's tracks.

    1. The first non-drum track with notes whose name contains "melody" (any case).
    2. Otherwise, among non-drum tracks with notes: keep those with at least 1/4 as many top-line
       notes as the busiest one (a few long pad notes are not a melody); among those prefer the
       monophonic ones (80% of their notes start alone) if there are any; then pick the one whose
       top line is highest on average (melodies sit above chords and bass). Ties go to the track
       with more notes, then the earlier track.
    Raises MidiError for a file without notes or with only drums."""
    candidates = [(i, t) for i, t in enumerate(tracks) if t.notes and not t.is_drum]
    if not candidates:
        if any(t.notes for t in tracks):
            raise MidiError("the file has only drum tracks; the bot needs a melody")
        raise MidiError("the file has no notes")
    for i, track in candidates:
        if MELODY_NAME in track.name.lower():
            return i, track
    tops = {i: monophonic(t.notes) for i, t in candidates}
    busiest = max(len(top) for top in tops.values())
    candidates = [(i, t) for i, t in candidates if len(tops[i]) >= BUSY_SHARE * busiest]
    monophonic_tracks = [(i, t) for i, t in candidates if len(tops[i]) >= MONOPHONIC_SHARE * len(t.notes)]
    candidates = monophonic_tracks or candidates

    def rank(item: tuple[int, Track]) -> tuple[float, int, int]:
        i, _ = item
        top = tops[i]
        return sum(n.pitch for n in top) / len(top), len(top), -i

    return max(candidates, key=rank)
