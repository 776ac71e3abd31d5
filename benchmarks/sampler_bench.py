"""What the sampler's choice of variations costs: `continue_melodies` for `!continue C4 E4 G4 A4`
(4 variations x 8 bars), one torch thread as in the worker, median of --runs passes per case.

    nice -n 5 .venv/bin/python benchmarks/sampler_bench.py [--baseline-weights OLD.pt] [--part single|mixed]

Cases: the shipped weights with the defaults; with one candidate (no choice); with chords
"C | G | Am F | F"; and, given --baseline-weights, those weights with one candidate at top_p 0.95
(the sampler before candidates).

Mixed lengths: 8 jobs x 4 variations (defaults; then x 1), two jobs each with primers of 4
different lengths (--mixed-long: also seven of one bar with one of 64 bars), as one pass
(left-padded, as the worker samples a batch now) and as the per-length passes it replaces (one
pass per primer length, as continue_melodies split a batch before); every job gets the same
answer both ways, which the benchmark checks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.defaults import DEFAULT_WEIGHTS  # noqa: E402
from model.melody.sampling import SamplingOptions, continuation_chords, continue_melodies, load_model, prepare_primer  # noqa: E402
from model.music.chords import parse_lead_sheet  # noqa: E402
from model.music.primer import parse_notes  # noqa: E402


def median_seconds(model, options: SamplingOptions, chords, runs: int) -> float:
    primer = prepare_primer(parse_notes("C4 E4 G4 A4"))
    times = []
    for run in range(runs + 1):  # the first pass warms up
        started = time.perf_counter()
        continue_melodies(model, [primer], [replace(options, seed=run)], chords=[chords])
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


MIXED_PRIMERS = ("C4 E4 G4 A4", "C4 D E F G A B C", "E4 G C5 B4 A:2 G:2 F E D C D:4",
                 "G4 A B C5 D:2 C B4 " * 4)  # 1, 2, 4 and 8 bars


def mixed_primers(long: bool) -> list[list[int]]:
    """Two jobs each of MIXED_PRIMERS; long: seven jobs of one bar and one of 64 bars instead."""
    if long:
        return [prepare_primer(parse_notes(MIXED_PRIMERS[0]))] * 7 + [prepare_primer(
            parse_notes(MIXED_PRIMERS[-1]) * 8)]  # fmt: skip
    return [prepare_primer(parse_notes(text)) for text in MIXED_PRIMERS for _ in range(2)]


def mixed_lengths(model, runs: int, variations: int, long: bool = False) -> None:
    primers = mixed_primers(long)
    options = [SamplingOptions(seed=j, variations=variations) for j in range(len(primers))]
    lengths = sorted({len(p) for p in primers})
    groups = [[j for j, p in enumerate(primers) if len(p) == n] for n in lengths]

    def one_pass():
        return continue_melodies(model, primers, options)

    def per_length():
        answers = [None] * len(primers)
        for group in groups:
            for j, answer in zip(group, continue_melodies(model, [primers[j] for j in group],
                                                          [options[j] for j in group])):
                answers[j] = answer
        return answers

    assert one_pass() == per_length(), "a job's answer changed with its batch"  # also warms up
    times = {"one pass": [], "per length": []}
    for _ in range(runs):  # interleaved, so a change in the machine's speed hits both alike
        for name, run in (("one pass", one_pass), ("per length", per_length)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    rows = sum(o.variations * o.candidates for o in options)
    print(f"\nMixed lengths: {len(primers)} jobs x {options[0].variations} variations ({rows} rows), primers of "
          f"{', '.join(map(str, lengths))} steps; median of {runs}\n")
    print("| case | passes | median s | min s |\n|---|---:|---:|---:|")
    for name, passes in (("one mixed-length pass", 1), ("per-length passes", len(groups))):
        values = times["one pass" if passes == 1 else "per length"]
        print(f"| {name} | {passes} | {statistics.median(values):.3f} | {min(values):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline-weights", type=Path)
    parser.add_argument("--part", choices=("all", "single", "mixed"), default="all")
    parser.add_argument("--mixed-runs", type=int, default=7)
    parser.add_argument("--mixed-variations", type=int, nargs="+", default=[4, 1])
    parser.add_argument("--mixed-long", action="store_true", help="also 7 jobs of 1 bar with one of 64 bars")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(str(DEFAULT_WEIGHTS))
    defaults = SamplingOptions()
    primer_steps = len(prepare_primer(parse_notes("C4 E4 G4 A4")))
    chords = continuation_chords(parse_lead_sheet("C | G | Am F | F"), primer_steps, defaults.bars * 16)
    cases = [("shipped, defaults", model, defaults, None),
             ("shipped, 1 candidate", model, replace(defaults, candidates=1), None),
             ("shipped, defaults, chords", model, defaults, chords)]
    if args.baseline_weights:
        cases.append(("baseline weights, 1 candidate, top_p 0.95", load_model(str(args.baseline_weights)),
                      replace(defaults, candidates=1, top_p=0.95), None))
    if args.part in ("all", "single"):
        print("| case | rows | median s |\n|---|---:|---:|")
        for name, net, options, given in cases:
            seconds = median_seconds(net, options, given, args.runs)
            print(f"| {name} | {options.variations * options.candidates} | {seconds:.3f} |", flush=True)
    if args.part in ("all", "mixed"):
        for variations in args.mixed_variations:
            mixed_lengths(model, args.mixed_runs, variations)
        if args.mixed_long:
            mixed_lengths(model, args.mixed_runs, 4, long=True)


if __name__ == "__main__":
    main()
