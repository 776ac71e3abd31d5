"""The musical protocol of EVALUATION.md on hand-made pieces: features, overlapping areas, the
annotated key, structure and the chord-tone share."""

from __future__ import annotations

import numpy as np
from midi_factory import TrackSpec, make_midi

from model.lab import musical_eval as me
from model.music.chords import parse_chord
from model.music.events import NO_EVENT, NOTE_OFF, note_on


def piece(notes: list[tuple[int, int, int]], steps: int = 128) -> list[int]:
    """(start, length, pitch) -> events of `steps` steps."""
    events = [NO_EVENT] * steps
    for start, length, _ in notes:
        if start + length < steps:
            events[start + length] = NOTE_OFF
    for start, _, pitch in notes:
        events[start] = note_on(pitch)
    return events


def test_features_follow_the_protocol():
    f = me.features(piece([(0, 1, 60), (1, 5, 67), (6, 16, 64), (22, 17, 60), (39, 89, 72)]))
    assert f["note_count"][0] == 5 and f["pitch_count"][0] == 4 and f["pitch_range"][0] == 12
    assert f["mean_interval"][0] == (7 + 3 + 4 + 12) / 4
    assert f["mean_ioi"][0] == 39 / 4
    hist = np.zeros(12)
    hist[[0, 4, 7]] = [3, 1, 1]  # C C C, E, G
    np.testing.assert_allclose(f["pitch_class_hist"], hist / 5)
    # lengths 1, 5, 16, 17, 89 -> bins "at most 1", "at most 6", "at most 16", "more", "more"
    np.testing.assert_allclose(f["note_length_hist"], np.array([1, 0, 0, 0, 1, 0, 0, 1, 2]) / 5)
    empty = me.features([NO_EVENT] * 128)
    assert empty["note_count"][0] == 0 and empty["mean_ioi"][0] == 0 and not empty["note_length_hist"].any()


def test_overlapping_area_is_one_for_the_same_distribution_and_small_for_far_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)
    assert me.overlap_area(a, b) > 0.95
    assert me.overlap_area(a, rng.normal(6, 1, 2000)) < 0.05
    assert 0.3 < me.overlap_area(a, rng.normal(1.5, 1, 2000)) < 0.6  # the true overlap is 0.45


def test_keys_minor_read_as_relative_major(tmp_path):
    assert me.parse_key("C:maj") == {0, 2, 4, 5, 7, 9, 11}
    assert me.parse_key("A:min") == me.parse_key("C:maj")
    assert me.parse_key("F:min") == me.parse_key("Ab:maj") == {8, 10, 0, 1, 3, 5, 7}
    assert me.parse_key("F#:min") == me.parse_key("A:maj")
    song = tmp_path / "001"
    song.mkdir()
    (song / "001.mid").write_bytes(make_midi([TrackSpec("MELODY", [(0, 4, 60)])], bpm=120))  # 8 steps a second
    (song / "key_audio.txt").write_text("0.0\t4.0\tG:maj\n4.0\t9.0\tE:min\n9.0\t20.0\tF:maj\n")
    assert me.song_key(song, 16) == me.parse_key("G:maj")  # 2 s
    assert me.song_key(song, 40) == me.parse_key("G:maj")  # 5 s: E minor = G major
    assert me.song_key(song, 80) == me.parse_key("F:maj")  # 10 s


def test_in_key_share_counts_notes():
    c_major = me.parse_key("C:maj")
    assert me.in_key_share([piece([(0, 4, 60), (4, 4, 61), (8, 4, 62), (12, 4, 66)])], [c_major]) == 0.5
    assert me.in_key_share([piece([(0, 4, 61)]), piece([(0, 4, 60)])], [None, c_major]) == 1.0


def test_structure_is_the_share_of_bars_that_re_use_an_earlier_bar():
    bar_a = [(0, 4, 60), (4, 4, 64), (8, 4, 67), (12, 4, 72)]
    bar_b = [(0, 8, 62), (8, 8, 65)]

    def at(bar, n):
        return [(s + 16 * n, length, p) for s, length, p in bar]

    primer = piece(at(bar_a, 0) + at(bar_b, 1), 32)
    # bars: A (re-uses the primer), C, A', B, empty, C, D, D; A' differs from A in one of four notes
    almost_a = bar_a[:3] + [(12, 4, 71)]  # Jaccard 3/5 = 0.6 < 0.75
    bar_c, bar_d = [(0, 16, 69)], [(0, 2, 57), (2, 2, 59)]
    continuation = piece(at(bar_a, 0) + at(bar_c, 1) + at(almost_a, 2) + at(bar_b, 3) + at(bar_c, 5)
                         + at(bar_d, 6) + at(bar_d, 7))
    assert me.repeated_bars(primer, continuation) == (4, 8)  # A, B, C, D again; not A' nor the empty bar
    assert me.structure_share([primer, primer], [continuation, [NO_EVENT] * 128]) == 4 / 16


def test_chord_tone_share_weights_by_duration_and_leaves_out_no_chord():
    c, g = parse_chord("C"), parse_chord("G")
    chords = [c] * 16 + [g] * 16 + [None] * 96
    notes = piece([(0, 12, 64), (12, 4, 62), (16, 8, 62), (24, 8, 60), (40, 8, 65)])
    assert me.chord_tone_counts(notes, chords) == (12 + 8, 32)
    assert me.chord_tone_share([notes, notes], [chords, chords]) == 20 / 32
