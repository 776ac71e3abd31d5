"""What arranging costs: 4 variations x (2 primer + 8 continuation) bars in each style, the way
the worker arranges one answer (model.band.arrange), and writing the band's MIDI files.

    python benchmarks/band_bench.py [--repeats 50]

Prints per style the p50 / p95 milliseconds of arranging one answer (4 arrangements; and its
CPU time, steadier on a shared machine) and of writing its 4 MIDI files, and the first load of
the texture table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from model.band.arrange import arrange
from model.band.keys import load_library
from model.band.styles import STYLES
from model.music.chords import chords_per_step, parse_lead_sheet
from model.music.events import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, note_on
from model.music.midi_io import write_arrangement

STEPS = 10 * STEPS_PER_BAR


def melody(rng: random.Random) -> list[int]:
    events, pitch = [], 67
    while len(events) < STEPS:
        pitch = max(60, min(84, pitch + rng.choice((-4, -2, -1, 0, 1, 2, 3, 5))))
        length = rng.choice((2, 4, 4, 8))
        events += [note_on(pitch)] + [NO_EVENT] * (length - 2) + [NOTE_OFF]
    return events[:STEPS]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    started = time.perf_counter()
    load_library()
    print(f"texture table loaded in {1000 * (time.perf_counter() - started):.1f} ms (once per process)")
    rng = random.Random(0)
    chords = chords_per_step(parse_lead_sheet("C | Am | F | G7 | C/E | Dm7 G7 | Am F | G"), STEPS)
    tunes = [melody(rng) for _ in range(4)]
    print("| style | arrange 4 x 10 bars p50 | p95 | CPU p50 | write 4 MIDI p50 | p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for style in STYLES:
        arranging, writing, cpu = [], [], []
        for repeat in range(args.repeats):
            c0 = time.process_time()
            t0 = time.perf_counter()
            bands = [arrange(t, chords, 120, style, seed=repeat * 4 + i, primer_steps=32) for i, t in enumerate(tunes)]
            t1 = time.perf_counter()
            cpu.append(1000 * (time.process_time() - c0))
            for band in bands:
                write_arrangement(band, 120, chords)
            t2 = time.perf_counter()
            arranging.append(1000 * (t1 - t0))
            writing.append(1000 * (t2 - t1))

        def p(values, q):
            return statistics.quantiles(values, n=100)[q - 1]

        print(f"| {style} | {statistics.median(arranging):.1f} ms | {p(arranging, 95):.1f} ms | "
              f"{statistics.median(cpu):.1f} ms | "
              f"{statistics.median(writing):.1f} ms | {p(writing, 95):.1f} ms |")


if __name__ == "__main__":
    main()
