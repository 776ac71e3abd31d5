"""Primers: typed note names and MIDI sketches -> events."""

from __future__ import annotations

import random

import pytest
from midi_factory import TrackSpec, line, make_midi

from model.defaults import MAX_SKETCH_BYTES as MAX_MIDI_BYTES
from model.music.events import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, event_pitch, is_note_on, note_on, notes_to_events
from model.music.midi_io import MidiError, read_midi
from model.music.primer import NOTATION, Primer, PrimerError, parse_notes, primer_from_midi, primer_from_text

_ = NO_EVENT
OFF = NOTE_OFF


def on(pitch: int) -> int:
    return note_on(pitch)


def pitches(events: list[int]) -> list[int]:
    return [event_pitch(e) for e in events if is_note_on(e)]


# -- typed notes -----------------------------------------------------------------------------------
def test_four_quarter_notes():
    assert parse_notes("C4 E4 G4 A4") == [on(60), _, _, _, on(64), _, _, _, on(67), _, _, _, on(69), _, _, _, OFF]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("F#3 Bb4 C♯4 D♭4 Eb4 e#4 Cb4 B#3", [54, 70, 61, 61, 63, 65, 59, 60]),
        ("c4 e4 g4 bb4", [60, 64, 67, 70]),
        ("C D E F G A B C", [60, 62, 64, 65, 67, 69, 71, 72]),  # no octave: nearest to the previous
        ("G4 C", [67, 72]),  # a fourth up rather than a fifth down
        ("A4 E", [69, 64]),  # a fourth down rather than a fifth up
        ("F B", [65, 71]),  # a tritone away goes up
        ("B F", [71, 77]),
        ("Bb4 Eb", [70, 75]),
        ("C7 D", [96, 86]),  # D7 is out of range: the nearest octave in range
        ("C2 B", [36, 47]),
        ("eb f# bb", [63, 66, 70]),  # lower case letters, "bb" is B flat
    ],
)
def test_note_names(text, expected):
    assert pitches(parse_notes(text)) == expected


def test_default_octave_applies_to_the_first_note_only():
    assert pitches(parse_notes("C E G", default_octave=5)) == [72, 76, 79]
    assert pitches(parse_notes("C3 E G", default_octave=5)) == [48, 52, 55]


@pytest.mark.parametrize("text", ["C4,E4,G4,A4", "C4, E4 ,G4 , A4", " C4\tE4\nG4 A4 ", "C4 E4 | G4 A4 |", "c4 e g a"])
def test_separators_case_and_bar_lines_change_nothing(text):
    assert parse_notes(text) == parse_notes("C4 E4 G4 A4")


def test_lengths_in_beats():
    events = parse_notes("C4:2 D4:0.5 E4:1/2 F4:.25 G4:3/2 A4:1.75 B4:8")
    assert events == (
        [on(60), _, _, _, _, _, _, _] + [on(62), _] + [on(64), _] + [on(65)] + [on(67), _, _, _, _, _]
        + [on(69), _, _, _, _, _, _] + [on(71)] + [_] * 31 + [OFF]
    )


def test_rests_in_the_middle_start_and_end():
    assert parse_notes("C4 r E4:0.5 rest:0.5 G4 - A4") == (
        [on(60), _, _, _, OFF, _, _, _, on(64), _, OFF, _, on(67), _, _, _, OFF, _, _, _, on(69), _, _, _, OFF]
    )
    assert parse_notes("r C4") == [_, _, _, _, on(60), _, _, _, OFF]  # a beat's rest: a pickup
    assert parse_notes("R:2 C4") == [_] * 8 + [on(60), _, _, _, OFF]


def test_trailing_rests_are_kept():
    """The continuation starts after the rests: the events run to the end of the last rest."""
    assert parse_notes("C4 r") == [on(60), _, _, _, OFF, _, _, _]
    assert parse_notes("C4 r:2 -") == [on(60), _, _, _, OFF] + [_] * 11
    assert len(parse_notes("C4 D4 E4 F4 r:4")) == 2 * STEPS_PER_BAR


