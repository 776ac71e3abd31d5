"""A tiny training run on a POP909-style folder the test writes: the loss falls, a run resumes,
and the exported weights load."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from midi_factory import TrackSpec, make_midi, write_song_folder

import model.lab.data
from model.lab.train import TrainConfig, export, learning_rate, train
from model.melody.network import CHORD_ROOT, NO_CHORD, load_checkpoint
from model.melody.sampling import SamplingOptions, continue_melodies, load_model
from model.music.events import note_on

TRAIN_IDS = ["001", "002", "003", "004", "005", "006", "007", "008", "009"]
HELD_OUT_IDS = ["010", "020", "030"]  # ids divisible by 10 are held out
CONFIG = TrainConfig(steps=60, batch_size=8, primer_steps=(16, 32), target_steps=64, max_shift=2, lr=1e-2,
                     warmup=5, eval_every=20, seed=0)
UNIFORM_NLL = math.log(63)


def song(song_id: str) -> bytes:
    """Sixteen bars: a two-bar phrase (its key depends on the song) eight times, over chords."""
    base = 55 + int(song_id) % 7
    phrase, t = [], 0
    for step, length in zip((0, 2, 4, 5, 7, 5, 4, 2), (4, 2, 2, 4, 4, 4, 4, 8)):
        phrase.append((t, t + length, base + step))
        t += length
    melody = [(s + 32 * r, e + 32 * r, p) for r in range(8) for s, e, p in phrase]
    chords = [(16 * b, 16 * b + 16, base - 12 + k) for b in range(16) for k in (0, 4, 7)]
    return make_midi([TrackSpec("MELODY", melody), TrackSpec("PIANO", chords)], bpm=100)


@pytest.fixture
def songs_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(model.lab.data, "CACHE_DIR", tmp_path / "cache")  # never ~/.cache
    songs = {i: song(i) for i in TRAIN_IDS + HELD_OUT_IDS}
    songs["011"] = make_midi([TrackSpec("PIANO", [(0, 16, 60)])])  # no MELODY track: skipped
    return write_song_folder(tmp_path / "pop909", songs)


def test_training_lowers_the_loss_resumes_and_exports(songs_folder, tmp_path, capsys, tiny_config):
    out = tmp_path / "run"
    last = train(songs_folder, out, CONFIG, tiny_config, device="cpu", threads=1)
    printed = capsys.readouterr().out
    assert "9 training songs, 3 held out" in printed
    assert list((tmp_path / "cache").glob("songs-*.npz"))  # the parsed songs were cached there

    history = torch.load(out / "last.pt", weights_only=False)["history"]
    assert [h["step"] for h in history] == [20, 40, 60]
    assert last == history[-1]
    assert history[-1]["nll"] < history[0]["nll"]
    assert history[-1]["nll"] < UNIFORM_NLL - 1.0
    assert history[-1]["steps"] == 3 * (257 - 33)  # 256 steps and the last NOTE_OFF; scored from step 33

    train(songs_folder, out, replace(CONFIG, steps=80), tiny_config, device="cpu", threads=1)
    assert "resumed at step 60" in capsys.readouterr().out
    resumed = torch.load(out / "last.pt", weights_only=False)
    assert resumed["step"] == 80
    assert [h["step"] for h in resumed["history"]] == [20, 40, 60, 80]
    assert resumed["history"][:3] == history

    weights = tmp_path / "weights" / "melody.pt"
    export(out / "best.pt", weights)
    stored = torch.load(weights, weights_only=True)
    assert stored["model_args"] == vars(tiny_config)
    assert {v.dtype for v in stored["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    assert weights.stat().st_size < (out / "best.pt").stat().st_size
    best, _ = load_checkpoint(out / "best.pt")
    exported = load_model(str(weights))
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(value, best.state_dict()[name], atol=1e-2, rtol=1e-2)
    [[continuation]] = continue_melodies(exported, [[note_on(60), 0, 0, 0]], [SamplingOptions(bars=1, variations=1)])
    assert len(continuation) == 16


def test_a_time_budget_stops_the_run_scores_it_and_decays_the_rate(songs_folder, tmp_path, capsys, tiny_config):
    """A lent GPU's run: steps unknown beforehand, so `minutes` bounds it and drives the schedule."""
    budget = replace(CONFIG, steps=1_000_000, eval_every=1_000_000, minutes=0.05)  # 3 seconds
    last = train(songs_folder, tmp_path / "run", budget, tiny_config, device="cpu", threads=1)
    assert "time budget of 0.05 minutes used at step" in capsys.readouterr().out
    stored = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert 10 < stored["step"] < 1_000_000
    history = stored["history"]
    assert history[-1] == last and history[-1]["step"] == stored["step"]  # scored where it stopped
    assert 2 <= len(history) <= 11  # and at each tenth of the budget reached, not at every step
    assert (tmp_path / "run" / "best.pt").exists()
    assert learning_rate(10_000, budget, time_used=0.5) == pytest.approx(CONFIG.lr * (0.05 + 0.95 * 0.5))
    assert learning_rate(10_000, budget, time_used=1.0) == pytest.approx(CONFIG.lr * 0.05)


