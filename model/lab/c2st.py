"""Can a classifier tell the product's continuations from real pop? (EVALUATION.md, two-sample test)

    python -m model.lab.c2st FOLDER [--seed 0] [--features listener|unseen] [--json]

Windows inside held-out songs (ids divisible by 10): contexts ending at bars 2, 10, 18, ... of the
song's annotated bars, the last up to 32 bars of it as the sketch; the real next 8 bars against
one continuation of the same context by each generator: the product (the sampler's defaults, one
variation), a 5-gram event sampler trained on the training songs, "repeat the context's last 8
bars", and the real bars themselves with random labels (the calibration: ~0.5). The context is
handed over as events to its bar line, so real and generated bars lie on the same steps.

Features of each (context, continuation) pair, what a listener hears: density and its ratio to
the context's, rests, register and range against the context, interval / inter-onset / length /
onset-in-bar histograms, key fit (the context's 7 commonest pitch classes), repeated notes and the
longest run of one pitch, bars copying (Jaccard >= 0.75) or re-using (>= 0.5) a context bar, bars
copying an earlier bar of the continuation, the context's 4-note interval patterns re-used,
contour turns, the last note's length (model.melody.critic.features: the candidate choice's critic
learns from these on the training songs). --features unseen: a second set the critic never saw
(unseen_features). Gradient boosting and logistic regression, 5-fold cross-validation grouped by
song: ROC AUC and accuracy (0.5: indistinguishable).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np

from model.lab.baselines import WittenBellNGram
from model.lab.data import load_songs, split
from model.melody.critic import FEATURE_NAMES, features
from model.melody.form import bar_sets, copies
from model.melody.sampling import SamplingOptions, continue_melodies, load_model
from model.music.events import NO_EVENT, NOTE_OFF, NUM_CLASSES, PAD, STEPS_PER_BAR, events_to_notes

CONTEXT_BARS = 32
BARS = 8
STEPS = BARS * STEPS_PER_BAR
FIRST_END, EVERY = 2, 8  # contexts end at bars 2, 10, 18, ...
NGRAM_ORDER = 5


def windows(songs, every: int = EVERY) -> list[tuple[str, list[int], list[int]]]:
    """(song id, context, real next 8 bars) for every context end bar of every song."""
    found = []
    for song in songs:
        events = song.aligned()[0].tolist()
        for end in range(FIRST_END, len(events) // STEPS_PER_BAR - BARS + 1, every):
            context = events[max(0, end - CONTEXT_BARS) * STEPS_PER_BAR : end * STEPS_PER_BAR]
            real = events[end * STEPS_PER_BAR : end * STEPS_PER_BAR + STEPS]
            if any(e >= 2 for e in context) and sum(e >= 2 for e in real) >= 4:
                found.append((song.song_id, context, real))
    return found


UNSEEN_NAMES: list[str] = []


def unseen_features(context: list[int], piece: list[int]) -> list[float]:
    """A second set of what a listener hears, one the choice's critic (model.melody.critic, which
    learns from `features`) never saw: does the critic only fool its own ears? Pitch classes from
    the context's commonest one, notes per bar (spread, most, fewest, in the last bar), steps and
    leaps, rising share, pitch slope, the bars' mean pitches spread, bars without a downbeat note,
    pitch-class overlap with the context, the bar of the top note, note-length entropy and mean
    against the context's, pitch spread against the context's, the longest run of bars copying a
    context bar, the last interval's direction."""
    notes, old = events_to_notes(piece), events_to_notes(context)
    pitches = np.array([n.pitch for n in notes] or [60])
    before = np.array([n.pitch for n in old] or [60])
    lengths = np.array([n.end - n.start for n in notes] or [0])
    old_lengths = np.array([n.end - n.start for n in old] or [1])
    home = Counter(int(p) % 12 for p in before).most_common(1)[0][0]
    classes = np.bincount((pitches - home) % 12, minlength=12) / len(pitches)
    per_bar = np.bincount([n.start // STEPS_PER_BAR for n in notes], minlength=BARS)[:BARS]
    steps = np.diff(pitches) if len(pitches) > 1 else np.array([0])
    slope = float(np.polyfit(np.arange(len(pitches)), pitches, 1)[0]) if len(pitches) > 2 else 0.0
    mine, theirs = bar_sets(piece), bar_sets(context)
    bar_means = [np.mean([p for _, p in b]) for b in mine if b]
    copying = [any(copies(c, b) for c in theirs) for b in mine]
    run = longest = 0
    for c in copying:
        run = run + 1 if c else 0
        longest = max(longest, run)
    shares = np.bincount(np.minimum(lengths, STEPS_PER_BAR)) / len(lengths)
    row = {**{f"pitch class {i} from the context's commonest": v for i, v in enumerate(classes)},
           "notes per bar spread": per_bar.std(), "most notes in a bar": per_bar.max(),
           "fewest notes in a bar": per_bar.min(), "notes in the last bar": per_bar[-1],
           "steps (<= 2)": np.mean(np.abs(steps) <= 2), "leaps (>= 7)": np.mean(np.abs(steps) >= 7),
           "rising": np.mean(steps > 0), "pitch slope": slope,
           "bar means spread": np.std(bar_means) if bar_means else 0,
           "bars without a downbeat note": np.mean([not any(o == 0 for o, _ in b) for b in mine]),
           "pitch classes shared with the context": len(set(pitches % 12) & set(before % 12))
           / len(set(pitches % 12) | set(before % 12)),
           "bar of the top note": notes[int(np.argmax(pitches))].start // STEPS_PER_BAR if notes else 0,
           "note-length entropy": -sum(v * np.log(v) for v in shares if v > 0),
           "mean length vs context": np.log(lengths.mean() + 1) - np.log(old_lengths.mean() + 1),
           "pitch spread vs context": pitches.std() - before.std(), "longest run of bars copying context": longest,
           "last interval's direction": float(np.sign(steps[-1]))}  # fmt: skip
    if not UNSEEN_NAMES:
        UNSEEN_NAMES.extend(row)
    return [float(v) for v in row.values()]


def ngram_continuations(model: WittenBellNGram, contexts: list[list[int]], seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for context in contexts:
        history = [PAD] * NGRAM_ORDER + list(context)
        for _ in range(STEPS):
            ctx = tuple(history[len(history) - NGRAM_ORDER + 1 :])
            probs = [model.prob(ctx, e) for e in range(NUM_CLASSES)]
            history.append(rng.choices(range(NUM_CLASSES), probs)[0])
        out.append(history[-STEPS:])
    return out


def product_continuations(contexts: list[list[int]], seed: int, chunk: int | None = None) -> list[list[int]]:
    """One continuation per context by the sampler with its defaults, from the context's bar line
    (as the real bars), in batched passes of `chunk` contexts (all at once when None)."""
    model, out = load_model(), []
    chunk = chunk or max(len(contexts), 1)
    for start in range(0, len(contexts), chunk):
        part = contexts[start : start + chunk]
        options = [SamplingOptions(bars=BARS, variations=1, seed=seed)] * len(part)
        # the sampler starts on a context's closing NOTE_OFF step (it decides how the last note ends)
        out += [p[1:] if c[-1] == NOTE_OFF else p for c, (p,) in zip(part, continue_melodies(model, part, options))]
        if chunk < len(contexts):
            print(f"  sampled {len(out)} / {len(contexts)}", flush=True)
    return out


def two_sample(real_x, fake_x, groups, seed: int = 0, fake_groups=None) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - the eval extra
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.metrics import accuracy_score, roc_auc_score  # noqa: PLC0415
    from sklearn.model_selection import GroupKFold, cross_val_predict  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    x = np.vstack([real_x, fake_x])
    y = np.r_[np.zeros(len(real_x)), np.ones(len(fake_x))]
    g = np.r_[groups, groups if fake_groups is None else fake_groups]
    row = {}
    for name, clf in (("gb", HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)),
                      ("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)))):
        p = cross_val_predict(clf, x, y, groups=g, cv=GroupKFold(5), method="predict_proba")[:, 1]
        row[f"{name} auc"] = float(roc_auc_score(y, p))
        row[f"{name} acc"] = float(accuracy_score(y, p > 0.5))
    return row


def separating(real_x, fake_x, names: list[str], top: int = 6) -> list[str]:
    """The features whose means differ most, in pooled standard deviations: what gives it away."""
    real_x, fake_x = np.asarray(real_x), np.asarray(fake_x)
    spread = np.vstack([real_x, fake_x]).std(0) + 1e-9
    gap = (fake_x.mean(0) - real_x.mean(0)) / spread
    order = np.argsort(-np.abs(gap))[:top]
    return [f"{names[i]}: real {real_x[:, i].mean():.2f}, generated {fake_x[:, i].mean():.2f}" for i in order]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generators", nargs="+", default=["real", "repeat", "ngram", "product"])
    parser.add_argument("--features", choices=("listener", "unseen"), default="listener",
                        help="unseen: a second set, one the choice's critic never saw")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    measure, names = (features, FEATURE_NAMES) if args.features == "listener" else (unseen_features, UNSEEN_NAMES)
    train, held_out = split(load_songs(args.folder)[0])
    found = windows(held_out)
    groups = np.array([int(song_id) for song_id, _, _ in found])
    contexts = [c for _, c, _ in found]
    real_x = [measure(c, r) for _, c, r in found]
    results = []
    for name in args.generators:
        if name == "real":  # random labels: half the real pairs called generated
            rng = np.random.default_rng(args.seed)
            half = rng.permutation(len(real_x))
            a, b = half[: len(half) // 2], half[len(half) // 2 : 2 * (len(half) // 2)]
            row = two_sample(np.asarray(real_x)[a], np.asarray(real_x)[b], groups[a], args.seed, groups[b])
            results.append({"generator": "real vs real", "windows": len(a), **row})
            continue
        if name == "repeat":
            pieces = [(c * BARS)[-STEPS:] if len(c) < STEPS else c[-STEPS:] for c in contexts]
        elif name == "ngram":
            pieces = ngram_continuations(WittenBellNGram(NGRAM_ORDER).fit(train), contexts, args.seed)
        else:
            pieces = product_continuations(contexts, args.seed)
        pieces = [p + [NO_EVENT] * (STEPS - len(p)) for p in pieces]
        fake_x = [measure(c, p) for c, p in zip(contexts, pieces)]
        results.append({"generator": name, "windows": len(found), **two_sample(real_x, fake_x, groups, args.seed),
                        "gives it away": separating(real_x, fake_x, names)})
    if args.json:
        print(json.dumps(results))
        return
    for row in results:
        print(" | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                         if k != "gives it away"))
        for line in row.get("gives it away", []):
            print("    " + line)


if __name__ == "__main__":
    main()
