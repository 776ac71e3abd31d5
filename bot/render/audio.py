"""Melody events -> finished mono audio with the FluidSynth program and a General MIDI soundfont.

Pipeline: the melodies of a group go into one MIDI file, one after another -> the `fluidsynth`
program renders it as raw float stereo audio to its stdout -> numpy cuts out each melody, makes it
mono, keeps a short tail, fades out and normalises the peak (bot.render.mp3 encodes the result).
FluidSynth costs about as much CPU to start (~0.05 s) as to render a 16 s melody, so a request
runs one group per CPU core rather than one process per melody.
"""

from __future__ import annotations

import io
import math
import os

import mido
import numpy as np

from bot.render.errors import RenderError, run
from model.events import NO_EVENT, NOTE_OFF, STEPS_PER_BEAT, events_to_notes
from model.midi_io import write_midi

SAMPLE_RATE = 22050  # Hz; plenty for a melody preview, half the synth and MP3 work of 44.1 kHz
SYNTH_PERIOD = 4096  # frames FluidSynth writes at a time
SYNTH_GAIN = 0.5  # FluidSynth master gain; float output cannot clip and the peak is normalised later
TAIL_S = 0.5  # seconds kept after the last note ends, for its release
SEPARATION_S = 2.0  # seconds between melodies rendered in one FluidSynth run; release and reverb die out
FADE_S = 0.25  # seconds of fade-out at the end of the tail
PEAK_DBFS = -1.0  # normalised peak level (headroom for the MP3 encoder's overshoot)
SILENCE_PEAK = 1e-4  # a rendered peak below this (linear) means FluidSynth produced no sound
PRIMER_VELOCITY = 70  # the primer is played softer than the continuation...
CONTINUATION_VELOCITY = 100  # ...so a listener hears where the model takes over

SOUNDFONT_ENV = "MELODYBOT_SOUNDFONT"
DEFAULT_SOUNDFONTS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # 6 MB, loads fast (apt-get install timgm6mb-soundfont)
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # 140 MB fallback (apt-get install fluid-soundfont-gm)
)


def find_soundfont(path: str | os.PathLike | None = None) -> str:
    """The soundfont to use: `path`, else $MELODYBOT_SOUNDFONT, else the first installed default."""
    chosen = path if path is not None else os.environ.get(SOUNDFONT_ENV) or None
    candidates = [os.fspath(chosen)] if chosen is not None else list(DEFAULT_SOUNDFONTS)
    for candidate in candidates:
        if os.path.isfile(candidate):
            _check_soundfont_header(candidate)
            return candidate
    raise RenderError(
        f"soundfont not found at {candidates[0]}: apt-get install timgm6mb-soundfont "
        f"or set {SOUNDFONT_ENV} to a General MIDI .sf2 file"
    )


def _check_soundfont_header(path: str) -> None:
    # FluidSynth silently renders silence from a file that is not a soundfont, so look first.
    with open(path, "rb") as f:
        header = f.read(12)
    if header[:4] != b"RIFF" or header[8:12] != b"sfbk":
        raise RenderError(f"{path} is not a SoundFont 2 (.sf2) file; set {SOUNDFONT_ENV} to a General MIDI .sf2 file")


def performance_midi(
    melodies: list[list[int]], primer_steps: int, bpm: float, program: int, primer_gap: bool, soft_primer: bool
) -> tuple[bytes, list[tuple[float, float]]]:
    """One MIDI file for FluidSynth that plays the melodies one after another, SEPARATION_S apart
    (one FluidSynth start-up for several melodies), with an optional one-beat gap after each
    primer and a softer primer. Returns (midi, [(start, end of last note) in seconds per melody])."""
    step_s = 60.0 / bpm / STEPS_PER_BEAT
    separation = math.ceil(SEPARATION_S / step_s)
    played: list[int] = []
    windows, primers = [], []
    for events in melodies:
        if primer_gap and 0 < primer_steps < len(events):
            # NOTE_OFF ends a primer note held across the boundary, so the gap is really silent.
            events = events[:primer_steps] + [NOTE_OFF] + [NO_EVENT] * (STEPS_PER_BEAT - 1) + events[primer_steps:]
        notes = events_to_notes(events)
        end = notes[-1].end if notes else 0
        windows.append((len(played) * step_s, end * step_s))
        primers.append((len(played), len(played) + min(primer_steps, end)))
        played += events[:end] + [NOTE_OFF] + [NO_EVENT] * separation
    del played[len(played) - separation :]  # FluidSynth itself renders ~2 s after the last event
    midi = write_midi(played, bpm, program, velocity=CONTINUATION_VELOCITY)
    if soft_primer and primer_steps > 0:
        midi = _soften(midi, primers)
    return midi, windows


