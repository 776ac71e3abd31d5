"""The new-bar guard (issue 23): a bar the form plan calls new does not copy a bar of the sketch note
for note, on the shipped network; and the rest limit a request gets when it sets none."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.melody import sampling, stepping
from model.melody.form import bar_sets, copies
from model.melody.fresh_bars import MIN_MATCHED, FreshBar
from model.melody.sampling import SamplingOptions, continue_melodies, load_model, longest_quiet, prepare_primer
from model.music.events import NO_EVENT, NOTE_OFF, NUM_CLASSES, PAD, STEPS_PER_BAR, events_to_notes, note_on
from model.music.primer import parse_notes

# four different bars twice: a sketch whose every bar the network is tempted to bring back
SKETCH = prepare_primer(parse_notes("C4 E4 G4 E4 F4 A4 C5 A4 G4 B4 D5 B4 C5:2 G4:2 " * 2))


def bar(notes: dict[int, int]) -> list[int]:
    events = [NO_EVENT] * STEPS_PER_BAR
    for step, pitch in notes.items():
        events[step] = note_on(pitch)
    return events


def guard(rows: list[list[int]], fresh: bool = True) -> FreshBar:
    """A guard on rows whose sampled steps start after their (equal-length) sketches, at a bar line."""
    history = np.array([row + [NO_EVENT] * STEPS_PER_BAR for row in rows])
    positions = np.tile(np.arange(STEPS_PER_BAR), (len(rows), 1))
    return FreshBar(history, positions, len(rows[0]), np.full((len(rows), STEPS_PER_BAR), fresh), penalty=8.0)


def sample(fresh: FreshBar, events: list[int]) -> list[np.ndarray | None]:
    """Write events into the guarded bar one step at a time; the penalties seen before each."""
    seen = []
    for s, event in enumerate(events):
        seen.append(fresh.penalties(s))
        fresh.history[:, fresh.start + s] = event
        fresh.update(s, np.array([event] * len(fresh.history)))
    return seen


def test_once_two_notes_match_a_sketch_bar_in_place_its_next_note_is_penalised():
    source = bar({0: 60, 4: 64, 8: 67, 12: 72})
    fresh = guard([bar({0: 62}) + source])
    seen = sample(fresh, bar({0: 60, 4: 64})[:8])
    assert all(p is None for p in seen)  # nothing before MIN_MATCHED notes matched
    penalty = fresh.penalties(8)
    assert MIN_MATCHED == 2 and penalty[0, note_on(67)] == -8.0 and (penalty != 0).sum() == 1


def test_a_bar_that_turned_away_is_left_alone_and_a_bar_line_starts_afresh():
    source = bar({0: 60, 4: 64, 8: 67})
    fresh = guard([source])
    sample(fresh, bar({0: 60, 2: 62, 4: 64})[:8])  # a note where the source has none: no copy
    assert fresh.penalties(8) is None
    fresh = guard([source])
    sample(fresh, bar({0: 60, 4: 64})[:8])
    fresh.positions[:, 8] = 0  # as if step 8 were a bar line: what matched before it is forgotten
    assert fresh.penalties(8) is None


def test_only_new_bars_and_only_the_sketch_are_guarded():
    source = bar({0: 60, 4: 64, 8: 67})
    off = guard([source], fresh=False)
    sample(off, bar({0: 60, 4: 64})[:8])
    assert off.penalties(8) is None
    padded = guard([[PAD] * STEPS_PER_BAR])  # nothing there to copy
    assert all(p is None for p in sample(padded, bar({0: 60, 4: 64, 8: 67})))


def copied_bars(sketch: list[int], takes: list[list[int]], plans: list[list[int]]) -> tuple[int, int]:
    """(planned-new bars that copy a sketch bar, planned-new bars) over the takes."""
    sketch_bars = bar_sets(sketch)
    hits = total = 0
    for take, plan in zip(takes, plans):
        for mine, lag in zip(bar_sets(sketch + take)[len(sketch_bars):], plan):
            if lag == 0 and mine:
                total += 1
                hits += any(copies(old, mine) for old in sketch_bars)
    return hits, total


def all_new(monkeypatch):
    """Every bar planned new, and the plans handed out."""
    def plans(primer, bars, variations, candidates, seed, form=None):
        first = -(-len(primer) // STEPS_PER_BAR)
        count = (len(primer) + bars * STEPS_PER_BAR) // STEPS_PER_BAR - first
        return first * STEPS_PER_BAR, [[[0] * count] * candidates for _ in range(variations)]

    monkeypatch.setattr(sampling, "candidate_plans", plans)


def test_the_shipped_network_copies_far_fewer_sketch_bars_into_new_bars_with_the_guard(monkeypatch):
    model = load_model()
    all_new(monkeypatch)
    options = [SamplingOptions(bars=8, variations=4, seed=seed, candidates=1) for seed in range(3)]
    guarded = [t for takes in continue_melodies(model, [SKETCH] * 3, options) for t in takes]
    monkeypatch.setattr(sampling, "FRESH_PENALTY", 0.0)  # the network alone
    loose = [t for takes in continue_melodies(model, [SKETCH] * 3, options) for t in takes]
    plans = [[0] * 8] * len(guarded)
    (guarded_hits, guarded_bars), (loose_hits, loose_bars) = copied_bars(SKETCH, guarded, plans), copied_bars(
        SKETCH, loose, plans)
    # what the guard is for: the network alone copies a sketch bar into one bar in six or more
    # (the network told the plan, told these bars are new: 0.18; the untold one a fifth or more)
    assert loose_hits / loose_bars >= 0.15
    assert guarded_hits / guarded_bars <= loose_hits / loose_bars / 3


def test_rest_bars_are_kept_even_when_no_bar_is_copied():
    model = load_model()
    primer = [SKETCH[-2 * STEPS_PER_BAR:]]
    lags = torch.full((1, 32), stepping.REST_BAR)  # two bars in which no note may start
    got = stepping.generate(model, torch.tensor(primer), 32, temperature=torch.ones(1), top_p=torch.ones(1),
                            allowed_events=torch.ones(1, NUM_CLASSES, dtype=torch.bool), seeds=[0], copy_lag=lags)
    assert all(e in (NO_EVENT, NOTE_OFF) for e in got[0].tolist())


@pytest.mark.parametrize(("sketch", "expected"), [
    ("C4 E4 G4 A4", 16),  # a short sketch keeps going
    ("C4 E4 r:4 G4 A4", 16),  # its own rest (15 steps) is shorter than a bar
    ("C4:2 r:8 E4:2", 31),  # a rest of two bars in it (the half note's release, then 31 quiet steps)
    ("C4 E4 G4 A4 " * 8, 32),  # 8 bars: a section, two bars between phrases
])
def test_the_rest_limit_follows_the_sketch_when_a_request_sets_none(sketch, expected):
    primer = prepare_primer(parse_notes(sketch))
    assert sampling._rest_limit(primer, SamplingOptions()) == expected
    assert sampling._rest_limit(primer, SamplingOptions(max_rest=6)) == 6  # a request's own limit wins
    assert sampling._rest_limit(primer, SamplingOptions(rhythm=((0,) * 128,) * 4)) == 0  # a lyric's plan holds notes


def test_a_sketch_of_a_section_may_be_answered_with_a_break_longer_than_a_bar():
    """With the limit raised the shipped network takes the breaks a long sketch takes, never longer
    than its own; a short sketch's answer never rests past a bar."""
    model = load_model()
    phrase = "E4 G4 A4 G4 E4:2 D4:2 C4 D4 E4 G4 E4:4 r:8 "  # 4 bars, a 2-bar break
    long_sketch = prepare_primer(parse_notes(phrase * 2))
    options = [SamplingOptions(bars=8, variations=4, seed=s) for s in range(4)]
    takes = continue_melodies(model, [long_sketch] * 4, options)
    quiet = [longest_quiet(t) for ts in takes for t in ts]
    assert max(quiet) > STEPS_PER_BAR  # a break as the sketch's
    # no take of mostly silence (with no limit, one rested 7 of its 8 bars): a break of at most the
    # limit, a bar's rest planned or copied on either side of it. The sketch plays in half its bars;
    # a take may rest as it does, a bar more at most, and the takes together play more than half
    assert max(quiet) <= 4 * STEPS_PER_BAR
    playing = [len({n.start // STEPS_PER_BAR for n in events_to_notes(t)}) for ts in takes for t in ts]
    assert min(playing) >= 3 and sum(playing) / len(playing) > 4, playing
    short = prepare_primer(parse_notes("E4 G4 A4 G4 E4:2 D4:2"))
    takes = continue_melodies(model, [short] * 4, options)
    # a rest: the NOTE_OFF's step and at most the limit's bar of quiet steps (a held note may be longer)
    assert max(longest_silence(t) for ts in takes for t in ts) <= STEPS_PER_BAR + 1


def longest_silence(events: list[int]) -> int:
    """The most steps in a row with no note sounding, from the continuation's start."""
    notes, best, end = events_to_notes(events), 0, 0
    for note in notes:
        best, end = max(best, note.start - end), max(end, note.end)
    return best
