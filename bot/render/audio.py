"""Melody (and chord) notes -> finished mono audio, synthesised in this process by libfluidsynth.

Pipeline: a melody's events (and its chords' voicings) become timed note-ons and note-offs ->
a FluidSynth synthesizer from pyfluidsynth renders them chunk by chunk as float samples ->
numpy makes them mono, keeps a short tail, fades out and normalises the peak (bot.render.mp3
encodes the result). Synthesizers are kept per soundfont and reused, so the soundfont is read
once per process, not once per request: the `fluidsynth` program spent ~0.05 CPU-s starting per
run, as much as rendering a 16 s melody. The deadline is checked between chunks (CHUNK_FRAMES
apart, a few milliseconds of work), so a render never runs more than a chunk past it.

midi2audio is not used: it calls the fluidsynth program without a timeout and ignores its
failures (the program exits 0 after most of them), and a program start-up per request is the
cost this module exists to avoid.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.render.errors import RenderError
from model.events import NO_EVENT, NOTE_OFF, STEPS_PER_BEAT, Note, events_to_notes
from model.midi_io import CHORD_PROGRAM, chord_notes

SAMPLE_RATE = 22050  # Hz; plenty for a melody preview, half the synth and MP3 work of 44.1 kHz
CHUNK_FRAMES = 4096  # frames rendered between two deadline checks (~0.19 s of audio, ~5 ms of work)
SYNTH_GAIN = 0.5  # FluidSynth master gain; float output cannot clip and the peak is normalised later
MAX_DRAIN_S = 10.0  # seconds of audio rendered at most to let the voices of a previous render die out
POLYPHONY = 64  # voices; a melody and 4-note chords with their releases need far fewer
TAIL_S = 0.5  # seconds kept after the last note ends, for its release
FADE_S = 0.25  # seconds of fade-out at the end of the tail
PEAK_DBFS = -1.0  # normalised peak level (headroom for the MP3 encoder's overshoot)
SILENCE_PEAK = 1e-4  # a rendered peak below this (linear) means FluidSynth produced no sound
PRIMER_VELOCITY = 70  # the primer is played softer than the continuation...
CONTINUATION_VELOCITY = 100  # ...so a listener hears where the model takes over
MELODY_CHANNEL, CHORD_CHANNEL = 0, 1

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
    # A file that is not a soundfont would otherwise only show up as silence.
    with open(path, "rb") as f:
        header = f.read(12)
    if header[:4] != b"RIFF" or header[8:12] != b"sfbk":
        raise RenderError(f"{path} is not a SoundFont 2 (.sf2) file; set {SOUNDFONT_ENV} to a General MIDI .sf2 file")


def load_fluidsynth():
    """The pyfluidsynth module, or a RenderError saying how to install libfluidsynth."""
    try:
        import fluidsynth
    except ImportError as error:  # pyfluidsynth raises ImportError when it finds no libfluidsynth
        raise RenderError(f"FluidSynth is not installed: apt-get install libfluidsynth3 ({error})") from error
    return fluidsynth


@dataclass(frozen=True)
class Performance:
    """What one preview plays: (step, channel, pitch, velocity) events, velocity 0 for note-off,
    sorted by step with note-offs first, and the step where the last note ends."""

    events: list[tuple[int, int, int, int]]
    end: int


def performance(events: list[int], primer_steps: int, primer_gap: bool, soft_primer: bool) -> Performance:
    """The melody a preview plays: softer primer, optional one-beat gap after it."""
    if primer_gap and 0 < primer_steps < len(events):
        # NOTE_OFF ends a primer note held across the boundary, so the gap is really silent.
        events = events[:primer_steps] + [NOTE_OFF] + [NO_EVENT] * (STEPS_PER_BEAT - 1) + events[primer_steps:]
    melody = events_to_notes(events, CONTINUATION_VELOCITY)
    if soft_primer:
        melody = [Note(n.start, n.end, n.pitch, PRIMER_VELOCITY) if n.start < primer_steps else n for n in melody]
    return _timeline(melody, MELODY_CHANNEL, melody[-1].end if melody else 0)


def accompaniment(chords: Sequence, primer_steps: int, primer_gap: bool) -> Performance:
    """The chords under a preview (one model.chords.Chord or None per step of the melody): their
    voicings (model.midi_io.chord_notes) on CHORD_CHANNEL, through the melody's last step. Played
    with the melody in one pass (with_chords), or, when several variations share them, rendered
    once apart and mixed into each (mix)."""
    if primer_gap and 0 < primer_steps < len(chords):
        chords = list(chords[:primer_steps]) + [None] * STEPS_PER_BEAT + list(chords[primer_steps:])
    return _timeline(chord_notes(chords), CHORD_CHANNEL, len(chords))


def with_chords(melody: Performance, chords: Performance) -> Performance:
    """Melody and chords for one synthesizer pass (~20% less synthesis than two passes and a mix,
    the same samples): as long as the melody, like mix."""
    return Performance(_sorted(melody.events + chords.events), melody.end)


def _timeline(notes: list[Note], channel: int, end: int) -> Performance:
    timeline = []
    for note in notes:
        timeline += [(note.start, channel, note.pitch, note.velocity), (note.end, channel, note.pitch, 0)]
    return Performance(_sorted(timeline), end)


def _sorted(timeline: list) -> list:
    """By step; at one step, a pitch's note-off before its note-on."""
    return sorted(timeline, key=lambda event: (event[0], event[2], event[3] > 0))


def mix(melody: np.ndarray, chords: np.ndarray | None) -> np.ndarray:
    """The melody's samples with the chords' added, as long as the melody's (chords cut there)."""
    if chords is None:
        return melody
    mixed = melody.copy()
    length = min(len(melody), len(chords))
    mixed[:length] += chords[:length]
    return mixed


