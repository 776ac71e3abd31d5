"""The step sampler's lean towards notes a continuation has not played yet (issue 23, folk OA).

Real 8-bar continuations use 8.2 distinct pitches in pop and 8.4 in the Essen folk tunes; the
network's own takes 7.5 and 7.55: it goes back to the same few notes. FreshPitches keeps, per
row, the notes its continuation has not played yet, of the sketch's key (model.music.keys.
detect_key; the sketch's own pitch classes when none is found) and register (the range of its
last bars, and at least 6 semitones either side of their mean). Before each step those NOTE_ONs
get `bias` more logit (after temperature), and every NOTE_ON is then shifted so that together
they are as likely as before (model.melody.motifs.lean): it picks among the notes, the rhythm
stays the network's. With it the takes use 8.2 (pop) and 8.35 (folk) pitches.
"""

from __future__ import annotations

import numpy as np

from model.music.events import FIRST_NOTE_ON, MIN_PITCH, NUM_CLASSES, STEPS_PER_BAR, event_pitch, is_note_on
from model.music.keys import detect_key

REGISTER_BARS = 8  # the sketch's last bars whose notes give the register
HALF_OCTAVE = 6  # the register reaches at least this far either side of their mean pitch


class FreshPitches:
    """Per row, the bias each NOTE_ON gets now, (B, NUM_CLASSES) float32: `bias` on the notes of
    the sketch's scale and register the continuation has not played yet."""

    def __init__(self, primers: list[list[int]], bias: float):
        rows = {}  # a request's variations and candidates share its primer: its key is found once
        for row in map(tuple, primers):
            if row not in rows:
                rows[row] = _unplayed(list(row), bias)
        self.now = np.stack([rows[tuple(row)] for row in primers])  # a copy per row: each row plays its own
        self._any = bool(self.now.any())

    def update(self, events: np.ndarray) -> None:
        """After a step: each row's sampled event (B,); a note played is no longer fresh."""
        rows = np.flatnonzero(is_note_on(events))
        if len(rows) and self._any:
            self.now[rows, events[rows]] = 0.0
            self._any = bool(self.now.any())

    def any(self) -> bool:
        """Whether any row's bias is not zero now."""
        return self._any


def _unplayed(row: list[int], bias: float) -> np.ndarray:
    """(NUM_CLASSES,) float32: `bias` on the NOTE_ONs of the primer's key and register."""
    out = np.zeros(NUM_CLASSES, dtype=np.float32)
    notes = [event_pitch(e) for e in row if is_note_on(e)]
    if not notes:
        return out
    recent = [event_pitch(e) for e in row[-REGISTER_BARS * STEPS_PER_BAR :] if is_note_on(e)] or notes
    key = detect_key(row)
    scale = key.pitch_classes if key else {p % 12 for p in notes}
    centre = round(sum(recent) / len(recent))
    low, high = min(min(recent), centre - HALF_OCTAVE), max(max(recent), centre + HALF_OCTAVE)
    for pitch in range(low, high + 1):
        event = FIRST_NOTE_ON + pitch - MIN_PITCH
        if pitch % 12 in scale and FIRST_NOTE_ON <= event < NUM_CLASSES:
            out[event] = bias
    return out
