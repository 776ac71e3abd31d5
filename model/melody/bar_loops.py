"""The step sampler's loop breaker (issue 23: no bad takes).

Left alone, the network can fall into a loop: once a bar has come back unchanged, its attention
copies it again and again (one take in 33 held 3 or more bars in a row, each a near-copy of the
bar before; real pop, in every 8-bar window of the held-out songs: none). BarLoop watches each row
at its bar lines: when the bar just ended is a near-copy of the one before it (as the form plan
counts a copy: model.melody.form.copies), each note of the coming bar that would start where the
bar before had the same note loses `penalty` logit, so a third bar in a row is something new.
That holds for a bar the form plan brings back too: a plan that brings the same bar a third time
in a row gives way (the penalty outweighs its copy bias), as real songs do not do it either.
"""

from __future__ import annotations

import numpy as np

from model.melody.form import copies
from model.music.events import NUM_CLASSES, STEPS_PER_BAR, is_note_on


class BarLoop:
    """Per row, whether the bar being sampled follows two alike bars (`looping`)."""

    def __init__(self, history: np.ndarray, positions: np.ndarray, start: int, penalty: float):
        """history (B, T): the rows' events, sampled ones written in as they come; positions
        (B, steps): each sampled step's place in its row's bar; start: the first sampled step's
        column in history."""
        self.history, self.positions, self.start = history, positions, start
        self.penalty = np.float32(penalty)
        self.looping = np.zeros(len(history), dtype=bool)
        # per step, the rows at a bar line (lists, found once: most steps have none)
        self.at_bar_line = [np.flatnonzero(column).tolist() for column in (positions == 0).T]
        self.any_looping = False

    def _alike(self, row: int, t: int) -> bool:
        """Whether the bar ending before column t is a near-copy of the bar before it."""
        if t < 2 * STEPS_PER_BAR:
            return False
        return copies(self._notes(row, t - STEPS_PER_BAR), self._notes(row, t - 2 * STEPS_PER_BAR))

    def _notes(self, row: int, begin: int) -> set[tuple[int, int]]:
        bar = self.history[row, begin : begin + STEPS_PER_BAR]
        onsets = np.flatnonzero(is_note_on(bar))
        return {(int(i), int(bar[i])) for i in onsets}

    def penalties(self, s: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Before sampling step s: (event per row, logit to add) or None when no row loops."""
        t = self.start + s
        if self.at_bar_line[s]:
            for row in self.at_bar_line[s]:
                self.looping[row] = self._alike(row, t)
            self.any_looping = bool(self.looping.any())
        if not self.any_looping:
            return None
        echo = self.history[:, t - STEPS_PER_BAR]
        hit = self.looping & is_note_on(echo)
        if not hit.any():
            return None
        return np.minimum(echo, NUM_CLASSES - 1), np.where(hit, -self.penalty, np.float32(0))
