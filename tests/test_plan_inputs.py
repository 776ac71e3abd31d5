"""The network told the form plan (issue 23): each bar's label in a song, the codes of a training
window, warm starts from a model without plan inputs, step-by-step sampling that tells the
plan the way teacher forcing does, and the shipped network heeding it."""

from __future__ import annotations

import numpy as np
import torch

from model.lab.data import Song, sample_chord_batch, window_plan_codes
from model.lab.train import warm_start
from model.melody import stepping
from model.melody.form import LABEL_NEW, LABEL_REST, LABEL_RETURN, LABEL_UNKNOWN, bar_labels, bar_sets, plan_code
from model.melody.network import MelodyNet, NetworkConfig, save_checkpoint
from model.melody.sampling import load_model
from model.music.events import NO_EVENT, NOTE_OFF, NUM_CLASSES, STEPS_PER_BAR, is_note_on, note_on
from model.music.primer import parse_notes

SMALL = dict(embed=8, hidden=16, layers=1, heads=2, window=64, dropout=0.0, chords=True)


def bar(pitches: list[int]) -> list[int]:
    """One bar of quarter notes (an empty list: a silent bar)."""
    if not pitches:
        return [NO_EVENT] * STEPS_PER_BAR
    return [e for p in pitches for e in (note_on(p), NO_EVENT, NO_EVENT, NOTE_OFF)]


def test_each_bar_is_new_returning_or_a_rest():
    events = bar([60, 62, 64, 65]) + bar([67, 65, 64, 62]) + bar([]) + bar([60, 62, 64, 65]) + bar([60, 62, 64, 67])
    assert bar_labels(bar_sets(events)) == [LABEL_NEW, LABEL_NEW, LABEL_REST, LABEL_RETURN, LABEL_NEW]


def test_a_window_is_told_its_whole_bars_and_what_follows_each_but_not_past_its_end():
    labels = [LABEL_NEW, LABEL_RETURN, LABEL_REST, LABEL_NEW, LABEL_NEW, LABEL_RETURN]
    codes = window_plan_codes(labels, start=0, primer_steps=8, target_steps=48).reshape(-1, 8)[:, 0]
    assert codes.tolist() == [
        plan_code(LABEL_UNKNOWN, LABEL_RETURN),  # the bar the primer began: only what follows it
        plan_code(LABEL_RETURN, LABEL_REST), plan_code(LABEL_RETURN, LABEL_REST),
        plan_code(LABEL_REST, LABEL_NEW), plan_code(LABEL_REST, LABEL_NEW),
        plan_code(LABEL_NEW, LABEL_UNKNOWN),  # the bar after the window is not told
    ]  # fmt: skip


def test_training_windows_carry_plans_except_a_share_told_nothing():
    song = Song("001", np.array((bar([60, 62, 64, 65]) + bar([67, 65, 64, 62])) * 8 + bar([]) * 2, dtype=np.int64))
    _, _, inside, _, plans = sample_chord_batch([song], 400, 16, 32, np.random.default_rng(2), plan_dropout=0.3)
    told = (plans != 0).any(1)
    assert 0.62 < told.mean() < 0.78
    # a told window's steps inside the song each know their bar (the song's end: nothing)
    assert set(np.unique(plans[told][inside[told]])) <= {plan_code(a, b) for a in (1, 2, 3) for b in (0, 1, 2, 3)}
    # without plan_dropout no window is told, and the batch is drawn as before the option existed
    before = sample_chord_batch([song], 50, 16, 32, np.random.default_rng(2))
    assert not before[4].any()
    again = sample_chord_batch([song], 50, 16, 32, np.random.default_rng(2), plan_dropout=None)
    assert all((a == b).all() for a, b in zip(before, again))


def test_warm_start_from_a_model_without_plan_inputs_begins_as_that_model(tmp_path):
    torch.manual_seed(1)
    old = MelodyNet(NetworkConfig(**SMALL)).eval()
    save_checkpoint(tmp_path / "old.pt", old)
    new = MelodyNet(NetworkConfig(**SMALL, plan=True)).eval()
    warm_start(new, tmp_path / "old.pt")
    primer, target = torch.tensor([parse_notes("C4 E4 G4 A4")]), torch.tensor([parse_notes("G4 E4 C4 D4")])
    plan = torch.randint(0, 16, target.shape)
    with torch.no_grad():
        torch.testing.assert_close(new(primer, target, plan=plan), old(primer, target))
        assert not torch.allclose(new.plan_embed.weight, torch.zeros_like(new.plan_embed.weight))


