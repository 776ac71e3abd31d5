"""What the mixer plays for a preview: the arrangement the worker passes (model.band), or, without
one, today's sound as an arrangement of its own (the melody over block chords, style "none");
with the primer played softer and, on request, a beat of silence after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.render.audio import CONTINUATION_VELOCITY, PRIMER_VELOCITY
from model.band.parts import Arrangement, BandNote, Part
from model.music.events import STEPS_PER_BEAT, events_to_notes
from model.music.midi_io import CHORD_PROGRAM, chord_notes

MELODY, CHORDS = "MELODY", "CHORDS"
CHORDS_PAN = -0.2  # the block chords a little left of the melody: a stereo picture even without a band


def plain_arrangement(events: list[int], chords: Sequence | None, program: int) -> Arrangement:
    """The melody (velocity CONTINUATION_VELOCITY) on `program` and, with chords (one
    model.music.chords.Chord or None per step), their sustained voicings (model.music.midi_io.chord_notes),
    as long as the melody: until its last note ends (a trailing rest is not played)."""
    notes = events_to_notes(events, CONTINUATION_VELOCITY)
    steps = notes[-1].end if notes else 0
    parts = [Part(MELODY, program, [BandNote(n.pitch, n.start, n.end, n.velocity) for n in notes])]
    if chords is not None:
        pad = [BandNote(n.pitch, n.start, n.end, n.velocity) for n in chord_notes(list(chords)[:steps])]
        parts.append(Part(CHORDS, CHORD_PROGRAM, pad, pan=CHORDS_PAN))
    return Arrangement("none", steps, parts)


def for_preview(arrangement: Arrangement, primer_steps: int, soft_primer: bool, primer_gap: bool) -> Arrangement:
    """The arrangement as a preview plays it: the melody's primer notes at PRIMER_VELOCITY /
    CONTINUATION_VELOCITY of their velocity (soft_primer); with primer_gap, one beat of silence
    at primer_steps (every part: notes from there on start a beat later, notes held across it
    end there). The arrangement given is not changed."""
    if not (soft_primer or primer_gap) or primer_steps <= 0:
        return arrangement
    parts = []
    for part in arrangement.parts:
        notes = part.notes
        if soft_primer and part.name == MELODY:
            scale = PRIMER_VELOCITY / CONTINUATION_VELOCITY
            notes = [replace(n, velocity=max(1, round(n.velocity * scale))) if n.start < primer_steps else n
                     for n in notes]  # fmt: skip
        if primer_gap and primer_steps < arrangement.steps:
            notes = [_gapped(n, primer_steps) for n in notes]
        parts.append(replace(part, notes=[n for n in notes if n is not None]))
    steps = arrangement.steps + (STEPS_PER_BEAT if primer_gap and primer_steps < arrangement.steps else 0)
    return replace(arrangement, steps=steps, parts=parts)


def _gapped(note: BandNote, at: int) -> BandNote | None:
    if note.start >= at:
        return replace(note, start=note.start + STEPS_PER_BEAT, end=note.end + STEPS_PER_BEAT)
    return replace(note, end=min(note.end, at))