def _soften(midi: bytes, ranges: list[tuple[int, int]]) -> bytes:
    # write_midi gives all notes one velocity; lower the note-ons in the primers' step ranges.
    song = mido.MidiFile(file=io.BytesIO(midi))
    ticks_per_step = song.ticks_per_beat / STEPS_PER_BEAT
    for track in song.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                step = round(tick / ticks_per_step)
                if any(start <= step < end for start, end in ranges):
                    message.velocity = PRIMER_VELOCITY
    buffer = io.BytesIO()
    song.save(file=buffer)
    return buffer.getvalue()


def synthesize(fluidsynth: str, soundfont: str, midi_path: str, deadline: float) -> np.ndarray:
    """Render a MIDI file to mono float samples at SAMPLE_RATE (FluidSynth's full length)."""
    # midi2audio 0.1.1 cannot be used: it puts -F/-r after the file names, cannot pass -q or the
    # raw/float options, blocks without a timeout and ignores failures. FluidSynth 2.3 reads
    # options first, then soundfonts, then MIDI files; "-F -" with "-T raw" writes to stdout, so
    # no WAV file is written and read back.
    command = [fluidsynth, "-n", "-i", "-q", "-g", str(SYNTH_GAIN), "-r", str(SAMPLE_RATE)]
    # Chorus is barely audible on one melody and costs ~10% of the synth time; loading only the
    # samples the melody plays saves ~15 ms of start-up.
    command += ["-C", "0", "-o", "synth.dynamic-sample-loading=1"]
    # Raw float samples on stdout skip a WAV file on disk, but only with large writes: at the default
    # 64 frames per write the pipe costs ~40% more CPU than a file. The period size does not move
    # notes (the output is byte-identical, only padded to a whole period).
    command += ["-z", str(SYNTH_PERIOD), "-T", "raw", "-O", "float", "-E", "little", "-F", "-", soundfont, midi_path]
    # FluidSynth 2.3 starts SDL2 audio even when rendering to a file; a thread of it then sleeps in
    # 100 ms ticks and exit waits for it (seen with strace). SDL's dummy driver saves ~0.07 s.
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    result = run(command, "FluidSynth", deadline, env=env)
    stderr = result.stderr.decode(errors="replace")
    # FluidSynth exits 0 after many failures (bad soundfont or MIDI file): read its stderr too.
    if result.returncode != 0 or "error" in stderr.lower() or len(result.stdout) < 8:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {result.returncode}"
        raise RenderError(f"FluidSynth could not render the melody: {detail}")
    frames = len(result.stdout) // 8  # two little-endian float32 channels per frame
    stereo = np.frombuffer(result.stdout, dtype="<f4", count=frames * 2).reshape(frames, 2)
    return stereo.mean(axis=1)


def finish(samples: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """Cut one melody out of `samples`: from `start_s` to its last note's end `end_s` (relative)
    + TAIL_S, fade out, normalise the peak to PEAK_DBFS -> mono int16 PCM."""
    start, length = round(start_s * SAMPLE_RATE), round((end_s + TAIL_S) * SAMPLE_RATE)
    audio = np.zeros(length, dtype=np.float32)
    kept = samples[start : start + length]
    audio[: len(kept)] = kept
    fade = min(round(FADE_S * SAMPLE_RATE), length)
    audio[length - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32) ** 2  # eases out, no click
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        if end_s > 0:  # the melody has notes
            raise RenderError("FluidSynth produced silence; is the soundfont a General MIDI soundfont?")
        return np.zeros(length, dtype=np.int16)
    # Scaled to below full scale and rounded, so no sample can clip.
    audio *= 10 ** (PEAK_DBFS / 20) * 32767 / peak
    return np.round(audio).astype("<i2")
