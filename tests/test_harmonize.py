"""Chord suggestion: the HMM learned from hand-made melodies over known chords recovers them, the
shipped parameters give a plausible progression, and the POP909 reading, training and evaluation
commands run on a tiny song folder."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from midi_factory import TrackSpec, make_midi

from model.harmony import suggest
from model.harmony.suggest import DEFAULT_HARMONY_WEIGHTS, HarmonyModel, load_model, suggest_chords
from model.lab import harmony as harmonize
from model.lab.harmony import Piece, accuracy, baseline_chords, load_pieces, train
from model.music.chords import NOTE_NAMES, Chord, chords_per_step, lead_sheet, parse_lead_sheet
from model.music.events import STEPS_PER_BAR, Note, notes_to_events

PROGRESSIONS = ["C | G | Am | F", "C | F | G | C", "Am | F | C | G", "F | G | Em | Am", "C | Am | Dm | G7",
                "Dm7 | G7 | Cmaj7 | Cmaj7", "C | C | F G | C"]


def outline(chords: list[Chord | None], rng: random.Random, low: int = 60) -> list[int]:
    """A melody of quarter and eighth notes on the chord tones sounding at each note's start."""
    notes, step = [], 0
    while step < len(chords):
        length = rng.choice([4, 4, 2])
        tones = sorted(chords[step].pitch_classes)
        pitch = low + rng.choice(tones)
        notes.append(Note(step, min(step + length, len(chords)), pitch))
        step += length
    return notes_to_events(notes)[0][: len(chords)]


def synthetic_pieces(count: int, seed: int = 0) -> list[Piece]:
    rng = random.Random(seed)
    pieces = []
    for i in range(count):
        shift = rng.randrange(12)
        text = rng.choice(PROGRESSIONS)
        bars = [[None if c is None else Chord((c.root + shift) % 12, c.quality) for c in bar]
                for bar in parse_lead_sheet(text)]
        chords = chords_per_step(bars, 8 * STEPS_PER_BAR)
        events = outline(chords, rng)
        pieces.append(Piece(f"{i:03d}", events, chords[: len(events)], [shift] * len(events)))
    return pieces


@pytest.fixture(scope="module")
def small_model() -> HarmonyModel:
    return train(synthetic_pieces(60), emission_weight=0.5, key_weight=0.1)


def test_the_decoder_recovers_the_chords_its_training_melodies_outline(small_model):
    correct = total = 0
    for piece in synthetic_pieces(10, seed=99):  # new melodies, new keys
        found = suggest_chords(piece.events, model=small_model)
        assert len(found) == len(piece.events)
        correct += sum(f is not None and (f.root, f.quality) == (t.root, t.quality)
                       for f, t in zip(found, piece.chords))
        total += len(found)
    assert correct / total > 0.9


def test_one_chord_a_bar_changes_only_at_bar_lines(small_model):
    piece = synthetic_pieces(1, seed=5)[0]
    found = suggest_chords(piece.events, STEPS_PER_BAR, model=small_model)
    assert all(found[i] == found[i - 1] for i in range(len(found)) if i % STEPS_PER_BAR)
    shifted = suggest_chords(piece.events[4:], STEPS_PER_BAR, bar_position=4, model=small_model)
    assert all(shifted[i] == shifted[i - 1] for i in range(1, len(shifted)) if (i + 4) % STEPS_PER_BAR)
    with pytest.raises(ValueError, match="steps_per_chord"):
        suggest_chords(piece.events, 5, model=small_model)


def test_a_given_key_is_respected(small_model):
    piece = synthetic_pieces(1, seed=7)[0]
    tonic = piece.tonics[0]
    relative_minor = Chord((tonic + 9) % 12, "min")
    expected = suggest_chords(piece.events, key=tonic, model=small_model)
    assert all(c.pitch_classes - {(tonic + d) % 12 for d in (0, 2, 4, 5, 7, 9, 11)} == set() or c.quality == "7"
               for c in expected)  # a key's own chords (its V7 included)
    for key in (Chord(tonic, "maj").symbol(), relative_minor.symbol(), NOTE_NAMES[relative_minor.root] + " minor"):
        assert suggest_chords(piece.events, key=key, model=small_model) == expected, key


def test_no_notes_no_chords(small_model):
    assert suggest_chords([], model=small_model) == []
    assert suggest_chords([0] * 32, model=small_model) == [None] * 32


