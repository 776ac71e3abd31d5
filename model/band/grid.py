"""The melody and the chords looked up by step, built once per arrangement: what the band asks
of them at every note (which melody note sounds or starts here, where this chord ends) costs a
list index instead of a scan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Grid:
    onset: list[int | None]  # per step: the pitch of the melody note starting there
    sounding: list[int | None]  # per step: the pitch of the melody note sounding there
    span_end: list[int]  # per step: the step where its chord (or no chord) stops

    @classmethod
    def of(cls, melody: Sequence, chords: Sequence) -> Grid:
        steps = len(chords)
        onset: list[int | None] = [None] * (steps + 1)
        sounding: list[int | None] = [None] * (steps + 1)
        for note in melody:  # one note at a time (model.music.events)
            if 0 <= note.start < steps:
                onset[note.start] = note.pitch
            first, last = max(0, note.start), min(note.end, steps)
            sounding[first:last] = [note.pitch] * (last - first)
        span_end = [steps] * (steps + 1)
        for step in range(steps - 2, -1, -1):
            span_end[step] = step + 1 if changes(chords[step], chords[step + 1]) else span_end[step + 1]
        return cls(onset, sounding, span_end)

    def rubs(self, pitch: int, start: int, end: int) -> bool:
        """Whether `pitch` sounding over start..end lies a semitone (any octave) from a melody note
        sounding at its start or starting under it."""
        if self.sounding[start] is not None and (self.sounding[start] - pitch) % 12 in (1, 11):
            return True
        for p in self.onset[start:end]:  # a loop, not any() over a generator: half the time
            if p is not None and (p - pitch) % 12 in (1, 11):
                return True
        return False


def changes(chord, following) -> bool:
    """Whether the chord changes from one step to the next. Per-step chords repeat one object over
    the steps it lasts, so most steps need no comparison (a Chord's __eq__ builds two tuples)."""
    return chord is not following and chord != following
