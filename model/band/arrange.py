"""A melody and its chords -> the band's Arrangement, in a style.

    arrangement = arrange(events, chords, bpm=120, style="pop", seed=7, primer_steps=32)

events: the melody on the sixteenth grid (model.events; primer + continuation); chords: one
model.chords.Chord or None per step (or None: no harmony, the band is the drums alone). The
melody's velocities are humanised (accents by beat, an arch over each 4-bar phrase, a little
chance), the band's too; timing moves by a few hundredths of a step except the melody's, which
stays on the grid so that a MIDI file read back gives the same melody. seed: one per variation.
Costs about a millisecond per 8 bars (the texture table loads once per process).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from operator import attrgetter

from model.band.bass import bass_notes
from model.band.drums import drum_notes
from model.band.grid import Grid
from model.band.keys import keys_notes
from model.band.parts import Arrangement, BandNote, Part, clamp_velocity
from model.band.styles import NO_BAND, STYLES, Style, resolve_style
from model.music.chords import Chord
from model.music.events import STEPS_PER_BAR, Note, events_to_notes

SECTION_BARS = 8  # a crash every 8 bars from the continuation's start
PHRASE_ARCH = (-4, 2, 6, 0)  # velocity over a 4-bar phrase: rise to its third bar, settle at its end
MELODY_VELOCITY = 96


def accent(step: int) -> int:
    """Velocity added by the step's place in the bar: the downbeat most, off-beats least."""
    position = step % STEPS_PER_BAR
    if position == 0:
        return 8
    if position == 8:
        return 5
    if position % 4 == 0:
        return 2
    return -3 if position % 2 else 0


_ACCENTS = [accent(position) for position in range(STEPS_PER_BAR)]  # accent(step) is _ACCENTS[step % STEPS_PER_BAR]


def melody_part(tune: Sequence[Note], program: int, rng: random.Random) -> Part:
    notes = []
    for note in tune:
        arch = PHRASE_ARCH[(note.start // STEPS_PER_BAR) % len(PHRASE_ARCH)]
        length_bonus = 2 if note.end - note.start >= 4 else 0
        velocity = (MELODY_VELOCITY + _ACCENTS[note.start % STEPS_PER_BAR] + arch + length_bonus
                    + int(rng.random() * 7) - 3)
        notes.append(BandNote(note.pitch, float(note.start), float(note.end), clamp_velocity(velocity)))
    return Part("MELODY", program, notes)


def humanise(notes: list[BandNote], rng: random.Random) -> list[BandNote]:
    """Beat accents and the phrase arch on an accompaniment part's velocities."""
    out = []
    for note in notes:
        step = int(round(note.start))
        arch = PHRASE_ARCH[(step // STEPS_PER_BAR) % len(PHRASE_ARCH)]
        velocity = note.velocity + _ACCENTS[step % STEPS_PER_BAR] // 2 + arch // 2 + int(rng.random() * 7) - 3
        out.append(BandNote(note.pitch, note.start, note.end, clamp_velocity(velocity)))
    return out


def strum(notes: list[BandNote], spread: float) -> list[BandNote]:
    """A guitar's chord: strings struck one after another over `spread` steps, down on the beat
    (low to high), up off it (high to low)."""
    if spread <= 0:
        return notes
    by_start: dict[float, list[BandNote]] = {}
    for note in notes:
        by_start.setdefault(note.start, []).append(note)
    out = []
    for start, group in by_start.items():
        group.sort(key=lambda n: n.pitch, reverse=int(round(start)) % 4 != 0)
        gap = spread / max(1, len(group) - 1) if len(group) > 1 else 0.0
        for i, note in enumerate(group):
            shift = min(i * gap, (note.end - note.start) / 2)
            out.append(BandNote(note.pitch, start + shift, note.end, note.velocity))
    return sorted(out, key=attrgetter("start", "pitch"))


def section_starts(steps: int, primer_steps: int) -> list[int]:
    """Where a crash marks a section: the first bar, then the continuation's first bar line and
    every SECTION_BARS bars after it."""
    first = -(-primer_steps // STEPS_PER_BAR) * STEPS_PER_BAR
    starts = [0] + list(range(first, steps, SECTION_BARS * STEPS_PER_BAR))
    return sorted(set(starts))


def arrange(events: Sequence[int], chords: Sequence[Chord | None] | None, bpm: float, style: str = "pop", *,
            seed: int = 0, primer_steps: int = 0, melody_program: int = 0) -> Arrangement:
    """See the module doc. Raises StyleError (a ValueError) for an unknown style name."""
    name = resolve_style(style)
    if chords is not None and len(chords) != len(events):
        raise ValueError(f"{len(chords)} chords for {len(events)} steps; give one chord (or None) per step")
    chosen: Style = STYLES[name]
    rng = random.Random(seed)
    steps = len(events)
    tune = events_to_notes(list(events))
    melody = melody_part(tune, melody_program, rng)
    arrangement = Arrangement(name, steps, [melody])
    if name == NO_BAND:
        if chords is not None:
            from model.music.midi_io import chord_notes  # noqa: PLC0415 - pretty_midi, only for this style

            block = [BandNote(n.pitch, float(n.start), float(n.end), n.velocity) for n in chord_notes(chords)]
            arrangement.parts.append(Part("CHORDS", chosen.keys_program, block, level_db=chosen.levels[0]))
        return arrangement
    keys_pan, bass_pan, drums_pan = chosen.pans
    keys_level, bass_level, drums_level = chosen.levels
    if chords is not None and any(c is not None for c in chords):
        grid = Grid.of(tune, chords)
        keys = humanise(keys_notes(chosen, chords, tune, rng, grid=grid), rng)
        if chosen.keys_name == "GUITAR":
            keys = strum(keys, chosen.strum)
        arrangement.parts.append(Part(chosen.keys_name, chosen.keys_program, keys, pan=keys_pan, level_db=keys_level))
        bass = humanise(bass_notes(chosen, chords, tune, rng, grid), rng)
        arrangement.parts.append(Part("BASS", chosen.bass_program, bass, pan=bass_pan, level_db=bass_level))
    bars = -(-steps // STEPS_PER_BAR)
    chorded = None
    if chords is not None:
        chorded = [any(c is not None for c in chords[b * STEPS_PER_BAR : (b + 1) * STEPS_PER_BAR]) for b in range(bars)]
    drums = drum_notes(chosen, steps, bpm, section_starts(steps, primer_steps), rng, chorded)
    arrangement.parts.append(Part("DRUMS", 0, drums, is_drum=True, pan=drums_pan, level_db=drums_level))
    return arrangement