# -- chords ----------------------------------------------------------------------------------------
SECONDS_PER_STEP = 60 / 100 / 4  # the test songs play at 100 bpm


def chord_song() -> tuple[bytes, str]:
    """A melody that starts in bar 2 (after a bar of accompaniment only), arpeggiating its chords:
    C, then Am for two bars, G: (MIDI, chord_midi.txt)."""
    plan = [(0, 4, 7), (9, 0, 4), (9, 0, 4), (7, 11, 2)] * 3  # chord tones per bar, the root first
    melody = [(16 * (b + 1) + 4 * k, 16 * (b + 1) + 4 * k + 4, 60 + tones[k % 3])
              for b, tones in enumerate(plan) for k in range(4)]
    names = {0: "C:maj", 9: "A:min", 7: "G:maj"}
    lines = [f"0.0\t{16 * SECONDS_PER_STEP:.6f}\tN"]
    lines += [f"{16 * (b + 1) * SECONDS_PER_STEP:.6f}\t{16 * (b + 2) * SECONDS_PER_STEP:.6f}\t{names[t[0]]}"
              for b, t in enumerate(plan)]
    midi = make_midi([TrackSpec("MELODY", melody), TrackSpec("PIANO", [(0, 16, 48)])], bpm=100)
    return midi, "\n".join(lines) + "\n"


def test_songs_carry_their_chords_on_the_melody_grid(tmp_path, monkeypatch):
    monkeypatch.setattr(model.lab.data, "CACHE_DIR", tmp_path / "cache")
    folder = write_song_folder(tmp_path / "pop909", {"001": chord_song()[0], "002": chord_song()[0]})
    (folder / "001" / "chord_midi.txt").write_text(chord_song()[1])  # 002 has no chords
    for use_cache in (True, True, False):  # written, read back, parsed again
        songs = {s.song_id: s for s in model.lab.data.load_songs(folder, use_cache=use_cache)[0]}
        assert songs["002"].chords is None
        codes = songs["001"].chords
        assert len(codes) == len(songs["001"].events) == 16 * 12 + 1  # from the melody's first bar line
        roots = [int(c) // CHORD_ROOT for c in codes[: 16 * 12 : 16]]
        assert roots == [0, 9, 9, 7] * 3
        assert codes[-1] == NO_CHORD  # the last NOTE_OFF is past the last chord


def test_a_chord_model_trains_and_scores_with_and_without_chords(tmp_path, monkeypatch, tiny_config):
    monkeypatch.setattr(model.lab.data, "CACHE_DIR", tmp_path / "cache")
    ids = ["001", "002", "003", "004", "005", "010"]
    folder = write_song_folder(tmp_path / "pop909", {i: chord_song()[0] for i in ids})
    for i in ids:
        (folder / i / "chord_midi.txt").write_text(chord_song()[1])
    config = replace(CONFIG, steps=20, eval_every=20, chord_dropout=0.5)
    result = train(folder, tmp_path / "run", config, replace(tiny_config, chords=True), device="cpu", threads=1)
    assert {"nll", "nll_chords", "note_accuracy", "note_accuracy_chords"} <= set(result)
    assert result["nll_chords"] != result["nll"]
    stored, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    assert stored.config.chords