def test_repeated_notes_stay_separate():
    assert parse_notes("G4:0.5 G4:0.5 G4") == [on(67), _, on(67), _, on(67), _, _, _, OFF]


def test_sixty_four_tokens_are_allowed():
    assert len(pitches(parse_notes(" ".join(["C4:0.25"] * 63 + ["r"])))) == 63


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("C4 E4 H4", '"H4" is not a note (token 3). Use note names A-G'),
        ("C4 E##4", '"E##4" is not a note (token 2)'),
        ("C-1", '"C-1" is not a note (token 1)'),
        ("C10", '"C10" is not a note (token 1)'),
        ("C4 do re mi", '"do" is not a note (token 2)'),
        ("C4 : 2", '":" is not a note (token 2)'),
        ("C4 E4 G4 C8", '"C8" is out of range (token 4): notes must lie between C2 and C7'),
        ("B1", '"B1" is out of range (token 1)'),
        ("C#7", '"C#7" is out of range (token 1)'),
        ("C4:0", '"C4:0" has a length out of range (token 1): a length must be between 1/4 beat and 8 beats'),
        ("C4 E4:9", '"E4:9" has a length out of range (token 2)'),
        ("C4 r:0.1", '"r:0.1" has a length out of range (token 2)'),
        ("C4:1/3", '"C4:1/3" does not fit the grid (token 1): a length must be a multiple of 1/4 beat'),
        ("C4:0.3", '"C4:0.3" does not fit the grid (token 1)'),
        ("C4:x", '"C4:x" has a length that is not a number of beats (token 1)'),
        ("C4:", '"C4:" has a length that is not a number of beats (token 1)'),
        ("C4:1/0", '"C4:1/0" has a length that is not a number of beats (token 1)'),
        ("C4:-1", '"C4:-1" has a length that is not a number of beats (token 1)'),
        ("C4:2:3", '"C4:2:3" has a length that is not a number of beats (token 1)'),
        ("", "no notes given"),
        (" , | ", "no notes given"),
        ("r r:2 -", "only rests given; the melody needs at least one note"),
        (" ".join(["C4"] * 65), 'too many notes: at most 64 notes and rests (token 65 is "C4")'),
        ("X" * 100, '"XXXXXXXXXXXXXXXXXXX…" is not a note (token 1)'),  # long tokens are shortened
    ],
)
def test_mistakes_name_the_token_and_what_is_allowed(text, message):
    with pytest.raises(PrimerError) as caught:
        parse_notes(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_primer_from_text():
    primer = primer_from_text("C4 E G r", bpm=96)
    assert primer == Primer(parse_notes("C4 E G r"), 96, "typed notes", 3)


def test_notation_help_examples_parse():
    assert "C4" in NOTATION and "rest" in NOTATION and ":beats" in NOTATION
    example = NOTATION.split("Example:")[1]
    assert pitches(parse_notes(example)) == [60, 64, 67, 69, 67, 65, 64, 62, 60]


# -- MIDI sketches ---------------------------------------------------------------------------------
TUNE = line([60, 62, 64, 65, 67, 65, 64, 62] * 2, length=4)  # four bars
TUNE_EVENTS, _offset = notes_to_events(read_midi(make_midi([TrackSpec("x", TUNE)])).tracks[0].notes)
CHORDS = [(s, s + 16, p) for s in range(0, 64, 16) for p in (72, 76, 79)]  # higher than the tune
BASS = line([36, 43] * 8, length=8)


@pytest.mark.parametrize("midi_type", [0, 1])
def test_single_track_sketch(midi_type):
    primer = primer_from_midi(make_midi([TrackSpec("Flute", TUNE, program=73)], bpm=93, midi_type=midi_type))
    assert primer == Primer(TUNE_EVENTS, 93, "Flute", 16, program=73)


@pytest.mark.parametrize("name", ["MELODY", "melody", "Lead Melody"])
def test_a_track_named_melody_is_chosen_over_the_others(name):
    tracks = [TrackSpec("Piano", CHORDS), TrackSpec(name, TUNE, program=40), TrackSpec("Bass", BASS, program=33),
              TrackSpec("Strings", line([84, 86] * 16))]  # busier and higher than the tune
    primer = primer_from_midi(make_midi(tracks))
    assert (primer.events, primer.source, primer.program) == (TUNE_EVENTS, name, 40)


def test_without_a_name_the_monophonic_top_voice_wins():
    """Chords sit higher than the tune, but a tune is one note at a time; the bass is lower."""
    tracks = [TrackSpec("Piano", CHORDS), TrackSpec("Bass", BASS), TrackSpec("Voice", TUNE),
              TrackSpec("Bell", [(0, 4, 96), (32, 36, 96)])]  # high but too sparse to be the tune
    primer = primer_from_midi(make_midi(tracks))
    assert (primer.events, primer.source) == (TUNE_EVENTS, "Voice")


def test_drums_are_never_the_melody():
    tracks = [TrackSpec("Drums", line([36, 38, 42, 46] * 8, length=2), drum=True), TrackSpec("", TUNE)]
    primer = primer_from_midi(make_midi(tracks))
    assert (primer.events, primer.source) == (TUNE_EVENTS, "track 2")


def test_a_polyphonic_track_is_reduced_to_its_top_line():
    tune_an_octave_up = [(s, e, p + 12) for s, e, p in TUNE]
    chord = [(0, 16, 72), (0, 16, 76), (0, 16, 79)]  # over the tune's first note, 72
    left_hand = [(s, s + 8, 48) for s in range(0, 64, 8)]
    primer = primer_from_midi(make_midi([TrackSpec("Piano", tune_an_octave_up + chord + left_hand)]))
    tune_events = [e + 12 if is_note_on(e) else e for e in TUNE_EVENTS]
    assert primer.events == [on(79)] + tune_events[1:]  # the chord's top, cut where the tune goes on


def test_tempo_changes_keep_the_grid_and_the_tempo_at_the_first_note():
    data = make_midi([TrackSpec("Melody", TUNE)], bpm=140, tempo_changes=[(4, 70), (30, 111)])
    primer = primer_from_midi(data)
    assert (primer.events, primer.bpm) == (TUNE_EVENTS, 140)
    late = make_midi([TrackSpec("Melody", [(s + 16, e + 16, p) for s, e, p in TUNE])], bpm=140,
                     tempo_changes=[(8, 70), (30, 111)])
    primer = primer_from_midi(late)
    assert (primer.events, primer.bpm) == (TUNE_EVENTS, 70)  # starts at its first note's bar


def test_a_3_4_sketch_keeps_its_rhythm():
    waltz = line([67, None, 64, 65, None, 62], length=4)
    primer = primer_from_midi(make_midi([TrackSpec("Melody", waltz)], time_signature=(3, 4), bpm=160))
    assert primer.events == [on(67), _, _, _, OFF, _, _, _, on(64), _, _, _, on(65), _, _, _, OFF, _, _, _,
                             on(62), _, _, _, OFF]
    assert primer.bpm == 160


@pytest.mark.parametrize(("meter", "remark"), [
    ((3, 4), "the sketch is in 3/4, but I write in 4/4 (bars of 4 beats), so the continuation will not keep its meter"),
    ((6, 8), "the sketch is in 6/8, but I write in 4/4"),
    ((5, 4), "the sketch is in 5/4, but I write in 4/4"),
    ((4, 4), None),
    ((2, 4), None),  # two of its bars are one of ours
    ((2, 2), None),
])
def test_a_sketch_in_a_meter_the_grid_cannot_keep_says_so(meter, remark):
    primer = primer_from_midi(make_midi([TrackSpec("Melody", TUNE)], time_signature=meter))
    assert primer.meter == meter
    assert primer.meter_remark == remark if remark is None else primer.meter_remark.startswith(remark)


def test_a_long_sketch_keeps_its_last_bars():
    # 40 bars, bar b plays pitch 40 + b: every bar is recognisable.
    notes = [(16 * b + 4 * k, 16 * b + 4 * k + 4, 40 + b) for b in range(40) for k in range(4)]
    primer = primer_from_midi(make_midi([TrackSpec("Melody", notes)]))
    assert primer.trimmed_bars == 24
    assert len(primer.events) == 16 * STEPS_PER_BAR + 1
    assert pitches(primer.events) == [40 + b for b in range(24, 40) for _ in range(4)]
    assert primer.notes == 64
    short = primer_from_midi(make_midi([TrackSpec("Melody", notes)]), max_bars=2)
    assert pitches(short.events) == [78] * 4 + [79] * 4 and short.trimmed_bars == 38


def test_a_sketch_within_the_limit_keeps_everything_from_its_first_bar():
    notes = [(s + 40, e + 40, p) for s, e, p in TUNE]  # starts in bar 3, beat 3
    primer = primer_from_midi(make_midi([TrackSpec("Melody", notes)]), max_bars=5)
    assert primer.trimmed_bars == 0
    assert primer.events == [_] * 8 + TUNE_EVENTS


def test_a_long_last_note_is_cut_to_two_bars():
    data = make_midi([TrackSpec("Melody", [(0, 4, 60), (4, 400_000, 62)])], ticks_per_beat=4)
    assert primer_from_midi(data, max_bars=1).events == [on(60), _, _, _, on(62)] + [_] * 31 + [OFF]
    held = make_midi([TrackSpec("Melody", TUNE[:-1] + [(60, 60 + 64, 62)])])  # held for four bars
    assert primer_from_midi(held).events == TUNE_EVENTS[:60] + [on(62)] + [_] * 31 + [OFF]


def test_path_bytes_and_bytearray(tmp_path):
    data = make_midi([TrackSpec("Melody", TUNE)])
    (tmp_path / "sketch.mid").write_bytes(data)
    assert primer_from_midi(tmp_path / "sketch.mid") == primer_from_midi(data) == primer_from_midi(bytearray(data))


GOOD = make_midi([TrackSpec("Melody", TUNE), TrackSpec("Bass", BASS)])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (GOOD[: len(GOOD) // 2], "the MIDI file is truncated"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(40), "this is not a MIDI file"),
        (b"MThd is how a MIDI file starts", "truncated"),
        (b"%PDF-1.7\n", "this is not a MIDI file"),
        (make_midi([TrackSpec("Melody", [])]), "the file has no notes"),
        (make_midi([]), "the file has no notes"),
        (make_midi([TrackSpec("Drums", line([36, 38] * 8), drum=True)]), "only drum tracks; the bot needs a melody"),
        (b"MThd" + bytes(MAX_MIDI_BYTES), "the limit is 1024 KiB"),
    ],
    ids=["empty", "truncated", "png", "fake-header", "pdf", "no-notes", "no-tracks", "drums-only", "oversized"],
)
def test_unusable_sketches_say_why(data, message):
    with pytest.raises(MidiError, match=message):
        primer_from_midi(data)


def test_damaged_files_only_ever_raise_midi_error():
    """Random byte damage to a valid file: a primer or a MidiError, never another exception."""
    rng = random.Random(7)
    outcomes = set()
    for _round in range(300):
        data = bytearray(GOOD)
        for _change in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            primer_from_midi(bytes(data))
            outcomes.add("primer")
        except MidiError:
            outcomes.add("error")
    assert outcomes == {"primer", "error"}


def test_max_bars_must_be_positive():
    with pytest.raises(ValueError, match="max_bars"):
        primer_from_midi(GOOD, max_bars=0)
