"""Melody events -> MP3 with the FluidSynth and ffmpeg programs.

Pipeline per variation: MIDI file -> `fluidsynth` renders raw float stereo audio to its stdout ->
numpy makes it mono, trims FluidSynth's ~2 s tail, fades out and normalises the peak -> one `ffmpeg`
process encodes several variations to MP3 at once (ffmpeg costs ~0.1 s of CPU just to start).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import mido
import numpy as np

from model.events import NO_EVENT, NOTE_OFF, STEPS_PER_BEAT, events_to_notes
from model.midi_io import write_midi

SAMPLE_RATE = 22050  # Hz; plenty for a melody preview, half the synth and MP3 work of 44.1 kHz
MP3_BITRATE = "96k"  # bits/s, mono: ~12 KiB per second of audio, far below Discord's 10 MiB
MP3_QUALITY = 9  # LAME algorithm quality, 0 (best, slowest) .. 9 (fastest); inaudible at 96k mono
SYNTH_GAIN = 0.5  # FluidSynth master gain; float output cannot clip and the peak is normalised later
TAIL_S = 0.5  # seconds kept after the last note ends, for its release
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

# General MIDI programs (0-based) a songwriter can pick by name.
INSTRUMENTS = {
    "piano": 0,  # Acoustic Grand Piano
    "electric piano": 4,  # Electric Piano 1
    "marimba": 12,
    "organ": 16,  # Drawbar Organ
    "guitar": 24,  # Acoustic Guitar (nylon)
    "bass": 33,  # Electric Bass (finger)
    "strings": 48,  # String Ensemble 1
    "sax": 65,  # Alto Sax
    "flute": 73,
    "synth": 80,  # Lead 1 (square)
}
DEFAULT_INSTRUMENT = "piano"
ALIASES = {
    "keys": "piano",
    "grand piano": "piano",
    "acoustic piano": "piano",
    "epiano": "electric piano",
    "e piano": "electric piano",
    "rhodes": "electric piano",
    "acoustic guitar": "guitar",
    "nylon guitar": "guitar",
    "bass guitar": "bass",
    "electric bass": "bass",
    "string": "strings",
    "string ensemble": "strings",
    "saxophone": "sax",
    "alto sax": "sax",
    "lead": "synth",
    "synth lead": "synth",
}


class RenderError(Exception):
    """A preview could not be made; the message says what is missing and how to fix it."""


def resolve_instrument(name: str | None) -> str:
    """A songwriter's instrument name (any case, a few aliases) -> a key of INSTRUMENTS."""
    if name is None:
        return DEFAULT_INSTRUMENT
    key = " ".join(name.lower().replace("-", " ").replace("_", " ").split())
    key = ALIASES.get(key, key)
    if key not in INSTRUMENTS:
        raise RenderError(f"unknown instrument {name!r}; choose one of: {', '.join(INSTRUMENTS)}")
    return key


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


def find_program(name: str) -> str:
    """Absolute path of `fluidsynth` or `ffmpeg` on $PATH, or a RenderError saying how to install it."""
    found = shutil.which(name)
    if found is None:
        label = {"fluidsynth": "FluidSynth"}.get(name, name)
        raise RenderError(f"{label} is not installed: apt-get install {name}")
    return found


def audio_midi(events: list[int], primer_steps: int, bpm: float, program: int, primer_gap: bool, soft_primer: bool):
    """The MIDI file FluidSynth plays: with an optional one-beat gap after the primer and a
    softer primer. Returns (midi bytes, seconds until the last note ends)."""
    if primer_gap and 0 < primer_steps < len(events):
        # NOTE_OFF ends a primer note held across the boundary, so the gap is really silent.
        events = events[:primer_steps] + [NOTE_OFF] + [NO_EVENT] * (STEPS_PER_BEAT - 1) + events[primer_steps:]
    midi = write_midi(events, bpm, program, velocity=CONTINUATION_VELOCITY)
    if soft_primer and primer_steps > 0:
        midi = _soften_primer(midi, primer_steps)
    notes = events_to_notes(events)
    end_steps = notes[-1].end if notes else 0
    return midi, end_steps * 60.0 / bpm / STEPS_PER_BEAT