class _Synth:
    """One FluidSynth synthesizer with the soundfont loaded; used by one render at a time."""

    def __init__(self, fluidsynth, soundfont: str):
        # Chorus and reverb off: chorus is barely audible on a melody, reverb cost 40% of the synth
        # time, and its tail outlives a render (2.3 resets no reverb), so audio would depend on
        # the render before. Dry, the same notes give the same samples (but for a few attack
        # samples the first time a synthesizer plays them: ~0.1% of them, inaudible).
        options = {"synth.chorus.active": 0, "synth.reverb.active": 0, "synth.polyphony": POLYPHONY}
        self.synth = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=SAMPLE_RATE, channels=16, **options)
        self.font = self.synth.sfload(soundfont)
        if self.font < 0:
            self.synth.delete()
            raise RenderError(
                f"FluidSynth could not load the soundfont {soundfont}: the file is damaged or not a "
                f"General MIDI SoundFont; set {SOUNDFONT_ENV} to a General MIDI .sf2 file"
            )
        # pyfluidsynth only wraps 16-bit output (it clips); float output lets the peak be normalised
        # afterwards. Its CDLL handle is the library it loaded.
        self.write_float = fluidsynth._fl.fluid_synth_write_float
        self.write_float.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int] * 2
        self.write_float.restype = ctypes.c_int
        # FluidSynth computes audio in blocks of this many frames and hands out the rest of a block
        # on the next write: every render writes whole blocks, so none of it is left for the next.
        get_block = fluidsynth._fl.fluid_synth_get_internal_bufsize
        get_block.argtypes, get_block.restype = [ctypes.c_void_p], ctypes.c_int
        self.block = get_block(self.synth.synth)

    def drain(self) -> None:
        """Leave nothing of a previous render: libfluidsynth 2.3's system reset (and "all sounds
        off") lets a voice finish its release, so render whole blocks until every voice is gone."""
        self.synth.system_reset()
        scratch = np.zeros((self.block, 2), dtype=np.float32)
        for _ in range(round(MAX_DRAIN_S * SAMPLE_RATE / self.block)):
            if not self.synth.get_active_voice_count():
                return
            self.write_float(self.synth.synth, self.block, scratch.ctypes.data, 0, 2, scratch.ctypes.data, 1, 2)

    def render(self, played: Performance, programs: tuple[int, int], bpm: float, deadline: float) -> np.ndarray:
        """Mono float samples from the first step to the last note's end + TAIL_S."""
        synth = self.synth
        self.drain()
        for channel, program in zip((MELODY_CHANNEL, CHORD_CHANNEL), programs):
            synth.program_select(channel, self.font, 0, program)
        frames_per_step = SAMPLE_RATE * 60.0 / bpm / STEPS_PER_BEAT
        wanted = round(played.end * frames_per_step + TAIL_S * SAMPLE_RATE)
        length = -(-wanted // self.block) * self.block
        stereo = np.zeros((length, 2), dtype=np.float32)
        done = 0
        for step, channel, pitch, velocity in [*played.events, (None, 0, 0, 0)]:
            until = length if step is None else min(length, round(step * frames_per_step))
            while done < until:
                if time.monotonic() > deadline:
                    raise RenderError("FluidSynth took longer than the rendering timeout allowed and was stopped")
                count = min(CHUNK_FRAMES, until - done)
                pointer = stereo[done:].ctypes.data
                self.write_float(synth.synth, count, pointer, 0, 2, pointer, 1, 2)
                done += count
            if step is None:
                break
            if velocity:
                synth.noteon(channel, pitch, velocity)
            else:
                synth.noteoff(channel, pitch)
        return stereo[:wanted].mean(axis=1)


class _SynthPool:
    """Loaded synthesizers per soundfont file, reused by later requests (at most one per thread
    rendering at once). A changed file (new size or modification time) is loaded afresh."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: dict[tuple, list[_Synth]] = {}

    def acquire(self, soundfont: str) -> tuple[tuple, _Synth]:
        stat = os.stat(soundfont)
        key = (soundfont, stat.st_size, stat.st_mtime_ns)
        with self.lock:
            idle = self.idle.setdefault(key, [])
            if idle:
                return key, idle.pop()
        return key, _Synth(load_fluidsynth(), soundfont)

    def release(self, key: tuple, synth: _Synth) -> None:
        with self.lock:
            self.idle.setdefault(key, []).append(synth)


_POOL = _SynthPool()


def synthesize(
    soundfont: str, played: Performance, program: int, bpm: float, deadline: float, chord_program: int = CHORD_PROGRAM
) -> np.ndarray:
    """Render a performance to mono float samples at SAMPLE_RATE, last note's end + TAIL_S long.
    Thread-safe: concurrent calls use separate synthesizers."""
    key, synth = _POOL.acquire(soundfont)
    try:
        return synth.render(played, (program, chord_program), bpm, deadline)
    finally:
        _POOL.release(key, synth)


def finish(samples: np.ndarray, has_notes: bool) -> np.ndarray:
    """Fade out the tail's last FADE_S and normalise the peak to PEAK_DBFS -> mono int16 PCM."""
    audio = samples.astype(np.float32, copy=True)
    fade = min(round(FADE_S * SAMPLE_RATE), len(audio))
    if fade:
        audio[len(audio) - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32) ** 2  # eases out, no click
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak < SILENCE_PEAK:
        if has_notes:
            raise RenderError("FluidSynth produced silence; is the soundfont a General MIDI soundfont?")
        return np.zeros(len(audio), dtype=np.int16)
    # Scaled to below full scale and rounded, so no sample can clip.
    audio *= 10 ** (PEAK_DBFS / 20) * 32767 / peak
    return np.round(audio).astype("<i2")
