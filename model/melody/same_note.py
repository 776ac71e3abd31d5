"""The step sampler's cap on one pitch again and again (issue 23: stuck takes).

model.melody.stepping keeps one SameNoteRun per pass: per row, the pitch of the last notes and
how many notes in a row have had it; before each step's sampling, the logit of one more note of
that pitch is lowered until its share of the NOTE_ON probability is at most the cap for the run's
length (model.melody.sampling.SAME_NOTE_CAPS), and after it the run is updated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.music.events import FIRST_NOTE_ON, NUM_CLASSES


@dataclass
class SameNoteRun:
    """Per row, the pitch the melody's last notes share and how many notes in a row have had it
    (rests between them do not break a run: a listener hears the same note again), and the most
    a next note of that pitch may get. Left alone, the network reinforces its own repetition:
    the more notes of one pitch in a row, the likelier one more, well past what real pop does
    (BENCHMARKS.md, issue 23: one take in ten, with chords one in four, sat on a pitch for 6+).
    The run is kept in numpy arrays, as the step's logits are (the step sampler decides its rules
    on the host): it updates the run once per step, and asks `binds` first, so a step where no row
    is capped costs nothing."""

    last: np.ndarray  # (B,) int64: the last NOTE_ON event, -1 before any
    count: np.ndarray  # (B,) int64: notes in a row with that pitch
    cap: np.ndarray  # (K,) float32 by count (capped at K - 1): the largest share of NOTE_ON probability it keeps

    def __post_init__(self):
        self.last, self.count = np.asarray(self.last, dtype=np.int64), np.asarray(self.count, dtype=np.int64)
        self.cap = self._caps = np.asarray(self.cap, dtype=np.float32)
        with np.errstate(divide="ignore"):  # the logit share/(1 - share) of each cap: -inf for 0, inf for 1
            self._cap_logits = np.log(self._caps) - np.log1p(-self._caps)
        self._note_on = np.zeros(NUM_CLASSES + 1, dtype=bool)  # by event (PAD too): is it a NOTE_ON
        self._note_on[FIRST_NOTE_ON:NUM_CLASSES] = True
        self._settle()

    @classmethod
    def of(cls, primer: torch.Tensor, cap: torch.Tensor) -> SameNoteRun:
        last, count = [], []
        for row in primer.tolist():  # short loops: a primer's notes, once per pass
            notes = [e for e in row if FIRST_NOTE_ON <= e < NUM_CLASSES]
            same = 0
            while same < len(notes) and notes[-1 - same] == notes[-1]:
                same += 1
            last.append(notes[-1] if notes else -1)
            count.append(same)
        return cls(np.array(last, dtype=np.int64), np.array(count, dtype=np.int64),
                   torch.as_tensor(cap, dtype=torch.float32).cpu().numpy())

    def _settle(self) -> None:
        """Per row, what limit reads: the cap for the run's length, and whether it can lower
        anything (a run with a pitch and a cap below 1: a share is at most 1)."""
        self._index = np.minimum(self.count, len(self._caps) - 1)
        self._cap_now = self._caps[self._index]
        self._capped = (self.last >= 0) & (self._cap_now < 1.0)

    def binds(self, spared: np.ndarray | None = None) -> bool:
        """Whether limit can lower anything in a row not spared ((B,) bool, or None)."""
        return bool((self._capped if spared is None else self._capped & ~spared).any())

    def limit(self, logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Lower the logit of the run's pitch, where needed, until its share of the allowed
        NOTE_ONs' probability is at most the cap for the run's length (only ever lowered: a
        model that repeats less than that is left as it is, and when no row is lowered, the
        logits come back as they are, the same array). logits (B, C) float32, allowed (B, C) bool."""
        rows, column = np.arange(len(logits)), np.maximum(self.last, 0)
        same = logits[rows, column]
        note_ons = np.where(allowed[:, FIRST_NOTE_ON:], logits[:, FIRST_NOTE_ON:], -np.inf).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            top = note_ons.max(-1)
            all_ons = top + np.log(np.exp(note_ons - top[:, None]).sum(-1))
            share = np.minimum(np.exp(same - all_ons), np.float32(1.0))
            lower = self._capped & (share > self._cap_now)  # nan (no NOTE_ON allowed) is never above
            if not lower.any():
                return logits
            others = all_ons + np.log1p(-share)  # log of the other notes' probability mass
            highest = self._cap_logits[self._index] + others  # gives the run's pitch its cap
        limited = logits.copy()
        limited[rows[lower], column[lower]] = highest[lower]
        return limited

    def update(self, events: np.ndarray | torch.Tensor) -> None:
        """After a step: each row's sampled event (B,)."""
        events = events.cpu().numpy() if isinstance(events, torch.Tensor) else np.asarray(events)
        on = self._note_on[events]
        self.count = np.where(on, (events == self.last) * self.count + 1, self.count)
        self.last = np.where(on, events, self.last)
        self._settle()
