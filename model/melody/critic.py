"""The critic (issue 23): how much a continuation sounds like the network's rather than a real song's.

A classifier two-sample test (model.lab.c2st) told the sampler's 8-bar continuations from the real
next 8 bars of held-out songs with ROC AUC 0.74, from many small differences read together (no
one feature above 0.59): density and register against the sketch, rests, onsets in the bar, the
sketch's bars and motifs coming back. No sampler knob moved it. So the candidate choice
(model.melody.sampling.choose) asks a critic: gradient-boosted trees over what a listener hears of
(sketch, continuation), learned on the training songs' windows, real next bars against the
sampler's own (python -m model.lab.critic POP909_FOLDER), shipped as
model/weights/critic.json and walked here in numpy (no scikit-learn at run time). It ships in three
rounds (--round 2, 3): each round's trees learned real bars against the sampler with the rounds
before in its choice, and their log-odds add up (two-sample mean 0.648 -> 0.637 -> 0.632; the
choice lets short sketches hear only the first two: model.melody.sampling.SHORT_SKETCH_CRITIC_ROUNDS).

`features` is also what model.lab.c2st measures with: one home for what a listener hears.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from model.melody.form import WINDOW, bar_sets, jaccard
from model.music.events import PAD, STEPS_PER_BAR, events_to_notes

CRITIC_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "critic.json"
# Features the critic does not judge from, each some other rule's job. Runs of one pitch: the
# same-note cap never let it hear a long one, so a critic that heard runs took them for a song's
# and chose stuck takes (at temperature 1.3, 5.1% of takes with a run of 6, 3.9% before it). The
# last note's length: the cadence and the choice's phrase-end term lengthen it, so a critic that
# heard it fought them (phrase ends 0.23-0.25 with chords, real 0.32).
UNHEARD = ("longest run", "repeated notes", "last note length")


def _histogram(values, edges) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)[: len(edges) + 1]
    return (counts / max(counts.sum(), 1)).tolist()


def _patterns(pitches: list[int]) -> set[tuple[int, int, int]]:
    intervals = np.diff(pitches).tolist()
    return {tuple(intervals[i : i + 3]) for i in range(len(intervals) - 2)}


FEATURE_NAMES: list[str] = []


@lru_cache(maxsize=16)
def _context(context: tuple[int, ...]) -> tuple:
    """What features() reads of a context: the same for every candidate of one sketch, so worked
    out once (its notes, their pitches, its key's pitch classes, its bars, its 4-note patterns)."""
    before = events_to_notes(list(context))
    old = [n.pitch for n in before] or [60]
    key = frozenset(pc for pc, _ in Counter(p % 12 for p in old).most_common(7))
    return before, old, key, bar_sets(list(context)), _patterns(old)


def features(context: list[int], piece: list[int]) -> list[float]:
    """What a listener hears of a continuation `piece` of `context`, both starting at a bar line."""
    before, old, key, theirs, old_patterns = _context(tuple(context))
    notes = events_to_notes(piece)
    pitches = [n.pitch for n in notes]
    onsets = [n.start for n in notes]
    lengths = [n.end - n.start for n in notes]
    sounding = np.zeros(len(piece), bool)
    for n in notes:
        sounding[n.start : n.end] = True
    longest_rest, run = 0, 0
    for s in sounding:
        run = 0 if s else run + 1
        longest_rest = max(longest_rest, run)
    rests = float((~sounding).mean()) if len(piece) else 0.0
    same = [a == b for a, b in zip(pitches, pitches[1:])]
    longest_same = run = 0
    for s in same:
        run = run + 1 if s else 0
        longest_same = max(longest_same, run)
    mine = bar_sets(piece)
    copies = [any(jaccard(b, c) >= 0.75 for c in theirs) for b in mine if b]
    reuses = [any(jaccard(b, c) >= 0.5 for c in theirs) for b in mine if b]
    self_copies = [any(jaccard(b, c) >= 0.75 for c in mine[:i]) for i, b in enumerate(mine) if b]
    patterns = _patterns(pitches)
    steps = np.diff(pitches)
    turns = float(np.mean(np.sign(steps[1:]) * np.sign(steps[:-1]) < 0)) if len(steps) > 1 else 0.0
    bars = max(len(piece), 1) / STEPS_PER_BAR
    row = {
        "notes per bar": len(notes) / bars,
        "density vs context": np.log((len(notes) / max(len(piece), 1) + 1e-3)
                                     / (len(before) / max(len(context), 1) + 1e-3)),
        "rest share": rests,
        "longest rest": longest_rest,
        "mean pitch vs context": np.mean(pitches) - np.mean(old) if pitches else 0.0,
        "top vs context peak": max(pitches) - max(old) if pitches else 0.0,
        "bottom vs context low": min(pitches) - min(old) if pitches else 0.0,
        "range": max(pitches) - min(pitches) if pitches else 0.0,
        "key fit": np.mean([p % 12 in key for p in pitches]) if pitches else 0.0,
        "repeated notes": np.mean(same) if same else 0.0,
        "longest run": longest_same + 1,
        "bars copying context": np.mean(copies) if copies else 0.0,
        "bars re-using context": np.mean(reuses) if reuses else 0.0,
        "bars copying own": np.mean(self_copies) if self_copies else 0.0,
        "context 4-note patterns": len(patterns & old_patterns) / max(len(patterns), 1),
        "contour turns": turns,
        "last note length": lengths[-1] if lengths else 0.0,
    }
    hist = {
        "interval": (np.abs(steps), (0, 1, 2, 3, 4, 5, 7, 12)),
        "ioi": (np.diff(onsets), (1, 2, 3, 4, 6, 8, 12, 16)),
        "length": (lengths, (1, 2, 3, 4, 6, 8, 12, 16)),
        "onset in beat": ([o % 4 for o in onsets], (0, 1, 2)),
        "onset in bar (beat)": ([o % STEPS_PER_BAR // 4 for o in onsets], (0, 1, 2)),
    }
    for name, (values, edges) in hist.items():
        for i, share in enumerate(_histogram(np.asarray(values, dtype=float), edges)):
            row[f"{name} hist {i}"] = share
    if not FEATURE_NAMES:
        FEATURE_NAMES.extend(row)
    return [float(v) for v in row.values()]


def heard() -> list[str]:
    """The names of the features the critic judges from: features() but UNHEARD."""
    if not FEATURE_NAMES:
        features([0] * STEPS_PER_BAR, [0] * STEPS_PER_BAR)  # names them
    return [name for name in FEATURE_NAMES if name not in UNHEARD]


class Critic:
    """Gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier, exported by
    model.lab.critic): per tree, its nodes' feature, threshold, children, leaf flag and value. The
    trees are laid end to end and walked together, a level at a time."""

    def __init__(self, stored: dict):
        heard()  # names FEATURE_NAMES
        self.columns = np.array([FEATURE_NAMES.index(name) for name in stored["features"]])  # of features()
        trees = stored["trees"]
        # rounds (model.lab.critic --round): each one's trees and baseline, laid end to end
        self.round_trees = list(stored.get("round_trees", [len(trees)]))
        self.round_baselines = list(stored.get("round_baselines", [stored["baseline"]]))
        if sum(self.round_trees) != len(trees) or len(self.round_baselines) != len(self.round_trees):
            raise ValueError("the critic's rounds do not add up to its trees")
        self.roots = np.cumsum([0] + [len(t["leaf"]) for t in trees])[:-1]  # each tree's first node
        join = lambda key: np.concatenate([np.asarray(t[key]) for t in trees])  # noqa: E731
        self.feature, self.threshold = join("feature"), join("threshold")
        self.leaf, self.value = join("leaf"), join("value")
        shift = np.concatenate([np.full(len(t["leaf"]), root) for t, root in zip(trees, self.roots)])
        self.left, self.right = join("left") + shift, join("right") + shift

    def logit(self, rows, rounds: int | None = None) -> np.ndarray:
        """(N,) log-odds that each row of features() (N, F) is generated rather than real, by the
        critic's first `rounds` rounds (None: all of them)."""
        rows = np.atleast_2d(np.asarray(rows, dtype=float))[:, self.columns]
        rounds = len(self.round_trees) if rounds is None else rounds
        roots = self.roots[: sum(self.round_trees[:rounds])]  # a tree's nodes lead only to its own
        node = np.broadcast_to(roots[:, None], (len(roots), len(rows))).copy()  # (trees, N)
        which = np.arange(len(rows))[None, :]
        while not (done := self.leaf[node]).all():
            x = rows[which, self.feature[node]]
            node = np.where(done, node, np.where(x <= self.threshold[node], self.left[node], self.right[node]))
        return sum(self.round_baselines[:rounds]) + self.value[node].sum(0)


@lru_cache(maxsize=2)
def load_critic(path: str | Path = CRITIC_WEIGHTS) -> Critic | None:
    """The shipped critic, or None when there is none (the choice then goes without it)."""
    path = Path(path)
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored["features"] != heard():
        raise ValueError(f"{path} was trained on other features")
    return Critic(stored)


def fake_logits(primer: list[int], continuations: list[list[int]], rounds: int | None = None) -> np.ndarray:
    """Per continuation of `primer` (a sketch from a bar line), the critic's log-odds that it is
    the network's, not a song's (zeros without a critic), by its first `rounds` rounds (None: all).
    Each pair is cut at the first bar line at or after the sketch's end (a sketch may end inside a
    bar), and the sketch kept to its last WINDOW bars before it: the way the critic learned them
    (model.lab.c2st's windows)."""
    critic = load_critic()
    if critic is None or not continuations:
        return np.zeros(len(continuations))
    primer = [e for e in primer if e != PAD]  # a 1-step sketch has a PAD before it
    cut = -(-len(primer) // STEPS_PER_BAR) * STEPS_PER_BAR
    first = max(0, cut - WINDOW * STEPS_PER_BAR)
    rows = []
    for continuation in continuations:
        whole = primer + list(continuation)
        rows.append(features(whole[first:cut], whole[cut:]))
    return critic.logit(rows, rounds)
