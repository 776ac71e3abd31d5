"""The form plan (issue 23): continuation bars that bring the song's own bars back, planned from the
shipped form model (model/weights/form.json) and followed by the step sampler on the shipped network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.melody import sampling, stepping
from model.melody.form import REST, WINDOW, bar_sets, load_form, material_ids, parse_form, requested_plan
from model.melody.sampling import SamplingOptions, continue_melodies, form_plans, jaccard, load_model, prepare_primer
from model.music.events import NO_EVENT, NOTE_OFF, NUM_CLASSES, STEPS_PER_BAR, note_on
from model.music.primer import parse_notes

HOOK = "C4 E4 G4 A4 G4:2 E4:2 F4 A4 C5 A4 G4:4 "  # a 4-bar hook
VERSE = "E4:2 D4:2 C4:4 D4 E4 F4 D4 C4:4 "  # 3 bars
# hook, hook, verse, hook, verse: 17 bars whose hook has come back twice
SONG = prepare_primer(parse_notes(HOOK + HOOK + VERSE + HOOK + VERSE))


def test_material_ids_follow_the_latest_copy():
    bars = [{(0, 60)}, {(0, 62)}, set(), {(0, 60)}, {(0, 60), (4, 64), (8, 67)}]
    assert material_ids(bars) == [0, 1, -1, 0, 4]


def test_the_shipped_form_model_loads_and_its_probabilities_add_up():
    form = load_form()
    assert form is not None
    context = bar_sets(SONG)
    ids = material_ids(context)
    from model.melody.form import repeat_shares

    lags, probs = form.scores(ids, len(context), len(context), repeat_shares(ids))
    assert len(probs) == len(lags) + 2 and probs.sum() == pytest.approx(1.0)
    assert all(ids[len(context) - lag] >= 0 for lag in lags)  # never an empty bar


def test_plans_never_reach_beyond_the_window():
    form = load_form()
    long_song = bar_sets(SONG * 3)  # 54 bars: only the last WINDOW may come back
    for seed in range(20):
        plan = form.plan(long_song, 8, np.random.default_rng(seed))
        context = min(len(long_song), WINDOW)
        assert all(lag == REST or 0 <= lag <= context + b for b, lag in enumerate(plan))
    first, plans = form_plans(SONG, 8, 4, seed=0)
    assert first == len(bar_sets(SONG)) * STEPS_PER_BAR
    bars = len(bar_sets(SONG))
    assert all(len(p) == 8 and all(lag == REST or 0 <= lag <= bars + b for b, lag in enumerate(p)) for p in plans)


def test_a_sketch_with_a_hook_gets_it_back_in_most_variations():
    hook = bar_sets(SONG)[:4]
    [takes] = continue_melodies(load_model(), [SONG], [SamplingOptions(bars=8, variations=4, seed=1)])
    back = 0
    for take in takes:
        bars = bar_sets(SONG + take)[len(bar_sets(SONG)) :]
        back += any(jaccard(b, h) >= 0.75 for b in bars for h in hook)
    assert back >= 3


def test_a_one_bar_primer_is_not_copied_over_and_over():
    primer = prepare_primer(parse_notes("C4 E4 G4 A4"))
    copies = bars = 0
    for seed in range(12):
        _, plans = form_plans(primer, 8, 4, seed)
        for plan in plans:
            copies += sum(lag == b + 1 for b, lag in enumerate(plan))  # a copy of the primer's bar
            bars += len(plan)
    assert copies / bars < 0.15  # real songs after a 1-bar start: about one bar in ten copies it
    [takes] = continue_melodies(load_model(), [primer], [SamplingOptions(bars=8, variations=4, seed=0)])
    assert len({tuple(t) for t in takes}) == 4 and all(len(t) == 8 * STEPS_PER_BAR for t in takes)


def test_variations_get_different_plans():
    plans = [tuple(map(tuple, form_plans(SONG, 8, 4, seed)[1])) for seed in range(6)]
    assert all(len(set(p)) >= 3 for p in plans)


def test_the_step_sampler_follows_a_copy_lag_and_only_where_told():
    model = load_model()
    primer = torch.tensor([SONG[-2 * STEPS_PER_BAR :]] * 2)
    lag = torch.zeros(2, 32, dtype=torch.long)
    lag[0, 1:] = 2 * STEPS_PER_BAR  # row 0 copies the primer's two bars, its first step left free
    kwargs = dict(temperature=torch.ones(2), top_p=torch.ones(2), seeds=[3, 3],
                  allowed_events=torch.ones(2, NUM_CLASSES, dtype=torch.bool))
    got = stepping.generate(model, primer, 32, copy_lag=lag, copy_bias=50.0, **kwargs)
    plain = stepping.generate(model, primer, 32, **kwargs)
    source = primer[0, 1:].clone()
    assert torch.equal(got[0, 1:], torch.where(source == 1, got[0, 1:], source))  # NOTE_OFFs may read as rests
    assert torch.equal(got[1], plain[1])


def test_a_copied_rest_may_outlast_max_rest():
    bar_a = [note_on(60), NO_EVENT, NO_EVENT, NO_EVENT, NOTE_OFF] + [NO_EVENT] * 11  # a quarter, then 11 steps of rest
    primer = torch.tensor([bar_a + parse_notes("E4 D4 C4 D4")[:STEPS_PER_BAR]])
    got = stepping.generate(load_model(), primer, 16, temperature=torch.ones(1), top_p=torch.ones(1),
                            allowed_events=torch.ones(1, NUM_CLASSES, dtype=torch.bool), seeds=[0],
                            max_run=torch.tensor([8]), copy_lag=torch.full((1, 16), 32), copy_bias=50.0)  # fmt: skip
    assert got[0].tolist() == bar_a


def test_with_a_rhythm_plan_the_form_plan_is_off(monkeypatch):
    seen = []
    real = stepping.generate
    monkeypatch.setattr(stepping, "generate", lambda *a, **k: seen.append(k["copy_lag"]) or real(*a, **k))
    rhythm = tuple([0] * (2 * STEPS_PER_BAR) for _ in range(2))
    continue_melodies(load_model(), [SONG], [SamplingOptions(bars=2, variations=2, rhythm=rhythm, candidates=1)])
    assert seen == [None]
    monkeypatch.setattr(sampling, "FORM_PLAN", False)
    continue_melodies(load_model(), [SONG], [SamplingOptions(bars=2, variations=2, candidates=1)])
    assert seen[-1] is None


# -- a form the songwriter asks for (form=BA) ---------------------------------------------------------
@pytest.mark.parametrize(("text", "bars", "sections"), [
    ("BA", 8, [("B", 4), ("A", 4)]),
    ("b2a6", 8, [("B", 2), ("A", 6)]),
    ("ABC", 8, [("A", 3), ("B", 3), ("C", 2)]),  # the earlier sections take the bar left over
    ("B2AB", 8, [("B", 2), ("A", 3), ("B", 3)]),
])
def test_a_requested_form_covers_the_bars(text, bars, sections):
    assert parse_form(text, bars) == sections


@pytest.mark.parametrize(("text", "bars", "expected"), [
    ("B4A4B4A4", 8, "needs exactly 16 bars, and the continuation is 8"),
    ("ABCDEFGHI", 8, "needs 9 bars or more"),
    ("1A", 8, "is not a form"),
    ("A-B", 8, "is not a form"),
    ("B0A", 8, "0 bars"),
    ("Z99", 8, "needs 99 bars, and a continuation has at most 32: shorten its sections"),  # not "bars=99"
    ("A20B20", 8, "needs 40 bars, and a continuation has at most 32"),
    ("A30BCD", 8, "needs 33 bars or more, and a continuation has at most 32"),
    ("A24B", 8, "needs 25 bars or more, and the continuation is 8: set bars= to match"),  # 25-32 bars: a fit
])
def test_a_form_that_cannot_be_made_says_why(text, bars, expected):
    with pytest.raises(ValueError, match=expected):
        parse_form(text, bars)
    with pytest.raises(ValueError, match=expected):
        SamplingOptions(bars=bars, form=text).check()


def test_a_requested_plan_brings_back_the_sketch_and_each_returning_letter():
    sketch = [NO_EVENT] * STEPS_PER_BAR + prepare_primer(parse_notes("C4 E4 G4 A4 C5 B4 G4 E4"))  # the first empty
    assert len(sketch) == 3 * STEPS_PER_BAR
    # sketch bars 1 and 2 sound; plan bar b is bar 3 + b of the sketch's grid
    assert requested_plan("BA", sketch, 8) == [0, 0, 0, 0, 6, 6, 8, 8]  # A: bars 1, 2, 1, 2
    assert requested_plan("B2CB2C", sketch, 8) == [0, 0, 0, 0, 4, 4, 4, 4]
    # a sketch that ends inside a bar: the continuation's first bar is not planned, and A brings back
    # the sketch's whole bars only (bar 1: the one it ends in holds the continuation's start)
    assert requested_plan("AB", sketch[:-4], 8) == [2, 3, 4, 0, 0, 0, 0]


def test_the_sampler_follows_a_requested_form():
    sketch = prepare_primer(parse_notes("E4:0.5 E4:0.5 F4:0.5 G4:0.5 G4:0.5 F4:0.5 E4:0.5 D4:0.5 "
                                        "C4:0.5 C4:0.5 D4:0.5 E4:0.5 E4:0.75 D4:0.25 D4:1"))
    opening = bar_sets(sketch)
    [takes] = continue_melodies(load_model(), [sketch], [SamplingOptions(bars=8, variations=3, seed=4, form="B2B2A4")])
    for take in takes:
        bars = bar_sets(take)
        assert all(jaccard(bars[4 + k], opening[k % 2]) >= 0.75 for k in range(4))  # the sketch comes back
        assert [jaccard(bars[2 + k], bars[k]) >= 0.75 for k in range(2)] == [True, True]  # B again
        assert not any(jaccard(bars[k], o) >= 0.75 for k in range(2) for o in opening)  # B is new
    assert bar_sets(takes[0])[:2] != bar_sets(takes[1])[:2]  # the new bars differ between variations
    [drawn] = continue_melodies(load_model(), [sketch], [SamplingOptions(bars=8, variations=3, seed=4)])
    assert drawn != takes  # without a form, the form plan draws the sections
