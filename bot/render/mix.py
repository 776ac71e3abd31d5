"""An arrangement (model.band.parts) -> a finished stereo mix, like a songwriter's demo.

    audio = mix(arrangement, bpm)  # (frames, 2) float32 at SAMPLE_RATE, -14 LUFS, peak <= -1.7 dBFS

Each part is rendered dry by libfluidsynth, note by note (bot.render.audio.render_notes: a note
heard before is not rendered again; velocities to the nearest VELOCITY_STEP), drums from the
percussion bank as on MIDI channel 10. Then: each part levelled (Part.level_db) and panned
(Part.pan, constant power; the drum kit spread around it by instrument), a light room reverb on a
mono send (pedalboard's Reverb, more on the melody and keys than on bass, none on the kick), bus
compression (pedalboard's Compressor, on a bus first brought to a reference RMS level so that it
works the same on every answer), and the loudness set to TARGET_LUFS integrated (ITU-R BS.1770)
under a lookahead peak limiter at CEILING_DBFS: the loudness after limiting is predicted from the
bus's K-weighted power and the gain corrected until it is within LOUDNESS_TOLERANCE, so the
variations of one answer end within 2 x LOUDNESS_TOLERANCE of each other. Same input, same samples.

Rendering notes apart and adding them is what FluidSynth does with reverb and chorus off, but for
two things a channel does between notes, done here: a note struck again on the same key releases
the one still sounding (its note-off moves to the new note-on), and a hi-hat closes an open one
(the General MIDI kit's exclusive class: the open hat released fast, as FluidSynth does it).
tests/test_mix.py compares both with FluidSynth playing the notes on one channel.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np
from scipy.linalg.blas import sger

from bot.render.audio import (
    DRUM_BANK,
    SAMPLE_RATE,
    TAIL_S,
    find_soundfont,
    played_notes,
    render_new_notes,
    render_notes,
)
from bot.render.errors import RenderError
from bot.render.loudness import frame_peaks, integrated_from_power, limiter_gain, weighted_power
from model.music.events import STEPS_PER_BEAT

TARGET_LUFS = -14.0  # what streaming services normalise to
LOUDNESS_TOLERANCE = 0.2  # LU; variations end within 2x this of each other (the MP3 adds ~0.05)
CEILING_DBFS = -1.7  # sample peak before encoding; MP3 moves peaks up to ~0.3 dB: decoded, <= -1 dBFS
REFERENCE_DB = -20.0  # the bus's RMS level (dBFS, sounding parts) going into the compressor
MAX_TRIES = 6  # gains tried to reach the target under the limiter
FADE_S = 0.4  # seconds of fade-out at the end of the tail
DEFAULT_TIMEOUT_S = 30.0
SILENCE_PEAK = 1e-4  # a part whose rendered peak is below this (linear) produced no sound

# The room: a small, fairly damped space (pedalboard Reverb is Freeverb), fed by a send per part.
ROOM = dict(room_size=0.35, damping=0.55, width=1.0, wet_level=0.32, dry_level=0.0)  # wet/dry ~ -16 dB
SEND_DB = {"MELODY": -13.0, "KEYS": -11.0, "GUITAR": -12.0, "CHORDS": -11.0, "BASS": -26.0, "DRUMS": -17.0}
DEFAULT_SEND_DB = -13.0
KICK_SEND_DB = -40.0  # the kick stays dry (the bass nearly): reverb on them muddies the low end
# Bus compression: glue, a few dB on the loudest moments of a bus at REFERENCE_DB.
COMPRESSOR = dict(threshold_db=-20.0, ratio=2.5, attack_ms=12.0, release_ms=150.0)

# Where the kit's pieces sit around the drum part's pan (audience's view), General MIDI keys.
DRUM_SPREAD = {
    42: 0.3, 44: 0.3, 46: 0.3,  # hi-hats
    49: -0.4, 57: 0.45, 55: -0.3, 52: 0.4,  # crashes, splash, china
    51: 0.4, 59: 0.4, 53: 0.4,  # rides
    41: -0.35, 43: -0.3, 45: -0.15, 47: 0.0, 48: 0.15, 50: 0.3,  # toms, low to high
    54: 0.45, 70: 0.45, 69: 0.4, 39: -0.1,  # tambourine, maracas, cabasa, clap
}  # fmt: skip
KICKS = {35, 36}
HI_HATS = {42, 44, 46}  # one exclusive class: each closes the one before
# How FluidSynth silences a note its exclusive class cuts: the volume envelope's release set to
# -200 timecents (fluid_voice_kill_excl), 100 dB in 0.89 s.
CHOKE_FADE_S = 2 ** (-200 / 1200)
CHOKE_FADE_DB = 100.0
# Velocities are played to the nearest multiple of this (at most 4 away: 0.7 dB at velocity 100,
# 1.1 dB at 64, as much as the arranger's own +-3 humanising; the timbre the same), so that
# humanised parts reuse rendered notes: over 40 answers a band plays ~1,700 distinct notes at 8,
# ~2,600 at 4, and the note cache (NOTE_CACHE_MB) holds ~1,400, so a warm worker renders ~2.5x
# fewer new notes an answer (BENCHMARKS.md, issue 22). The MIDI file keeps every velocity as the
# arranger wrote it.
VELOCITY_STEP = 8


_WARM = []  # whether load_mixer has run its libraries once in this process


def load_mixer():
    """pedalboard, or a RenderError saying how to install it (pyloudnorm and scipy: the same).
    The first call also runs each library once on a few silent frames, so that the first preview
    (and two threads importing at once) pays no start-up."""
    try:
        import pedalboard
        import pyloudnorm  # noqa: F401
        import scipy.ndimage  # noqa: F401
        import scipy.signal  # noqa: F401
    except ImportError as error:
        raise RenderError(f"the mixer's libraries are not installed: pip install pedalboard pyloudnorm "
                          f"({error})") from error
    if not _WARM:
        silence = np.zeros((2, SAMPLE_RATE), dtype=np.float32)
        pedalboard.Compressor(**COMPRESSOR)(pedalboard.Reverb(**ROOM)(silence, SAMPLE_RATE), SAMPLE_RATE)
        integrated_from_power(weighted_power(silence, SAMPLE_RATE), SAMPLE_RATE)
        limiter_gain(frame_peaks(silence + 1.0), 0.5, SAMPLE_RATE)
        _WARM.append(True)
    return pedalboard


def mix(arrangement, bpm: float, soundfont: str | None = None, deadline: float | None = None) -> np.ndarray:
    """The arrangement played, mixed and mastered -> (frames, 2) float32 at SAMPLE_RATE: its
    `steps` plus TAIL_S long, TARGET_LUFS integrated, sample peak <= CEILING_DBFS (silence stays
    silence). Raises RenderError when a part with notes makes no sound or time runs out."""
    if not bpm > 0:
        raise RenderError(f"cannot render at {bpm} bpm")
    deadline = time.monotonic() + DEFAULT_TIMEOUT_S if deadline is None else deadline
    dry, send = render_bus(arrangement, bpm, find_soundfont(soundfont), deadline)
    return master(dry, send, deadline).T


def render_bus(arrangement, bpm: float, soundfont: str, deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """The parts rendered, levelled and panned -> (dry bus (2, frames): a channel a row, reverb
    send (frames,): mono, the room spreads it)."""
    frames_per_step = SAMPLE_RATE * 60.0 / bpm / STEPS_PER_BEAT
    frames = round(arrangement.steps * frames_per_step + TAIL_S * SAMPLE_RATE)
    bus = np.zeros((3, frames), dtype=np.float32)  # dry left, dry right, send
    mono = np.empty(frames, dtype=np.float32)  # one place in the stereo image at a time
    for part in arrangement.parts:
        if not part.notes:
            continue
        level = 10 ** (part.level_db / 20)
        part_send = 10 ** (SEND_DB.get(part.name, DEFAULT_SEND_DB) / 20)
        heard = False
        for (pan, dry_kick), group in _places(part, frames_per_step).items():
            mono.fill(0.0)
            _render_place(part, group, soundfont, deadline, mono)
            heard = heard or float(np.abs(mono[::8]).max()) >= SILENCE_PEAK  # (a drum hit is > 8 frames)
            send = 10 ** (KICK_SEND_DB / 20) if dry_kick else part_send
            gains = np.append(_pan_gains(pan), np.float32(send)) * np.float32(level)
            # bus += gains x mono in one pass over the place (BLAS's rank-one update; numpy's
            # multiply-then-add per row went over it six times)
            sger(1.0, mono, gains, a=bus.T, overwrite_a=True)
        if not heard and min(n.start for n in part.notes) * frames_per_step < frames:
            raise RenderError(f"FluidSynth produced silence for the {part.name} part; is the soundfont "
                              "a General MIDI soundfont with a drum kit?")  # fmt: skip
    return bus[:2], bus[2]


def _render_place(part, group: list[tuple], soundfont: str, deadline: float, out: np.ndarray) -> None:
    """One place's notes (_places) added into `out`: for drums, hi-hats closing each other."""
    if part.is_drum and any(note[4] in HI_HATS for note in group):
        _with_hats_closed(group, soundfont, deadline, out)
    else:
        render_notes(soundfont, group, len(out), deadline, out=out)


