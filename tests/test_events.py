"""The grid encoding: notes <-> events, and events -> MIDI -> events round trips."""

from __future__ import annotations

import pytest
from midi_factory import TrackSpec, make_midi

from model.music.events import (
    MAX_PITCH,
    MIN_PITCH,
    NO_EVENT,
    NOTE_OFF,
    NUM_CLASSES,
    Note,
    event_name,
    events_to_notes,
    fold_pitch,
    monophonic,
    note_on,
    notes_to_events,
    pitch_name,
)
from model.music.midi_io import read_midi, write_midi

_ = NO_EVENT
OFF = NOTE_OFF


def on(pitch: int) -> int:
    return note_on(pitch)


# A melody with rests, repeated pitches, long and short notes, the whole pitch range.
MELODY = (
    [on(60), _, _, _, on(60), _, on(67), _, _, _, _, _, OFF, _, _, _]
    + [on(MIN_PITCH), on(MAX_PITCH), _, OFF, on(72), _, _, _, _, _, _, _, _, _, _, _]
    + [_, _, _, _, on(64), OFF, _, _, on(62), _, _, _, _, _, _, _, OFF]
)


def test_vocabulary():
    assert NUM_CLASSES == 63
    assert note_on(MIN_PITCH) == 2 and note_on(MAX_PITCH) == 62
    assert pitch_name(60) == "C4" and pitch_name(MIN_PITCH) == "C2" and pitch_name(MAX_PITCH) == "C7"
    assert [event_name(e) for e in (NO_EVENT, NOTE_OFF, on(70))] == ["-", "off", "Bb4"]


def test_notes_to_events_and_back():
    notes = [Note(0, 4, 60), Note(4, 6, 62), Note(8, 16, 64)]
    events, offset = notes_to_events(notes)
    assert offset == 0
    assert events == [on(60), _, _, _, on(62), _, OFF, _, on(64), _, _, _, _, _, _, _, OFF]
    assert events_to_notes(events) == notes


def test_sequence_starts_at_the_bar_line_before_the_first_note():
    events, offset = notes_to_events([Note(37, 40, 65)])
    assert offset == 32
    assert events == [_, _, _, _, _, on(65), _, _, OFF]


def test_same_start_chord_keeps_the_highest_note():
    chord = [Note(0, 4, 60), Note(0, 4, 67), Note(0, 4, 64)]
    assert notes_to_events(chord)[0] == [on(67), _, _, _, OFF]


def test_overlapping_note_is_cut_where_the_next_starts():
    assert monophonic([Note(0, 8, 60), Note(4, 12, 62)]) == [Note(0, 4, 60), Note(4, 12, 62)]
    assert notes_to_events([Note(0, 8, 60), Note(4, 8, 55)])[0] == [on(60), _, _, _, on(55), _, _, _, OFF]


def test_zero_length_note_lasts_one_step():
    assert notes_to_events([Note(0, 0, 60), Note(4, 8, 62)])[0] == [on(60), OFF, _, _, on(62), _, _, _, OFF]


@pytest.mark.parametrize(("pitch", "folded"), [(0, 36), (24, 36), (30, 42), (35, 47), (97, 85), (100, 88), (127, 91)])
def test_pitches_outside_the_range_fold_by_octaves(pitch, folded):
    assert fold_pitch(pitch) == folded
    assert notes_to_events([Note(0, 4, pitch)])[0] == [on(folded), _, _, _, OFF]


@pytest.mark.parametrize("bpm", [120.0, 97.5, 61.0, 180.0])
def test_events_round_trip_through_midi(bpm):
    midi = read_midi(write_midi(MELODY, bpm=bpm, program=40, track_name="Violin"))
    assert midi.bpm == pytest.approx(bpm, abs=1e-3)
    [track] = midi.tracks
    assert (track.name, track.program, track.is_drum) == ("Violin", 40, False)
    assert notes_to_events(track.notes) == (MELODY, 0)


def test_round_trip_keeps_a_pickup_within_the_first_bar():
    events = [_, _, _, _, _, _, on(67), _, on(72), _, _, _, _, _, _, _, OFF]
    assert notes_to_events(read_midi(write_midi(events, bpm=133)).tracks[0].notes) == (events, 0)


def test_midi_file_edge_cases_reach_the_grid():
    """Off-grid timing rounds to the nearest step; chords, overlaps, too-short notes and pitches
    outside the range come out as in note_seq-style melody extraction."""
    spec = TrackSpec("Piano", [
        (0, 4, 60), (0, 4, 64), (0, 4, 67),  # chord: keep the top
        (4.4, 11.6, 62), (8, 12, 65),  # slightly off the grid; overlapping: cut at 8
        (12, 12.2, 69),  # shorter than a step: one step
        (14, 16, 101),  # above C7: folds to F6
        (16, 20, 28),  # below C2: folds to E2
    ])
    notes = read_midi(make_midi([spec], bpm=90)).tracks[0].notes
    events, offset = notes_to_events(notes)
    assert offset == 0
    assert events == [on(67), _, _, _, on(62), _, _, _, on(65), _, _, _, on(69), OFF, on(89), _,
                      on(40), _, _, _, OFF]
