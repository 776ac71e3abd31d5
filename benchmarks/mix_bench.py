"""The band mix (issue 22) measured: pedalboard's room against FluidSynth's own reverb (cost, decay,
wet/dry, brightness), the renderer's memory before and with the band, and the size of a default
answer's files at 120 bpm and at slow tempi.

    nice -n 15 .venv/bin/python benchmarks/mix_bench.py [--runs 5] [--requests 30] [--no-memory] [--no-sizes]
        [--before ../main]  # a checkout of the code before issue 22, for the memory comparison

Reverb. Cost: the band of benchmarks/render_bench.py (8 bars at 120 bpm, 4 parts) played by one
FluidSynth synthesizer with its reverb on and off (the difference is the reverb's), against
pedalboard's Reverb on the same length at the full rate and as the mix runs it (half rate).
Sound: each reverb's response to a click (FluidSynth: a claves hit, reverb on minus reverb off),
its decay time (RT60 from Schroeder's backward integral, -5 to -25 dB extrapolated) and spectral
centroid; and wet/dry, the reverb's energy against the dry band's, at FluidSynth's defaults
(send CC91 as the soundfont leaves it) and at the mix's sends.

Memory: a fresh process per case (peak RSS, ru_maxrss) imports the renderer, loads the soundfont
and renders `--requests` different answers (4 variations x 8 bars, different melodies): the code
before issue 22 (--before: its render_variations over chords) against render_variations with a band.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import render_bench  # noqa: E402

import bot.render.mix as mixing  # noqa: E402
from bot.render import check_setup, render_variations  # noqa: E402
from bot.render.audio import (  # noqa: E402
    DRUM_BANK,
    DRUM_CHANNEL,
    POLYPHONY,
    SAMPLE_RATE,
    SYNTH_GAIN,
    load_fluidsynth,
)
from model.defaults import BPM_RANGE  # noqa: E402
from model.music.events import NO_EVENT, note_on  # noqa: E402

CLAVES = 75  # a General MIDI percussion key with a click-like, very short sound


def requests(count: int, bars: int = 8, seed: int = 4):
    """`count` answers: (melodies, chords, arrangements), 2 bars of primer shared, 4 variations."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        primer = render_bench.random_melody(rng, render_bench.PRIMER_BARS)
        melodies = [primer + render_bench.random_melody(rng, bars - render_bench.PRIMER_BARS) for _ in range(4)]
        chords = [render_bench.progression(len(m)) for m in melodies]
        out.append((melodies, chords, render_bench.band_arrangements(melodies, chords, seed=rng.randrange(1000))))
    return out


def fluidsynth_band(soundfont: str, arrangement, bpm: float, reverb: bool, send: int | None = None):
    """The arrangement played by one FluidSynth synthesizer (a channel a part, drums on 10; the
    reverb send CC91 set to `send` where given) -> (stereo float samples, CPU seconds of synthesis)."""
    fluidsynth = load_fluidsynth()
    options = {"synth.chorus.active": 0, "synth.reverb.active": int(reverb), "synth.polyphony": POLYPHONY}
    synth = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=SAMPLE_RATE, channels=16, **options)
    font = synth.sfload(soundfont)
    frames_per_step = SAMPLE_RATE * 60 / bpm / 4
    events = []
    for index, part in enumerate(arrangement.parts):
        channel = DRUM_CHANNEL if part.is_drum else index
        synth.program_select(channel, font, DRUM_BANK if part.is_drum else 0, part.program)
        if send is not None:
            synth.cc(channel, 91, send)
        for n in part.notes:
            events += [(round(n.start * frames_per_step), 1, channel, n.pitch, n.velocity),
                       (round(n.end * frames_per_step), 0, channel, n.pitch, 0)]  # fmt: skip
    frames = round(arrangement.steps * frames_per_step + mixing.TAIL_S * SAMPLE_RATE)
    chunks, done, started = [], 0, time.process_time()
    for at, on, channel, pitch, velocity in sorted(events) + [(frames, 0, 0, None, 0)]:
        if min(at, frames) > done:
            chunks.append(synth.get_samples(min(at, frames) - done).reshape(-1, 2) / 32768)
            done = min(at, frames)
        if pitch is not None:
            synth.noteon(channel, pitch, velocity) if on else synth.noteoff(channel, pitch)
    spent = time.process_time() - started
    synth.delete()
    return np.concatenate(chunks).astype(np.float32), spent


