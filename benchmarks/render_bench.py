"""Time the preview renderer: N variations of a melody -> MIDI, MP3s and PNGs, per stage.

    nice -n 15 .venv/bin/python benchmarks/render_bench.py [--variations 4] [--bars 8] [--bpm 120]
        [--instrument piano] [--runs 7]

The melodies are made here (a fixed-seed random walk: 2 bars of primer shared by all variations,
the rest different), so the numbers need no model and no files. One warm-up run is not counted.
Wall time depends on what else the machine runs; CPU time (this process and its FluidSynth and
ffmpeg children) says how much work a request is.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.render import check_setup, render_variations  # noqa: E402
from model.events import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, note_on  # noqa: E402

PRIMER_BARS = 2
STAGES = ("midi_write", "synth", "trim_normalise", "mp3_encode", "png", "total")


def random_melody(rng: random.Random, bars: int, pitch: int = 60) -> list[int]:
    """A stepwise melody of quarter, eighth and dotted notes with some rests."""
    events: list[int] = []
    while len(events) < bars * STEPS_PER_BAR:
        pitch = min(84, max(48, pitch + rng.choice([-4, -2, -1, 0, 1, 2, 3, 5])))
        length = rng.choice([2, 4, 4, 6, 8])
        events += [note_on(pitch)] + [NO_EVENT] * (length - 2) + [NOTE_OFF]
        if rng.random() < 0.15:
            events += [NO_EVENT] * 2  # a short rest
    return events[: bars * STEPS_PER_BAR]


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variations", type=int, default=4)
    parser.add_argument("--bars", type=int, default=8, help="bars per variation, primer included")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--instrument", default="piano")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(4)
    primer = random_melody(rng, PRIMER_BARS)
    melodies = [primer + random_melody(rng, args.bars - PRIMER_BARS) for _ in range(args.variations)]
    primer_steps = len(primer)
    seconds = args.bars * STEPS_PER_BAR * 60 / args.bpm / 4

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; our nice: {os.nice(0)}")
    print(f"soundfont: {check_setup()}")
    print(
        f"{args.variations} variations x {args.bars} bars at {args.bpm:g} bpm ({seconds:.1f} s of melody each), "
        f"{args.instrument}, MP3 by ffmpeg, {args.runs} runs after 1 warm-up"
    )

    render_variations(melodies, primer_steps, args.bpm, args.instrument)  # warm-up: page cache, fonts
    runs, cpus = [], []
    for _ in range(args.runs):
        before = cpu_seconds()
        previews, combined, timings = render_variations(melodies, primer_steps, args.bpm, args.instrument)
        cpus.append(cpu_seconds() - before)
        runs.append(timings)

    print(f"\n{'stage':16s} {'median s':>9s} {'min s':>9s}")
    for stage in STAGES:
        values = [timings[stage] for timings in runs]
        print(f"{stage:16s} {statistics.median(values):9.3f} {min(values):9.3f}")
    print(f"{'cpu (all procs)':16s} {statistics.median(cpus):9.3f} {min(cpus):9.3f}")
    mp3_kib = statistics.mean(len(preview.mp3) for preview in previews) / 1024
    png_kib = statistics.mean(len(preview.png) for preview in previews) / 1024
    print(
        f"\noutputs: MP3 {mp3_kib:.0f} KiB and {previews[0].duration_s:.2f} s each, PNG {png_kib:.0f} KiB each, "
        f"combined PNG {len(combined) / 1024:.0f} KiB"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
