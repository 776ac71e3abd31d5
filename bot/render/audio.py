"""Notes -> dry mono audio, synthesised in this process by libfluidsynth, a note at a time.

render_notes: each (frame, frames held, bank, program, pitch, velocity) note is rendered alone by
a FluidSynth synthesizer from pyfluidsynth (float samples, until its release has died away) and
added in at its frame; bank DRUM_BANK plays a percussion kit as on MIDI channel 10. The mixer
(bot.render.mix) renders every part of an arrangement this way, then pans, levels and masters.
Synthesis is dry (no reverb or chorus: the mix has its own room) and FluidSynth sums its voices,
so a note sounds the same wherever it is: rendered notes are kept (NoteCache, by soundfont, bank,
program, pitch, velocity and FluidSynth blocks held), and a preview whose notes were heard before
costs only the sums. Four variations over one primer and one band share most notes, and a burst
of requests shares more: a request whose notes were heard before synthesises in 0.005 s instead
of 0.078 s (BENCHMARKS.md section 9). A band answer plays ~900 notes of ~100-500 distinct ones,
and twenty answers ~2,000 distinct ones: a note is kept in 16 bits at its own scale (KeptNote)
and its release only until it is RELEASE_FLOOR_DB under its peak, so NOTE_CACHE_MB holds ~1,200
of them (float32 and whole releases held ~500, and the cache dropped notes the next request
needed). Synthesizers are kept per soundfont and reused, so the
soundfont is read once per process: the `fluidsynth` program spent ~0.05 CPU-s starting per run,
as much as rendering a 16 s melody. The deadline is checked between notes and every CHUNK_FRAMES
of a note (a few milliseconds of work). performance / accompaniment / synthesize / finish are the
melody-over-chords path as it was before the mixer (mono, peak-normalised): kept for the
benchmarks' comparison and the tests that check rendering notes apart against FluidSynth.

midi2audio is not used: it calls the fluidsynth program without a timeout and ignores its
failures (the program exits 0 after most of them), and a program start-up per request is the
cost this module exists to avoid.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from bot.render.errors import RenderError
from model.music.events import NO_EVENT, NOTE_OFF, STEPS_PER_BEAT, Note, events_to_notes
from model.music.midi_io import CHORD_PROGRAM, chord_notes

SAMPLE_RATE = 22050  # Hz; plenty for a melody preview, half the synth and MP3 work of 44.1 kHz
CHUNK_FRAMES = 4096  # frames rendered between two deadline checks (~0.19 s of audio, ~5 ms of work)
SYNTH_GAIN = 0.5  # FluidSynth master gain; float output cannot clip and the peak is normalised later
MAX_RELEASE_S = 10.0  # seconds a note's release may ring after its note-off before it is cut
NOTE_CACHE_MB = 64  # rendered notes kept per process (16-bit), the least recently used dropped first
RELEASE_FLOOR_DB = -80.0  # a note's release is rendered and kept until this far under the note's peak
RELEASE_CHUNK = 1024  # frames of release rendered between two checks of that floor (~46 ms)
POLYPHONY = 64  # voices; a melody and 4-note chords with their releases need far fewer
TAIL_S = 1.0  # seconds kept after the last note ends: its release and (bot.render.mix) the room
FADE_S = 0.25  # seconds of fade-out at the end of the tail
PEAK_DBFS = -1.0  # normalised peak level (headroom for the MP3 encoder's overshoot)
SILENCE_PEAK = 1e-4  # a rendered peak below this (linear) means FluidSynth produced no sound
PRIMER_VELOCITY = 70  # the primer is played softer than the continuation...
CONTINUATION_VELOCITY = 100  # ...so a listener hears where the model takes over
MELODY_CHANNEL, CHORD_CHANNEL = 0, 1
DRUM_BANK = 128  # the SoundFont bank of percussion kits (General MIDI channel 10)
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0 as FluidSynth does
FLUID_BLOCK = 64  # frames FluidSynth computes at a time (FLUID_BUFSIZE); events act between blocks

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
    """What one preview plays: (start step, end step, channel, pitch, velocity) notes, and the
    step where the last note ends."""

    notes: list[tuple[int, int, int, int, int]]
    end: int


def performance(events: list[int], primer_steps: int, primer_gap: bool, soft_primer: bool) -> Performance:
    """The melody a preview plays: softer primer, optional one-beat gap after it."""
    if primer_gap and 0 < primer_steps < len(events):
        # NOTE_OFF ends a primer note held across the boundary, so the gap is really silent.
        events = events[:primer_steps] + [NOTE_OFF] + [NO_EVENT] * (STEPS_PER_BEAT - 1) + events[primer_steps:]
    melody = events_to_notes(events, CONTINUATION_VELOCITY)
    if soft_primer:
        melody = [Note(n.start, n.end, n.pitch, PRIMER_VELOCITY) if n.start < primer_steps else n for n in melody]
    return _played(melody, MELODY_CHANNEL, melody[-1].end if melody else 0)


def accompaniment(chords: Sequence, primer_steps: int, primer_gap: bool) -> Performance:
    """The chords under a preview (one model.music.chords.Chord or None per step of the melody): their
    voicings (model.music.midi_io.chord_notes) on CHORD_CHANNEL, through the melody's last step. Played
    with the melody: with_chords."""
    if primer_gap and 0 < primer_steps < len(chords):
        chords = list(chords[:primer_steps]) + [None] * STEPS_PER_BEAT + list(chords[primer_steps:])
    return _played(chord_notes(chords), CHORD_CHANNEL, len(chords))


def with_chords(melody: Performance, chords: Performance | None) -> Performance:
    """Melody and chords together, as long as the melody (chords past its end are cut)."""
    if chords is None:
        return melody
    return Performance(melody.notes + chords.notes, melody.end)


def _played(notes: list[Note], channel: int, end: int) -> Performance:
    return Performance([(note.start, note.end, channel, note.pitch, note.velocity) for note in notes], end)


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

    def note(self, program: int, pitch: int, velocity: int, held: int, deadline: float, bank: int = 0) -> np.ndarray:
        """One note alone, held `held` frames -> mono float samples from its note-on until its
        release has died away (at most MAX_RELEASE_S after the note-off). FluidSynth acts on
        events between blocks, so the note-off falls on the first block boundary at or after
        `held` (at most 2.9 ms late at 22.05 kHz). bank DRUM_BANK plays the percussion kit
        `program` on MIDI channel 10 (FluidSynth's channel 9), as a General MIDI file would."""
        synth = self.synth
        if synth.get_active_voice_count():  # a note stopped at a deadline
            self._silence()
        channel = DRUM_CHANNEL if bank == DRUM_BANK else 0
        if synth.program_select(channel, self.font, bank, program) != 0:
            # not in this soundfont (TimGM6mb has 8 of the kits, not every GS one): General MIDI's
            # rule, the standard kit (or the piano), rather than whatever the channel held before
            synth.program_select(channel, self.font, bank, 0)
        synth.noteon(channel, pitch, velocity)
        chunks = [self._write(self.blocks(held) * self.block, deadline)]
        synth.noteoff(channel, pitch)
        scale = 10 ** (RELEASE_FLOOR_DB / 20)
        floor = _peak(chunks[0]) * scale
        for _ in range(-(-round(MAX_RELEASE_S * SAMPLE_RATE) // RELEASE_CHUNK)):
            if not synth.get_active_voice_count():
                break
            chunks.append(self._write(RELEASE_CHUNK, deadline))
            peak = _peak(chunks[-1])
            floor = max(floor, peak * scale)
            if peak < floor:  # the rest of the release would be inaudible under the note: cut it here
                self._silence()
                break
        else:  # a release that never ends (a looping sample in a broken soundfont): cut
            self._silence()
        if len(chunks) > 1:  # the last chunk kept to its last sample above the floor
            sounding = np.flatnonzero(np.abs(chunks[-1]) >= floor)
            chunks[-1] = chunks[-1][: sounding[-1] + 1 if len(sounding) else 0]
        return np.concatenate(chunks)

    def blocks(self, held: int) -> int:
        """FluidSynth blocks a note held `held` frames sounds before its note-off: notes held for
        the same number of blocks sound the same (the cache's key)."""
        return -(-held // self.block)

    def _silence(self) -> None:
        """Stop every voice at once. libfluidsynth 2.3's system reset lets a voice finish its
        release; All Sound Off (controller 120) on every channel ends it at the next block, so
        render whole blocks until none is left."""
        self.synth.system_reset()
        for channel in range(16):
            self.synth.cc(channel, 120, 0)
        for _ in range(round(MAX_RELEASE_S * SAMPLE_RATE / self.block)):
            if not self.synth.get_active_voice_count():
                return
            self._write(self.block, math.inf)

    def _write(self, frames: int, deadline: float) -> np.ndarray:
        """The next `frames` (a multiple of the block size) as mono float samples: the mean of
        FluidSynth's left and right, each written to a buffer of its own (a mean over interleaved
        pairs cost more than the synthesis)."""
        left, right = np.empty(frames, dtype=np.float32), np.empty(frames, dtype=np.float32)
        for done in range(0, frames, CHUNK_FRAMES):
            if time.monotonic() > deadline:
                raise RenderError("FluidSynth took longer than the rendering timeout allowed and was stopped")
            size = min(CHUNK_FRAMES, frames - done)
            self.write_float(self.synth.synth, size, left[done:].ctypes.data, 0, 1, right[done:].ctypes.data, 0, 1)
        left += right
        left *= np.float32(0.5)
        return left


def _peak(samples: np.ndarray) -> float:
    return float(max(samples.max(), -samples.min())) if len(samples) else 0.0


def _font_key(soundfont: str) -> tuple:
    """A soundfont file as it is now: a changed file (new size or modification time) is another."""
    stat = os.stat(soundfont)
    return soundfont, stat.st_size, stat.st_mtime_ns


class _SynthPool:
    """Loaded synthesizers per soundfont file, reused by later requests (at most one per thread
    rendering at once)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: dict[tuple, list[_Synth]] = {}

    def acquire(self, font: tuple) -> _Synth:
        with self.lock:
            idle = self.idle.setdefault(font, [])
            if idle:
                return idle.pop()
        return _Synth(load_fluidsynth(), font[0])

    def release(self, font: tuple, synth: _Synth) -> None:
        with self.lock:
            self.idle.setdefault(font, []).append(synth)


@dataclass(frozen=True)
class KeptNote:
    """A rendered note as the cache keeps it: 16-bit samples at the note's own scale (the
    rounding 96 dB under its peak; float16 took 10x as long to add back as int16 and a scale)."""

    pcm: np.ndarray  # int16
    scale: np.float32  # what one step of pcm is worth

    @classmethod
    def of(cls, samples: np.ndarray) -> KeptNote:
        scale = np.float32(max(_peak(samples), 1e-30) / 32767)
        return cls(np.round(samples / scale).astype(np.int16), scale)

    def __len__(self) -> int:
        return len(self.pcm)

    def add_to(self, audio: np.ndarray, at: int, scratch: np.ndarray) -> None:
        """Add the note into `audio` from frame `at` (cut at its end); `scratch`: float32 work
        space at least as long as the note."""
        length = min(len(self.pcm), len(audio) - at)
        part = np.multiply(self.pcm[:length], self.scale, out=scratch[:length])
        audio[at : at + length] += part


class NoteCache:
    """Rendered notes (_Synth.note's samples, kept as KeptNote) by (soundfont, program, pitch,
    velocity, frames held), at most `limit_mb` of samples, the least recently used dropped first.
    Thread-safe."""

    def __init__(self, limit_mb: float = NOTE_CACHE_MB):
        self.limit = limit_mb * 2**20
        self.lock = threading.Lock()
        self.notes: OrderedDict[tuple, KeptNote] = OrderedDict()
        self.size = 0  # bytes held

    def get(self, key: tuple) -> KeptNote | None:
        with self.lock:
            samples = self.notes.get(key)
            if samples is not None:
                self.notes.move_to_end(key)
            return samples

    def put(self, key: tuple, samples: np.ndarray) -> KeptNote:
        """Keep `samples` (float); returns them as kept."""
        kept = KeptNote.of(samples)
        with self.lock:
            if key in self.notes:
                return self.notes[key]
            self.notes[key] = kept
            self.size += kept.pcm.nbytes
            while self.size > self.limit:
                self.size -= self.notes.popitem(last=False)[1].pcm.nbytes
        return kept

    def clear(self) -> None:
        with self.lock:
            self.notes.clear()
            self.size = 0


_POOL = _SynthPool()
NOTES = NoteCache()  # this process's rendered notes, shared by every request


def load_soundfont(soundfont: str) -> None:
    """Load `soundfont` into a synthesizer now (a damaged file fails here); kept for the first request."""
    font = _font_key(soundfont)
    _POOL.release(font, _POOL.acquire(font))


def synthesize(
    soundfont: str, played: Performance, program: int, bpm: float, deadline: float, chord_program: int = CHORD_PROGRAM
) -> np.ndarray:
    """Render a performance to mono float samples at SAMPLE_RATE, last note's end + TAIL_S long
    (notes ringing past that are cut). Thread-safe: concurrent calls use separate synthesizers."""
    frames_per_step = SAMPLE_RATE * 60.0 / bpm / STEPS_PER_BEAT
    frames = round(played.end * frames_per_step + TAIL_S * SAMPLE_RATE)
    programs = {MELODY_CHANNEL: program, CHORD_CHANNEL: chord_program}
    notes = []
    for start, end, channel, pitch, velocity in played.notes:
        at = round(start * frames_per_step)
        notes.append((at, max(1, round(end * frames_per_step) - at), 0, programs[channel], pitch, velocity))
    return render_notes(soundfont, notes, frames, deadline)


def render_notes(soundfont: str, notes: Sequence[tuple[int, int, int, int, int, int]], frames: int,
                 deadline: float, out: np.ndarray | None = None) -> np.ndarray:
    """(frame, frames held, bank, program, pitch, velocity) notes, each rendered alone (or taken
    from NOTES) and added at its frame -> mono float samples, `frames` long (added into `out`
    when given). Thread-safe: concurrent calls use separate synthesizers."""
    audio = np.zeros(frames, dtype=np.float32) if out is None else out
    scratch = np.empty(0, dtype=np.float32)
    with played_notes(soundfont, deadline) as played:
        for note in notes:
            at = note[0]
            if at >= len(audio) or at < 0:
                continue
            kept = played.get(note)
            if len(scratch) < len(kept):
                scratch = np.empty(max(len(kept), 2 * len(scratch)), dtype=np.float32)
            kept.add_to(audio, at, scratch)
    return audio


class played_notes:  # noqa: N801 - used as a context manager, like open()
    """Rendered notes by render_notes' tuples, from NOTES or synthesised now (a synthesizer taken
    from the pool at the first note not heard before, given back on leaving)."""

    def __init__(self, soundfont: str, deadline: float):
        self.font, self.deadline, self.synth = _font_key(soundfont), deadline, None

    def __enter__(self) -> played_notes:
        return self

    def get(self, note: tuple[int, int, int, int, int, int]) -> KeptNote:
        _, held, bank, program, pitch, velocity = note
        if time.monotonic() > self.deadline:
            raise RenderError("FluidSynth took longer than the rendering timeout allowed and was stopped")
        key = _note_key(self.font, bank, program, pitch, velocity, held)
        kept = NOTES.get(key)
        if kept is None:
            self.synth = self.synth or _POOL.acquire(self.font)
            kept = NOTES.put(key, self.synth.note(program, pitch, velocity, held, self.deadline, bank))
        return kept

    def __exit__(self, *exc) -> None:
        if self.synth is not None:
            _POOL.release(self.font, self.synth)


def _note_key(font: tuple, bank: int, program: int, pitch: int, velocity: int, held: int) -> tuple:
    # Notes held for the same number of FluidSynth blocks sound the same (the note-off waits for
    # the block's end), so they share one rendering.
    return font, bank, program, pitch, velocity, -(-held // FLUID_BLOCK)


def render_new_notes(soundfont: str, notes: Sequence[tuple[int, int, int, int, int, int]], deadline: float,
                     pool: Executor, workers: int) -> None:
    """Put into NOTES every one of these render_notes notes it lacks, rendered in `pool`'s
    threads (a synthesizer each), so that render_notes then only adds them up."""
    font = _font_key(soundfont)
    new = {}
    for _, held, bank, program, pitch, velocity in notes:
        key = _note_key(font, bank, program, pitch, velocity, held)
        if key not in new and NOTES.get(key) is None:
            new[key] = (program, pitch, velocity, held, bank)
    if not new:
        return
    work = list(new.items())
    shares = max(1, min(len(work), workers))

    def render(share: list) -> None:
        synth = _POOL.acquire(font)
        try:
            for key, (program, pitch, velocity, held, bank) in share:
                NOTES.put(key, synth.note(program, pitch, velocity, held, deadline, bank))
        finally:
            _POOL.release(font, synth)

    for done in [pool.submit(render, work[index::shares]) for index in range(shares)]:
        done.result()


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