def _places(part, frames_per_step: float) -> dict[tuple[float, bool], list[tuple]]:
    """A part's notes as render_notes plays them ((frame, frames held, bank, program, pitch,
    velocity)), grouped by where they sit in the stereo image: (pan, stays dry) -> notes."""
    bank = DRUM_BANK if part.is_drum else 0
    notes = sorted(part.notes, key=lambda n: (n.start, n.pitch))
    onsets = [max(0, round(note.start * frames_per_step)) for note in notes]  # humanised early: from 0
    # the next onset on the same key: FluidSynth releases a note struck again there
    next_same: dict[int, int] = {}
    release_at = [0] * len(notes)
    for index in range(len(notes) - 1, -1, -1):
        note = notes[index]
        end = round(note.end * frames_per_step)
        if note.pitch in next_same:
            end = min(end, next_same[note.pitch])
        release_at[index] = end
        next_same[note.pitch] = onsets[index]
    groups: dict[tuple[float, bool], list[tuple]] = defaultdict(list)
    for note, at, end in zip(notes, onsets, release_at):
        pan = part.pan + (DRUM_SPREAD.get(note.pitch, 0.0) if part.is_drum else 0.0)
        place = (max(-1.0, min(1.0, pan)), part.is_drum and note.pitch in KICKS)
        velocity = max(1, min(127, VELOCITY_STEP * round(note.velocity / VELOCITY_STEP)))
        groups[place].append((at, max(1, end - at), bank, part.program, note.pitch, velocity))
    return groups


