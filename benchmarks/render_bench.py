"""Time the preview renderer: N variations of a melody -> MIDI, MP3s and PNGs, per stage; with and
without chords; with a band (issue 22) against the renderer before it; the in-process synth and
encoder against the programs they replaced; lead sheets.

    nice -n 15 .venv/bin/python benchmarks/render_bench.py [--variations 4] [--bars 8] [--bpm 120]
        [--instrument piano] [--runs 7] [--no-programs] [--no-lead-sheet] [--only-band]

"band vs before": the renderer before issue 22 (mono, dry, peak-normalised: its code, kept here as
before_render from the same helpers) on the melodies over C | G | Am F, against render_variations
with an arrangement per variation (melody, keys, bass, drums, made here as an arranger's would be:
pop groove, humanised velocities and timing, keys different in each variation), mixed in stereo.

The melodies are made here (a fixed-seed random walk: 2 bars of primer shared by all variations,
the rest different), the chords are C | G | Am | F repeated, so the numbers need no model and no
files. One warm-up run is not counted. Wall time depends on what else the machine runs; CPU time
(this process with all its threads, and any child processes) says how much work a request is.

"programs" renders the same melodies the way the renderer did before (one `fluidsynth` process
per group of melodies per core, raw float on stdout; one `ffmpeg` process per group with
libmp3lame) beside the in-process stages, run for run. "lead sheet" engraves 32 bars with verovio
(PNG and PDF) and, where LilyPond is installed, the same notes and chords with LilyPond.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.render import INSTRUMENTS, check_setup, mp3, pianoroll, render_variations  # noqa: E402
from bot.render.audio import (  # noqa: E402
    NOTES,
    SAMPLE_RATE,
    accompaniment,
    finish,
    performance,
    synthesize,
    with_chords,
)
from bot.render.leadsheet import engrave_lead_sheet, spell, split_value  # noqa: E402
from model.band.parts import Arrangement, BandNote, Part  # noqa: E402
from model.music.chords import chords_per_step, parse_lead_sheet  # noqa: E402
from model.music.events import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, events_to_notes, note_on  # noqa: E402
from model.music.midi_io import chord_voicing, write_midi  # noqa: E402

PRIMER_BARS = 2
# synth, midi_write, png, audio_wait, total: the calling thread's; mix, mp3_encode: summed over the variations
STAGES = ("midi_write", "png", "audio_wait", "synth", "mix", "mp3_encode", "total")
LEAD_SHEET_BARS = 32


PROGRESSION = parse_lead_sheet("C | G | Am | F")
LILYPOND_CHORDS = ["c1", "g1", "a1:m", "f1"]


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


def progression(steps: int) -> list:
    return chords_per_step(PROGRESSION, steps)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(function, runs: int) -> tuple[list[float], list[float], object]:
    """(wall seconds, CPU seconds, last result) of `runs` calls after one warm-up."""
    result = function()
    walls, cpus = [], []
    for _ in range(runs):
        before_cpu, before = cpu_seconds(), time.perf_counter()
        result = function()
        walls.append(time.perf_counter() - before)
        cpus.append(cpu_seconds() - before_cpu)
    return walls, cpus, result


def row(label: str, values: list[float]) -> str:
    return f"{label:34s} {statistics.median(values):9.3f} {min(values):9.3f}"


def stage_table(args, melodies, primer_steps, chords, cold: bool) -> dict[str, float]:
    """cold: every note new to the renderer (its note cache emptied before each run); else the
    same notes as the run before, all heard already."""
    runs, cpus = [], []
    options = dict(instrument=args.instrument, chords=chords)
    render_variations(melodies, primer_steps, args.bpm, **options)  # warm-up
    for _ in range(args.runs):
        if cold:
            NOTES.clear()
        before = cpu_seconds()
        previews, combined, timings = render_variations(melodies, primer_steps, args.bpm, **options)
        cpus.append(cpu_seconds() - before)
        runs.append(timings)
    print(f"{'stage':34s} {'median s':>9s} {'min s':>9s}")
    for stage in STAGES:
        print(row(stage, [timings[stage] for timings in runs]))
    print(row("cpu (all threads)", cpus))
    mp3_kib = statistics.mean(len(preview.mp3) for preview in previews) / 1024
    print(f"outputs: MP3 {mp3_kib:.0f} KiB and {previews[0].duration_s:.2f} s each, "
          f"the piano rolls' PNG {len(combined) / 1024:.0f} KiB")
    return {stage: statistics.median(timings[stage] for timings in runs) for stage in STAGES}


def programs_table(args, melodies, primer_steps) -> None:
    """The fluidsynth and ffmpeg programs (as the renderer ran them before) beside libfluidsynth
    and libmp3lame in this process, on the same melodies, same settings (22.05 kHz, chorus off)."""
    fluidsynth, ffmpeg = shutil.which("fluidsynth"), shutil.which("ffmpeg")
    if fluidsynth is None or ffmpeg is None:
        print("programs: fluidsynth or ffmpeg is not installed; comparison skipped")
        return
    soundfont, program = check_setup(), INSTRUMENTS[args.instrument]
    cores = min(len(os.sched_getaffinity(0)), len(melodies))
    groups = [list(range(start, len(melodies), cores)) for start in range(cores)]
    played = [performance(events, primer_steps, False, True) for events in melodies]
    pcms = [finish(synthesize(soundfont, p, program, args.bpm, time.monotonic() + 60), True) for p in played]

    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(cores) as pool:
        for index, events in enumerate(melodies):
            Path(folder, f"{index}.mid").write_bytes(write_midi(events, args.bpm, program))
            pcms[index].astype("<i2").tofile(Path(folder, f"{index}.pcm"))

        def run_fluidsynth(group):
            command = [fluidsynth, "-n", "-i", "-q", "-g", "0.5", "-r", str(SAMPLE_RATE), "-C", "0", "-R", "0"]
            command += ["-o", "synth.dynamic-sample-loading=1", "-z", "4096", "-T", "raw", "-O", "float"]
            command += ["-E", "little", "-F", "-", soundfont] + [str(Path(folder, f"{i}.mid")) for i in group]
            env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
            return subprocess.run(command, capture_output=True, env=env, check=True).stdout

        def run_ffmpeg(group):
            command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
            for i in group:
                command += ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", str(Path(folder, f"{i}.pcm"))]
            for n, i in enumerate(group):
                command += ["-map", f"{n}:a", "-c:a", "libmp3lame", "-b:a", f"{mp3.BITRATE_KBPS}k"]
                command += ["-compression_level", str(mp3.QUALITY), str(Path(folder, f"{i}.mp3"))]
            subprocess.run(command, capture_output=True, check=True)

        def in_process_synth():
            return list(pool.map(lambda p: synthesize(soundfont, p, program, args.bpm, time.monotonic() + 60), played))

        cases = [
            ("synth: fluidsynth programs", lambda: list(pool.map(run_fluidsynth, groups))),
            ("synth: libfluidsynth in process", in_process_synth),
            ("mp3: ffmpeg programs", lambda: list(pool.map(run_ffmpeg, groups))),
            ("mp3: libmp3lame in process", lambda: list(pool.map(mp3.encode, pcms))),
        ]
        results = {label: ([], []) for label, _ in cases}
        for _label, function in cases:
            function()  # warm-up
        for _ in range(args.runs):  # interleaved, so a change of machine speed hits all alike
            for label, function in cases:
                before_cpu, before = cpu_seconds(), time.perf_counter()
                function()
                results[label][0].append(time.perf_counter() - before)
                results[label][1].append(cpu_seconds() - before_cpu)
    print(f"{'case':34s} {'wall p50':>9s} {'wall min':>9s} {'cpu p50':>9s}")
    for label, (walls, cpus) in results.items():
        print(f"{row(label, walls)} {statistics.median(cpus):9.3f}")


def before_render(melodies, primer_steps, bpm, program, chords, soundfont, pool):
    """render_variations as it was before issue 22 (its code, on the same helpers): mono, dry,
    peak-normalised, the melody over block chords. Returns the previews' (MIDI, MP3, PNG) and the
    combined PNG."""
    deadline = time.monotonic() + 60
    played = [with_chords(performance(e, primer_steps, False, True), accompaniment(c, primer_steps, False))
              for e, c in zip(melodies, chords)]  # fmt: skip
    rendered = list(pool.map(lambda p: synthesize(soundfont, p, program, bpm, deadline), played))
    pcms = [finish(audio, bool(p.end)) for audio, p in zip(rendered, played)]
    encoding = [pool.submit(mp3.encode, pcm) for pcm in pcms]
    midis = [write_midi(e, bpm, program, chords=c) for e, c in zip(melodies, chords)]
    layout = pianoroll.shared_layout(melodies)
    panels = [pianoroll.draw_panel(e, primer_steps, layout, str(i + 1), c)
              for i, (e, c) in enumerate(zip(melodies, chords))]  # fmt: skip
    pngs = [pianoroll.png_bytes(panel) for panel in panels]
    combined = pianoroll.png_bytes(pianoroll.stack(panels))
    return list(zip(midis, [f.result() for f in encoding], pngs)), combined


GROOVE = [(0, 36, 100), (6, 36, 80), (8, 36, 95), (4, 38, 100), (12, 38, 100)] + [(s, 42, 62) for s in range(0, 16, 2)]
FILL = [(8, 38, 90), (10, 38, 95), (12, 48, 100), (13, 47, 100), (14, 45, 105), (15, 45, 110)]


def band_arrangements(melodies, chords, seed: int = 22) -> list[Arrangement]:
    """An arrangement per melody as an arranger would hand it over (pop): the melody humanised,
    keys (eighth-note broken chords in F3..E4, ~11 notes a bar, different in each variation), a bass
    on the kick (root, fifth, approach), drums (groove, a fill into every 4th bar, crash on bar 1)."""
    arrangements = []
    for number, (events, per_step) in enumerate(zip(melodies, chords)):
        rng = random.Random(seed * 100 + number)
        same = random.Random(seed)  # the bass and drums: the same in every variation (same chords)
        melody = Part("MELODY", 0, [BandNote(n.pitch, n.start + rng.uniform(-0.08, 0.08), n.end,
                                             min(127, 92 + (10 if n.start % 16 == 0 else 0) + rng.randint(-6, 6)))
                                    for n in events_to_notes(events)])  # fmt: skip
        keys = Part("KEYS", 4, pan=-0.25, level_db=-5.0)
        bass = Part("BASS", 33, level_db=-4.0)
        drums = Part("DRUMS", 0, is_drum=True, pan=0.05, level_db=-6.0)
        for bar in range(len(events) // STEPS_PER_BAR):
            at = bar * STEPS_PER_BAR
            chord = per_step[at]
            voicing = chord_voicing(chord)
            upper = voicing[1:]
            for step in range(0, 16, 2):
                if rng.random() < 0.7:
                    pitch = upper[(step // 2 + rng.randint(0, 1)) % len(upper)]
                    keys.notes.append(BandNote(pitch, at + step + rng.uniform(-0.1, 0.1), at + step + 2,
                                               66 + rng.randint(-8, 8)))  # fmt: skip
            root = voicing[0]
            for step, pitch in ((0, root), (6, root), (8, root + 7), (14, root + 2)):
                bass.notes.append(BandNote(pitch, at + step, at + step + 1.8, 90 + same.randint(-6, 6)))
            groove = [hit for hit in GROOVE if hit[0] < 8] + FILL if bar % 4 == 3 else GROOVE
            for step, key, velocity in groove:
                drums.notes.append(BandNote(key, at + step, at + step + 1, min(127, velocity + same.randint(-5, 5))))
            if bar == 0:
                drums.notes.append(BandNote(49, at, at + 1, 100))
        arrangements.append(Arrangement("pop", len(events), [melody, keys, bass, drums]))
    return arrangements


def band_table(args, melodies, primer_steps, chords) -> None:
    """Before (melody over block chords, mono) vs the band mix, same melodies and chords,
    interleaved; cold (note cache emptied before each run) and warm."""
    soundfont, program = check_setup(), INSTRUMENTS[args.instrument]
    arrangements = band_arrangements(melodies, chords)
    notes = sum(len(p.notes) for a in arrangements for p in a.parts) / len(arrangements)
    print(f"band: {notes:.0f} notes a variation (melody {len(arrangements[0].parts[0].notes)}, "
          f"keys ~{len(arrangements[0].parts[1].notes)}, bass {len(arrangements[0].parts[2].notes)}, "
          f"drums {len(arrangements[0].parts[3].notes)})")  # fmt: skip
    cores = min(len(os.sched_getaffinity(0)), len(melodies))
    with ThreadPoolExecutor(cores) as pool:
        cases = [
            ("before: melody + block chords", lambda: before_render(melodies, primer_steps, args.bpm, program,
                                                                   chords, soundfont, pool)),
            ("band mix: render_variations", lambda: render_variations(melodies, primer_steps, args.bpm,
                                                                      chords=chords, arrangements=arrangements)),
        ]  # fmt: skip
        for cold in (True, False):
            results = {label: ([], []) for label, _ in cases}
            stages = []
            for _label, function in cases:
                function()  # warm-up
            for _ in range(args.runs):
                for label, function in cases:
                    if cold:
                        NOTES.clear()
                    before_cpu, before = cpu_seconds(), time.perf_counter()
                    result = function()
                    results[label][0].append(time.perf_counter() - before)
                    results[label][1].append(cpu_seconds() - before_cpu)
                    if label.startswith("band"):
                        stages.append(result[2])
            print(f"\n{'every note new' if cold else 'every note heard before'}")
            print(f"{'case':34s} {'wall p50':>9s} {'wall min':>9s} {'cpu p50':>9s}")
            for label, (walls, cpus) in results.items():
                print(f"{row(label, walls)} {statistics.median(cpus):9.3f}")
            print("  band stages p50: " + ", ".join(f"{stage} {statistics.median(t[stage] for t in stages):.3f}"
                                                    for stage in STAGES))  # fmt: skip
            (before_walls, before_cpus), (band_walls, band_cpus) = results.values()
            print(f"  band / before: wall p50 {statistics.median(band_walls) / statistics.median(before_walls):.2f}x, "
                  f"cpu p50 {statistics.median(band_cpus) / statistics.median(before_cpus):.2f}x")  # fmt: skip
        previews = render_variations(melodies, primer_steps, args.bpm, chords=chords, arrangements=arrangements)[0]
        print(f"  band MP3s: {statistics.mean(len(p.mp3) for p in previews) / 1024:.0f} KiB each "
              f"({mp3.BITRATE_KBPS} kbit/s stereo), {previews[0].duration_s:.2f} s")


def lilypond_source(events: list[int], chords_per_bar: list[str], bpm: float) -> str:
    """The same lead sheet for LilyPond (C major spelling; enough to time the engraver)."""
    notes = events_to_notes(events)
    bars = -(-len(events) // STEPS_PER_BAR)
    sounding = [None] * (bars * STEPS_PER_BAR)
    for note in notes:
        sounding[note.start : note.end] = [(note.pitch, note.start)] * (note.end - note.start)
    durations = {16: "1", 12: "2.", 8: "2", 6: "4.", 4: "4", 3: "8.", 2: "8", 1: "16"}
    out = []
    for bar in range(bars):
        position = 0
        while position < STEPS_PER_BAR:
            here = sounding[bar * STEPS_PER_BAR + position]
            length = 1
            while position + length < STEPS_PER_BAR and sounding[bar * STEPS_PER_BAR + position + length] == here:
                length += 1
            values = split_value(position, length)
            if here is None:
                out += ["r" + durations[v] for v in values]
            else:
                letter, octave, alteration = spell(here[0], 0)
                name = letter + {1: "is", -1: "es", 0: ""}[alteration] + ("'" * (octave - 3) or "," * (3 - octave))
                out.append("~ ".join(name + durations[v] for v in values))
            position += length
        out.append("|")
    chords = " ".join(chords_per_bar[bar % len(chords_per_bar)] for bar in range(bars))
    return (
        '\\version "2.24.0"\n\\header { title = "Benchmark" tagline = ##f }\n'
        f"mel = {{ \\key c \\major \\time 4/4 \\tempo 4 = {bpm:g} {' '.join(out)} }}\n"
        f"harm = \\chordmode {{ {chords} }}\n"
        "\\score { << \\new ChordNames \\harm \\new Staff \\mel >> \\layout {} }\n"
    )


def lead_sheet_table(args, melodies) -> None:
    rng = random.Random(7)
    events = random_melody(rng, LEAD_SHEET_BARS)
    chords = progression(len(events))
    print(f"{LEAD_SHEET_BARS} bars at {args.bpm:g} bpm, chords C | G | Am | F")
    print(f"{'case':34s} {'wall p50':>9s} {'wall min':>9s} {'cpu p50':>9s}")
    runs = max(3, args.runs // 2)
    cases = [
        ("verovio -> PNG + PDF", lambda: engrave_lead_sheet(events, chords, args.bpm, "Benchmark")),
        ("verovio -> PNG only", lambda: engrave_lead_sheet(events, chords, args.bpm, "Benchmark", pdf=False)),
    ]
    lilypond = shutil.which("lilypond")
    folder = tempfile.mkdtemp()
    if lilypond:
        source = Path(folder, "sheet.ly")
        source.write_text(lilypond_source(events, LILYPOND_CHORDS, args.bpm))
        for formats in (["--png"], ["--png", "--pdf"]):
            command = [lilypond, "-s", *formats, "-dresolution=110", "-o", str(Path(folder, "out")), str(source)]
            label = "LilyPond -> " + " + ".join(f[2:].upper() for f in formats)
            cases.append((label, lambda command=command: subprocess.run(command, check=True, capture_output=True)))
    for label, function in cases:
        walls, cpus, result = measure(function, runs)
        print(f"{row(label, walls)} {statistics.median(cpus):9.3f}")
        if label == "verovio -> PNG + PDF":
            png, pdf = result
            print(f"{'  outputs':34s} PNG {len(png) / 1024:.0f} KiB, PDF {len(pdf) / 1024:.0f} KiB")
    shutil.rmtree(folder)
    if not lilypond:
        print("LilyPond is not installed (apt-get install lilypond): its row is missing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variations", type=int, default=4)
    parser.add_argument("--bars", type=int, default=8, help="bars per variation, primer included")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--instrument", default="piano")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-programs", action="store_true", help="skip the fluidsynth/ffmpeg comparison")
    parser.add_argument("--no-lead-sheet", action="store_true", help="skip the lead-sheet engraving")
    parser.add_argument("--only-band", action="store_true", help="only the band vs before comparison")
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
        f"{args.instrument}, {args.runs} runs after 1 warm-up"
    )
    chords = [progression(len(m)) for m in melodies]
    print("\n## band vs before (issue 22), interleaved")
    band_table(args, melodies, primer_steps, chords)
    if args.only_band:
        return
    for cold in (True, False):
        heard = "every note new" if cold else "every note heard before"
        print(f"\n## melody only, {heard}")
        plain = stage_table(args, melodies, primer_steps, None, cold)
        print(f"\n## with chords (C | G | Am | F), {heard}")
        chorded = stage_table(args, melodies, primer_steps, chords, cold)
    print(f"\nwith chords / melody only, total p50: {chorded['total'] / plain['total']:.2f}x")
    if not args.no_programs:
        print("\n## programs (before) vs in process (now), same melodies, interleaved")
        programs_table(args, melodies, primer_steps)
    if not args.no_lead_sheet:
        print("\n## lead sheet")
        lead_sheet_table(args, melodies)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
