"""Variations chosen among several candidates sampled in the same pass: the choice is
deterministic, one candidate is the plain sampler, and the score prefers pop-like re-use of bars,
likely continuations and variations that differ from each other."""

from __future__ import annotations

import pytest
import torch

from model.melody import sampling, stepping
from model.melody.sampling import (
    SamplingOptions,
    allowed_events,
    choice_score,
    choose,
    continue_melodies,
    prepare_primer,
    repeated_bars,
    same_note_caps,
    variation_seed,
)
from model.music.chords import chords_per_step, parse_lead_sheet
from model.music.events import NUM_CLASSES, STEPS_PER_BAR
from model.music.primer import parse_notes

PRIMER = prepare_primer(parse_notes("C4 E G C:2 D4 F A D:2"))  # two bars (the trailing NOTE_OFF cut)


def bar(text: str) -> list[int]:
    return parse_notes(text)[:STEPS_PER_BAR]  # four quarter notes; their closing NOTE_OFF cut


BAR_A, BAR_B, BAR_C, BAR_D = bar("C4 E G C"), bar("D4 F A D"), bar("E4 G B E"), bar("F4 A C F")


@pytest.fixture(autouse=True)
def no_critic(monkeypatch):
    """The choice's terms one at a time: the critic has its own tests (tests/test_critic.py)."""
    monkeypatch.setattr(sampling, "CRITIC_WEIGHT", 0.0)


@pytest.fixture
def plain_steps(monkeypatch):
    """The sampler without issue 23's form plan, register lift, cadence, motif echo and lean to
    unplayed notes (tests/test_form.py, tests/test_takes.py, tests/test_motifs.py and
    tests/test_pitch_variety.py have those)."""
    monkeypatch.setattr(sampling, "FORM_PLAN", False)
    monkeypatch.setattr(sampling, "LIFT", 0.0)
    monkeypatch.setattr(sampling, "CADENCE_STABLE", 0.0)
    monkeypatch.setattr(sampling, "CADENCE_LATE", 0.0)
    monkeypatch.setattr(sampling, "MOTIF_BIAS", 0.0)
    monkeypatch.setattr(sampling, "FRESH_PITCH_BIAS", 0.0)


def test_one_candidate_is_the_plain_sampler(tiny_model, plain_steps):
    options = SamplingOptions(bars=2, variations=3, seed=5, candidates=1)
    [got] = continue_melodies(tiny_model, [PRIMER], [options])
    primer = torch.tensor([PRIMER] * 3)
    plain = stepping.generate(tiny_model, primer, 32, temperature=torch.ones(3), top_p=torch.full((3,), options.top_p),
                                allowed_events=torch.stack([allowed_events(PRIMER, True)] * 3),
                                seeds=[variation_seed(5, v) for v in range(3)], max_run=torch.full((3,), 16),
                                repeat_cap=same_note_caps())
    assert got == plain.tolist()


def test_each_variation_is_the_best_of_its_own_candidates(tiny_model, plain_steps):
    options = SamplingOptions(bars=2, variations=3, seed=9, candidates=4, temperature=2.0, top_p=1.0)
    first = continue_melodies(tiny_model, [PRIMER], [options])[0]
    assert continue_melodies(tiny_model, [PRIMER], [options])[0] == first
    rows = [(v, k) for v in range(3) for k in range(4)]
    sampled, loglik = stepping.generate(tiny_model,
        torch.tensor([PRIMER] * len(rows)), 32, temperature=torch.full((12,), 2.0), top_p=torch.ones(12),
        allowed_events=torch.stack([allowed_events(PRIMER, True)] * 12),
        seeds=[variation_seed(9, v, k) for v, k in rows], max_run=torch.full((12,), 16), with_loglik=True,
        repeat_cap=same_note_caps())
    assert len({tuple(r) for r in sampled.tolist()}) == 12  # every candidate has its own noise
    chosen = []
    for v in range(3):
        candidates = [(sampled[4 * v + k].tolist(), float(loglik[4 * v + k].sum()) / 32) for k in range(4)]
        chosen.append(choose(PRIMER, candidates, chosen))
    assert first == chosen
    assert len({tuple(c) for c in first}) == 3


def test_more_variations_keep_the_first_ones_with_candidates(tiny_model):
    options = dict(bars=2, seed=3, candidates=3, temperature=2.0, top_p=1.0)
    two = continue_melodies(tiny_model, [PRIMER], [SamplingOptions(variations=2, **options)])[0]
    four = continue_melodies(tiny_model, [PRIMER], [SamplingOptions(variations=4, **options)])[0]
    assert four[:2] == two


