"""Previews of generated melodies a songwriter can hear and see: MP3, MIDI and a piano-roll PNG;
and the whole song of a jam with an engraved lead sheet.

    previews, combined_png, timings = render_variations(melodies, primer_steps=32, bpm=120)
    previews, combined_png, timings = render_variations(melodies, 32, 120, "strings", chords=[chords] * 4)
    midi, mp3, lead_sheet_png, lead_sheet_pdf = render_song(events, chords, bpm=120, instrument="piano")

Every melody is the primer (the songwriter's first `primer_steps` events) followed by the model's
continuation. To hear where the model takes over, the primer is played softer (velocity 70 against
100) by default; `primer_gap=True` also puts one beat of silence between primer and continuation.
The MIDI file in a Preview is the plain melody (one velocity, no gap) for the songwriter's DAW;
with chords (one model.music.chords.Chord or None per step of the melody) it holds a MELODY and a CHORDS
track, the MP3 plays the chords softly under the melody and the piano roll names them.

Everything runs in this process (no programs are started): libfluidsynth through pyfluidsynth
with a General MIDI soundfont, LAME through lameenc, Pillow, and verovio + CairoSVG for lead
sheets; see scripts/apt-packages.txt and pyproject.toml. Rendering blocks: from asyncio run it
in a thread (asyncio.to_thread). Every failure raises RenderError with a message that says what
is missing and how to install it; a render past its `timeout` stops within a few milliseconds.
Modules: audio (FluidSynth, fade, normalise), mp3 (LAME), pianoroll (Pillow), leadsheet
(verovio), song (the whole song), instruments, errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bot.render.mp3 as mp3
import bot.render.pianoroll as pianoroll
from bot.render.audio import (
    SAMPLE_RATE,
    SOUNDFONT_ENV,
    accompaniment,
    find_soundfont,
    finish,
    load_fluidsynth,
    load_soundfont,
    performance,
    synthesize,
    with_chords,
)
from bot.render.errors import RenderError
from bot.render.instruments import DEFAULT_INSTRUMENT, INSTRUMENTS, resolve_instrument
from bot.render.leadsheet import engrave_lead_sheet, load_engraver
from bot.render.song import render_song
from model.music.midi_io import write_midi

__all__ = [
    "INSTRUMENTS",
    "SOUNDFONT_ENV",
    "Preview",
    "RenderError",
    "check_setup",
    "engrave_lead_sheet",
    "render_song",
    "render_variations",
    "resolve_instrument",
]

DEFAULT_TIMEOUT_S = 30.0  # seconds for a whole request; synthesis stops when they are over


@dataclass(frozen=True)
class Preview:
    midi: bytes  # the melody (and its CHORDS track) as a MIDI file, program = the chosen instrument
    mp3: bytes  # mono MP3 as rendered (soft primer / primer gap / chords included)
    png: bytes  # piano roll of this variation
    duration_s: float  # length of the audio encoded in the MP3


def check_setup(soundfont: str | None = None) -> str:
    """Raise RenderError if libfluidsynth, the soundfont (loaded for real: a damaged one fails
    here), the MP3 encoder or the lead-sheet engraver is missing; return the soundfont path.
    Call it when the bot starts: a broken install shows up at once, and the loaded synthesizer
    is kept for the first request."""
    path = find_soundfont(soundfont)
    load_fluidsynth()
    load_soundfont(path)
    mp3.load_lameenc()
    load_engraver()
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
    chords: Sequence[Sequence | None] | None = None,
) -> tuple[list[Preview], bytes, dict[str, float]]:
    """Render every melody (events, primer first). `chords`: per variation, its per-step chords
    (as long as the melody) or None. Returns the previews, one PNG stacking all variations
    labelled 1..N, and seconds spent per stage (synth, trim_normalise, midi_write, png, then
    mp3_encode: the wait for LAME once the rest is done; total)."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    if not melodies:
        raise RenderError("there is no melody to render")
    if not bpm > 0 or primer_steps < 0:
        raise RenderError(f"cannot render at {bpm} bpm with a primer of {primer_steps} steps")
    chords = list(chords) if chords is not None else [None] * len(melodies)
    if len(chords) != len(melodies):
        raise RenderError(f"{len(chords)} chord lists for {len(melodies)} melodies")
    for number, (events, progression) in enumerate(zip(melodies, chords), 1):
        if progression is not None and len(progression) != len(events):
            raise RenderError(f"variation {number} has {len(events)} steps but {len(progression)} chords")
    program = INSTRUMENTS[resolve_instrument(instrument)]
    soundfont = find_soundfont(soundfont)
    timings: dict[str, float] = {}

    def lap(stage: str) -> None:
        timings[stage] = time.perf_counter() - started - sum(timings.values())

    played = [
        with_chords(performance(events, primer_steps, primer_gap, soft_primer),
                    accompaniment(progression, primer_steps, primer_gap) if progression is not None else None)
        for events, progression in zip(melodies, chords)
    ]  # fmt: skip

    # libfluidsynth and LAME release the GIL, so threads render melodies side by side; notes that
    # variations share (the primer, the chords) are rendered once (bot.render.audio.NoteCache).
    # While LAME encodes, this thread writes the MIDI files and draws the piano rolls.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with ThreadPoolExecutor(min(cores, len(melodies))) as pool:
        rendered = list(pool.map(lambda p: synthesize(soundfont, p, program, bpm, deadline), played))
        lap("synth")
        pcms = [finish(audio, bool(p.end)) for audio, p in zip(rendered, played)]
        lap("trim_normalise")
        encoding = [pool.submit(mp3.encode, pcm) for pcm in pcms]
        midis = [write_midi(events, bpm, program, chords=progression) for events, progression in zip(melodies, chords)]
        lap("midi_write")
        layout = pianoroll.shared_layout(melodies)
        panels = [
            pianoroll.draw_panel(events, primer_steps, layout, str(index + 1), progression)
            for index, (events, progression) in enumerate(zip(melodies, chords))
        ]
        pngs = [pianoroll.png_bytes(panel) for panel in panels]
        combined = pianoroll.png_bytes(pianoroll.stack(panels)) if len(panels) > 1 else pngs[0]
        lap("png")
        mp3s = [future.result() for future in encoding]
        lap("mp3_encode")  # what is left of it once the rest is done
    timings["total"] = time.perf_counter() - started
    durations = [len(pcm) / SAMPLE_RATE for pcm in pcms]
    previews = [Preview(*fields) for fields in zip(midis, mp3s, pngs, durations)]
    return previews, combined, timings
