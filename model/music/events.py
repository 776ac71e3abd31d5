"""Melody events on a sixteenth-note grid, and the conversion between notes and events.

One event per step (a sixteenth note): NOTE_ON(pitch) starts a note, NOTE_OFF ends the sounding
note, NO_EVENT sustains the sounding note or continues a silence. This module knows nothing about
MIDI files or the network; everything else in `model/` builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

STEPS_PER_BEAT = 4  # sixteenth notes per quarter note
STEPS_PER_BAR = 16  # the grid assumes 4/4 bars for position-in-bar and bar counting
MIN_PITCH = 36  # C2, inclusive
MAX_PITCH = 96  # C7, inclusive

NO_EVENT = 0
NOTE_OFF = 1
FIRST_NOTE_ON = 2  # class index of NOTE_ON(MIN_PITCH)
NUM_CLASSES = FIRST_NOTE_ON + (MAX_PITCH - MIN_PITCH + 1)  # 63 events a model predicts
PAD = NUM_CLASSES  # input-only token for "no event here" (before the start of a sequence)


@dataclass(frozen=True)
class Note:
    """A note on the grid: starts at `start`, sounds until `end` (exclusive), both in steps."""

    start: int
    end: int
    pitch: int
    velocity: int = 100


def note_on(pitch: int) -> int:
    return FIRST_NOTE_ON + pitch - MIN_PITCH


def is_note_on(event: int | np.ndarray) -> bool | np.ndarray:
    """Whether an event (or each of an array's, elementwise) starts a note; PAD does not."""
    return (event >= FIRST_NOTE_ON) & (event < NUM_CLASSES)


def event_pitch(event: int) -> int:
    return event - FIRST_NOTE_ON + MIN_PITCH


def fold_pitch(pitch: int) -> int:
    """Move a pitch by whole octaves into MIN_PITCH..MAX_PITCH."""
    while pitch < MIN_PITCH:
        pitch += 12
    while pitch > MAX_PITCH:
        pitch -= 12
    return pitch


def monophonic(notes: list[Note]) -> list[Note]:
    """One note at a time: a shared start keeps the highest pitch, an overlapping note is cut
    where the next one starts, every note lasts at least one step, pitches folded into range."""
    highest: dict[int, Note] = {}
    for note in notes:
        kept = highest.get(note.start)
        if kept is None or note.pitch > kept.pitch:
            highest[note.start] = note
    starts = sorted(highest)
    result = []
    for i, start in enumerate(starts):
        note = highest[start]
        end = max(note.end, start + 1)
        if i + 1 < len(starts):
            end = min(end, starts[i + 1])
        result.append(Note(start, end, fold_pitch(note.pitch), note.velocity))
    return result


def notes_to_events(notes: list[Note]) -> tuple[list[int], int]:
    """Encode notes as events. Returns (events, offset): the sequence starts at the bar line
    `offset` at or before the first note and ends with the last note's NOTE_OFF."""
    notes = monophonic(notes)
    if not notes:
        return [], 0
    offset = notes[0].start // STEPS_PER_BAR * STEPS_PER_BAR
    events = [NO_EVENT] * (notes[-1].end - offset + 1)
    for note in notes:
        # A NOTE_ON written later for a note starting at this end step takes precedence.
        events[note.end - offset] = NOTE_OFF
    for note in notes:
        events[note.start - offset] = note_on(note.pitch)
    return events, offset


def events_to_notes(events: list[int], velocity: int = 100) -> list[Note]:
    """Decode events into notes (steps from the start of the sequence)."""
    notes = []
    pitch, start = None, 0
    for step, event in enumerate(list(events) + [NOTE_OFF]):
        if event == NO_EVENT:
            continue
        if pitch is not None:
            notes.append(Note(start, step, pitch, velocity))
            pitch = None
        if is_note_on(event):
            pitch, start = event_pitch(event), step
    return notes


PITCH_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


def pitch_name(pitch: int) -> str:
    """MIDI pitch -> scientific name, middle C (60) is C4."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def event_name(event: int) -> str:
    if event == NO_EVENT:
        return "-"
    if event == NOTE_OFF:
        return "off"
    return pitch_name(event_pitch(event))