def _soften_primer(midi: bytes, primer_steps: int) -> bytes:
    # write_midi has one velocity for all notes; lower the primer's note-ons afterwards.
    song = mido.MidiFile(file=io.BytesIO(midi))
    ticks_per_step = song.ticks_per_beat / STEPS_PER_BEAT
    primer_end = (primer_steps - 0.5) * ticks_per_step  # half a step of slack for tick rounding
    for track in song.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0 and tick < primer_end:
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
    command += ["-T", "raw", "-O", "float", "-E", "little", "-F", "-", soundfont, midi_path]
    # FluidSynth 2.3 starts SDL2 audio even when rendering to a file; SDL's ALSA device watcher
    # sleeps in 100 ms ticks and exit waits for it. The dummy driver saves ~0.07 s per render.
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    result = _run(command, "FluidSynth", deadline, env=env)
    stderr = result.stderr.decode(errors="replace")
    # FluidSynth exits 0 after many failures (bad soundfont or MIDI file): read its stderr too.
    if result.returncode != 0 or "error" in stderr.lower() or len(result.stdout) < 8:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {result.returncode}"
        raise RenderError(f"FluidSynth could not render the melody: {detail}")
    frames = len(result.stdout) // 8  # two little-endian float32 channels per frame
    stereo = np.frombuffer(result.stdout, dtype="<f4", count=frames * 2).reshape(frames, 2)
    return stereo.mean(axis=1)


def finish(samples: np.ndarray, end_s: float, has_notes: bool) -> np.ndarray:
    """Trim to the last note + TAIL_S, fade out, normalise the peak to PEAK_DBFS -> int16 PCM."""
    length = round((end_s + TAIL_S) * SAMPLE_RATE)
    audio = np.zeros(length, dtype=np.float32)
    kept = min(length, len(samples))
    audio[:kept] = samples[:kept]
    fade = min(round(FADE_S * SAMPLE_RATE), length)
    audio[length - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32) ** 2  # eases out, no click
    peak = float(np.abs(audio).max()) if length else 0.0
    if peak < SILENCE_PEAK:
        if has_notes:
            raise RenderError("FluidSynth produced silence; is the soundfont a General MIDI soundfont?")
        return np.zeros(length, dtype=np.int16)
    # Scaled to below full scale and rounded, so no sample can clip.
    audio *= 10 ** (PEAK_DBFS / 20) * 32767 / peak
    return np.round(audio).astype("<i2")


def encode_mp3(ffmpeg: str, pcm_paths: list[str], mp3_paths: list[str], deadline: float) -> None:
    """Encode mono 16-bit PCM files to MP3 in one ffmpeg process (one start-up for all)."""
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    for path in pcm_paths:
        command += ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", path]
    for index, path in enumerate(mp3_paths):
        command += ["-map", f"{index}:a", "-c:a", "libmp3lame", "-b:a", MP3_BITRATE]
        command += ["-compression_level", str(MP3_QUALITY), "-map_metadata", "-1", path]
    result = _run(command, "ffmpeg", deadline)
    missing = [path for path in mp3_paths if not os.path.exists(path) or os.path.getsize(path) == 0]
    if result.returncode != 0 or missing:
        detail = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
        raise RenderError(f"ffmpeg could not encode the MP3: {detail}")


def _run(command: list[str], label: str, deadline: float, env: dict | None = None) -> subprocess.CompletedProcess:
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        raise RenderError(f"rendering ran out of time before {label} could start")
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:  # subprocess.run has killed the process
        raise RenderError(f"{label} took longer than the {error.timeout:.2f} s left for rendering") from error
    except OSError as error:  # e.g. removed or not executable after find_program
        raise RenderError(f"cannot run {label} ({Path(command[0]).name}): {error.strerror}") from error
