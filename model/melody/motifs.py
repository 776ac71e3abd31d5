"""The step sampler's echo of the sketch's motifs (issue 23: the song's own material comes back).

Real continuations re-use the sketch's 4-note interval patterns (the same three steps between four
notes, at any pitch) in 64% of their patterns; the network's own new bars far less (the form plan's
returning bars bring whole bars back, not motifs in new ones). MotifEcho keeps, per row, the
intervals that followed each pair of intervals in the sketch, and the row's last three notes;
before each step the NOTE_ONs that would finish one of the sketch's patterns from those notes
get `bias` more logit (after temperature), and every NOTE_ON is then shifted so that together they
are as likely as before: the echo chooses among notes, the rhythm stays the network's. Kept in numpy
on the host and changed only where a row starts a note, like model.melody.same_note.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from model.music.events import FIRST_NOTE_ON, NUM_CLASSES, is_note_on

NEG_INF = np.float32(-np.inf)  # float32, so that masking keeps the logits' dtype


class MotifEcho:
    """Per row: the sketch's patterns (two intervals -> the intervals that followed them), its last
    three notes (NOTE_ON events: their differences are the pitches'), and the bias each NOTE_ON
    gets now, (B, NUM_CLASSES) float32. bias: one for every row, or one per row."""

    def __init__(self, primers: list[list[int]], bias):
        self.bias = np.broadcast_to(np.asarray(bias, dtype=np.float32), (len(primers),))  # per row
        self.follows: list[dict[tuple[int, int], list[int]]] = []
        self.last: list[list[int]] = []
        for row in primers:  # short loops: a sketch's notes, once per pass
            notes = [e for e in row if is_note_on(e)]
            follows = defaultdict(set)
            for a, b, c, d in zip(notes, notes[1:], notes[2:], notes[3:]):
                follows[(b - a, c - b)].add(d - c)
            self.follows.append({k: sorted(v) for k, v in follows.items()})
            self.last.append(notes[-3:])
        self.now = np.zeros((len(primers), NUM_CLASSES), dtype=np.float32)
        for r in range(len(primers)):
            self._settle(r)
        self._any = bool(self.now.any())

    def _settle(self, r: int) -> None:
        self.now[r] = 0.0
        last = self.last[r]
        if len(last) < 3:
            return
        for interval in self.follows[r].get((last[1] - last[0], last[2] - last[1]), ()):
            event = last[2] + interval
            if is_note_on(event):
                self.now[r, event] = self.bias[r]

    def update(self, events: np.ndarray) -> None:
        """After a step: each row's sampled event (B,)."""
        played = np.flatnonzero(is_note_on(events)).tolist()
        for r in played:
            self.last[r] = (self.last[r] + [int(events[r])])[-3:]
            self._settle(r)
        if played:
            self._any = bool(self.now.any())

    def any(self) -> bool:
        """Whether any row's bias is not zero now."""
        return self._any


def lean(logits: np.ndarray, allowed: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """logits (B, NUM_CLASSES) with bias (B, NUM_CLASSES: on NOTE_ONs only) added, the NOTE_ONs
    then shifted so that their allowed share of the probability stays what it was: the bias picks
    among the notes, it does not make a note likelier than a rest or a held one. numpy arrays
    (allowed: bool), float32 out."""
    # The shift is log(sum over the allowed notes of p_i * e^bias_i), p the notes' own softmax.
    notes = np.where(allowed[:, FIRST_NOTE_ON:], logits[:, FIRST_NOTE_ON:], NEG_INF)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.exp(notes - notes.max(-1, keepdims=True))
        shift = np.log((weights * np.exp(bias[:, FIRST_NOTE_ON:])).sum(-1) / weights.sum(-1))
    shift[~np.isfinite(shift)] = 0.0  # no note allowed: none
    added = bias.astype(np.float32)  # bias - shift on the notes, one add
    added[:, FIRST_NOTE_ON:] -= shift[:, None]
    return logits + added