def rt60(response: np.ndarray) -> float:
    """Seconds for the response's energy to fall 60 dB (Schroeder, fitted from -5 to -25 dB)."""
    energy = (np.atleast_2d(response.T) ** 2).sum(axis=0) if response.ndim > 1 else response**2
    decay = np.cumsum(energy[::-1])[::-1]
    decay_db = 10 * np.log10(np.maximum(decay / decay[0], 1e-30))
    start, end = np.argmax(decay_db <= -5), np.argmax(decay_db <= -25)
    return 3 * (end - start) / SAMPLE_RATE


def centroid_hz(samples: np.ndarray) -> float:
    mono = samples.mean(axis=1) if samples.ndim > 1 else samples
    spectrum = np.abs(np.fft.rfft(mono))
    return float((spectrum * np.fft.rfftfreq(len(mono), 1 / SAMPLE_RATE)).sum() / spectrum.sum())


def db(value: float) -> float:
    return 10 * np.log10(max(value, 1e-30))


def reverb_table(args) -> None:
    import pedalboard

    soundfont = check_setup()
    melodies, chords, arrangements = requests(1)[0]
    band = arrangements[0]
    runs = {"fluidsynth: band, reverb off": [], "fluidsynth: band, reverb on": [],
            "pedalboard Reverb, full rate": [], "pedalboard Reverb, half rate (the mix)": []}  # fmt: skip
    dry_bus, send = mixing.render_bus(band, args.bpm, soundfont, time.monotonic() + 60)
    stereo_send = np.stack([send, send])
    for _ in range(args.runs):
        dry, off = fluidsynth_band(soundfont, band, args.bpm, reverb=False)
        wet, on = fluidsynth_band(soundfont, band, args.bpm, reverb=True)
        runs["fluidsynth: band, reverb off"].append(off)
        runs["fluidsynth: band, reverb on"].append(on)
        started = time.process_time()
        pedalboard.Reverb(**mixing.ROOM)(stereo_send, SAMPLE_RATE)
        runs["pedalboard Reverb, full rate"].append(time.process_time() - started)
        started = time.process_time()
        mixing._room(send, pedalboard)
        runs["pedalboard Reverb, half rate (the mix)"].append(time.process_time() - started)
    seconds = len(dry) / SAMPLE_RATE
    print(f"cost, {seconds:.1f} s of the band (stereo, {SAMPLE_RATE} Hz), CPU seconds, p50 of {args.runs}")
    for label, values in runs.items():
        print(f"  {label:42s} {statistics.median(values):7.3f}")
    fluid_cost = statistics.median(runs["fluidsynth: band, reverb on"]) - statistics.median(
        runs["fluidsynth: band, reverb off"])
    print(f"  {'fluidsynth reverb alone (on - off)':42s} {fluid_cost:7.3f}")

    # Responses to a click: a claves hit through each reverb
    from model.band.parts import Arrangement, BandNote, Part

    hit = Arrangement("test", 48, [Part("DRUMS", 0, [BandNote(CLAVES, 0, 1, 110)], is_drum=True)])
    hit_dry, _ = fluidsynth_band(soundfont, hit, 60.0, reverb=False)
    hit_wet, _ = fluidsynth_band(soundfont, hit, 60.0, reverb=True, send=127)
    theirs = hit_wet - hit_dry
    ours = mixing._room(hit_dry.mean(axis=1), pedalboard).T
    wet_fluid = wet - dry
    wet_gm = fluidsynth_band(soundfont, band, args.bpm, reverb=True, send=40)[0] - dry
    print("sound")
    print(f"  {'':32s} {'RT60 s':>8s} {'centroid Hz':>12s} {'wet/dry dB':>11s}")
    print(f"  {'fluidsynth reverb (defaults)':32s} {rt60(theirs):8.2f} {centroid_hz(theirs):12.0f} "
          f"{db(np.mean(wet_fluid**2)) - db(np.mean(dry**2)):11.1f}")  # fmt: skip
    gm_ratio = db(np.mean(wet_gm**2)) - db(np.mean(dry**2))
    print(f"  {'fluidsynth reverb, CC91 = 40':32s} {'':8s} {'':12s} {gm_ratio:11.1f}")
    return_ = mixing._room(send, pedalboard)
    print(f"  {'pedalboard room (the mix)':32s} {rt60(ours):8.2f} {centroid_hz(ours):12.0f} "
          f"{db(np.mean(return_**2)) - db(np.mean(dry_bus**2)):11.1f}")  # fmt: skip
    print(f"  (claves hit alone: centroid {centroid_hz(hit_dry):.0f} Hz; dry band centroid: fluidsynth "
          f"{centroid_hz(dry):.0f} Hz, ours {centroid_hz(dry_bus.T):.0f} Hz)")  # fmt: skip