def test_repeated_bars_use_the_primer_and_earlier_bars():
    primer = BAR_A + BAR_B
    assert repeated_bars(primer, BAR_C + BAR_D + BAR_C + BAR_D) == (2, 4)  # bars 3, 4 repeat bars 1, 2
    assert repeated_bars(primer, BAR_A + BAR_C + BAR_C + BAR_B) == (3, 4)
    assert repeated_bars(primer, [0] * (2 * STEPS_PER_BAR)) == (0, 2)  # empty bars re-use nothing


def test_the_score_prefers_some_re_use_likelihood_and_difference(monkeypatch):
    monkeypatch.setattr(sampling, "PHRASE_END_WEIGHT", 0.0)  # its own test below
    monkeypatch.setattr(sampling, "SHORT_SKETCH_BARS", 0)  # the section-long weights; short sketches: below
    primer = BAR_A + BAR_B
    some_reuse = BAR_C + BAR_A + BAR_D + BAR_C  # 2 of 4 bars re-used
    none = BAR_C + BAR_D + bar("G4 B D G") + bar("A4 C E A")
    assert repeated_bars(primer, some_reuse) == (2, 4)
    # Structure: with 0.25 as the target, 0.5 and 0.0 are equally far; 1 of 4 wins.
    one_reuse = BAR_C + BAR_A + BAR_D + bar("G4 B D G")
    assert choice_score(primer, one_reuse, -1.0, []) > choice_score(primer, none, -1.0, [])
    # Likelihood breaks the tie between equally structured candidates.
    assert choose(primer, [(none, -1.2), (one_reuse, -1.0)], []) == one_reuse
    target = sampling.STRUCTURE_TARGET
    much_likelier = -1.0 + sampling.STRUCTURE_WEIGHT * (target - abs(0.25 - target)) + 0.1  # outweighs structure
    assert choose(primer, [(one_reuse, -1.0), (none, much_likelier)], []) == none
    # A copy of an already chosen variation loses against something new of equal merit.
    assert choose(primer, [(one_reuse, -1.0), (none, -1.0 - 0.0)], [one_reuse]) == none


