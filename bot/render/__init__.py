"""Previews of generated melodies a songwriter can hear and see: MP3, MIDI and a piano-roll PNG;
and the whole song of a jam with an engraved lead sheet.

    previews, combined_png, timings = render_variations(melodies, primer_steps=32, bpm=120)
    previews, combined_png, timings = render_variations(melodies, 32, 120, "strings", chords=[chords] * 4)
    previews, combined_png, timings = render_variations(melodies, 32, 120, chords=[chords] * 4,
                                                        arrangements=arrangements, midis=midis)
    midi, mp3, lead_sheet_png, lead_sheet_pdf = render_song(events, chords, bpm=120, instrument="piano")

Every melody is the primer (the songwriter's first `primer_steps` events) followed by the model's
continuation. To hear where the model takes over, the primer is played softer (velocity 70 against
100) by default; `primer_gap=True` also puts one beat of silence between primer and continuation.
The MIDI file in a Preview is the plain melody (one velocity, no gap) for the songwriter's DAW;
with chords (one model.music.chords.Chord or None per step of the melody) it holds a MELODY and a CHORDS
track, the MP3 plays the chords softly under the melody and the piano roll names them. With
arrangements (model.band: melody, keys, bass, drums), the MP3 plays the band and the piano roll
shows it faint beneath the melody; the arranger's MIDI files are sent as given. Every MP3 is a
stereo mix at -14 LUFS (bot.render.mix).

Everything runs in this process (no programs are started): libfluidsynth through pyfluidsynth
with a General MIDI soundfont, pedalboard and pyloudnorm (scipy) for the mix, LAME through
libmp3lame (ctypes), Pillow, and verovio + CairoSVG for lead sheets; see scripts/apt-packages.txt and
pyproject.toml. Rendering blocks: from asyncio run it in a thread (asyncio.to_thread). Every
failure raises RenderError with a message that says what is missing and how to install it; a
render past its `timeout` stops within a few milliseconds while synthesising, or once the
mix's current step (tens of milliseconds) is done.
Modules: audio (FluidSynth, a note at a time), mix (parts -> stereo demo mix: pedalboard),
loudness (BS.1770, limiter), arrangement (the plain melody-over-chords arrangement, soft primer,
gap), mp3 (LAME), pianoroll (Pillow), leadsheet (verovio), song (the whole song), instruments, errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bot.render.mp3 as mp3
import bot.render.pianoroll as pianoroll
from bot.render.arrangement import for_preview, plain_arrangement
from bot.render.audio import SAMPLE_RATE, SOUNDFONT_ENV, find_soundfont, load_fluidsynth, load_soundfont
from bot.render.errors import RenderError
from bot.render.instruments import DEFAULT_INSTRUMENT, INSTRUMENTS, resolve_instrument
from bot.render.leadsheet import engrave_lead_sheet, load_engraver
from bot.render.mix import load_mixer, master, render_bus, synthesize_new_notes
from bot.render.song import render_song
from model.band.parts import Arrangement
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
    midi: bytes  # the arranger's MIDI file, or the melody (and its CHORDS track) on the chosen instrument
    mp3: bytes  # stereo MP3 as mixed (soft primer / primer gap / chords or band included)
    duration_s: float  # length of the audio encoded in the MP3


def check_setup(soundfont: str | None = None) -> str:
    """Raise RenderError if libfluidsynth, the soundfont (loaded for real: a damaged one fails
    here), the mixer's libraries, the MP3 encoder or the lead-sheet engraver is missing; return
    the soundfont path.
    Call it when the bot starts: a broken install shows up at once, and the loaded synthesizer
    is kept for the first request."""
    path = find_soundfont(soundfont)
    load_fluidsynth()
    load_soundfont(path)
    mp3.load_lame()
    load_mixer()
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
    arrangements: Sequence[Arrangement] | None = None,
    midis: Sequence[bytes] | None = None,
    lyrics: Sequence[Sequence | None] | None = None,
) -> tuple[list[Preview], bytes, dict[str, float]]:
    """Render every melody (events, primer first). `chords`: per variation, its per-step chords
    (as long as the melody) or None. `arrangements`: per variation, what the band plays
    (model.band; its MELODY part is the melody), mixed in stereo; without them each variation is
    the melody over its chords (style "none"), mixed the same way. `midis`: per variation, the
    MIDI file to send (the arranger's); without them, the melody and its chords
    (model.music.midi_io.write_midi). `lyrics`: per variation, (step, syllable) pairs or None: lyric
    events in the MIDI written here, labels on its piano roll.
    Returns the previews, one PNG stacking all variations' piano rolls labelled 1..N (every answer
    sends that one picture; the panels are alike in height), and
    seconds: synth (the parts), midi_write and png (this thread), audio_wait (for the audio once
    those are done), total; mix and mp3_encode summed over the variations (they overlap)."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    if not melodies:
        raise RenderError("there is no melody to render")
    if not bpm > 0 or primer_steps < 0:
        raise RenderError(f"cannot render at {bpm} bpm with a primer of {primer_steps} steps")
    chords = list(chords) if chords is not None else [None] * len(melodies)
    for name, given in (("chord lists", chords), ("arrangements", arrangements), ("MIDI files", midis)):
        if given is not None and len(given) != len(melodies):
            raise RenderError(f"{len(given)} {name} for {len(melodies)} melodies")
    for number, (events, progression) in enumerate(zip(melodies, chords), 1):
        if progression is not None and len(progression) != len(events):
            raise RenderError(f"variation {number} has {len(events)} steps but {len(progression)} chords")
    program = INSTRUMENTS[resolve_instrument(instrument)]
    soundfont = find_soundfont(soundfont)
    timings: dict[str, float] = {}

    def lap(stage: str) -> None:
        timings[stage] = time.perf_counter() - started - sum(timings.values())

    if arrangements is None:
        arrangements = [plain_arrangement(events, harmony, program) for events, harmony in zip(melodies, chords)]
    played = [for_preview(arrangement, primer_steps, soft_primer, primer_gap) for arrangement in arrangements]

    def sound_of(bus: tuple) -> tuple[bytes, float, dict[str, float]]:
        """One variation's sound from its rendered bus: mixed, encoded (MP3, seconds, seconds per stage)."""
        began = time.perf_counter()
        audio = master(*bus, deadline).T
        mixed = time.perf_counter()
        data = mp3.encode(audio)
        spent = {"mix": mixed - began, "mp3_encode": time.perf_counter() - mixed}
        return data, len(audio) / SAMPLE_RATE, spent

    # The notes no request played before are synthesised first, spread over the pool (libfluidsynth
    # runs in parallel); notes that variations share (the primer, the band) once (NoteCache). Then
    # the parts are added up here, one variation after another: that is many small steps in Python,
    # and two threads doing it at once spent 3x the CPU handing the GIL to each other, for no gain
    # in time. Each variation's mix and MP3 (pedalboard, scipy and LAME: native code that releases
    # the GIL) run in the pool while this thread adds up the next variation, then writes the MIDI
    # files and draws the piano rolls.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores, len(melodies))
    with ThreadPoolExecutor(workers) as pool:
        synthesize_new_notes(played, bpm, soundfont, deadline, pool, workers)
        sounds = [pool.submit(sound_of, render_bus(arrangement, bpm, soundfont, deadline)) for arrangement in played]
        lap("synth")
        words = list(lyrics) if lyrics is not None else [None] * len(melodies)
        if midis is None:
            midis = [write_midi(events, bpm, program, chords=harmony, lyrics=w)
                     for events, harmony, w in zip(melodies, chords, words)]
        lap("midi_write")
        layout = pianoroll.shared_layout(melodies, arrangements)
        tall = any(pianoroll.band_parts(arrangement) for arrangement in arrangements)  # panels alike
        panels = [
            pianoroll.draw_panel(events, primer_steps, layout, str(index + 1), progression, arrangement, tall, labels=w)
            for index, (events, progression, arrangement, w) in enumerate(zip(melodies, chords, arrangements, words))
        ]
        combined = pianoroll.png_bytes(pianoroll.stack(panels) if len(panels) > 1 else panels[0])
        lap("png")
        results = [future.result() for future in sounds]
        lap("audio_wait")  # what is left of the audio once the rest is done
    mp3s, durations = [r[0] for r in results], [r[1] for r in results]
    for stage in ("mix", "mp3_encode"):
        timings[stage] = sum(r[2][stage] for r in results)  # summed over the variations: mix and MP3 overlap
    timings["total"] = time.perf_counter() - started
    previews = [Preview(*fields) for fields in zip(midis, mp3s, durations)]
    return previews, combined, timings
