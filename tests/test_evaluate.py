"""The scorer tells our network where a song's bars begin and still scores the protocol's steps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.lab.data import Song
from model.lab.evaluate import FIRST_SCORED_STEP, PRIMER_STEPS, score
from model.music.events import NO_EVENT, NOTE_OFF, note_on


def melody(bars: int = 6) -> np.ndarray:
    events = []
    for k in range(bars):
        events += [note_on(60 + k % 5)] + [NO_EVENT] * 3 + [note_on(64)] + [NO_EVENT] * 3 + [NOTE_OFF] + [NO_EVENT] * 7
    return np.array(events + [note_on(67), NOTE_OFF], dtype=np.int64)


def test_the_phase_moves_the_network_s_bars_not_the_scored_steps(tiny_model):
    events = melody()
    told, blind = score(tiny_model, [Song("010", events, phase=5)]), score(tiny_model, [Song("010", events)])
    scored = (len(events) - FIRST_SCORED_STEP, 8)  # 13 notes, 5 of them before step 33
    assert (told["steps"], told["notes"]) == (blind["steps"], blind["notes"]) == scored
    assert told["nll"] != blind["nll"]
    assert score(tiny_model, [Song("010", events, phase=5)], phase=False) == blind

    sequence = torch.as_tensor(events)[None]  # the same score by hand, bars beginning at step 5
    with torch.no_grad():
        logits = tiny_model(sequence[:, :PRIMER_STEPS], sequence[:, PRIMER_STEPS:], offset=torch.tensor([5]))
    nll = F.cross_entropy(logits[0, FIRST_SCORED_STEP - PRIMER_STEPS :], sequence[0, FIRST_SCORED_STEP:])
    assert abs(told["nll"] - nll.item()) < 1e-5


def test_the_shipped_network_copies_a_passage_from_further_back_than_16_bars():
    """Pop songs bring a chorus back 20-60 bars later: the shipped weights attend over the whole
    song (and the longest request), and predict a passage's return far better than they would
    with attention cut to the 16 bars they were first trained on."""
    from model.defaults import DEFAULT_WEIGHTS, MAX_BARS
    from model.melody.network import load_checkpoint
    from model.melody.sampling import MAX_PRIMER_STEPS
    from model.music.events import STEPS_PER_BAR

    rng = np.random.default_rng(7)
    passage = []
    for _ in range(24 * 4):  # 24 bars of beats: a note of a C major pentatonic line, or a rest
        passage += ([note_on(int(rng.choice([60, 62, 64, 67, 69, 72])))] if rng.random() < 0.8 else [NOTE_OFF])
        passage += [NO_EVENT] * 3
    sequence = torch.tensor(passage + passage)[None]  # the passage comes back 384 steps later

    def nll_of_the_return(window: int | None) -> float:
        model, _ = load_checkpoint(DEFAULT_WEIGHTS)
        if window is not None:
            model.config.window = window
        with torch.no_grad():
            logits = model(sequence[:, :PRIMER_STEPS], sequence[:, PRIMER_STEPS:])
        back = len(passage) - PRIMER_STEPS
        return F.cross_entropy(logits[0, back:], sequence[0, len(passage):]).item()

    assert load_checkpoint(DEFAULT_WEIGHTS)[0].config.window >= MAX_PRIMER_STEPS + MAX_BARS * STEPS_PER_BAR
    assert nll_of_the_return(None) < 0.6 * nll_of_the_return(256)
