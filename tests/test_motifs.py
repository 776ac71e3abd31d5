"""The motif echo (issue 23): new bars re-use the sketch's 4-note interval patterns as real
continuations do, by leaning the step sampler's choice of note, never its rhythm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.melody import sampling
from model.melody.motifs import MotifEcho, lean
from model.melody.sampling import SamplingOptions, continue_melodies, load_model, prepare_primer
from model.music.events import FIRST_NOTE_ON, NO_EVENT, NUM_CLASSES, events_to_notes, note_on
from model.music.primer import parse_notes

# a sketch built from one motif (up a step, up a step, down a third) at several pitches, 4 bars
MOTIF_SKETCH = prepare_primer(parse_notes("C4 D4 E4 C4 E4 F4 G4 E4 G4 A4 B4 G4 F4 G4 A4 F4 "
                                          "D4 E4 F4 D4 E4 F4 G4 E4 C4:2 D4:2 E4:4 C4 D4 E4 C4 G4:4 E4:4"))


def patterns(pitches: list[int]) -> set[tuple[int, int, int]]:
    steps = np.diff(pitches).tolist()
    return {tuple(steps[i : i + 3]) for i in range(len(steps) - 2)}


def test_the_echo_leans_towards_the_note_that_finishes_a_sketch_pattern():
    sketch = [note_on(p) for p in (60, 62, 64, 65, 67, 69)]  # steps 2 2 1 2 2
    echo = MotifEcho([sketch + [NO_EVENT]], bias=1.5)
    # the last three notes (F G A) step 2, 2: in the sketch that pair went on by 1 (to Bb)
    assert np.flatnonzero(echo.now[0]).tolist() == [note_on(70)]
    assert echo.now[0, note_on(70)] == pytest.approx(1.5)
    echo.update(np.array([NO_EVENT]))  # a rest changes nothing
    assert np.flatnonzero(echo.now[0]).tolist() == [note_on(70)]
    echo.update(np.array([note_on(70)]))  # G A Bb: 2, 1 went on by 2
    assert np.flatnonzero(echo.now[0]).tolist() == [note_on(72)]
    echo.update(np.array([note_on(59)]))  # A Bb B-flat-down: a pair the sketch never had
    assert not echo.any()


def test_a_sketch_of_fewer_than_four_notes_has_no_patterns():
    echo = MotifEcho([[note_on(60), NO_EVENT, note_on(64), note_on(67)]], bias=1.0)
    assert not echo.any()
    echo.update(np.array([note_on(72)]))
    assert not echo.any()  # the continuation's own notes make no pattern to echo


def test_the_lean_picks_among_notes_and_keeps_the_chance_of_a_note():
    logits = np.random.default_rng(0).standard_normal((3, NUM_CLASSES)).astype(np.float32)
    allowed = np.ones((3, NUM_CLASSES), dtype=bool)
    allowed[1, FIRST_NOTE_ON + 20 :] = False
    allowed[2, FIRST_NOTE_ON:] = False  # no note may start: nothing to keep, nothing broken
    echo = MotifEcho([[]] * 3, bias=2.0)
    echo.now[:, FIRST_NOTE_ON + 5] = 2.0
    leaned = lean(logits, allowed, echo.now)
    assert np.isfinite(leaned).all() and leaned.dtype == np.float32
    logits, leaned, allowed = torch.from_numpy(logits), torch.from_numpy(leaned), torch.from_numpy(allowed)
    for row in range(3):
        before = torch.softmax(logits[row].masked_fill(~allowed[row], -torch.inf), -1)
        after = torch.softmax(leaned[row].masked_fill(~allowed[row], -torch.inf), -1)
        assert after[FIRST_NOTE_ON:].sum() == pytest.approx(float(before[FIRST_NOTE_ON:].sum()), abs=1e-5)
        assert torch.allclose(after[:FIRST_NOTE_ON], before[:FIRST_NOTE_ON], atol=1e-5)
        if row < 2:
            share = lambda p: float(p[FIRST_NOTE_ON + 5] / p[FIRST_NOTE_ON:].sum())  # noqa: E731
            assert share(after) > 2 * share(before)


SEED = 0


def test_on_the_shipped_network_new_bars_echo_the_sketch_motifs(monkeypatch):
    """Form plan off, so every bar is new: the share of the continuation's 4-note patterns that the
    sketch has rises with the echo, and the rhythm (notes per bar) stays about the same."""
    monkeypatch.setattr(sampling, "FORM_PLAN", False)
    model = load_model()
    options = [SamplingOptions(bars=8, variations=12, seed=seed, candidates=1) for seed in range(SEED, SEED + 4)]
    sketch = patterns([n.pitch for n in events_to_notes(MOTIF_SKETCH)])

    def measure() -> tuple[float, float]:
        answers = continue_melodies(model, [MOTIF_SKETCH] * len(options), options)
        shares, counts = [], []
        for take in (take for takes in answers for take in takes):
            mine = patterns([n.pitch for n in events_to_notes(take)])
            shares.append(len(mine & sketch) / max(len(mine), 1))
            counts.append(len(events_to_notes(take)))
        return float(np.mean(shares)), float(np.mean(counts))

    echoed, echoed_notes = measure()
    monkeypatch.setattr(sampling, "MOTIF_BIAS", 0.0)
    plain, plain_notes = measure()
    assert echoed >= 1.25 * plain, (echoed, plain)  # 1.37-1.75x over seeds 0-19, in blocks of 4
    assert abs(echoed_notes - plain_notes) <= 0.15 * plain_notes, (echoed_notes, plain_notes)
