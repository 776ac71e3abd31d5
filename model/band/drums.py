"""The drummer: the style's groove bar after bar on General MIDI channel 10, thinned or filled in
by tempo, a fill leading into every 4th or 8th bar, and a crash where a section starts."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from model.band.parts import BandNote, clamp_velocity
from model.band.styles import CLOSED_HAT, CRASH, HIGH_TOM, KICK, LOW_TOM, MID_TOM, OPEN_HAT, PEDAL_HAT, SNARE, Style
from model.music.events import STEPS_PER_BAR

HATS = (CLOSED_HAT, OPEN_HAT, PEDAL_HAT)
FAST_BPM = 140  # above: hats on the beat only, fills in eighths (sixteenths would blur)
SLOW_BPM = 86  # below: pop's hats in sixteenths, the off ones soft, so a slow groove still moves


def groove_bar(style: Style, bpm: float) -> list[tuple[int, int, int]]:
    """One bar of (step, key, velocity): the style's groove, hats thinned at fast tempos and
    doubled at slow ones."""
    bar = list(style.groove)
    if bpm > FAST_BPM:
        bar = [(s, k, v) for s, k, v in bar if k not in HATS or s % 4 == 0]
    elif bpm < SLOW_BPM and style.name == "pop":
        hats = [(s, k, v) for s, k, v in bar if k in HATS]
        if hats and all(s % 2 == 0 for s, _, _ in hats):
            key, soft = hats[0][1], max(20, hats[0][2] - 22)
            bar += [(s + 1, key, soft) for s, _, _ in hats if s + 1 < STEPS_PER_BAR]
    return bar


def fill(bpm: float, long: bool) -> list[tuple[int, int, int]]:
    """The end of a bar leading into the next phrase: snare then toms falling, over the last beat
    (the last two beats before an 8-bar section)."""
    every = 2 if bpm > FAST_BPM else 1
    first = STEPS_PER_BAR - (8 if long else 4)
    steps = list(range(first, STEPS_PER_BAR, every))
    voices = [SNARE, SNARE, HIGH_TOM, HIGH_TOM, MID_TOM, MID_TOM, LOW_TOM, LOW_TOM]
    out = []
    for i, step in enumerate(steps):
        voice = voices[min(len(voices) - 1, i * len(voices) // len(steps))]
        out.append((step, voice, 70 + 30 * i // max(1, len(steps) - 1)))  # a crescendo into the downbeat
    return out


def drum_notes(style: Style, steps: int, bpm: float, section_starts: Sequence[int], rng: random.Random,
               chorded: Sequence[bool] | None = None) -> list[BandNote]:
    """The drum part over `steps` steps. section_starts: steps that get a crash (and a kick);
    chorded: per bar, whether the band plays there (a bar without chords keeps time on the hats)."""
    if not style.groove:
        return []
    notes = []
    bars_played = None if chorded is None else tuple(chorded)
    for step, key, velocity in _hits(style, steps, bpm, tuple(section_starts), bars_played):
        jitter = rng.uniform(-0.04, 0.04) if step > 0 else 0.0  # a drummer, not a sequencer
        length = 4.0 if key == CRASH else 1.0
        human = velocity + int(rng.random() * 13) - 6 + (4 if step % STEPS_PER_BAR == 0 else 0)
        start = step + jitter
        notes.append(BandNote(key, start if start > 0.0 else 0.0, start + length, clamp_velocity(human)))
    return notes


@functools.lru_cache(maxsize=64)  # a job's variations share it
def _hits(style: Style, steps: int, bpm: float, section_starts: tuple[int, ...],
          chorded: tuple[bool, ...] | None) -> tuple[tuple[int, int, int], ...]:
    """drum_notes' (step, key, velocity) in order, before the drummer's hands."""
    bars = -(-steps // STEPS_PER_BAR)
    groove = groove_bar(style, bpm)
    hits: dict[tuple[int, int], int] = {}
    for bar in range(bars):
        base = bar * STEPS_PER_BAR
        pattern = groove if chorded is None or chorded[bar] else [h for h in groove if h[1] in HATS]
        leads_into = bar + 1
        if style.fill_every and leads_into % style.fill_every == 0 and leads_into < bars:
            long = leads_into % 8 == 0
            start = STEPS_PER_BAR - (8 if long else 4)
            pattern = [h for h in pattern if h[0] < start or h[1] == KICK] + fill(bpm, long)
        for step, key, velocity in pattern:
            hits[(base + step, key)] = velocity
    for start in section_starts:
        if 0 <= start < steps:
            for key in HATS:
                hits.pop((start, key), None)
            hits[(start, CRASH)] = 105
            hits[(start, KICK)] = max(hits.get((start, KICK), 0), 100)
    return tuple((step, key, velocity) for (step, key), velocity in sorted(hits.items())
                 if step < steps and velocity > 0)