def test_parameters_survive_json(small_model, tmp_path):
    path = tmp_path / "harmony.json"
    small_model.save(path)
    loaded = HarmonyModel.from_json(json.loads(path.read_text()))
    piece = synthetic_pieces(1, seed=3)[0]
    assert suggest_chords(piece.events, model=loaded) == suggest_chords(piece.events, model=small_model)


def _triads_melody() -> list[int]:
    notes = []
    for bar, (root, third, fifth) in enumerate([(60, 64, 67), (67, 71, 74), (69, 72, 76), (65, 69, 72)]):
        for beat, pitch in enumerate([root, third, fifth, third]):
            start = bar * STEPS_PER_BAR + 4 * beat
            notes.append(Note(start, start + 4, pitch))
    return notes_to_events(notes)[0]


def _every_key_viterbi(model, features, tonics, at_bar, whole, key_scores):
    """Viterbi in all keys side by side, written plainly: what suggest's pruned decoding must equal."""
    emit = suggest._emission_scores(model, features, tonics)  # (K, T, S)
    score, back = model.prior + emit[:, 0], []
    for t in range(1, emit.shape[1]):
        trans = model.trans_whole if whole else (model.trans_bar if at_bar[t - 1] else model.trans_mid)
        total = score[:, :, None] + trans  # (K, S from, S to)
        back.append(total.argmax(1))
        score = np.take_along_axis(total, back[-1][:, None, :], 1)[:, 0] + emit[:, t]
    ends = score.argmax(1)
    best = int((score[np.arange(len(tonics)), ends] + key_scores).argmax())
    path = [int(ends[best])]
    for arg in reversed(back):
        path.append(int(arg[best, path[-1]]))
    return best, path[::-1]


def _random_melody(rng: random.Random, steps: int) -> list[int]:
    notes, step = [], rng.randrange(4)
    while step < steps:
        length = rng.choice([1, 2, 2, 4, 4, 6, 8])
        notes.append(Note(step, min(step + length, steps), rng.randrange(55, 80)))
        step += length + rng.choice([0, 0, 0, 2])
    return notes_to_events(notes)[0]


def test_decoding_only_the_keys_that_can_win_equals_decoding_all_12(small_model):
    rng = random.Random(5)
    melodies = [p.events for p in synthetic_pieces(6, seed=11)]
    melodies += [_random_melody(rng, steps) for steps in (6, 20, 64, 150, 300)]
    tables = ("emission", "key_profile", "prior", "trans_bar", "trans_mid", "trans_whole")
    ties = HarmonyModel(**{name: np.zeros_like(getattr(small_model, name)) for name in tables})  # the first key wins
    every_key = list(range(12))
    for model in (small_model, load_model(), ties):
        for events in melodies:
            for frame, bar_position, tonics in ((8, 0, every_key), (16, 0, every_key), (8, 6, every_key),
                                                (8, 0, [rng.randrange(12)])):
                first = (-bar_position) % frame
                features = suggest.melody_features(events, frame, first, bar_position)
                bounds = suggest._frame_bounds(len(events), frame, first)
                at_bar = [(bar_position + begin) % STEPS_PER_BAR == 0 for begin, _ in bounds[1:]]
                key_scores = np.array([model.key_weight * float(features.sum((0, 1)) @ np.roll(model.key_profile, t))
                                       for t in tonics])
                args = (model, features, tonics, at_bar, frame == STEPS_PER_BAR, key_scores)
                assert suggest._viterbi(*args) == _every_key_viterbi(*args)


def test_the_shipped_parameters_load_small_and_suggest_c_g_am_f():
    assert DEFAULT_HARMONY_WEIGHTS.stat().st_size < 1024 * 1024
    found = suggest_chords(_triads_melody())
    bars = [found[b * STEPS_PER_BAR + 8] for b in range(4)]
    assert [(c.root, harmonize.TRIAD.get(c.quality, "other")) for c in bars] == [
        (0, "maj"), (7, "maj"), (9, "min"), (5, "maj")], lead_sheet(found)
    assert load_model() is load_model()  # loaded once
    up_a_semitone = [e + 1 if e >= 2 else e for e in _triads_melody()]  # C# G# A#m F#: written Db Ab Bbm Gb
    assert lead_sheet(suggest_chords(up_a_semitone)[: 4 * STEPS_PER_BAR]) == "Db | Ab | Bbm | Gb"