MEMORY_CHILD = """
import random, resource, sys
sys.path[:0] = [{code!r}, {benchmarks!r}]
import render_bench
from bot.render import check_setup, render_variations
from bot.render.audio import NOTES
check_setup()
setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rng = random.Random(11)
for _ in range({count}):
    primer = render_bench.random_melody(rng, 2)
    melodies = [primer + render_bench.random_melody(rng, 6) for _ in range(4)]
    chords = [render_bench.progression(len(m)) for m in melodies]
    if {band}:
        arrangements = render_bench.band_arrangements(melodies, chords, seed=rng.randrange(1000))
        render_variations(melodies, 32, 120.0, chords=chords, arrangements=arrangements)
    else:
        render_variations(melodies, 32, 120.0, chords=chords)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"after setup {{setup:.0f}} MB, peak {{peak:.0f}} MB, note cache {{NOTES.size / 2**20:.0f}} MB")
"""


def memory_table(args) -> None:
    """Peak RSS of a fresh process: the renderer before issue 22 (the code at --before, e.g. a
    checkout of main before the merge) against this one with a band."""
    print(f"peak RSS of a fresh process rendering {args.requests} answers (4 variations x 8 bars)")
    cases = [("band", str(ROOT), True)]
    if args.before:
        cases.insert(0, ("before", args.before, False))
    for label, code, with_band in cases:
        child = MEMORY_CHILD.format(code=code, benchmarks=str(ROOT / "benchmarks"), count=args.requests, band=with_band)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # leave the other checkout as it is
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, env=env).stdout
        print(f"  {label:8s} {out.strip()}  ({code})")


def sizes_table(args) -> None:
    """A default answer: `!continue C4 E4 G4 A4` (one bar of primer) and 8 bars, 4 variations."""
    print("a default answer's files (4 MP3s + 4 MIDI + the combined PNG) against 10 MiB")
    primer = [e for p in (60, 64, 67, 69) for e in [note_on(p)] + [NO_EVENT] * 3]
    rng = random.Random(9)
    for bpm in (120.0, 60.0, 40.0, BPM_RANGE[0]):
        melodies = [primer + render_bench.random_melody(rng, 8) for _ in range(4)]
        chords = [render_bench.progression(len(m)) for m in melodies]
        arrangements = render_bench.band_arrangements(melodies, chords)
        started = time.perf_counter()
        previews, combined, _ = render_variations(melodies, 16, bpm, chords=chords, arrangements=arrangements,
                                                  timeout=120)  # fmt: skip
        spent = time.perf_counter() - started
        total = sum(len(p.mp3) + len(p.midi) for p in previews) + len(combined)
        fits = "fits" if total <= 10 * 2**20 else "OVER"
        print(f"  {bpm:5.0f} bpm: {previews[0].duration_s:6.1f} s each, MP3 {len(previews[0].mp3) / 2**20:5.2f} MiB "
              f"each, all files {total / 2**20:5.2f} MiB ({fits}), rendered in {spent:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-sizes", action="store_true")
    parser.add_argument("--before", help="a checkout of the code before issue 22, for the memory comparison")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("## reverb: pedalboard (the mix) vs FluidSynth's own")
    reverb_table(args)
    if not args.no_memory:
        print("\n## memory")
        memory_table(args)
    if not args.no_sizes:
        print("\n## sizes")
        sizes_table(args)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
