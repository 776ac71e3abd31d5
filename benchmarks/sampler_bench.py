"""What the sampler's choice of variations costs: `continue_melodies` for `!continue C4 E4 G4 A4`
(4 variations x 8 bars), one torch thread as in the worker, median of --runs passes per case.

    nice -n 5 .venv/bin/python benchmarks/sampler_bench.py [--baseline-weights OLD.pt]

Cases: the shipped weights with the defaults; with one candidate (no choice); with chords
"C | G | Am F | F"; and, given --baseline-weights, those weights with one candidate at top_p 0.95
(the sampler before candidates).
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

from model.chords import parse_lead_sheet  # noqa: E402
from model.defaults import DEFAULT_WEIGHTS  # noqa: E402
from model.primer import parse_notes  # noqa: E402
from model.sampling import SamplingOptions, continuation_chords, continue_melodies, load_model, prepare_primer  # noqa: E402


def median_seconds(model, options: SamplingOptions, chords, runs: int) -> float:
    primer = prepare_primer(parse_notes("C4 E4 G4 A4"))
    times = []
    for run in range(runs + 1):  # the first pass warms up
        started = time.perf_counter()
        continue_melodies(model, [primer], [replace(options, seed=run)], chords=[chords])
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline-weights", type=Path)
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
    print("| case | rows | median s |\n|---|---:|---:|")
    for name, net, options, given in cases:
        seconds = median_seconds(net, options, given, args.runs)
        print(f"| {name} | {options.variations * options.candidates} | {seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