def test_a_short_sketch_leans_harder_to_repeats(monkeypatch):
    """Real continuations of 2-bar sketches re-use ~0.21 of their bars and the told network re-uses
    fewer by itself: for a sketch under SHORT_SKETCH_BARS the choice gives re-use more weight, so a
    less likely candidate that brings bars back wins there and loses after a section-long sketch."""
    monkeypatch.setattr(sampling, "PHRASE_END_WEIGHT", 0.0)
    short = BAR_A + BAR_B
    long = short * (sampling.SHORT_SKETCH_BARS // 2)  # the same bars, as long as a section
    some_reuse = BAR_C + BAR_A + BAR_D + BAR_C
    none = BAR_C + BAR_D + bar("G4 B D G") + bar("A4 C E A")
    assert repeated_bars(short, some_reuse) == repeated_bars(long, some_reuse) == (2, 4)
    assert repeated_bars(long, none)[0] == 0

    def gap(primer):  # what re-use is worth over none, likelihood alike
        return choice_score(primer, some_reuse, -1.0, []) - choice_score(primer, none, -1.0, [])

    assert gap(short) > gap(long) > 0
    deficit = (gap(short) + gap(long)) / 2  # nats a step the re-using candidate is less likely by
    assert choose(short, [(none, -1.0), (some_reuse, -1.0 - deficit)], []) == some_reuse
    assert choose(long, [(none, -1.0), (some_reuse, -1.0 - deficit)], []) == none


def test_the_most_candidates_for_a_short_request(tiny_model):
    [[continuation]] = continue_melodies(tiny_model, [PRIMER], [SamplingOptions(bars=1, variations=1, candidates=8)])
    assert len(continuation) == 16 and all(0 <= e < NUM_CLASSES for e in continuation)


def test_with_chords_the_score_prefers_chord_tones_as_often_as_real_songs(monkeypatch):
    monkeypatch.setattr(sampling, "PHRASE_END_WEIGHT", 0.0)  # its own test below
    from model.music.chords import chords_per_step, parse_lead_sheet

    primer = BAR_A + BAR_B
    under_c = chords_per_step(parse_lead_sheet("C"), 64)
    under_d = chords_per_step(parse_lead_sheet("Dm"), 64)
    only_chord_tones = BAR_C + BAR_A + bar("G4 E C E") + bar("C5 G E G")  # 15 of 16 notes in C major's triad
    some_passing = bar("C4 D E F") + bar("G4 A G E") + BAR_A + bar("E4 D C D")  # 11 of 16

    def chord_term(events, chords):
        return choice_score(primer, events, -1.0, [], chords) - choice_score(primer, events, -1.0, [])

    weight = sampling.CHORD_TONE_WEIGHT
    assert chord_term(some_passing, under_c) == pytest.approx(-weight * abs(11 / 16 - 0.67))
    assert chord_term(only_chord_tones, under_c) == pytest.approx(-weight * abs(15 / 16 - 0.67))
    assert chord_term(only_chord_tones, under_d) < chord_term(some_passing, under_c)  # Dm: 3 of 16
    assert choose(primer, [(only_chord_tones, -1.0), (some_passing, -1.0)], [], under_c) == some_passing
    assert choose(primer, [(only_chord_tones, -1.0), (some_passing, -1.0)], []) == only_chord_tones


def test_a_pickup_primer_sets_the_pace_from_its_first_note(monkeypatch):
    """Folk tunes open with a pickup: a bar of mostly silence, then the tune. The density term
    takes the primer's pace from its first note, so it prefers a continuation that keeps the
    tune's pace to one as sparse as the primer's first bar."""
    monkeypatch.setattr(sampling, "STRUCTURE_WEIGHT", 0.0)  # density alone decides
    monkeypatch.setattr(sampling, "RANGE_WEIGHT", 0.0)
    pickup = parse_notes("r:3 G3")[:STEPS_PER_BAR]  # three beats of rest, then one quarter note
    primer = pickup + bar("C4 D E F")  # five notes; four quarter notes a bar once the tune starts
    # (counted from the bar line the primer would have 2.5 notes a bar, and two a bar would win)
    in_pace = BAR_C + BAR_D + BAR_A + BAR_B  # four notes a bar, as the tune
    sparse = bar("E4:2 G:2") + bar("F4:2 A:2") + bar("C4:2 G:2") + bar("D4:2 F:2")  # two notes a bar
    assert choose(primer, [(sparse, -1.0), (in_pace, -1.0)], []) == in_pace


def test_a_variation_shares_at_most_half_its_bars_with_another():
    """Four variations are four ideas (issue 23): a candidate sharing more than half its bars (at
    the same place, Jaccard >= 0.75) with a chosen variation is not chosen while another is not."""
    primer = BAR_A + BAR_B
    first = BAR_C + BAR_D + BAR_A + BAR_B
    near = BAR_C + BAR_D + BAR_A + bar("G4 B D G")  # 3 of 4 bars as `first`: likelier, and it would win
    half = BAR_C + BAR_D + bar("A4 C E A") + bar("G4 B D G")  # 2 of 4: allowed
    assert sampling.shared_bars(near, first) == 3 and sampling.shared_bars(half, first) == 2
    assert choice_score(primer, near, -0.5, [first]) > choice_score(primer, half, -1.5, [first])
    assert choose(primer, [(near, -0.5), (half, -1.5)], [first]) == half
    # When every candidate is a near-copy, the one sharing the fewest bars.
    copy = list(first)
    assert choose(primer, [(copy, -0.1), (near, -0.5)], [first]) == near
    assert choose(primer, [(near, -0.5), (half, -1.5)], []) == near  # nothing chosen yet: the score decides


def test_a_continuation_ending_like_a_phrase_is_preferred():
    """Issue 23: real 8-bar continuations end on a long note of the tonic triad (or, told the chords,
    a chord tone) more often than the sampler's did."""
    primer = BAR_A + BAR_B  # C major
    body = BAR_C + BAR_D + bar("G4 B D G")
    home, away, short = body + bar("A4 G F E"), body + bar("A4 G E D"), body + parse_notes("A4 G F E:0.5 r:0.5")[:16]
    assert sampling.ends_on_stable_note(primer, home) and not sampling.ends_on_stable_note(primer, away)
    assert not sampling.ends_on_stable_note(primer, short)  # an eighth: no breath
    assert choice_score(primer, home, -1.0, []) == pytest.approx(
        choice_score(primer, away, -1.0, []) + sampling.PHRASE_END_WEIGHT)
    g7 = chords_per_step(parse_lead_sheet("G7"), 64)  # D is a tone of G7: a stable end under it
    assert sampling.ends_on_stable_note(primer, away, g7) and not sampling.ends_on_stable_note(primer, home, g7)
