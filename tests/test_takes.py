"""Stuck takes (EVALUATION.md, issue 23): the shipped network, left alone, reinforces its own
repetition; the step sampler caps the chance of one more note of the same pitch, and stops a run
at MAX_SAME_NOTES."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model.lab.takes import ends_like_phrase, longest_run, stuck_shares, tonic_triad
from model.melody import sampling
from model.melody.same_note import SameNoteRun
from model.melody.sampling import MAX_SAME_NOTES, SamplingOptions, continue_melodies, load_model, prepare_primer
from model.music.events import FIRST_NOTE_ON, NUM_CLASSES, events_to_notes, note_on
from model.music.primer import parse_notes

# Two bars of E4 eighths, then a bar that walks away: the network's strongest pull is back to E4.
STUCK_PRIMER = prepare_primer(parse_notes("E4:0.5 " * 12 + "F4:0.5 G4:0.5 G4:0.5 F4:0.5 E4 D4 C4 E4"))
OPTIONS = SamplingOptions(bars=4, variations=6, seed=3, candidates=1)


def test_longest_run_counts_notes_not_steps_and_rests_do_not_break_it():
    assert longest_run(parse_notes("C4 C4:2 C4 D4 D4")) == 3
    assert longest_run(parse_notes("C4 r C4 r C4 r C4")) == 4
    assert longest_run(parse_notes("C4 D4 C4 D4")) == 1
    assert longest_run([]) == 0
    assert stuck_shares([parse_notes("C4 " * 6), parse_notes("C4 " * 8), parse_notes("C4 D4")]) == {
        "run>=6": 2 / 3, "run>=8": 1 / 3}


def test_same_note_run_starts_from_the_primers_tail():
    primer = torch.tensor([parse_notes("D4 E4 r E4 E4:2"), parse_notes("D4 E4 F4 G4:3")])
    run = SameNoteRun.of(primer, sampling.same_note_caps())
    assert run.count.tolist() == [3, 1]
    run.update(torch.tensor([note_on(64), note_on(65)]))  # E4 again: 4; F4 after G4: a new run of 1
    assert run.count.tolist() == [4, 1]
    assert run.binds() and not run.binds(spared=np.array([True, False]))  # a run of 1 is never capped (its cap is 1)


def test_the_cap_lowers_only_a_share_above_it():
    run = SameNoteRun.of(torch.tensor([parse_notes("E4 E4 E4")[:-1]] * 2), torch.tensor([1.0, 1.0, 1.0, 0.3, 0.0]))
    logits = np.zeros((2, NUM_CLASSES), dtype=np.float32)
    logits[0, note_on(64)] = 5.0  # E4 would take most of the notes' probability
    logits[1, note_on(64)] = -3.0  # here it is already rare
    allowed = np.ones((2, NUM_CLASSES), dtype=bool)
    limited = run.limit(logits, allowed)
    shares = torch.from_numpy(limited[:, FIRST_NOTE_ON:]).softmax(-1)[:, note_on(64) - FIRST_NOTE_ON]
    assert shares[0] == pytest.approx(0.3, abs=1e-4)
    assert np.array_equal(limited[1], logits[1])
    assert np.array_equal(limited[0, :FIRST_NOTE_ON], logits[0, :FIRST_NOTE_ON])
    run.update(torch.tensor([note_on(64), note_on(64)]))  # the 4th E4: a 5th may not come
    assert run.limit(logits, allowed)[:, note_on(64)].tolist() == [float("-inf")] * 2


@pytest.fixture(scope="module")
def shipped():
    return load_model()


def test_the_network_alone_gets_stuck_and_the_cap_stops_it(shipped, monkeypatch):
    # 12 takes: the network told the plan gets stuck less often (a run past the cap in 6 of 8 seeds' 12)
    options = replace(OPTIONS, variations=12, seed=0)
    with monkeypatch.context() as m:  # no cap: the network repeats E4 on and on
        m.setattr(sampling, "SAME_NOTE_CAPS", (1.0,))
        free = continue_melodies(shipped, [STUCK_PRIMER], [options])[0]
    assert max(longest_run(c) for c in free) > MAX_SAME_NOTES
    penalised = continue_melodies(shipped, [STUCK_PRIMER], [options])[0]
    assert max(longest_run(c) for c in penalised) <= MAX_SAME_NOTES  # the primer ends on one E4
    # it plays on, not silent: the cap takes no notes away (a sparse take, 7 notes in 4 bars at seed 3,
    # is the network's own, capped or not)
    counts, free_counts = ([len(events_to_notes(c)) for c in takes] for takes in (penalised, free))
    assert min(counts) >= 4 and sum(counts) >= 0.9 * sum(free_counts), (counts, free_counts)


def test_no_run_beyond_the_limit_even_when_wild(shipped):
    primer = prepare_primer(parse_notes("E4:0.5 " * 16))  # already 16 E4s: none may follow at once
    takes = continue_melodies(shipped, [primer], [SamplingOptions(bars=4, variations=8, temperature=2.0, seed=1,
                                                                  candidates=1)])[0]
    assert all(events_to_notes(c)[0].pitch != 64 for c in takes)
    assert max(longest_run(c) for c in takes) <= MAX_SAME_NOTES


def test_a_phrase_ends_on_a_long_stable_note():
    c_major = tonic_triad("C:maj")
    assert c_major == {0, 4, 7} and tonic_triad("A:min") == {9, 0, 4}
    assert ends_like_phrase(parse_notes("D4 F4 E4:2"), c_major)
    assert not ends_like_phrase(parse_notes("D4 F4 D4:2"), c_major)  # the second degree: still moving
    assert not ends_like_phrase(parse_notes("D4 F4 E4:0.5"), c_major)  # an eighth: no breath
    assert ends_like_phrase(parse_notes("D4 F4 G4")[:-1] + [0] * 3, c_major)  # still sounding at the end


CADENCE_PRIMERS = [
    prepare_primer(parse_notes("C4 E4 G4 A4 G4:2 E4:2 F4 A4 C5 A4 G4:4 E4:0.5 F4:0.5 G4:0.5 A4:0.5 B4 D5 C5 A4 F4 D4")),
    prepare_primer(parse_notes("A3:0.5 C4:0.5 E4:0.5 A4:0.5 G4 E4 D4:0.5 C4:0.5 D4 E4 C4 A3:2")),
]


def test_the_cadence_ends_wild_takes_like_phrases(shipped, monkeypatch):
    """At temperature 1.3, one candidate each: the network alone ends a quarter of its takes on a long
    stable note; the cadence on the last bar about half (real pop's chosen variations: a third)."""
    primers = [p for p in CADENCE_PRIMERS for _ in range(4)]
    options = [SamplingOptions(bars=4, variations=16, temperature=1.3, seed=s, candidates=1) for s in range(4)] * 2

    def share() -> float:
        answers = continue_melodies(shipped, primers, options)
        ends = [sampling.ends_on_stable_note(p, take) for p, takes in zip(primers, answers) for take in takes]
        return sum(ends) / len(ends)

    with_cadence = share()
    monkeypatch.setattr(sampling, "CADENCE_STABLE", 0.0)
    monkeypatch.setattr(sampling, "CADENCE_LATE", 0.0)
    alone = share()
    assert with_cadence >= 0.4 and with_cadence >= 1.5 * alone


def test_end_bias_acts_on_each_rows_own_last_steps_no_hotter_than_temperature_1(shipped):
    from model.melody import stepping

    primer = torch.tensor([CADENCE_PRIMERS[1][-32:]] * 2)
    kwargs = dict(top_p=torch.ones(2), seeds=[5, 5], allowed_events=torch.ones(2, NUM_CLASSES, dtype=torch.bool))
    plain = stepping.generate(shipped, primer, 16, temperature=torch.ones(2), **kwargs)
    end_bias = torch.zeros(2, 4, NUM_CLASSES)
    end_bias[:, :, note_on(71)] = 100.0  # B4 wherever it applies
    got = stepping.generate(shipped, primer, 16, temperature=torch.ones(2), end_bias=end_bias,
                            end_start=torch.tensor([12, 16]), **kwargs)  # row 1's last steps lie past the end
    assert torch.equal(got[0, :12], plain[0, :12]) and got[0, 12:].tolist() == [note_on(71)] * 4
    assert torch.equal(got[1], plain[1])
    hot = stepping.generate(shipped, primer, 16, temperature=torch.full((2,), 2.0),
                            end_bias=torch.zeros(2, 16, NUM_CLASSES), end_start=torch.tensor([0, 16]), **kwargs)
    assert torch.equal(hot[0], plain[0]) and not torch.equal(hot[1], plain[1])  # row 0 sampled at temperature 1
