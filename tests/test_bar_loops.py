"""The loop breaker (issue 23): no third bar in a row alike, on the shipped network, the form
plan's copies included."""

from __future__ import annotations

import numpy as np
import pytest

from model.melody import sampling
from model.melody.bar_loops import BarLoop
from model.melody.sampling import SamplingOptions, bar_sets, continue_melodies, jaccard, load_model, prepare_primer
from model.music.events import NO_EVENT, PAD, STEPS_PER_BAR, note_on
from model.music.primer import parse_notes

# one bar twice, as a held-out POP909 sketch (song 840) had it; the network then loops it to the end
LOOP_SKETCH = prepare_primer(parse_notes("F#4:0.5 G#4:0.5 A4:0.5 G#4:0.25 F#4:2.25 " * 2))


def bar(notes: dict[int, int]) -> list[int]:
    events = [NO_EVENT] * STEPS_PER_BAR
    for step, pitch in notes.items():
        events[step] = note_on(pitch)
    return events


def longest_alike_chain(events: list[int]) -> int:
    """The most bars in a row, each a near-copy of the bar before (1: none alike)."""
    bars = bar_sets(events)
    best = run = 1
    for before, this in zip(bars, bars[1:]):
        run = run + 1 if this and jaccard(this, before) >= 0.75 else 1
        best = max(best, run)
    return best


def test_after_two_alike_bars_each_note_of_the_bar_before_is_penalised_in_its_place():
    a, b = bar({0: 60, 4: 64, 8: 67}), bar({0: 60, 4: 64, 8: 67, 12: 72})  # Jaccard 3/4: alike
    c = bar({0: 62, 4: 65, 8: 69})
    rows = [a + b, c + b, [PAD] * 16 + [NO_EVENT] * 16, [NO_EVENT] * 32]  # alike, not, padding, rests
    history = np.array([row + [NO_EVENT] * STEPS_PER_BAR for row in rows])
    positions = np.tile(np.arange(STEPS_PER_BAR), (len(rows), 1))
    loops = BarLoop(history, positions, 2 * STEPS_PER_BAR, penalty=30.0)
    events, penalty = loops.penalties(0)
    assert penalty.tolist() == [-30.0, 0.0, 0.0, 0.0] and events[0] == note_on(60)
    assert loops.penalties(1) is None  # no note in the bar before at step 1
    events, penalty = loops.penalties(12)
    assert events[0] == note_on(72) and penalty[0] == -30.0
    assert loops.looping.tolist() == [True, False, False, False]  # decided at the bar line, for its bar


def test_a_row_whose_bar_line_falls_elsewhere_is_judged_at_its_own():
    a = bar({0: 60, 4: 64})
    history = np.array([[NO_EVENT] * 4 + a + a + [NO_EVENT] * 12])  # its bars start at column 4
    positions = ((np.arange(STEPS_PER_BAR) + 12) % STEPS_PER_BAR)[None, :]  # step 4 is its bar line
    loops = BarLoop(history, positions, 2 * STEPS_PER_BAR, penalty=30.0)
    assert loops.penalties(0) is None  # column 32 is inside its bar
    events, penalty = loops.penalties(4)  # column 36: its bar line; the bar before had C4 there
    assert events[0] == note_on(60) and penalty[0] == -30.0


@pytest.mark.parametrize("seed", [0, 1])
def test_the_shipped_network_no_longer_loops_a_sketch_of_one_bar_twice(monkeypatch, seed):
    model = load_model()
    options = SamplingOptions(bars=8, variations=4, seed=seed)
    takes = continue_melodies(model, [LOOP_SKETCH], [options])[0]
    assert all(longest_alike_chain(LOOP_SKETCH + take) <= 2 for take in takes)
    monkeypatch.setattr(sampling, "LOOP_PENALTY", 0.0)  # the hole this closes
    loose = continue_melodies(model, [LOOP_SKETCH], [options])[0]
    assert max(longest_alike_chain(LOOP_SKETCH + take) for take in loose) >= 4
