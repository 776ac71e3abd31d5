"""Chord symbols, lead sheets, POP909 labels on the MIDI grid, the chord-tone share, and chords
read from a sketch's accompaniment tracks."""

from __future__ import annotations

import pytest
from midi_factory import TrackSpec, make_midi

from model.defaults import MAX_CHORD_BARS, MAX_CHORDS_PER_BAR
from model.lab.pop909 import parse_pop909_label, song_chords, song_downbeat_phase
from model.music.chords import (
    QUALITIES,
    Chord,
    ChordError,
    best_chord,
    chord_tone_share,
    chords_from_tracks,
    chords_per_step,
    lead_sheet,
    parse_chord,
    parse_lead_sheet,
)
from model.music.events import NO_EVENT, NOTE_OFF, note_on
from model.music.midi_io import read_midi

C, D, E, F, G, A, B = 0, 2, 4, 5, 7, 9, 11

SPELLINGS = {
    "C": (C, "maj"), "Cm": (C, "min"), "Cmin": (C, "min"), "C-": (C, "min"), "C7": (C, "7"),
    "Cmaj7": (C, "maj7"), "CM7": (C, "maj7"), "CΔ": (C, "maj7"), "CΔ7": (C, "maj7"), "Cm7": (C, "min7"),
    "Cmin7": (C, "min7"), "C-7": (C, "min7"), "Cdim": (C, "dim"), "C°": (C, "dim"), "Cdim7": (C, "dim7"),
    "C°7": (C, "dim7"), "Cm7b5": (C, "hdim7"), "Cø": (C, "hdim7"), "Cm7(b5)": (C, "hdim7"), "Caug": (C, "aug"),
    "C+": (C, "aug"), "Csus2": (C, "sus2"), "Csus4": (C, "sus4"), "Csus": (C, "sus4"), "C7sus4": (C, "7sus4"),
    "C6": (C, "6"), "Cm6": (C, "min6"), "CmMaj7": (C, "minmaj7"), "Cm(maj7)": (C, "minmaj7"), "C9": (C, "9"),
    "Cadd9": (C, "add9"), "Cmaj9": (C, "maj9"), "Cm9": (C, "min9"), "C6/9": (C, "69"), "CMAJ7": (C, "maj7"),
    "C#": (1, "maj"), "Db": (1, "maj"), "C♯m": (1, "min"), "D♭7": (1, "7"), "Bbmaj7": (10, "maj7"),
    "F#dim": (6, "dim"), "Ebm7": (3, "min7"), "G#aug": (8, "aug"), "Cb": (B, "maj"), "am": (A, "min"),
}


@pytest.mark.parametrize("symbol", sorted(SPELLINGS))
def test_every_spelling_reads_as_its_root_and_quality(symbol):
    chord = parse_chord(symbol)
    assert (chord.root, chord.quality, chord.bass) == (*SPELLINGS[symbol], None)


def test_pitch_classes_follow_the_quality_and_include_the_slash_bass():
    assert parse_chord("Am7").pitch_classes == {A, C, E, G}
    assert parse_chord("F#dim").pitch_classes == {6, A, C}
    assert parse_chord("Cadd9").pitch_classes == {C, D, E, G}
    slash = parse_chord("C/E")
    assert (slash.root, slash.quality, slash.bass) == (C, "maj", E)
    assert parse_chord("C/Bb").pitch_classes == {C, E, G, 10}
    assert parse_chord("C/C").bass is None  # the root as bass is no slash chord


def test_no_chord_reads_as_none():
    for symbol in ["N", "NC", "N.C.", "nc"]:
        assert parse_chord(symbol) is None


@pytest.mark.parametrize("quality", sorted(QUALITIES))
def test_every_quality_and_root_round_trips_through_its_symbol(quality):
    for root in range(12):
        for bass in [None, (root + 4) % 12, (root + 10) % 12]:
            chord = Chord(root, quality, bass)
            assert parse_chord(chord.symbol()) == chord, chord.symbol()


def test_symbols_keep_the_spelling_typed():
    for symbol in ["Db7", "C#m", "Gb/Bb", "C/Eb", "G#m7", "E/G#", "Bbmaj7", "Ebm7b5"]:
        assert parse_chord(symbol).symbol() == symbol
    assert parse_chord("Db") == parse_chord("C#") and len({parse_chord("Db"), parse_chord("C#")}) == 1
    assert parse_chord("Cb").symbol() == "B"
    assert parse_pop909_label("Gb:maj/3").symbol() == "Gb/Bb" and parse_pop909_label("C#:min").symbol() == "C#m"


def test_symbols_use_lead_sheet_spelling():
    assert [Chord(C, "maj").symbol(), Chord(A, "min7").symbol(), Chord(6, "dim").symbol(),
            Chord(10, "maj7").symbol(), Chord(C, "maj", E).symbol(), Chord(B, "hdim7").symbol()] == [
        "C", "Am7", "F#dim", "Bbmaj7", "C/E", "Bm7b5"]