def synthesize_new_notes(arrangements, bpm: float, soundfont: str, deadline: float, pool, workers: int) -> None:
    """Render every note of these arrangements that the note cache lacks, spread over the
    executor's threads (synthesis is libfluidsynth's native code: threads run it in parallel;
    adding the notes up, in render_bus, is many small steps in Python and is not spread)."""
    frames_per_step = SAMPLE_RATE * 60.0 / bpm / STEPS_PER_BEAT
    notes = [note for arrangement in arrangements for part in arrangement.parts if part.notes
             for group in _places(part, frames_per_step).values() for note in group]  # fmt: skip
    render_new_notes(soundfont, notes, deadline, pool, workers)


def _with_hats_closed(group: list[tuple], soundfont: str, deadline: float, out: np.ndarray) -> None:
    """Drum notes of one place in the kit added into `out`, each hi-hat released fast where the
    next hi-hat starts, as the kit's exclusive class does in FluidSynth."""
    frames = len(out)
    hats = sorted(note for note in group if note[4] in HI_HATS)
    render_notes(soundfont, [note for note in group if note[4] not in HI_HATS], frames, deadline, out=out)
    fade = max(1, round(CHOKE_FADE_S * SAMPLE_RATE))
    ramp = (10 ** (-CHOKE_FADE_DB / 20 * np.arange(fade) / fade)).astype(np.float32)
    with played_notes(soundfont, deadline) as played:
        for index, hat in enumerate(hats):
            at = hat[0]
            until = hats[index + 1][0] if index + 1 < len(hats) else frames
            kept = played.get(hat)
            length = min(len(kept), frames - at, until + fade - at)  # closed by the next: nothing after the fade
            if length <= 0:  # starts after the end (render_notes skips those too)
                continue
            one = np.multiply(kept.pcm[:length], kept.scale)
            cut = until - at
            if cut < length:  # CHOKE_FADE_DB over CHOKE_FADE_S from the next hat on
                one[cut:] *= ramp[: length - cut]
            out[at : at + length] += one


def _pan_gains(pan: float) -> np.ndarray:
    """Constant-power pan law: (left, right) gains with left^2 + right^2 = 1; centre -3 dB each."""
    angle = (max(-1.0, min(1.0, pan)) + 1) * math.pi / 4
    return np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)


def master(dry: np.ndarray, send: np.ndarray, deadline: float) -> np.ndarray:
    """Room reverb on the send, bus compression, then loudness and peak: TARGET_LUFS under the
    limiter. render_bus's (2, frames) dry bus and (frames,) send in, (2, frames) out."""
    pedalboard = load_mixer()
    if time.monotonic() > deadline:
        raise RenderError("rendering took longer than the rendering timeout allowed and was stopped")
    bus = dry.copy()
    if send.any():
        _add_room(send, pedalboard, bus)
    _fade_out(bus)
    level = _level_db(bus)
    if level is None:
        return np.zeros_like(bus)  # silence stays silence
    bus *= np.float32(10 ** ((REFERENCE_DB - level) / 20))
    bus = pedalboard.Compressor(**COMPRESSOR)(bus, SAMPLE_RATE)
    return _loudness_under_limiter(bus)


