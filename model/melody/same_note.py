"""The step sampler's cap on one pitch again and again (issue 23: stuck takes).

model.melody.stepping keeps one SameNoteRun per pass: per row, the pitch of the last notes and
how many notes in a row have had it; before each step's sampling, the logit of one more note of
that pitch is lowered until its share of the NOTE_ON probability is at most the cap for the run's
length (model.melody.sampling.SAME_NOTE_CAPS), and after it the run is updated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.music.events import FIRST_NOTE_ON, NUM_CLASSES


@dataclass
class SameNoteRun:
    """Per row, the pitch the melody's last notes share and how many notes in a row have had it
    (rests between them do not break a run: a listener hears the same note again), and the most
    a next note of that pitch may get. Left alone, the network reinforces its own repetition:
    the more notes of one pitch in a row, the likelier one more, well past what real pop does
    (BENCHMARKS.md, issue 23: one take in ten, with chords one in four, sat on a pitch for 6+)."""

    last: torch.Tensor  # (B,) the last NOTE_ON event, -1 before any
    count: torch.Tensor  # (B,) notes in a row with that pitch
    cap: torch.Tensor  # (K,) by count (capped at K - 1): the largest share of NOTE_ON probability it keeps

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
        device = primer.device
        return cls(torch.tensor(last, device=device), torch.tensor(count, device=device),
                   cap.to(device=device, dtype=torch.float32))

    def limit(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Lower the logit of the run's pitch, where needed, until its share of the allowed
        NOTE_ONs' probability is at most the cap for the run's length (only ever lowered: a
        model that repeats less than that is left as it is)."""
        column = self.last.clamp(min=0)[:, None]
        same = logits.gather(1, column)[:, 0]
        note_ons = logits[:, FIRST_NOTE_ON:].masked_fill(~allowed[:, FIRST_NOTE_ON:], float("-inf"))
        all_ons = note_ons.logsumexp(-1)
        share = (same - all_ons).exp().clamp(max=1.0)
        cap = self.cap[self.count.clamp(max=len(self.cap) - 1)]
        others = all_ons + torch.log1p(-share)  # log of the other notes' probability mass
        highest = torch.log(cap) - torch.log1p(-cap) + others  # the logit that gives the run's pitch `cap`
        lower = (self.last >= 0) & (share > cap)  # comparisons with nan (no NOTE_ON allowed) are False
        return logits.scatter(1, column, torch.where(lower, highest, same)[:, None])

    def update(self, events: torch.Tensor) -> None:
        on = (events >= FIRST_NOTE_ON) & (events < NUM_CLASSES)
        self.count = torch.where(on, torch.where(events == self.last, self.count + 1, 1), self.count)
        self.last = torch.where(on, events, self.last)