@pytest.mark.parametrize("symbol, words", [
    ("Hx7", "note letter A-G"), ("Cxyz", 'kind "xyz"'), ("C/H", 'bass after "/"'), ("7", "note letter"),
    ("Cm/E/G", 'kind "m/E"'),
])
def test_a_bad_symbol_gets_a_message_naming_it(symbol, words):
    with pytest.raises(ChordError) as caught:
        parse_chord(symbol)
    assert f'"{symbol}"' in str(caught.value) and words in str(caught.value)
    assert isinstance(caught.value, ValueError) and caught.value.symbol == symbol


def test_lead_sheet_errors_name_the_symbol_and_its_bar():
    with pytest.raises(ChordError) as caught:
        parse_lead_sheet("C | G Hx7 | Am")
    assert str(caught.value).startswith('I can\'t read the chord "Hx7" (bar 2):')
    assert caught.value.bar == 2
    for text in ["", " | | ", "%"]:
        with pytest.raises(ChordError):
            parse_lead_sheet(text)
    with pytest.raises(ChordError, match=f"limit is {MAX_CHORD_BARS}"):
        parse_lead_sheet(" | ".join(["C"] * (MAX_CHORD_BARS + 1)))
    parse_lead_sheet(" | ".join(["C"] * MAX_CHORD_BARS))  # the limit itself is fine
    with pytest.raises(ChordError, match="bar 1 has"):
        parse_lead_sheet(" ".join(["C"] * (MAX_CHORDS_PER_BAR + 1)))


def test_lead_sheet_bars_tolerate_spaces_commas_and_outer_bar_lines():
    c, g, am, f = (parse_chord(s) for s in ["C", "G", "Am", "F"])
    expected = [[c], [g], [am, f], [f]]
    assert parse_lead_sheet("C | G | Am F | F") == expected
    assert parse_lead_sheet("  | C|G |  Am,  F |F |  ") == expected
    assert parse_lead_sheet("|: C | G || Am, F | F :|") == expected
    assert parse_lead_sheet("C | % | N G") == [[c], [c], [None, g]]


def test_chords_per_step_shares_bars_evenly_and_repeats():
    c, g, am, f = (parse_chord(s) for s in ["C", "G", "Am", "F"])
    bars = parse_lead_sheet("C | G | Am F | F")
    steps = chords_per_step(bars, 16 * 6)
    assert steps[:16] == [c] * 16 and steps[16:32] == [g] * 16
    assert steps[32:40] == [am] * 8 and steps[40:48] == [f] * 8
    assert steps[64:] == steps[:32]  # the sheet repeats
    three = chords_per_step(parse_lead_sheet("C G Am"), 16)
    assert [three.count(x) for x in (c, g, am)] == [6, 5, 5]
    assert chords_per_step(bars, 8, start=16) == [g] * 8
    assert chords_per_step(bars, 4, start=-2) == [f, f, c, c]  # before the sheet: its end
    assert chords_per_step(bars, 24, steps_per_bar=12)[12:] == [g] * 12


def test_lead_sheet_writes_per_step_chords_back_as_text():
    for text in ["C | G | Am F | F", "Dm7 | G7 | Cmaj7 | N", "F#m | F#m A | E | Bm E", "C G Am F | C/E"]:
        assert lead_sheet(chords_per_step(parse_lead_sheet(text), 16 * len(text.split("|")))) == text
    assert lead_sheet(chords_per_step(parse_lead_sheet("C G Am"), 16)) == "C G Am"
    assert lead_sheet([]) == ""


@pytest.mark.parametrize("label, expected", [
    ("B:maj", Chord(B, "maj")), ("F#:maj7/5", Chord(6, "maj7", 1)), ("Bb:min", Chord(10, "min")),
    ("N", None), ("C:sus4(b7)", Chord(C, "7sus4")), ("A:min/b3", Chord(A, "min", C)),
    ("G:7/b7", Chord(G, "7", F)), ("E:hdim7", Chord(E, "hdim7")), ("Eb:maj6", Chord(3, "6")),
    ("D:minmaj7", Chord(D, "minmaj7")), ("C:min7(11)", Chord(C, "min7")), ("C:(1,5)", Chord(C, "5")),
    ("C:maj(9)", Chord(C, "add9")), ("X:maj", None), ("", None), ("C:7(#9)/3", Chord(C, "7", E)),
])
def test_pop909_labels(label, expected):
    assert parse_pop909_label(label) == expected


def test_unknown_pop909_qualities_go_to_the_nearest_and_never_crash():
    assert parse_pop909_label("G:weird").root == G
    assert parse_pop909_label("D:min(*5)").quality == "min"
    assert parse_pop909_label("C:maj/zz") == Chord(C, "maj")


