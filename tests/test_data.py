"""Songs start at their annotated downbeats: a POP909-style folder the test writes, with a MIDI
file whose bars do not begin at tick 0 and a beat_midi.txt that says where they do."""

from __future__ import annotations

import numpy as np
import pytest
from midi_factory import TrackSpec, make_midi, write_song_folder

import model.lab.data
from model.lab.data import Song, sample_chord_batch
from model.lab.musical_eval import PIECE_STEPS, PRIMER_STEPS, prepare
from model.melody.network import CHORD_ROOT
from model.music.events import NO_EVENT, NOTE_OFF, note_on

STEP_SECONDS = 60 / 100 / 4  # 100 BPM
PHASE = 6  # the songs' bars begin at file step 6, 22, 38, ...
BARS = 14
ROOTS = ["C:maj", "D:min", "E:min", "F:maj", "G:maj", "A:min"]  # chord of bar k: ROOTS[k % 6]
ROOT_PCS = [0, 2, 4, 5, 7, 9]


def beats(first_step: int = PHASE - 4, count: int = 4 * BARS + 8) -> str:
    """Beats every quarter note from `first_step`; every fourth, from the second, a downbeat."""
    return "".join(f"{(first_step + 4 * b) * STEP_SECONDS:.6f} 1.0 {float(b % 4 == 1)}\n" for b in range(count))


def bar_song(pickup: bool) -> tuple[bytes, str]:
    """Bar k (from file step 22) opens with pitch 60 + k on its downbeat, a low note halfway;
    with a pickup, the melody starts three steps before the first of those downbeats (step 3 of
    the file, in the bar that begins at step 6 - 16). Chords change on the downbeats."""
    first = PHASE + 16
    notes = [(3, 6, 50)] if pickup else []
    for k in range(BARS):
        bar = first + 16 * k
        notes += [(bar, bar + 4, 60 + k), (bar + 8, bar + 12, 48)]
    chords = "".join(f"{(first + 16 * k) * STEP_SECONDS:.6f} {(first + 16 * k + 16) * STEP_SECONDS:.6f} "
                     f"{ROOTS[k % 6]}\n" for k in range(BARS))
    return make_midi([TrackSpec("MELODY", notes), TrackSpec("PIANO", [(0, 16, 40)])], bpm=100), chords


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(model.lab.data, "CACHE_DIR", tmp_path / "cache")
    songs = {"001": bar_song(pickup=False), "002": bar_song(pickup=True), "003": bar_song(pickup=False)}
    root = write_song_folder(tmp_path / "pop909", {i: midi for i, (midi, _) in songs.items()})
    for i, (_, chords) in songs.items():
        (root / i / "chord_midi.txt").write_text("0.0 0.1 N\n" + chords)
        if i != "003":  # 003 has no beat annotation: the protocol's grid, as before
            (root / i / "beat_midi.txt").write_text(beats())
    return root


