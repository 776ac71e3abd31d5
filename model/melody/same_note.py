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


def list_tensor(values: list, dtype: type, device) -> torch.Tensor:
    """A short Python list (a value per row) as a tensor: through numpy, a few times cheaper
    than torch.tensor, which the step sampler would otherwise pay several times a step."""
    return torch.from_numpy(np.array(values, dtype=dtype)).to(device)


@dataclass
class SameNoteRun:
    """Per row, the pitch the melody's last notes share and how many notes in a row have had it
    (rests between them do not break a run: a listener hears the same note again), and the most
    a next note of that pitch may get. Left alone, the network reinforces its own repetition:
    the more notes of one pitch in a row, the likelier one more, well past what real pop does
    (BENCHMARKS.md, issue 23: one take in ten, with chords one in four, sat on a pitch for 6+).
    The run is kept in Python lists: the step sampler updates it once per step, and asks
    `binds` first, so a step where no row is capped costs no tensor op."""

    last: list[int]  # (B,) the last NOTE_ON event, -1 before any
    count: list[int]  # (B,) notes in a row with that pitch
    cap: torch.Tensor  # (K,) by count (capped at K - 1): the largest share of NOTE_ON probability it keeps

    def __post_init__(self):
        self._caps = self.cap.tolist()
        self._cap_logits = torch.log(self.cap) - torch.log1p(-self.cap)  # the logit share/(1 - share) of each cap

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
        return cls(last, count, cap.to(device=primer.device, dtype=torch.float32))

    def _cap_index(self) -> list[int]:
        return [min(n, len(self._caps) - 1) for n in self.count]

    def binds(self, spared: list[bool] | None = None) -> bool:
        """Whether limit can lower anything: some row (not spared) has a run whose cap is below 1
        (a share is at most 1: a cap of 1 or more lowers nothing)."""
        return any(last >= 0 and self._caps[i] < 1.0 and not (spared and spared[b])
                   for b, (last, i) in enumerate(zip(self.last, self._cap_index())))  # fmt: skip

    def limit(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Lower the logit of the run's pitch, where needed, until its share of the allowed
        NOTE_ONs' probability is at most the cap for the run's length (only ever lowered: a
        model that repeats less than that is left as it is, and when no row is lowered, the
        logits come back as they are, the same tensor)."""
        device = logits.device
        column = list_tensor([max(last, 0) for last in self.last], np.int64, device)[:, None]
        same = logits.gather(1, column)[:, 0]
        note_ons = logits[:, FIRST_NOTE_ON:].masked_fill(~allowed[:, FIRST_NOTE_ON:], float("-inf"))
        all_ons = note_ons.logsumexp(-1)
        share = (same - all_ons).exp().clamp(max=1.0)
        index = self._cap_index()
        # decided in Python (float32 values compare the same as doubles); nan (no NOTE_ON allowed) is never above
        lower = [last >= 0 and above > self._caps[i] for last, above, i in zip(self.last, share.tolist(), index)]
        if not any(lower):
            return logits
        others = all_ons + torch.log1p(-share)  # log of the other notes' probability mass
        highest = self._cap_logits[list_tensor(index, np.int64, device)] + others  # gives the run's pitch its cap
        return logits.scatter(1, column, torch.where(list_tensor(lower, np.bool_, device), highest, same)[:, None])

    def update(self, events: list[int] | torch.Tensor) -> None:
        """After a step: each row's sampled event (B,)."""
        events = events.tolist() if isinstance(events, torch.Tensor) else events
        for b, event in enumerate(events):
            if FIRST_NOTE_ON <= event < NUM_CLASSES:
                self.count[b] = self.count[b] + 1 if event == self.last[b] else 1
                self.last[b] = event