def test_song_chords_lands_on_the_midi_tick_grid_through_tempo_changes(tmp_path):
    # 120 BPM for two bars (a step is 0.125 s), then 60 BPM (0.25 s): bar 3 starts at 4 s and lasts 4 s.
    midi = make_midi([TrackSpec("MELODY", [(0, 4, 60)])], bpm=120, tempo_changes=[(32, 60)], ticks_per_beat=96)
    song = tmp_path / "007"
    song.mkdir()
    (song / "007.mid").write_bytes(midi)
    (song / "chord_midi.txt").write_text("0.0\t0.5\tN\n0.5\t2.0\tC:maj\n2.0\t4.0\tA:min/b3\n"
                                         "4.0\t6.0\tF:maj7\n6.0\t8.0\tG:7\n")
    chords = song_chords(song)
    assert len(chords) == 48
    assert chords[:4] == [None] * 4 and chords[4:16] == [Chord(C, "maj")] * 12
    assert chords[16:32] == [Chord(A, "min", C)] * 16
    assert chords[32:40] == [Chord(F, "maj7")] * 8 and chords[40:] == [Chord(G, "7")] * 8
    assert song_chords(song, song / "007.mid") == chords
    assert song_downbeat_phase(song) is None  # no beat_midi.txt
    # beats every 0.5 s from 0.25 s (step 2), a downbeat every fourth: bars start at step 2 of the grid
    (song / "beat_midi.txt").write_text("".join(f"{0.25 + b * 0.5}\t1.0\t{float(b % 4 == 0)}\n" for b in range(8)))
    assert song_downbeat_phase(song) == 2


def _events(notes: list[tuple[int, int]]) -> list[int]:
    """(pitch, length) pairs played one after another; a pitch of None is a rest."""
    events = []
    for pitch, length in notes:
        events += ([NOTE_OFF] if pitch is None else [note_on(pitch)]) + [NO_EVENT] * (length - 1)
    return events + [NOTE_OFF]


def test_chord_tone_share_weighs_by_duration_and_skips_no_chord():
    chords = chords_per_step(parse_lead_sheet("C | N | G"), 48)
    # bar 1 over C: E (8 steps, a chord tone), D (8, not); bar 2 no chord; bar 3 over G: B (4), C (4, not)
    events = _events([(64, 8), (62, 8), (60, 16), (71, 4), (None, 4), (72, 4)])
    assert chord_tone_share(events, chords) == pytest.approx((8 + 4) / (16 + 8))
    assert chord_tone_share(events, [None] * 48) is None
    assert chord_tone_share([], chords) is None
    # a note is judged by the chord at its onset, even when it sounds into the next bar
    assert chord_tone_share(_events([(None, 8), (67, 16)]), chords_per_step(parse_lead_sheet("C | F#"), 32)) == 1.0


def test_best_chord_matches_templates():
    def profile(pcs):
        return [1.0 if pc in pcs else 0.0 for pc in range(12)]
    assert best_chord(profile({C, E, G})) == Chord(C, "maj")
    assert best_chord(profile({A, C, E})) == Chord(A, "min")
    assert best_chord(profile({G, B, D, F})) == Chord(G, "7")
    assert best_chord(profile({D, F, A, C})) == Chord(D, "min7")
    assert best_chord(profile({C, E})) is None
    assert best_chord(profile({A, C, E, G}), bass=C) == Chord(C, "6")  # the bass settles C6 against Am7
    assert best_chord(profile({A, C, E, G}), bass=A) == Chord(A, "min7")
    assert best_chord(profile({C, E, G, B}), bass=E) == Chord(C, "maj7")  # a bass never outvotes a better fit


def test_chords_from_tracks_reads_the_accompaniment_of_a_sketch():
    melody = TrackSpec("Lead", [(step, step + 4, 72 + (step // 4) % 3) for step in range(0, 64, 4)])
    comp = TrackSpec("Piano", [(0, 16, p) for p in (48, 52, 55)] + [(16, 32, p) for p in (43, 47, 50, 53)]
                     + [(32, 40, p) for p in (45, 48, 52)] + [(40, 48, p) for p in (41, 45, 48)]
                     + [(48, 64, p) for p in (40, 43, 48)])
    drums = TrackSpec("Drums", [(step, step + 1, 36 + step % 12) for step in range(0, 64, 2)], drum=True)
    tracks = read_midi(make_midi([melody, comp, drums])).tracks
    chords = chords_from_tracks(tracks, melody_index=0)
    assert lead_sheet(chords) == "C | G7 | Am F | C/E"
    assert chords_from_tracks(tracks, melody_index=1, steps=16) == [None] * 16  # the lead alone: one voice


def test_chords_from_tracks_reads_arpeggios_and_a_bass_track_together():
    arpeggio = [(bar * 16 + 2 * i, bar * 16 + 2 * i + 2, pitch) for bar, chord in enumerate([(57, 60, 64, 67),
                (53, 57, 60, 64), (55, 59, 62, 65)]) for i, pitch in enumerate(chord * 2)]
    bass = [(0, 16, 45), (16, 32, 41), (32, 48, 43)]
    melody = TrackSpec("Melody", [(0, 48, 76)])
    tracks = read_midi(make_midi([melody, TrackSpec("Guitar", arpeggio, program=25),
                                  TrackSpec("Bass", bass, program=33)])).tracks
    assert lead_sheet(chords_from_tracks(tracks, melody_index=0)) == "Am7 | Fmaj7 | G7"