def test_songs_start_at_their_annotated_downbeat(folder):
    for use_cache in (True, True, False):  # written, read back, parsed again
        songs = {s.song_id: s for s in model.lab.data.load_songs(folder, use_cache=use_cache)[0]}
        plain, pickup, unannotated = songs["001"], songs["002"], songs["003"]
        # The protocol's events are unchanged: from the bar line of the grid (file step 16 / 0).
        assert plain.events[PHASE] == note_on(60) and (plain.events[:PHASE] == NO_EVENT).all()
        assert pickup.events[3] == note_on(50) and pickup.events[22] == note_on(60)
        assert (plain.phase, pickup.phase, unannotated.phase) == (PHASE, PHASE, 0)

        events, chords = plain.aligned()  # cut at the downbeat on the first note
        assert events[0] == note_on(60) and events[16] == note_on(61) and events[8] == note_on(48)
        assert [int(c) // CHORD_ROOT for c in chords[: 16 * 6 : 16]] == ROOT_PCS  # chords on the same steps
        assert len(events) == len(chords) == len(plain.events) - PHASE

        events, chords = pickup.aligned()  # the pickup's bar begins 10 steps before the file does
        assert pickup.downbeat_start() == PHASE - 16
        assert (events[:13] == NO_EVENT).all() and events[13] == note_on(50)
        assert events[32] == note_on(60) and events[48] == note_on(61)
        assert int(chords[32]) // CHORD_ROOT == 0 and int(chords[48]) // CHORD_ROOT == 2

        events, _ = unannotated.aligned()
        assert np.array_equal(events, unannotated.events)  # no beats: today's grid
        assert unannotated.events[0] == NO_EVENT and unannotated.events[PHASE] == note_on(60)


def test_training_windows_and_primers_start_on_downbeats(folder):
    songs = {s.song_id: s for s in model.lab.data.load_songs(folder)[0]}
    rng = np.random.default_rng(0)
    primer, target, mask, chords, _ = sample_chord_batch([songs["001"], songs["002"]], 64, 16, 32, rng, max_shift=3)
    opening = primer[:, 0]  # every window opens on a bar's downbeat note, or the pickup's silent lead-in
    bar_notes = {note_on(60 + k + s) for k in range(BARS) for s in range(-3, 4)}
    assert all(e in bar_notes or e in (NO_EVENT, NOTE_OFF) for e in opening)  # the pickup ends on bar 1
    assert sum(e in bar_notes for e in opening) > 40
    for b in np.flatnonzero([e in bar_notes for e in opening]):
        assert primer[b, 8] in {note_on(48 + s) for s in range(-3, 4)}  # halfway through the bar
        assert int(chords[b, 0]) % CHORD_ROOT != 0  # a chord sounds from the window's first step

    protocol = prepare(folder, songs=list(songs.values()))
    by_id = dict(zip((s.song_id for s in protocol.songs), protocol.primers))
    assert by_id["001"][0] == note_on(60) and by_id["001"][16] == note_on(61)
    assert by_id["002"][13] == note_on(50) and by_id["002"][16] == NOTE_OFF  # the pickup ends on the next downbeat
    assert by_id["003"][PHASE] == note_on(60)  # no beats: the grid's bar line
    assert all(len(r) == PIECE_STEPS for r in protocol.real) and all(len(p) == PRIMER_STEPS for p in protocol.primers)
    on_the_grid = prepare(folder, songs=list(songs.values()), phase=False)  # bars from the file's tick 0
    grid_bar = [NO_EVENT] * PHASE + [note_on(60)]
    assert [p[: PHASE + 1] for p in on_the_grid.primers] == [grid_bar, songs["002"].events[: PHASE + 1].tolist(),
                                                              grid_bar]


def test_a_song_without_a_phase_is_cut_at_its_grid():
    events = np.array([NO_EVENT, NO_EVENT, note_on(60), NO_EVENT], dtype=np.int64)
    assert Song("004", events).downbeat_start() == 0
    assert Song("004", events, phase=1).downbeat_start() == 1
    assert Song("004", events, phase=3).downbeat_start() == 3 - 16  # after the first note: the bar before


def test_a_share_of_the_training_windows_comes_from_the_extra_songs():
    main = [Song("001", np.array([note_on(60), NO_EVENT, NOTE_OFF, NO_EVENT] * 16, dtype=np.int64))]
    extra = [Song("x1", np.array([note_on(72), NO_EVENT, NOTE_OFF, NO_EVENT] * 16, dtype=np.int64))]
    alone = sample_chord_batch(main, 400, 8, 8, np.random.default_rng(5))
    primer = sample_chord_batch(main, 400, 8, 8, np.random.default_rng(5), extra=extra, extra_share=0.25)[0]
    from_extra = (primer == note_on(72)).any(axis=1)
    assert 0.19 < from_extra.mean() < 0.31
    assert not (primer[~from_extra] == note_on(72)).any()
    # No extra songs: the batches drawn are the same as before the option existed.
    again = sample_chord_batch(main, 400, 8, 8, np.random.default_rng(5), extra=[], extra_share=0.25)
    assert all((a == b).all() for a, b in zip(alone, again))
