"""Previews of generated melodies a songwriter can hear and see: MP3, MIDI and a piano-roll PNG.

    previews, combined_png, timings = render_variations(melodies, primer_steps=32, bpm=120)
    previews, combined_png, timings = await render_variations_async(melodies, 32, 120, "strings")

Every melody is the primer (the songwriter's first `primer_steps` events) followed by the model's
continuation. To hear where the model takes over, the primer is played softer (velocity 70 against
100) by default; `primer_gap=True` also puts one beat of silence between primer and continuation.
The MIDI file in a Preview is the plain melody (one velocity, no gap) for the songwriter's DAW.

Needs the `fluidsynth` program, a General MIDI soundfont and the `ffmpeg` program (MP3 through its
libmp3lame encoder): see scripts/apt-packages.txt.
Every failure raises RenderError with a message that says what is missing and how to install it.
Modules: audio (FluidSynth, trim, normalise), mp3 (ffmpeg), pianoroll (Pillow), instruments, errors.
"""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bot.render import mp3, pianoroll
from bot.render.audio import SAMPLE_RATE, SOUNDFONT_ENV, find_soundfont, finish, performance_midi, synthesize
from bot.render.errors import RenderError, find_program
from bot.render.instruments import DEFAULT_INSTRUMENT, INSTRUMENTS, resolve_instrument
from model.midi_io import write_midi

__all__ = [
    "INSTRUMENTS",
    "SOUNDFONT_ENV",
    "Preview",
    "RenderError",
    "check_setup",
    "render_variation",
    "render_variations",
    "render_variations_async",
    "resolve_instrument",
]

DEFAULT_TIMEOUT_S = 30.0  # seconds for a whole request; FluidSynth and ffmpeg are killed after it
TIMEOUT_GRACE_S = 2.0  # seconds the async wrapper waits beyond `timeout` for the thread to report


@dataclass(frozen=True)
class Preview:
    midi: bytes  # the melody as a MIDI file, program = the chosen instrument
    mp3: bytes  # mono MP3 as rendered (soft primer / primer gap included)
    png: bytes  # piano roll of this variation
    duration_s: float  # length of the MP3's audio


def check_setup(soundfont: str | None = None) -> str:
    """Raise RenderError if FluidSynth, the soundfont or the MP3 encoder is missing; return the
    soundfont path. Cheap: call it when the bot starts so a broken install shows up at once."""
    find_program("fluidsynth")
    path = find_soundfont(soundfont)
    find_program("ffmpeg")
    return path