def _room(send: np.ndarray, pedalboard) -> np.ndarray:
    """The room alone: (2, frames), as _add_room adds it to a bus (benchmarks/mix_bench.py)."""
    wet = np.zeros((2, len(send)), dtype=np.float32)
    _add_room(send, pedalboard, wet)
    return wet


def _add_room(send: np.ndarray, pedalboard, bus: np.ndarray) -> None:
    """Add the stereo reverb of the mono send into `bus`, computed at half the sample rate (half
    the cost; Freeverb scales its delays to the rate): a damped room has little above 5 kHz to lose."""
    frames = len(send)
    pairs = send[: frames - frames % 2].reshape(-1, 2)
    half = np.empty((2, len(pairs)), dtype=np.float32)
    np.add(pairs[:, 0], pairs[:, 1], out=half[0])  # a two-tap low-pass, then every other frame
    half[0] *= 0.5
    half[1] = half[0]  # Freeverb decorrelates left and right
    wet = pedalboard.Reverb(**ROOM)(half, SAMPLE_RATE / 2)
    count = wet.shape[1]
    bus[:, 0 : 2 * count : 2] += wet
    between = np.add(wet[:, :-1], wet[:, 1:])  # linear interpolation
    between *= 0.5
    bus[:, 1 : 2 * count - 1 : 2] += between
    bus[:, 2 * count - 1 :] += wet[:, -1:]


def _level_db(bus: np.ndarray) -> float | None:
    """The bus's RMS level (dBFS) over its sounding 100 ms blocks (those within 40 dB of the
    loudest): what the compressor's threshold is set against. None for silence."""
    hop = round(0.1 * SAMPLE_RATE)
    blocks = bus.shape[1] // hop
    if not blocks:
        return None
    power = np.einsum("cf,cf->f", bus[:, : blocks * hop], bus[:, : blocks * hop]).reshape(blocks, hop).mean(axis=1)
    if power.max() <= (SILENCE_PEAK / 10) ** 2:
        return None
    sounding = power[power >= power.max() * 1e-4]
    return float(10 * np.log10(sounding.mean()))


def _loudness_under_limiter(bus: np.ndarray) -> np.ndarray:
    """The gain that brings the bus to TARGET_LUFS once limited at CEILING_DBFS, applied with the
    limiter. K-weighting is linear and the limiter's gain changes slowly (milliseconds), so the
    loudness of (gain x limiter gain x bus) is predicted from the bus's K-weighted power measured
    once: each try costs a limiter pass, not a measurement (the prediction is within ~0.05 LU of
    measuring again; tests/test_mix.py measures with pyloudnorm)."""
    power = weighted_power(bus, SAMPLE_RATE)
    loudness = integrated_from_power(power, SAMPLE_RATE)
    if not math.isfinite(loudness):  # shorter than one 400 ms block: the peak alone decides
        return bus * np.float32(10 ** (CEILING_DBFS / 20) / max(float(np.abs(bus).max()), 1e-12))
    peaks, ceiling = frame_peaks(bus), 10 ** (CEILING_DBFS / 20)
    gain_db, slope = TARGET_LUFS - loudness, 1.0
    best = last = None
    for _ in range(MAX_TRIES):
        gain = np.float32(10 ** (gain_db / 20)) * limiter_gain(peaks * 10 ** (gain_db / 20), ceiling, SAMPLE_RATE)
        miss = TARGET_LUFS - integrated_from_power(power * gain.astype(np.float64) ** 2, SAMPLE_RATE)
        if best is None or abs(miss) < abs(best[0]):
            best = (miss, gain)
        if abs(miss) <= LOUDNESS_TOLERANCE:
            break
        if last is not None and gain_db != last[0]:  # how much loudness a dB of gain bought last time
            slope = min(1.0, max(0.1, (last[1] - miss) / (gain_db - last[0])))
        last = (gain_db, miss)
        # the limiter took some loudness away: ask for more, the more the harder it limits (a
        # kit alone gains ~0.3 LU a dB: asking for the miss alone took 6 tries to end 0.4 LU short)
        gain_db += miss / slope
    return bus * best[1]


def _fade_out(audio: np.ndarray) -> None:
    fade = min(round(FADE_S * SAMPLE_RATE), audio.shape[1])
    if fade:
        audio[:, audio.shape[1] - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32) ** 2
