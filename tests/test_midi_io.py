"""Reading MIDI files onto the grid, and every way a file can be unusable."""

from __future__ import annotations

import pytest
from midi_factory import TrackSpec, line, make_midi

import model.music.midi_io as midi_io
from model.defaults import MAX_SKETCH_BYTES as MAX_MIDI_BYTES
from model.music.events import NOTE_OFF, Note, note_on, notes_to_events
from model.music.midi_io import MidiError, read_midi, write_midi

SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def test_type_0_and_type_1_read_alike():
    spec = TrackSpec("Lead", line(SCALE, length=2), program=73)
    type0, type1 = (read_midi(make_midi([spec], midi_type=t)) for t in (0, 1))
    assert type0.tracks == type1.tracks
    [track] = type1.tracks
    assert (track.name, track.program, track.is_drum) == ("Lead", 73, False)
    assert [(n.start, n.end, n.pitch) for n in track.notes] == line(SCALE, length=2)


def test_drum_tracks_are_marked():
    midi = read_midi(make_midi([TrackSpec("Kit", line([36, 38] * 4), drum=True), TrackSpec("Bass", line([40] * 4))]))
    assert [(t.name, t.is_drum) for t in midi.tracks] == [("Kit", True), ("Bass", False)]


def test_tempo_changes_never_move_notes_off_the_grid():
    notes = line(SCALE * 2, length=4)  # four bars across three tempi
    data = make_midi([TrackSpec("Melody", notes)], bpm=120, tempo_changes=[(16, 72.5), (40, 150)])
    midi = read_midi(data)
    assert [(n.start, n.end, n.pitch) for n in midi.tracks[0].notes] == notes
    assert midi.bpm == 120


def test_bpm_is_the_tempo_in_force_at_the_first_note():
    data = make_midi([TrackSpec("Melody", line(SCALE, start=20))], bpm=100, tempo_changes=[(16, 84), (48, 130)])
    assert read_midi(data).bpm == 84


@pytest.mark.parametrize("resolution", [96, 480, 960])
def test_any_resolution_and_a_3_4_time_signature(resolution):
    """Bars of 3 beats are still 12 steps apart on the grid; only the resolution of ticks changes."""
    waltz = line([67, 64, 64, 65, 62, 62], length=4)  # two 3/4 bars
    data = make_midi([TrackSpec("Melody", waltz)], bpm=150, time_signature=(3, 4), ticks_per_beat=resolution)
    midi = read_midi(data)
    assert [(n.start, n.end, n.pitch) for n in midi.tracks[0].notes] == waltz
    assert midi.bpm == 150


def test_path_and_bytes_read_alike(tmp_path):
    data = make_midi([TrackSpec("Melody", line(SCALE))])
    path = tmp_path / "sketch.mid"
    path.write_bytes(data)
    assert read_midi(path) == read_midi(str(path)) == read_midi(data)


def test_write_midi_names_the_track_and_keeps_tempo_and_program():
    events = [note_on(60), 0, 0, 0, note_on(64), 0, NOTE_OFF]
    midi = read_midi(write_midi(events, bpm=87, program=24, track_name="melodybot variation 2"))
    assert midi.bpm == 87
    assert [(t.name, t.program) for t in midi.tracks] == [("melodybot variation 2", 24)]
    assert midi.tracks[0].notes == [Note(0, 4, 60, 100), Note(4, 6, 64, 100)]
    assert notes_to_events(midi.tracks[0].notes)[0] == events


GOOD = make_midi([TrackSpec("Melody", line(SCALE * 4))])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (GOOD[: len(GOOD) // 2], "truncated"),
        (GOOD[:14], "truncated"),  # a header and nothing else
        (GOOD[:-3], "truncated"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a MIDI file"),
        (b"C4 E4 G4 A4\n", "not a MIDI file"),
        (GOOD[:14] + b"garbage!" * 8, "damaged"),
        (b"MThd" + bytes(MAX_MIDI_BYTES), "the limit is 1024 KiB"),
    ],
    ids=["empty", "half", "header-only", "cut-end", "png", "text", "garbage-after-header", "oversized"],
)
def test_unusable_files_raise_midi_error_with_a_reason(data, message):
    with pytest.raises(MidiError, match=message):
        read_midi(data)


def test_oversized_file_on_disk_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.mid"
    path.write_bytes(b"MThd" + bytes(MAX_MIDI_BYTES))
    with pytest.raises(MidiError, match="KiB; the limit is"):
        read_midi(path)


def test_missing_file(tmp_path):
    with pytest.raises(MidiError, match="cannot read"):
        read_midi(tmp_path / "nope.mid")


def test_too_many_notes_is_refused(monkeypatch):
    monkeypatch.setattr(midi_io, "MAX_NOTES", 20)
    with pytest.raises(MidiError, match="has 32 notes; the limit is 20"):
        read_midi(GOOD)