def render_variations(
    melodies: list[list[int]],
    primer_steps: int,
    bpm: float,
    instrument: str = DEFAULT_INSTRUMENT,
    *,
    primer_gap: bool = False,
    soft_primer: bool = True,
    soundfont: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[list[Preview], bytes, dict[str, float]]:
    """Render every melody (events, primer first). Returns the previews, one PNG stacking all
    variations labelled 1..N, and seconds spent per stage (midi_write, synth, trim_normalise,
    mp3_encode, png, total). Blocks: from asyncio use render_variations_async."""
    options = (primer_gap, soft_primer, soundfont, timeout)
    return _render(melodies, primer_steps, bpm, instrument, *options, numbered=True)


def render_variation(
    events: list[int],
    primer_steps: int,
    bpm: float,
    instrument: str = DEFAULT_INSTRUMENT,
    *,
    primer_gap: bool = False,
    soft_primer: bool = True,
    soundfont: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Preview:
    """Render one melody; see render_variations."""
    options = (primer_gap, soft_primer, soundfont, timeout)
    previews, _, _ = _render([events], primer_steps, bpm, instrument, *options, numbered=False)
    return previews[0]


async def render_variations_async(
    melodies: list[list[int]],
    primer_steps: int,
    bpm: float,
    instrument: str = DEFAULT_INSTRUMENT,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    **options,
) -> tuple[list[Preview], bytes, dict[str, float]]:
    """render_variations in a worker thread, so the event loop keeps running; RenderError after
    `timeout` seconds (the FluidSynth and ffmpeg processes are killed then)."""
    call = functools.partial(render_variations, melodies, primer_steps, bpm, instrument, timeout=timeout, **options)
    try:
        return await asyncio.wait_for(asyncio.to_thread(call), timeout + TIMEOUT_GRACE_S)
    except TimeoutError as error:  # only if the thread overran its own deadline by the grace time
        raise RenderError(f"rendering took longer than {timeout:.1f} s") from error


def _render(melodies, primer_steps, bpm, instrument, primer_gap, soft_primer, soundfont, timeout, numbered):
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    if not melodies:
        raise RenderError("there is no melody to render")
    if not bpm > 0 or primer_steps < 0:
        raise RenderError(f"cannot render at {bpm} bpm with a primer of {primer_steps} steps")
    program = INSTRUMENTS[resolve_instrument(instrument)]
    fluidsynth, soundfont = find_program("fluidsynth"), find_soundfont(soundfont)
    ffmpeg = find_program("ffmpeg")
    timings: dict[str, float] = {}

    def lap(stage: str) -> None:
        timings[stage] = time.perf_counter() - started - sum(timings.values())

    # One group of melodies per CPU core: one FluidSynth and one ffmpeg process per group.
    count = len(melodies)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    groups = [list(range(start, count, min(count, cores))) for start in range(min(count, cores))]
    with tempfile.TemporaryDirectory(prefix="melodybot-render-") as folder, ThreadPoolExecutor(len(groups)) as pool:
        midis = [write_midi(events, bpm, program) for events in melodies]
        windows: list[tuple[float, float]] = [(0.0, 0.0)] * count
        for number, group in enumerate(groups):
            played, group_windows = performance_midi(
                [melodies[i] for i in group], primer_steps, bpm, program, primer_gap, soft_primer
            )
            for index, window in zip(group, group_windows):
                windows[index] = window
            with open(os.path.join(folder, f"group{number}.mid"), "wb") as f:
                f.write(played)
        lap("midi_write")

        def synth(number: int):  # the threads only wait on the FluidSynth processes
            return synthesize(fluidsynth, soundfont, os.path.join(folder, f"group{number}.mid"), deadline)

        group_samples = list(pool.map(synth, range(len(groups))))
        lap("synth")

        pcms = [np.empty(0, np.int16)] * count
        for group, samples in zip(groups, group_samples):
            for index in group:
                pcms[index] = finish(samples, *windows[index])
        lap("trim_normalise")

        mp3s = _encode(pcms, groups, ffmpeg, folder, pool, deadline)
        lap("mp3_encode")

    layout = pianoroll.shared_layout(melodies)
    panels = [
        pianoroll.draw_panel(events, primer_steps, layout, str(index + 1) if numbered else "")
        for index, events in enumerate(melodies)
    ]
    pngs = [pianoroll.png_bytes(panel) for panel in panels]
    combined = pianoroll.png_bytes(pianoroll.stack(panels)) if numbered else pngs[0]
    lap("png")
    timings["total"] = time.perf_counter() - started
    durations = [len(pcm) / SAMPLE_RATE for pcm in pcms]
    previews = [Preview(*fields) for fields in zip(midis, mp3s, pngs, durations)]
    return previews, combined, timings


def _encode(pcms, groups, ffmpeg, folder, pool, deadline) -> list[bytes]:
    mp3s = [b""] * len(pcms)
    prefixes = [os.path.join(folder, f"group{number}-") for number in range(len(groups))]
    jobs = [[pcms[index] for index in group] for group in groups]
    encoded = pool.map(mp3.encode_with_ffmpeg, [ffmpeg] * len(groups), jobs, prefixes, [deadline] * len(groups))
    for group, group_mp3s in zip(groups, encoded):
        for index, data in zip(group, group_mp3s):
            mp3s[index] = data
    return mp3s
