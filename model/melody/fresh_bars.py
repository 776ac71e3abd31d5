"""The step sampler's guard on a form plan's new bars (issue 23: songs come back, the way songs do).

The form plan (model.melody.form) learned from real songs which continuation bars bring a bar back
and which are new; in real pop a new bar copies no bar before it (that is what "new" means there).
Left alone the network fills a planned-new bar with a copy of an earlier one a good part of the
time, most of all after a returning bar: a plan with no returning bar kept none in only half its
takes. Every take then re-used a bit of everything, where real continuations either bring a
section back or go somewhere new (BENCHMARKS.md, issue 23: the two-sample test's strongest signal).

FreshBar follows, per row in a planned-new bar, which of the sketch's bars (its last WINDOW) it
has matched note for note since its bar line: the same pitches starting at the same places,
nothing starting where they have nothing. Once a bar has matched MIN_MATCHED notes of one of them,
the note that sketch bar has at the coming step loses `penalty` logit, so the new bar turns away
from the copy; a bar with no such match is left alone. Only the sketch's bars: a new bar may bring
back one of the continuation's own, as real songs repeat their new bars (guarding those too took
the musical protocol's structure from 0.22 to 0.13).
"""

from __future__ import annotations

import numpy as np

from model.melody.form import WINDOW
from model.music.events import NUM_CLASSES, STEPS_PER_BAR, is_note_on

MIN_MATCHED = 2  # notes matched, in place, before the guard speaks: two notes alike are no copy yet


class FreshBar:
    """Per row and bar of its sketch (the last WINDOW whole bars before its continuation's first bar
    line), the notes the row's current bar has matched so far in place, or -1 once it differs."""

    def __init__(self, history: np.ndarray, positions: np.ndarray, start: int, fresh: np.ndarray, penalty: float):
        """history (B, T): the rows' events, sampled ones written in as they come; positions
        (B, steps): each sampled step's place in its row's bar; start: the first sampled step's
        column in history; fresh (B, steps) bool: the steps of bars the plan calls new."""
        self.history, self.positions, self.start, self.fresh = history, positions, start, fresh
        self.penalty = np.float32(penalty)
        self.any_fresh = fresh.any(0).tolist()  # per step: whether any row is in a new bar
        self.rows = np.arange(len(history))[:, None]
        first_line = start + (-positions[:, 0]) % STEPS_PER_BAR  # each row's first bar line after the sketch
        bars = min(WINDOW, max(int(first_line.max()) // STEPS_PER_BAR, 1))
        self.bar_starts = first_line[:, None] - STEPS_PER_BAR * np.arange(1, bars + 1)[None, :]  # (B, bars)
        self.inside = self.bar_starts >= 0  # a bar before the history (or its padding) holds no note
        self.matched = np.zeros(self.bar_starts.shape, dtype=np.int64)

    def _echo(self, s: int) -> np.ndarray:
        """(B, bars) the event each sketch bar has at step s's place in its bar."""
        columns = np.maximum(self.bar_starts + self.positions[:, s, None], 0)
        return np.where(self.inside, self.history[self.rows, columns], 0)

    def penalties(self, s: int) -> np.ndarray | None:
        """Before sampling step s: (B, NUM_CLASSES) float32 logit to add, or None when no row is near a copy."""
        if not self.any_fresh[s]:
            return None
        self.matched[self.positions[:, s] == 0] = 0  # a bar line: every row starts matching afresh
        echo = self._echo(s)
        hit = self.fresh[:, s, None] & (self.matched >= MIN_MATCHED) & is_note_on(echo)
        if not hit.any():
            return None
        add = np.zeros((len(self.history), NUM_CLASSES), dtype=np.float32)
        rows, bars = np.nonzero(hit)
        add[rows, echo[rows, bars]] = -self.penalty
        return add

    def update(self, s: int, events: np.ndarray) -> None:
        """After step s sampled `events` (B,); only a new bar's steps count (each starts at a bar line)."""
        if not self.any_fresh[s]:
            return
        echo = self._echo(s)
        note, echo_note = is_note_on(events), is_note_on(echo)
        differs = np.where(note[:, None], echo != events[:, None], echo_note)
        self.matched = np.where(differs, -1, self.matched + ((self.matched >= 0) & note[:, None]))
