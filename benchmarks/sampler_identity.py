"""Does a change to the step sampler keep its output? Runs a matrix of seeded requests through the
worker's Generator.sample (the shipped weights, one torch thread as in the worker) and saves, per
case, every row the step sampler returned (all candidates, before the choice), its per-step
log-likelihoods and the chosen continuations; --against compares with a file saved before.

    PYTHONPATH=/path/to/old/tree python benchmarks/sampler_identity.py --save old.pt
    PYTHONPATH=$PWD python benchmarks/sampler_identity.py --against old.pt

Events must be identical; log-likelihoods are reported by their largest difference (they only
rank candidates, so a rounding-level difference changes nothing unless a choice flips, which
the chosen continuations show).
"""

from __future__ import annotations

import argparse
import os

import torch

os.environ.setdefault("MELODYBOT_TEST_SKIP_RENDER", "1")  # no renderer: sampling only

from bot.jobs import Job  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.worker.generator import Generator  # noqa: E402
from model.melody import sampling, stepping  # noqa: E402
from model.music.primer import parse_notes  # noqa: E402

SHORT = "C4 E4 G4 A4"
PRIMERS = ("C4 E4 G4 A4", "C4 D E F G A B C", "E4 G C5 B4 A:2 G:2 F E D C D:4", "G4 A B C5 D:2 C B4 " * 4)
LONG_BARS = 12  # times PRIMERS[-1]'s 8 bars: 96, cut to the last 64
LYRICS = "Walking down the empty street / every window dark"


def job(primer: str = SHORT, repeat: int = 1, **kw) -> Job:
    return Job(user_id=1, channel_id=1, primer=parse_notes(primer) * repeat, **kw)


def cases() -> dict[str, list[Job]]:
    out = {f"default-s{s}": [job(seed=s)] for s in range(6)}
    out |= {f"chords-s{s}": [job(seed=s, chords="C | G | Am | F")] for s in range(3)}
    out |= {f"lyrics-s{s}": [job(seed=s, lyrics=LYRICS)] for s in range(2)}
    out |= {f"hot-s{s}": [job(seed=s, temperature=1.3)] for s in range(2)}
    out |= {f"cold-s{s}": [job(seed=s, temperature=0.6, top_p=0.9)] for s in range(2)}
    out |= {f"topp1-s{s}": [job(seed=s, top_p=1.0)] for s in range(2)}
    out["nokey"] = [job(seed=3, keep_key=False)]
    out["one-bar"] = [job(seed=4, bars=1, variations=1)]
    out["sixteen-bars"] = [job(seed=5, bars=16, variations=2)]
    out["long-primer"] = [job(PRIMERS[-1], LONG_BARS, seed=6)]
    out["long-primer-chords"] = [job(PRIMERS[-1], LONG_BARS, seed=7, chords="Am | F | C | G")]
    out["one-note"] = [job("C4", seed=8)]
    # one pass, primers of four lengths (padding groups), with and without chords and words
    out["batch-mixed"] = [job(p, n, seed=10 + i, chords="C | G | Am | F" if i % 2 else None,
                              lyrics=LYRICS if i == 3 else None, bars=4 + 2 * i)
                          for i, (p, n) in enumerate([(p, 1) for p in PRIMERS] + [(SHORT, 1), (PRIMERS[-1], 6)])]
    # one pass, each job its own options: nucleus sizes, heat, key, a rest limit
    out["batch-options"] = [job(seed=20, top_p=1.0), job(seed=21, top_p=0.5, temperature=0.05),
                            job(seed=22, top_p=0.98, temperature=2.5, keep_key=False), job(seed=23, variations=1)]
    return out


def run() -> dict:
    torch.set_num_threads(1)
    generator = Generator(Settings())
    generator.model = sampling.load_model(str(sampling.DEFAULT_WEIGHTS))
    generator.skip_render = True
    passes = []
    original = stepping.generate

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        passes.append(tuple(x.clone() for x in out) if isinstance(out, tuple) else (out.clone(),))
        return out

    stepping.generate = sampling.stepping.generate = recording
    results = {}
    try:
        for name, jobs in cases().items():
            passes.clear()
            items = list(generator.sample(jobs))
            chosen = [item.continuations for item in items]
            results[name] = {"passes": list(passes), "chosen": chosen}
    finally:
        stepping.generate = original
    return results


def compare(new: dict, old: dict) -> bool:
    """Print each case's differences; True when every sampled row and every choice is the same."""
    same = True
    rows = differing_rows = 0
    worst_loglik = 0.0
    for name, before in old.items():
        after = new[name]
        for (e0, *l0), (e1, *l1) in zip(before["passes"], after["passes"]):
            diff = (e0 != e1).any(1)
            rows += len(diff)
            differing_rows += int(diff.sum())
            loglik = float((l0[0] - l1[0]).abs().max()) if l0 and l1 else 0.0
            worst_loglik = max(worst_loglik, loglik)
            status = "same" if not diff.any() else f"{int(diff.sum())}/{len(diff)} rows differ"
            chosen = "chosen same" if before["chosen"] == after["chosen"] else "CHOSEN DIFFER"
            print(f"{name:22s} {status:18s} loglik max |diff| {loglik:.3g}  {chosen}")
            same &= not diff.any() and before["chosen"] == after["chosen"]
    print(f"{differing_rows} of {rows} sampled rows differ; {'IDENTICAL' if same else 'DIFFERENT'} events and "
          f"choices; log-likelihoods {'bit for bit' if worst_loglik == 0 else f'within {worst_loglik:.3g}'}")
    return same


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save")
    parser.add_argument("--against")
    args = parser.parse_args()
    import model

    print("model from", model.__file__)
    results = run()
    if args.save:
        torch.save(results, args.save)
    if args.against:
        raise SystemExit(0 if compare(results, torch.load(args.against, weights_only=False)) else 1)


if __name__ == "__main__":
    main()
