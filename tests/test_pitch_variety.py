"""The lean towards unplayed notes (issue 23, folk OA): a continuation goes on to notes of the
sketch's key and register it has not played yet, as real melodies do, picking among the notes only."""

from __future__ import annotations

import numpy as np

from model.melody import sampling
from model.melody.pitch_variety import FreshPitches
from model.melody.sampling import SamplingOptions, continue_melodies, load_model, prepare_primer
from model.music.events import NO_EVENT, event_pitch, events_to_notes, is_note_on, note_on
from model.music.primer import parse_notes

C_MAJOR = {0, 2, 4, 5, 7, 9, 11}


def fresh_pitches(bias: np.ndarray) -> list[int]:
    return [event_pitch(e) for e in np.flatnonzero(bias)]


def test_unplayed_notes_of_the_key_and_register_get_the_bias_until_played():
    sketch = prepare_primer(parse_notes("C4 E4 G4 F4 D4 E4 C4:2 G4 A4 F4 E4 D4 B3 C4:2"))  # C major, C4..A4
    fresh = FreshPitches([sketch], bias=1.5)
    pitches = fresh_pitches(fresh.now[0])
    # the key's notes (no C#, no F#) from the sketch's lowest (B3) and highest (A4) notes, and at
    # least 6 semitones either side of its mean pitch (63.4): A3 to A4
    assert pitches == [p for p in range(57, 70) if p % 12 in C_MAJOR]
    assert fresh.now[0, note_on(64)] == np.float32(1.5)
    fresh.update(np.array([NO_EVENT]))  # a rest changes nothing
    assert fresh_pitches(fresh.now[0]) == pitches
    fresh.update(np.array([note_on(64)]))  # E4 played: no longer fresh; the rest still are
    assert fresh_pitches(fresh.now[0]) == [p for p in pitches if p != 64]


def test_a_row_without_notes_gets_no_bias():
    fresh = FreshPitches([[NO_EVENT, NO_EVENT]], bias=1.0)
    assert not fresh.any()


def test_on_the_shipped_network_continuations_use_more_of_the_key(monkeypatch):
    """Distinct pitches per 8-bar take rise with the lean (real pop 8.2 against the network's own
    7.5), every take stays in the key, and the rhythm (notes per take) stays about the same."""
    model = load_model()
    sketch = prepare_primer(
        parse_notes(
            "E4:0.5 E4:0.5 F4:0.5 G4:0.5 G4:0.5 F4:0.5 E4:0.5 D4:0.5 C4:0.5 C4:0.5 D4:0.5 E4:0.5 E4:0.75 D4:0.25 D4:1"
        )
    )
    options = [SamplingOptions(bars=8, variations=12, seed=seed, candidates=1) for seed in range(4)]

    def measure() -> tuple[float, float, set[int]]:
        takes = [take for takes in continue_melodies(model, [sketch] * len(options), options) for take in takes]
        pitches = [{event_pitch(e) for e in take if is_note_on(e)} for take in takes]
        notes = [len(events_to_notes(take)) for take in takes]
        return float(np.mean([len(p) for p in pitches])), float(np.mean(notes)), set().union(*pitches)

    leaned, leaned_notes, leaned_pitches = measure()
    assert sampling.FRESH_PITCH_BIAS > 0
    monkeypatch.setattr(sampling, "FRESH_PITCH_BIAS", 0.0)
    plain, plain_notes, _ = measure()
    assert leaned >= plain + 0.4, (leaned, plain)  # 0.56-1.04 more over seeds 0-19, in blocks of 4
    assert {p % 12 for p in leaned_pitches} <= C_MAJOR
    assert abs(leaned_notes - plain_notes) <= 0.15 * plain_notes, (leaned_notes, plain_notes)
