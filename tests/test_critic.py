"""The candidate choice's critic (model.melody.critic): its trees walked in numpy as scikit-learn
walks them, the shipped critic hears what gives the network away, and the choice listens to it."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from model.lab.critic import add_round, export
from model.melody import critic, sampling
from model.melody.sampling import SamplingOptions, choose, continue_melodies
from model.music.events import NO_EVENT, STEPS_PER_BAR, events_to_notes
from model.music.primer import parse_notes


def bar(text: str) -> list[int]:
    return parse_notes(text)[:STEPS_PER_BAR]


# an 8-bar sketch: a 2-bar hook, an answer, the hook again, a close
HOOK = bar("E4:0.5 G:0.5 A:1 G:0.5 E:0.5 D:1") + bar("C4:1 D:0.5 E:0.5 G:2")
ANSWER = bar("A4:0.5 G:0.5 E:1 D:0.5 C:0.5 D:1") + bar("E4:1 D:1 C:2")
SKETCH = HOOK + ANSWER + HOOK + bar("A4:1 G:1 E:1 D:1") + bar("C4:4")


def test_the_exported_trees_give_scikit_learns_log_odds():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    heard = [critic.FEATURE_NAMES.index(name) for name in critic.heard()]  # the trees see these columns
    x = rng.normal(size=(400, len(critic.FEATURE_NAMES)))  # rows of features(): all of them
    y = (x[:, 0] + x[:, 3] * x[:, 5] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    clf = HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=7).fit(x[:, heard], y)
    walked = critic.Critic(export(clf)).logit(x)
    assert np.allclose(walked, clf.decision_function(x[:, heard]))
    assert ((walked > 0) == clf.predict(x[:, heard]).astype(bool)).all()
    assert len(heard) == len(critic.FEATURE_NAMES) - len(critic.UNHEARD)


def test_a_further_rounds_trees_add_to_the_critics_log_odds():
    """model.lab.critic --round 2: the second round's trees are laid after the first's, and the
    critic's log-odds are the two rounds' added up (the first round's judgement is kept)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    heard = [critic.FEATURE_NAMES.index(name) for name in critic.heard()]
    x = rng.normal(size=(300, len(critic.FEATURE_NAMES)))
    first = export(HistGradientBoostingClassifier(max_iter=10).fit(x[:, heard], x[:, 0] > 0))
    second = export(HistGradientBoostingClassifier(max_iter=7).fit(x[:, heard], x[:, 1] * x[:, 2] > 0.3))
    both = add_round(first, second)
    assert both["round_trees"] == [10, 7] and len(both["trees"]) == 17
    added = critic.Critic(first).logit(x) + critic.Critic(second).logit(x)
    assert np.allclose(critic.Critic(both).logit(x), added)
    assert not np.allclose(critic.Critic(both).logit(x), critic.Critic(first).logit(x))
    assert np.allclose(critic.Critic(both).logit(x, rounds=1), critic.Critic(first).logit(x))  # its first round alone
    third = add_round(both, first)
    assert len(third["round_trees"]) == 3 and np.allclose(critic.Critic(third).logit(x, rounds=2), added)
    with pytest.raises(ValueError, match="different features"):
        add_round(first, {**second, "features": second["features"][1:]})


def _critic_whose_third_round_hates_dense_takes() -> critic.Critic:
    """Two rounds that judge nothing (a leaf of 0), and a third: more than 6 notes a bar is generated."""
    column = critic.heard().index("notes per bar")
    silent = {"feature": [0], "threshold": [0.0], "left": [0], "right": [0], "leaf": [True], "value": [0.0]}
    split = {"feature": [column, 0, 0], "threshold": [6.0, 0.0, 0.0], "left": [1, 0, 0], "right": [2, 0, 0],
             "leaf": [False, True, True], "value": [0.0, -50.0, 50.0]}
    return critic.Critic({"features": critic.heard(), "baseline": 0.0, "trees": [silent, silent, split],
                          "round_trees": [1, 1, 1], "round_baselines": [0.0, 0.0, 0.0]})


def test_a_short_sketch_is_chosen_for_by_the_critics_first_rounds(monkeypatch):
    """The critic's later rounds learned from mostly long sketches; a sketch under
    SHORT_SKETCH_BARS is judged by its first SHORT_SKETCH_CRITIC_ROUNDS only. Here only the third
    round has an opinion (dense takes are generated), and the choice's other terms are silenced, so
    without it the first candidate is kept (a tie)."""
    monkeypatch.setattr(critic, "load_critic", lambda path=None: _critic_whose_third_round_hates_dense_takes())
    for weight in ("STRUCTURE_WEIGHT", "SHORT_STRUCTURE_WEIGHT", "DENSITY_WEIGHT", "RANGE_WEIGHT", "PHRASE_END_WEIGHT"):
        monkeypatch.setattr(sampling, weight, 0.0)
    eighths = bar("C4:0.5 D:0.5 E:0.5 G:0.5 A:0.5 G:0.5 E:0.5 D:0.5")
    dense, sparse = eighths * 8, bar("C4:1 E:1 G:1 E:1") * 8
    candidates = [(dense, -1.0), (sparse, -1.0)]
    assert sampling.SHORT_SKETCH_CRITIC_ROUNDS == 2
    assert choose(eighths * 2, candidates, []) == dense  # 2 bars: the third round is not heard
    assert choose(eighths * sampling.SHORT_SKETCH_BARS, candidates, []) == sparse  # 8 bars: it is
    monkeypatch.setattr(sampling, "SHORT_SKETCH_CRITIC_ROUNDS", None)  # every round for every sketch
    assert choose(eighths * 2, candidates, []) == sparse


def test_the_shipped_critic_hears_a_loop_as_generated():
    """The sketch's hook and answer coming back sounds like a song; one bar looped 8 times like the
    network at its worst."""
    song_like = HOOK + ANSWER + HOOK + bar("A4:1 G:1 E:1 D:1") + bar("C4:4")
    loop = bar("C4:1 D:1 E:1 G:1") * 8
    song, looped = critic.fake_logits(SKETCH, [song_like, loop])
    assert looped > song + 0.5


def test_the_critic_cannot_choose_a_stuck_take(tiny_model, monkeypatch):
    """The critic never heard the sampler hold one pitch for long (the same-note cap), so it does
    not judge runs (UNHEARD); whatever it prefers, the cap keeps stuck takes out of the candidates."""
    assert not {critic.FEATURE_NAMES.index(name) for name in critic.UNHEARD} & set(critic.load_critic().columns)
    monkeypatch.setattr(sampling, "CRITIC_WEIGHT", 100.0)
    options = SamplingOptions(bars=8, variations=4, candidates=8, temperature=2.0, top_p=1.0, seed=4)
    for take in continue_melodies(tiny_model, [SKETCH], [options])[0]:
        pitches = [n.pitch for n in events_to_notes(take)]
        runs = [len(list(group)) for _, group in itertools.groupby(pitches)]
        assert max(runs) <= sampling.MAX_SAME_NOTES


def test_a_sketch_ending_inside_a_bar_is_judged_from_the_next_bar_line():
    sketch = SKETCH[:-4]  # the last note cut short: the continuation's first 4 steps close the bar
    continuation = [NO_EVENT] * 4 + HOOK * 4
    [got] = critic.fake_logits(sketch, [continuation])
    want = critic.load_critic().logit([critic.features(SKETCH[:-4] + [NO_EVENT] * 4, HOOK * 4)])[0]
    assert got == pytest.approx(want)


def test_a_long_sketch_is_judged_by_its_last_32_bars():
    """The critic learned sketches of at most 32 bars (model.lab.c2st's windows)."""
    continuation = HOOK * 4
    older = bar("G4:4") * 16  # 16 bars the critic should not hear
    [long] = critic.fake_logits(older + SKETCH * 4, [continuation])
    [last] = critic.fake_logits(SKETCH * 4, [continuation])
    assert long == pytest.approx(last)
    [heard] = critic.fake_logits(older + SKETCH * 2, [continuation])  # 32 bars: the G4 bars are heard
    [without] = critic.fake_logits(SKETCH * 2, [continuation])
    assert heard != pytest.approx(without)


def test_the_choice_takes_the_candidate_the_critic_believes(monkeypatch):
    """Two candidates equal on every other count: the one the critic hears as a song is chosen,
    and without the critic the first is (ties go to the earlier candidate)."""
    for name in ("STRUCTURE_WEIGHT", "DENSITY_WEIGHT", "RANGE_WEIGHT", "PHRASE_END_WEIGHT", "SAMENESS_WEIGHT"):
        monkeypatch.setattr(sampling, name, 0.0)
    loop = bar("C4:1 D:1 E:1 G:1") * 8
    song_like = HOOK + ANSWER + HOOK + bar("A4:1 G:1 E:1 D:1") + bar("C4:4")
    assert choose(SKETCH, [(loop, -1.0), (song_like, -1.0)], []) == song_like
    monkeypatch.setattr(sampling, "CRITIC_WEIGHT", 0.0)
    assert choose(SKETCH, [(loop, -1.0), (song_like, -1.0)], []) == loop


def test_without_a_critic_file_the_choice_goes_on_without_it(tmp_path, monkeypatch):
    assert critic.load_critic(tmp_path / "critic.json") is None
    monkeypatch.setattr(critic, "load_critic", lambda: None)
    assert critic.fake_logits(SKETCH, [SKETCH, SKETCH]).tolist() == [0.0, 0.0]


def test_a_critic_of_other_features_is_refused(tmp_path):
    stored = json.loads(critic.CRITIC_WEIGHTS.read_text())
    stored["features"] = stored["features"][:-1]
    path = tmp_path / "critic.json"
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="other features"):
        critic.load_critic(path)
