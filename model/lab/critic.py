"""Learn the candidate choice's critic (model.melody.critic) from the training songs.

    python -m model.lab.critic FOLDER [--every 6] [--seed 0] [--out model/weights/critic.json] [--round 2]

Windows of the training songs (ids not divisible by 10) as the two-sample test builds them
(model.lab.c2st.windows: the last up to 32 bars before a bar line, the next 8 bars), every
--every bars. Each context is continued by the sampler with its defaults but no critic (one
variation); gradient-boosted trees learn real next bars (0) against the sampler's (1) from
model.melody.critic.features but UNHEARD. The trees go to model/weights/critic.json, walked in
numpy at run time. Prints the critic's ROC AUC on the held-out songs' windows (real against the
sampler's), 6,000-odd windows in about 8 minutes on 2 CPU cores.

--round 2 (3, ...): a further round on top of the critic in --out. The sampler keeps that critic
in its choice while it continues the windows, so the new trees learn what still gives its choice
away; they are added to the critic's own trees (log-odds add up), and the file is rewritten.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from model.lab.c2st import STEPS, product_continuations, windows
from model.lab.data import load_songs, split
from model.melody import critic, sampling
from model.music.events import NO_EVENT

TREES, LEAVES, RATE = 150, 15, 0.05  # small: the critic ranks a few candidates, it need not be sharp
CHUNK = 400  # windows per batched pass


def sampled(contexts: list[list[int]], seed: int, with_critic: bool = False) -> list[list[int]]:
    """One continuation per context, padded to 8 bars, as model.lab.c2st's product, but without
    the critic unless with_critic."""
    kept = sampling.CRITIC_WEIGHT
    sampling.CRITIC_WEIGHT = kept if with_critic else 0.0
    try:
        return [p + [NO_EVENT] * (STEPS - len(p)) for p in product_continuations(contexts, seed, CHUNK)]
    finally:
        sampling.CRITIC_WEIGHT = kept


def export(clf) -> dict:
    """The fitted HistGradientBoostingClassifier's trees, as model.melody.critic.Critic reads them."""
    trees = []
    for (predictor,) in clf._predictors:
        nodes = predictor.nodes  # every feature is numeric and never missing: x <= threshold goes left
        trees.append({"feature": nodes["feature_idx"].tolist(), "threshold": nodes["num_threshold"].tolist(),
                      "left": nodes["left"].tolist(), "right": nodes["right"].tolist(),
                      "leaf": nodes["is_leaf"].astype(bool).tolist(), "value": nodes["value"].tolist()})
    baseline = float(np.ravel(clf._baseline_prediction)[0])
    return {"features": critic.heard(), "baseline": baseline, "trees": trees,
            "round_trees": [len(trees)], "round_baselines": [baseline]}


def add_round(stored: dict, new: dict) -> dict:
    """A critic whose log-odds are stored's plus new's: their trees end to end, baselines added."""
    if stored["features"] != new["features"]:
        raise ValueError("the two critics hear different features")
    before, after = critic.Critic(stored), critic.Critic(new)  # each one's rounds (a file of one may not say)
    return {"features": stored["features"], "baseline": stored["baseline"] + new["baseline"],
            "trees": stored["trees"] + new["trees"], "round_trees": before.round_trees + after.round_trees,
            "round_baselines": before.round_baselines + after.round_baselines}


def main(argv: list[str] | None = None) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - the eval extra
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--every", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=critic.CRITIC_WEIGHTS)
    parser.add_argument("--round", type=int, default=1, help="2 or more: learn on top of the critic in --out")
    args = parser.parse_args(argv)
    started = time.time()
    before = None
    if args.round > 1:
        if args.out.resolve() != critic.CRITIC_WEIGHTS.resolve() or not args.out.is_file():
            parser.error(f"a further round samples with the shipped critic: --out must be {critic.CRITIC_WEIGHTS}")
        before = json.loads(args.out.read_text())
        done = len(critic.load_critic(args.out).round_trees)
        if done != args.round - 1:
            parser.error(f"{args.out} holds {done} round(s): --round {done + 1} is next")
    with_critic = before is not None
    train, held_out = split(load_songs(args.folder)[0])
    found = windows(train, every=args.every)
    print(f"{len(found)} windows of {len(train)} training songs, the sampler {'with' if with_critic else 'without'} "
          f"the critic")
    contexts = [c for _, c, _ in found]
    real = [critic.features(c, r) for _, c, r in found]
    fake = [critic.features(c, p) for c, p in zip(contexts, sampled(contexts, args.seed, with_critic))]
    held = windows(held_out)
    held_contexts = [c for _, c, _ in held]
    held_x = np.vstack([[critic.features(c, r) for _, c, r in held],
                        [critic.features(c, p) for c, p in zip(held_contexts,
                                                               sampled(held_contexts, args.seed + 1, with_critic))]])
    held_y = np.r_[np.zeros(len(held)), np.ones(len(held))]
    heard = [critic.FEATURE_NAMES.index(name) for name in critic.heard()]
    x, y = np.vstack([real, fake]), np.r_[np.zeros(len(real)), np.ones(len(fake))]
    clf = HistGradientBoostingClassifier(max_iter=TREES, max_leaf_nodes=LEAVES, learning_rate=RATE,
                                         random_state=args.seed).fit(x[:, heard], y)
    stored = export(clf) if before is None else add_round(before, export(clf))
    args.out.write_text(json.dumps(stored, separators=(",", ":")))
    critic.load_critic.cache_clear()
    shipped = critic.load_critic(args.out)
    this_round = clf.decision_function(held_x[:, heard])
    earlier = critic.Critic(before).logit(held_x) if before is not None else 0.0
    assert np.allclose(shipped.logit(held_x), this_round + earlier), "the exported trees disagree"
    print(f"critic: round {len(stored['round_trees'])}, {len(stored['trees'])} trees, {args.out} "
          f"{args.out.stat().st_size / 1024:.0f} KB; held-out ROC AUC of this round's trees "
          f"{roc_auc_score(held_y, this_round):.3f} ({len(held)} windows, real against the sampler "
          f"{'with' if with_critic else 'without'} the critic so far), {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