def test_step_by_step_sampling_tells_the_plan_as_teacher_forcing_does():
    torch.manual_seed(3)
    model = MelodyNet(NetworkConfig(**SMALL, plan=True)).eval()
    primer = torch.tensor([parse_notes("C4 E4 G4 A4:2")] * 2)  # 21 steps: the continuation's first bar is partial
    steps, first = 64, -primer.shape[1] % STEPS_PER_BAR  # the first whole bar's step
    bars = [slice(first + k * STEPS_PER_BAR, first + (k + 1) * STEPS_PER_BAR) for k in range(3)]
    copy_lag = torch.zeros(2, steps, dtype=torch.long)
    copy_lag[0, bars[0]], copy_lag[0, bars[1]], copy_lag[0, bars[2]] = stepping.NEW_BAR, 16, stepping.NEW_BAR
    copy_lag[1, bars[0]], copy_lag[1, bars[1]] = 32, stepping.NEW_BAR
    options = dict(temperature=torch.ones(2), top_p=torch.full((2,), 1e-6),
                   allowed_events=torch.ones(2, NUM_CLASSES, dtype=torch.bool), with_loglik=True)
    told, _ = stepping.generate(model, primer, steps, seeds=[1, 2], copy_lag=copy_lag, **options)
    positions = (np.arange(primer.shape[1], primer.shape[1] + steps)[None, :] % STEPS_PER_BAR).repeat(2, 0)
    codes = stepping.plan_codes(copy_lag.numpy(), positions)
    assert codes[0, :first].tolist() == [plan_code(LABEL_UNKNOWN, LABEL_NEW)] * first
    assert set(codes[0, bars[1]]) == {plan_code(LABEL_RETURN, LABEL_NEW)}
    assert set(codes[0, bars[2]]) == {plan_code(LABEL_NEW, LABEL_UNKNOWN)}
    assert set(codes[1, bars[0]]) == {plan_code(LABEL_RETURN, LABEL_NEW)} and set(codes[1, bars[2]]) == {0}
    with torch.no_grad():
        logits = model(primer, told, plan=torch.as_tensor(codes))
        untold = model(primer, told)
    assert torch.equal(logits.argmax(-1), told)
    assert not torch.equal(untold.argmax(-1), told)  # the plan changed what was sampled


def test_the_shipped_network_told_a_bar_is_new_fills_it():
    """The shipped weights were trained told the plan (why form.json lowers planned rests less): told every
    bar is new, they leave few bars empty; the same rows untold leave many more."""
    model = load_model()
    assert model.config.plan
    rows, steps = 16, 8 * STEPS_PER_BAR
    empty = {"told": 0, "untold": 0}
    for text in ("C4 E4 G4 A4", "E4:0.5 E4:0.5 F4:0.5 G4:0.5 G4:0.5 F4:0.5 E4:0.5 D4:0.5 C4:2 R:2",
                 "A3 C4 E4 A4 G4:2 E4:2 D4 C4 D4 E4 C4:4"):
        events = parse_notes(text)
        first = -len(events) % STEPS_PER_BAR  # the continuation's first whole bar
        new_bars = torch.zeros(rows, first + steps, dtype=torch.long)
        new_bars[:, first:] = stepping.NEW_BAR
        options = dict(temperature=torch.ones(rows), top_p=torch.full((rows,), 0.95),
                       allowed_events=torch.ones(rows, NUM_CLASSES, dtype=torch.bool), seeds=list(range(rows)))
        for name, copy_lag in (("told", new_bars), ("untold", None)):
            out = stepping.generate(model, torch.tensor([events] * rows), first + steps, copy_lag=copy_lag, **options)
            for row in out[:, first:].reshape(rows, 8, STEPS_PER_BAR).tolist():
                empty[name] += sum(not any(is_note_on(e) for e in bar_events) for bar_events in row)
    told, untold = (empty[name] / (3 * rows * 8) for name in ("told", "untold"))
    assert told < 0.15 and untold > 2 * told, (told, untold)
