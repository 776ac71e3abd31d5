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


def host_tensor(values: np.ndarray, device) -> torch.Tensor:
    """A numpy array of the step sampler's (a value per row) as a tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(values)).to(device)


@dataclass
class SameNoteRun:
    """Per row, the pitch the melody's last notes share and how many notes in a row have had it
    (rests between them do not break a run: a listener hears the same note again), and the most
    a next note of that pitch may get. Left alone, the network reinforces its own repetition:
    the more notes of one pitch in a row, the likelier one more, well past what real pop does
    (BENCHMARKS.md, issue 23: one take in ten, with chords one in four, sat on a pitch for 6+).
    The run is kept in numpy arrays: the step sampler updates it once per step, and asks
    `binds` first, so a step where no row is capped costs no tensor op."""

    last: np.ndarray  # (B,) int64: the last NOTE_ON event, -1 before any
    count: np.ndarray  # (B,) int64: notes in a row with that pitch
    cap: torch.Tensor  # (K,) by count (capped at K - 1): the largest share of NOTE_ON probability it keeps

    def __post_init__(self):
        self.last, self.count = np.asarray(self.last, dtype=np.int64), np.asarray(self.count, dtype=np.int64)
        self._caps = self.cap.cpu().numpy()  # float32, as the tensor
        self._cap_logits = torch.log(self.cap) - torch.log1p(-self.cap)  # the logit share/(1 - share) of each cap
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
                   cap.to(device=primer.device, dtype=torch.float32))

    def _settle(self) -> None:
        """Per row, what limit reads: the cap for the run's length, and whether it can lower
        anything (a run with a pitch and a cap below 1: a share is at most 1)."""
        self._index = np.minimum(self.count, len(self._caps) - 1)
        self._cap_now = self._caps[self._index]
        self._capped = (self.last >= 0) & (self._cap_now < 1.0)

    def binds(self, spared: np.ndarray | None = None) -> bool:
        """Whether limit can lower anything in a row not spared ((B,) bool, or None)."""
        return bool((self._capped if spared is None else self._capped & ~spared).any())

    def limit(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Lower the logit of the run's pitch, where needed, until its share of the allowed
        NOTE_ONs' probability is at most the cap for the run's length (only ever lowered: a
        model that repeats less than that is left as it is, and when no row is lowered, the
        logits come back as they are, the same tensor)."""
        device = logits.device
        column = host_tensor(np.maximum(self.last, 0)[:, None], device)
        same = logits.gather(1, column)[:, 0]
        note_ons = logits[:, FIRST_NOTE_ON:].masked_fill(~allowed[:, FIRST_NOTE_ON:], float("-inf"))
        all_ons = note_ons.logsumexp(-1)
        share = (same - all_ons).exp().clamp(max=1.0)
        # decided on the host, in float32 as on the device; nan (no NOTE_ON allowed) is never above
        lower = self._capped & (share.cpu().numpy() > self._cap_now)
        if not lower.any():
            return logits
        others = all_ons + torch.log1p(-share)  # log of the other notes' probability mass
        highest = self._cap_logits[host_tensor(self._index, device)] + others  # gives the run's pitch its cap
        return logits.scatter(1, column, torch.where(host_tensor(lower, device), highest, same)[:, None])

    def update(self, events: np.ndarray | torch.Tensor) -> None:
        """After a step: each row's sampled event (B,)."""
        events = events.cpu().numpy() if isinstance(events, torch.Tensor) else np.asarray(events)
        on = self._note_on[events]
        self.count = np.where(on, (events == self.last) * self.count + 1, self.count)
        self.last = np.where(on, events, self.last)
        self._settle()
