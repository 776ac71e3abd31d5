"""CPU seconds the worker's sampling takes per job (Generator.sample, one torch thread, no render),
for one or more source trees measured in turns, so a noisy shared machine weighs on each alike.

    python benchmarks/sampler_cpu.py --trees /work/main . [--rounds 5] [--jobs 15] [--case default]

Each round runs every tree once, each in a fresh process (warm-up jobs first), and prints its
time.process_time per job; the summary gives each tree's median and range over the rounds, and
for two trees the ratio of each round's pair (the steadier figure on a shared machine).
Cases: default (`!continue C4 E4 G4 A4`), chords, lyrics, hot (temperature 1.3), long (a 64-bar
sketch), batch (eight jobs of four primer lengths in one pass: CPU per job).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

LYRICS = "Walking down the empty street / every window dark"
PHRASES = ("C4 E4 G4 A4", "C4 D E F G A B C", "E4 G C5 B4 A:2 G:2 F E D C D:4", "G4 A B C5 D:2 C B4 " * 4)


def jobs_for(case: str, seed: int) -> list:
    from bot.jobs import Job
    from model.music.primer import parse_notes

    def job(text: str = PHRASES[0], repeat: int = 1, **kw):
        return Job(user_id=1, channel_id=1, primer=parse_notes(text) * repeat, seed=seed, **kw)

    return {
        "default": lambda: [job()],
        "chords": lambda: [job(chords="C | G | Am | F")],
        "lyrics": lambda: [job(lyrics=LYRICS)],
        "hot": lambda: [job(temperature=1.3)],
        "long": lambda: [job(PHRASES[-1], 8)],
        "batch": lambda: [job(p) for p in PHRASES for _ in range(2)],
    }[case]()


def measure(case: str, jobs: int, warmup: int = 3) -> float:
    """CPU seconds per job in this process (its own tree on sys.path)."""
    os.environ["MELODYBOT_TEST_SKIP_RENDER"] = "1"
    import torch

    from bot.settings import Settings
    from bot.worker.generator import Generator
    from model.melody.sampling import DEFAULT_WEIGHTS, load_model

    torch.set_num_threads(1)
    generator = Generator(Settings())
    generator.model, generator.skip_render = load_model(str(DEFAULT_WEIGHTS)), True
    for seed in range(warmup):
        list(generator.sample(jobs_for(case, seed)))
    batches = [jobs_for(case, seed) for seed in range(warmup, warmup + jobs)]
    started = time.process_time()
    for batch in batches:
        list(generator.sample(batch))
    return (time.process_time() - started) / sum(len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trees", nargs="+", default=["."])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--case", default="default")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(measure(args.case, args.jobs))
        return
    seen: dict[str, list[float]] = {tree: [] for tree in args.trees}
    for round_ in range(args.rounds):
        for tree in args.trees if round_ % 2 == 0 else args.trees[::-1]:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            out = subprocess.run([sys.executable, __file__, "--child", "--case", args.case, "--jobs", str(args.jobs)],
                                 env=env, capture_output=True, text=True, check=True)  # fmt: skip
            seen[tree].append(float(out.stdout.split()[-1]))
            print(f"round {round_} {tree}: {seen[tree][-1] * 1000:.1f} ms CPU per job", flush=True)
    for tree, values in seen.items():
        print(f"{args.case} {tree}: median {statistics.median(values) * 1000:.1f} ms CPU per job "
              f"(range {min(values) * 1000:.1f}-{max(values) * 1000:.1f})")  # fmt: skip
    if len(args.trees) == 2:  # each round's pair ran back to back, under the same load
        ratios = [b / a for a, b in zip(*seen.values())]
        print(f"{args.trees[1]} / {args.trees[0]} per round: median {statistics.median(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
