"""Lead sheets engraved for real with verovio and CairoSVG, and the whole song rendered.

The notation is checked by what the engraver itself makes of it: verovio's MIDI of the engraved
score must hold the melody's notes, and its MEI input the key, ties, accidentals and chords."""

from __future__ import annotations

import io
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from test_render import BPM, STEP_S, decode
from test_render_chords import per_step

from bot.render import RenderError, engrave_lead_sheet, render_song
from bot.render.audio import TAIL_S
from bot.render.leadsheet import MAX_BARS, engrave, key_fifths, melody_mei, spell, split_value
from model.music.events import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, note_on
from model.music.midi_io import CHORD_TRACK, MELODY_TRACK, read_midi, write_midi

MEI = "{http://www.music-encoding.org/ns/mei}"
# An F major tune, (start, end, MIDI pitch) in sixteenths: quarter, eighths, a dotted quarter, a
# note tied over the bar line, a rest, B natural twice then B flat in one bar, a dotted half, a whole.
TUNE = [
    (0, 4, 65), (4, 6, 69), (6, 8, 72), (8, 14, 70), (14, 20, 72),
    (22, 23, 71), (23, 24, 71), (24, 28, 70), (28, 32, 69),
    (32, 44, 67),
    (48, 64, 65),
]  # fmt: skip
CHORDS = "F | Bb C7 | C7 | F"


def events_of(notes: list[tuple[int, int, int]]) -> list[int]:
    events = [NO_EVENT] * max(end for _, end, _ in notes)
    for start, end, pitch in notes:
        events[start] = note_on(pitch)
        if end < len(events) and events[end] == NO_EVENT:
            events[end] = NOTE_OFF
    return events


EVENTS = events_of(TUNE)


def grid_notes(midi: bytes) -> list[tuple[int, int, int]]:
    with warnings.catch_warnings():  # verovio writes its tempo on the note track; pretty_midi warns
        warnings.simplefilter("ignore", RuntimeWarning)
        return [(n.start, n.end, n.pitch) for n in read_midi(midi).tracks[0].notes]


def test_the_engraved_notation_plays_back_as_the_melody():
    chords = per_step(CHORDS)
    png, pdf, engraved_midi = engrave(EVENTS, chords, BPM, "Known tune", timeout=20)
    assert grid_notes(engraved_midi) == grid_notes(write_midi(EVENTS, BPM)) == TUNE

    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    assert width > 1000 and 200 < height < width  # one system of four bars, title above
    ink = np.asarray(image) < 128
    assert 0.01 < ink.mean() < 0.3  # staff lines, notes and text on white
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000


def test_the_notation_has_the_key_ties_accidentals_and_chord_symbols():
    fifths = key_fifths(EVENTS)
    assert fifths == -1  # F major: one flat
    root = ET.fromstring(melody_mei(EVENTS, per_step(CHORDS), BPM, "Known tune", fifths))
    assert root.find(f".//{MEI}scoreDef").get("key.sig") == "1f"
    assert root.find(f".//{MEI}title").text == "Known tune"
    measures = root.findall(f".//{MEI}measure")
    assert len(measures) == 4 and measures[-1].get("right") == "end"

    def notes(measure):
        return [(n.get("pname"), n.get("oct"), n.get("dur"), n.get("dots"), n.get("accid"), n.get("tie"))
                for n in measure.iter(f"{MEI}note")]  # fmt: skip

    assert notes(measures[0]) == [
        ("f", "4", "4", None, None, None),
        ("a", "4", "8", None, None, None),
        ("c", "5", "8", None, None, None),
        ("b", "4", "4", "1", None, None),  # B flat from the key signature: no accidental written
        ("c", "5", "8", None, None, "i"),  # tied over the bar line...
    ]
    assert notes(measures[1]) == [
        ("c", "5", "4", None, None, "t"),  # ...to here
        ("b", "4", "16", None, "n", None),  # B natural: written once in the bar
        ("b", "4", "16", None, None, None),
        ("b", "4", "4", None, "f", None),  # back to B flat: written
        ("a", "4", "4", None, None, None),
    ]
    assert notes(measures[2]) == [("g", "4", "2", "1", None, None)]
    assert [r.get("dur") for r in measures[1].iter(f"{MEI}rest")] == ["8"]
    harms = [(m.get("n"), h.get("tstamp"), h.text) for m in measures for h in m.iter(f"{MEI}harm")]
    assert harms == [("1", "1", "F"), ("2", "1", "Bb"), ("2", "3", "C7"), ("4", "1", "F")]  # C7 goes on in bar 3


def test_values_follow_the_beats_and_pitches_are_spelled_in_the_key():
    assert split_value(0, 16) == [16]
    assert split_value(4, 12) == [4, 8]  # not a dotted half from beat 2
    assert split_value(2, 6) == [2, 4]  # off the beat: an eighth tied to a quarter
    assert split_value(8, 6) == [6]  # a dotted quarter on beat 3
    assert split_value(1, 3) == [1, 2]
    assert spell(70, -1) == ("b", 4, -1)  # B flat in F major
    assert spell(71, -1) == ("b", 4, 0)  # B natural there
    assert spell(66, 1) == ("f", 4, 1)  # F sharp in G major
    assert spell(61, 0) == ("c", 4, 1)  # C sharp in C major
    assert spell(63, -3) == ("e", 4, -1)  # E flat in E flat major
    assert spell(48, 0) == ("c", 3, 0)


def test_lead_sheets_without_chords_long_songs_and_timeouts():
    png, pdf = engrave_lead_sheet(EVENTS, None, BPM, "No chords", pdf=False)
    assert pdf is None and Image.open(io.BytesIO(png)).size[0] > 1000
    with pytest.raises(RenderError, match="engraving took longer than its timeout"):
        engrave_lead_sheet(EVENTS, None, BPM, "Too slow", timeout=0)
    too_long = [NO_EVENT] * ((MAX_BARS + 1) * STEPS_PER_BAR)
    with pytest.raises(RenderError, match=f"a lead sheet holds at most {MAX_BARS}"):
        engrave_lead_sheet(too_long, None, BPM, "Too long")


def test_render_song_gives_the_whole_song_as_midi_mp3_and_lead_sheet():
    chords = per_step(CHORDS)
    midi, mp3, png, pdf = render_song(EVENTS, chords, BPM, "guitar", title="Our song")
    melody, accompaniment = read_midi(midi).tracks
    assert (melody.name, accompaniment.name) == (MELODY_TRACK, CHORD_TRACK)
    assert [(n.start, n.end, n.pitch) for n in melody.notes] == TUNE
    assert {n.velocity for n in melody.notes} == {100}
    segment, _ = decode(mp3)
    assert segment.duration_seconds == pytest.approx(64 * STEP_S + TAIL_S, abs=0.03)
    assert -2.0 < segment.max_dBFS < -0.5
    assert png.startswith(b"\x89PNG") and pdf.startswith(b"%PDF")
    with pytest.raises(RenderError, match="the song has 64 steps but 16 chords"):
        render_song(EVENTS, chords[:16], BPM)