def test_baseline_takes_the_diatonic_triad_holding_the_melody():
    found = baseline_chords(_triads_melody(), tonic=0)
    assert lead_sheet(found[: 4 * STEPS_PER_BAR]) == "C | G | Am | F"
    in_g = baseline_chords(_triads_melody(), tonic=7)
    assert lead_sheet(in_g[: 4 * STEPS_PER_BAR]) == "C | G | Am | Am"  # no F in G major


def test_accuracy_counts_annotated_steps_only():
    c, am, cmaj7, c7 = Chord(0, "maj"), Chord(9, "min"), Chord(0, "maj7"), Chord(0, "7")
    result = accuracy([(c, c), (cmaj7, c), (c7, Chord(0, "9")), (am, c), (c, None), (None, am)])
    assert result["steps"] == 5
    assert result["root"] == 0.6 and result["root+triad"] == 0.6
    assert result["root+vocab"] == 0.4 and result["exact"] == 0.2


def _song_folder(root, rng: random.Random, count: int = 12):
    """A POP909-style folder of songs over known chords: MELODY track, chord_midi.txt, keys, beats."""
    seconds_per_step = 0.125  # 120 BPM
    for i in range(1, count + 1):
        song = root / f"{i:03d}"
        song.mkdir(parents=True)
        text = PROGRESSIONS[i % len(PROGRESSIONS)]  # the held-out 010: "F | G | Em | Am"
        chords = chords_per_step(parse_lead_sheet(text), 8 * STEPS_PER_BAR)
        events = outline(chords, rng)
        notes = [(n.start + STEPS_PER_BAR, n.end + STEPS_PER_BAR, n.pitch) for n in _notes(events)]
        piano = TrackSpec("PIANO", [(0, 4, 48)])
        (song / f"{song.name}.mid").write_bytes(make_midi([TrackSpec("MELODY", notes), piano]))
        lines, begin = [f"0.0\t{STEPS_PER_BAR * seconds_per_step}\tN"], 0
        for step in range(1, len(chords) + 1):
            if step == len(chords) or chords[step] != chords[begin]:
                label = f"{'C C# D Eb E F F# G Ab A Bb B'.split()[chords[begin].root]}:" + {
                    "maj": "maj", "min": "min", "7": "7", "min7": "min7", "maj7": "maj7"}[chords[begin].quality]
                start_s = (begin + STEPS_PER_BAR) * seconds_per_step
                lines.append(f"{start_s}\t{(step + STEPS_PER_BAR) * seconds_per_step}\t{label}")
                begin = step
        (song / "chord_midi.txt").write_text("\n".join(lines) + "\n")
        (song / "key_audio.txt").write_text("0.0\t100.0\tC:maj\n")
        (song / "beat_midi.txt").write_text("".join(f"{b * 0.5}\t1.0\t{1.0 if b % 4 == 0 else 0.0}\n"
                                                    for b in range(40)))
    return root


def _notes(events):
    from model.music.events import events_to_notes  # noqa: PLC0415
    return events_to_notes(events)


def test_pop909_folder_reads_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("model.lab.data.CACHE_DIR", tmp_path / "cache")
    folder = _song_folder(tmp_path / "songs", random.Random(1))
    pieces = load_pieces(folder)
    assert len(pieces) == 12
    piece = pieces[0]
    assert piece.phase == 0 and set(piece.tonics) == {0}
    assert piece.chords[0] is not None and len(piece.chords) == len(piece.events)
    assert [p.chords for p in load_pieces(folder)] == [p.chords for p in pieces]  # from the cache
    out = tmp_path / "harmony.json"
    assert harmonize.main(["train", str(folder), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["songs"] == 11  # 010 held out
    assert harmonize.main(["evaluate", str(folder), "--weights", str(out), "--whole-songs"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["songs"] == 1 and result["model, key given"]["root+triad"] > 0.6


def test_suggesting_chords_never_imports_torch():
    # the bot process calls this; only workers may load torch
    code = ("import sys; from model.harmony.suggest import suggest_chords; "
            "from model.music.chords import parse_lead_sheet; "
            "parse_lead_sheet('C | G'); assert suggest_chords([20, 0, 0, 0, 1]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
