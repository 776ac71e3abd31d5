"""Learning the key profiles (model/lab/key_profile.py) from songs with annotated keys."""

from __future__ import annotations

import numpy as np
from midi_factory import TrackSpec, make_midi

from model.lab.key_profile import folk_windows, learn, pitch_class_share
from model.music.primer import parse_notes


def test_profiles_are_learned_relative_to_each_window_tonic():
    c_major = pitch_class_share(parse_notes("C4 E G C:2"))
    g_major = pitch_class_share(parse_notes("G4 B D G:2"))
    a_minor = pitch_class_share(parse_notes("A3 C E A:2"))
    major, minor = learn([(c_major, 0, False), (g_major, 7, False), (a_minor, 9, True)], [])
    assert np.isclose(major.sum(), 100) and np.isclose(minor.sum(), 100)
    assert major.argmax() == 0 and {int(i) for i in np.argsort(major)[-3:]} == {0, 4, 7}  # tonic, 3rd, 5th
    assert {int(i) for i in np.argsort(minor)[-3:]} == {0, 3, 7}  # minor 3rd
    assert 0 < major[1] < 1  # unseen classes keep a floor: never impossible


def test_folk_windows_weigh_as_much_as_the_pop_windows_together():
    pop = [(pitch_class_share(parse_notes("C4 E G")), 0, False)] * 3
    folk = [(pitch_class_share(parse_notes("C4 D C")), 0, False)] * 30
    major, _ = learn(pop, folk)
    assert abs(major[4] - major[2]) < 0.1  # E (pop's) and D (folk's) about equal: 3 windows against 30


def test_a_folk_tune_in_minor_is_read_as_the_relative_minor(tmp_path):
    # The signature says C major (no sharps or flats); the tune dwells on A, C and E: A minor.
    notes = [(i * 4, i * 4 + 4, p) for i, p in enumerate([57, 60, 64, 57, 69, 64, 60, 57] * 6)]
    folder = tmp_path / "0001"
    folder.mkdir()
    (folder / "0001.mid").write_bytes(make_midi([TrackSpec("MELODY", notes)]))
    (folder / "key_audio.txt").write_text("0.0\t100000.0\tC:maj\n")
    windows = folk_windows(tmp_path)
    assert len(windows) == 3 and all(tonic == 9 and minor for _, tonic, minor in windows)
