"""The chord HMM's training and evaluation (its run-time half: model.harmony.suggest).

Reads POP909 songs into Pieces (melody events, chords and keys on one grid), counts the HMM's
transitions and emissions on the training split, and scores suggestions against the annotated
chords of held-out songs.

    python -m model.lab.harmony train FOLDER --out model/weights/harmony.json   # train split only
    python -m model.lab.harmony evaluate FOLDER [--weights PATH]                # held-out songs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model.harmony.suggest import (
    DEFAULT_HARMONY_WEIGHTS,
    FRAME,
    METRIC,
    VOCAB,
    HarmonyModel,
    _frame_bounds,
    _key_tonic,
    load_model,
    melody_profiles,
    metric_class,
    suggest_chords,
)
from model.lab.pop909 import song_chords, song_clock, song_downbeat_phase
from model.music.chords import Chord
from model.music.events import STEPS_PER_BAR, events_to_notes

# every canonical quality -> the VOCAB quality that stands for it
REDUCE = {"maj": "maj", "min": "min", "7": "7", "maj7": "maj7", "min7": "min7", "dim": "dim", "dim7": "dim",
          "hdim7": "dim", "aug": "maj", "sus2": "sus2", "sus4": "sus4", "7sus4": "sus4", "6": "maj", "min6": "min",
          "minmaj7": "min", "9": "7", "add9": "maj", "maj9": "maj7", "min9": "min7", "69": "maj", "5": "maj"}
# the coarse comparison of the evaluation: major-like, minor-like, anything else
TRIAD = {"maj": "maj", "7": "maj", "maj7": "maj", "6": "maj", "9": "maj", "add9": "maj", "maj9": "maj",
         "69": "maj", "min": "min", "min7": "min", "min6": "min", "minmaj7": "min", "min9": "min"}
SMOOTHING = 4.0  # pseudo-counts that pull each transition row toward the key-relative prior
BACKOFF = 50.0  # pseudo-counts that pull a state's emission toward its quality's (all roots together)
PIECES_VERSION = 1  # of the cached song extraction; bump when load_pieces reads songs differently
HELD_OUT_EVERY = 10  # as model.lab.data: song ids divisible by 10 are held out
VALIDATION_ID = 5  # training ids with this last digit tune the emission weight before the final fit


# ---------------------------------------------------------------------------------------------
# Training data: POP909 songs as melody events, chords and keys on one grid


@dataclass
class Piece:
    """A melody with its chords and keys on the same steps (events start at a bar line of the grid)."""

    song_id: str
    events: list[int]
    chords: list[Chord | None]  # per step
    tonics: list[int]  # per step: the major tonic pitch class of the annotated key, -1 unknown
    phase: int = 0  # the first step of events that is a (musical) downbeat, 0..15


def load_pieces(folder: str | Path, use_cache: bool = True) -> list[Piece]:
    """Every song of a POP909-style folder that has a MELODY track and chord_midi.txt. The melody
    comes from model.lab.data.melody_events (its grid starts at the bar line before the first note),
    chords from song_chords cropped to the same steps, keys from key_audio.txt, the downbeat
    phase from beat_midi.txt (POP909's beats need not fall on the file's tick-0 bar lines)."""
    from model.lab.data import CACHE_DIR, melody_events  # noqa: PLC0415 - model.lab.data imports torch

    folder = Path(folder)
    songs = sorted(p for p in folder.iterdir() if (p / f"{p.name}.mid").is_file() and (p / "chord_midi.txt").is_file())
    stamp = "".join(f"{p.name}:{(p / 'chord_midi.txt').stat().st_mtime_ns}:{(p / f'{p.name}.mid').stat().st_size}"
                    for p in songs)
    cache = CACHE_DIR / f"harmony-{hashlib.sha1(f'v{PIECES_VERSION}{stamp}'.encode()).hexdigest()[:16]}.json"
    if use_cache and cache.exists():
        return [_piece_from_json(d) for d in json.loads(cache.read_text())]
    pieces = []
    for song in songs:
        try:
            melody = melody_events(song / f"{song.name}.mid")
        except ValueError:
            continue
        if melody is None or len(melody[0]) == 0:
            continue
        events, offset = [int(e) for e in melody[0]], melody[1]
        chords = song_chords(song)[offset : offset + len(events)]
        chords += [None] * (len(events) - len(chords))
        tonics, phase = _keys_and_phase(song, offset, len(events))
        pieces.append(Piece(song.name, events, chords, tonics, phase))
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps([_piece_to_json(p) for p in pieces]))
    return pieces


def _keys_and_phase(song: Path, offset: int, length: int) -> tuple[list[int], int]:
    """Per step from `offset`: the major tonic of key_audio.txt's key (-1 unknown); and the
    downbeat phase (song_downbeat_phase; offset is a bar line of the grid, so it is unchanged)."""
    to_step = song_clock(song, None)
    tonics = [-1] * length
    key_file = song / "key_audio.txt"
    if key_file.is_file():
        for line in key_file.read_text().splitlines():
            fields = line.split()
            key = _parse_key_label(fields[2]) if len(fields) >= 3 else None
            if key is not None:
                begin, end = to_step(float(fields[0])) - offset, to_step(float(fields[1])) - offset
                for step in range(max(begin, 0), min(end, length)):
                    tonics[step] = key
        first = next((t for t in tonics if t >= 0), -1)  # the first key reaches back to the first note
        tonics = [first if t < 0 else t for t in tonics]
    return tonics, song_downbeat_phase(song) or 0


def _parse_key_label(label: str) -> int | None:
    """key_audio.txt's "Eb:maj" / "C:min" -> the major tonic pitch class."""
    try:
        return _key_tonic(label)
    except ValueError:
        return None


def _chord_code(chord: Chord | None) -> list | None:
    return None if chord is None else [chord.root, chord.quality, chord.bass]


def _piece_to_json(piece: Piece) -> dict:
    # chords as run lengths: [[start, root, quality, bass] or [start]] keeps the cache small
    runs, last = [], object()
    for i, chord in enumerate(piece.chords):
        if chord != last:
            runs.append([i] + (_chord_code(chord) or []))
            last = chord
    return {"id": piece.song_id, "events": piece.events, "chords": runs, "tonics": piece.tonics,
            "phase": piece.phase}


def _piece_from_json(data: dict) -> Piece:
    chords: list[Chord | None] = []
    runs = data["chords"] + [[len(data["events"])]]
    for run, following in zip(runs, runs[1:]):
        chord = Chord(run[1], run[2], run[3]) if len(run) > 1 else None
        chords += [chord] * (following[0] - run[0])
    return Piece(data["id"], data["events"], chords, data["tonics"], data["phase"])


def is_held_out(song_id: str) -> bool:
    digits = "".join(c for c in song_id if c.isdigit())
    return bool(digits) and int(digits) % HELD_OUT_EVERY == 0


# ---------------------------------------------------------------------------------------------
# Training: counting


def _frame_labels(piece: Piece, frame: int) -> list[tuple[int, int, int | None]]:
    """(begin, end, key-relative state or None) per frame from the piece's downbeat phase: a frame's
    chord is the one covering most of it; None where no chord or no key is known."""
    labels = []
    q = len(VOCAB)
    first = piece.phase % frame
    for begin, end in _frame_bounds(len(piece.events), frame, first):
        counts: dict = {}
        for chord, tonic in zip(piece.chords[begin:end], piece.tonics[begin:end]):
            if chord is not None and tonic >= 0:
                state = (chord.root - tonic) % 12 * q + VOCAB.index(REDUCE[chord.quality])
                counts[state] = counts.get(state, 0) + 1
        state = max(counts, key=counts.get) if counts and 2 * max(counts.values()) >= end - begin else None
        labels.append((begin, end, state))
    return labels


def train(pieces: list[Piece], emission_weight: float = 1.0, key_weight: float = 1.0) -> HarmonyModel:
    q = len(VOCAB)
    s = 12 * q
    by_quality = np.ones((q, METRIC, 12))  # add-one
    by_state = np.zeros((s, METRIC, 12))
    key_profile = np.ones(12)
    prior = np.ones(s)
    counts = {name: np.zeros((s, s)) for name in ("bar", "mid", "whole")}
    for piece in pieces:
        for note in events_to_notes(piece.events):
            for step in range(note.start, min(note.end, len(piece.chords))):
                chord, tonic = piece.chords[step], piece.tonics[step]
                metric = metric_class((step - piece.phase) % STEPS_PER_BAR)
                if chord is not None:
                    quality, interval = VOCAB.index(REDUCE[chord.quality]), (note.pitch - chord.root) % 12
                    by_quality[quality, metric, interval] += 1
                    if tonic >= 0:
                        by_state[(chord.root - tonic) % 12 * q + quality, metric, interval] += 1
                if tonic >= 0:
                    key_profile[(note.pitch - tonic) % 12] += 1
        for frame in (FRAME, STEPS_PER_BAR):
            labels = _frame_labels(piece, frame)
            for (_, _, a), (begin, _, b) in zip(labels, labels[1:]):
                if frame == FRAME and b is not None:
                    prior[b] += 1
                if a is None or b is None:
                    continue
                name = "whole" if frame == STEPS_PER_BAR else (
                    "bar" if (begin - piece.phase) % STEPS_PER_BAR == 0 else "mid")
                counts[name][a, b] += 1
    prior /= prior.sum()
    by_quality = (by_quality / by_quality.sum((1, 2), keepdims=True)).reshape(q, -1)
    emission = by_state.reshape(s, -1) + BACKOFF * np.tile(by_quality, (12, 1))

    def rows(c):
        return np.log((c + SMOOTHING * prior) / (c.sum(1, keepdims=True) + SMOOTHING))
    return HarmonyModel(
        emission=np.log(emission / emission.sum(1, keepdims=True)),  # (S, METRIC * 12)
        key_profile=np.log(key_profile / key_profile.sum()),
        prior=np.log(prior), trans_bar=rows(counts["bar"]), trans_mid=rows(counts["mid"]),
        trans_whole=rows(counts["whole"]), emission_weight=emission_weight, key_weight=key_weight)


# ---------------------------------------------------------------------------------------------
# Evaluation against the annotations


WINDOW_BARS = 10  # evaluation excerpts: what one request (primer + continuation) spans


def excerpts(piece: Piece, bars: int = WINDOW_BARS) -> list[tuple[int, int]]:
    """Non-overlapping (begin, end) windows of `bars` bars from the piece's downbeats; a piece
    shorter than one window is one excerpt."""
    length = bars * STEPS_PER_BAR
    windows = [(b, b + length) for b in range(piece.phase, len(piece.events) - length + 1, length)]
    return windows or [(piece.phase, len(piece.events))]


def baseline_chords(events: list[int], tonic: int, bar_position: int = 0) -> list[Chord | None]:
    """The simple baseline: per bar, the key's diatonic triad holding most of the bar's melody
    (ties: I, V, IV, vi, ii, iii, vii°); a bar without notes keeps the chord before it."""
    triads = [(0, "maj"), (7, "maj"), (5, "maj"), (9, "min"), (2, "min"), (4, "min"), (11, "dim")]
    profile = melody_profiles(events, STEPS_PER_BAR, (-bar_position) % STEPS_PER_BAR)
    bounds = _frame_bounds(len(events), STEPS_PER_BAR, (-bar_position) % STEPS_PER_BAR)
    chords: list[Chord | None] = []
    chord = Chord(tonic, "maj")
    for weights, (begin, end) in zip(profile, bounds):
        if weights.sum() > 0:
            options = [Chord((tonic + d) % 12, quality) for d, quality in triads]
            chord = max(options, key=lambda c: sum(weights[pc] for pc in c.pitch_classes))
        chords += [chord] * (end - begin)
    return chords


def accuracy(pairs: list[tuple[Chord | None, Chord | None]]) -> dict:
    """Per-step shares over steps with an annotated chord: root, root + maj/min/other, root +
    VOCAB quality, root + exact canonical quality (basses ignored)."""
    counted = [(guess, truth) for guess, truth in pairs if truth is not None]
    n = len(counted) or 1

    def share(same) -> float:
        return round(sum(guess is not None and same(guess, truth) for guess, truth in counted) / n, 4)
    return {
        "steps": len(counted),
        "root": share(lambda g, t: g.root == t.root),
        "root+triad": share(lambda g, t: g.root == t.root and TRIAD.get(g.quality, "other") ==
                            TRIAD.get(t.quality, "other")),
        "root+vocab": share(lambda g, t: g.root == t.root and REDUCE[g.quality] == REDUCE[t.quality]),
        "exact": share(lambda g, t: g.root == t.root and g.quality == t.quality),
    }


def evaluate(pieces: list[Piece], model: HarmonyModel, whole_songs: bool = False) -> dict:
    """Accuracies of the model (key found by itself, or told the annotated key) and of the
    baseline (in the key model.melody.sampling.detect_key finds, or told the annotated key), over
    WINDOW_BARS-bar excerpts (or whole songs)."""
    from model.melody.sampling import detect_key  # noqa: PLC0415 - imports torch; the evaluation only

    pairs: dict[str, list] = {"model": [], "model, key given": [], "model, a chord a bar": [],
                              "baseline, key detected": [], "baseline, key given": []}
    seconds, windows = 0.0, 0
    for piece in pieces:
        spans = [(piece.phase, len(piece.events))] if whole_songs else excerpts(piece)
        for begin, end in spans:
            events, truth = piece.events[begin:end], piece.chords[begin:end]
            tonic = next((t for t in piece.tonics[begin:end] if t >= 0), None)
            if tonic is None or not any(truth):
                continue
            started = time.perf_counter()
            found = suggest_chords(events, model=model)
            seconds += time.perf_counter() - started
            windows += 1
            pairs["model"] += zip(found, truth)
            pairs["model, key given"] += zip(suggest_chords(events, key=tonic, model=model), truth)
            pairs["model, a chord a bar"] += zip(suggest_chords(events, STEPS_PER_BAR, model=model), truth)
            pairs["baseline, key given"] += zip(baseline_chords(events, tonic), truth)
            detected = detect_key(events)
            found_tonic = _key_tonic(detected) if detected is not None else 0  # no notes: any key
            pairs["baseline, key detected"] += zip(baseline_chords(events, found_tonic), truth)
    result = {name: accuracy(p) for name, p in pairs.items()}
    result["excerpts"] = windows
    result["ms_per_excerpt"] = round(1000 * seconds / max(windows, 1), 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.lab.harmony", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="learn the HMM from the training split of FOLDER")
    train_cmd.add_argument("folder")
    train_cmd.add_argument("--out", default=str(DEFAULT_HARMONY_WEIGHTS))
    eval_cmd = commands.add_parser("evaluate", help="chord accuracy on FOLDER's held-out songs")
    eval_cmd.add_argument("folder")
    eval_cmd.add_argument("--weights", default=str(DEFAULT_HARMONY_WEIGHTS))
    eval_cmd.add_argument("--whole-songs", action="store_true", help="decode whole songs, not 10-bar excerpts")
    args = parser.parse_args(argv)
    pieces = load_pieces(args.folder)
    if args.command == "train":
        training = [p for p in pieces if not is_held_out(p.song_id)]
        fit = [p for p in training if int(p.song_id) % 10 != VALIDATION_ID]
        tune = [p for p in training if int(p.song_id) % 10 == VALIDATION_ID]
        best, fitted = None, train(fit)
        for emission_weight in (0.1, 0.2, 0.35, 0.5, 0.75, 1.0):
            for key_weight in (0.0, 0.05, 0.2):
                model = replace(fitted, emission_weight=emission_weight, key_weight=key_weight)
                found = evaluate(tune, model)["model"]
                print(f"emission weight {emission_weight}, key weight {key_weight}: {found}", file=sys.stderr)
                if best is None or found["root+triad"] > best[0]:
                    best = (found["root+triad"], emission_weight, key_weight)
        model = train(training, best[1], best[2])
        model.save(args.out)
        print(json.dumps({"songs": len(training), "emission_weight": best[1], "key_weight": best[2],
                          "bytes": os.path.getsize(args.out)}))
    else:
        held_out = [p for p in pieces if is_held_out(p.song_id)]
        result = evaluate(held_out, load_model(args.weights), whole_songs=args.whole_songs)
        result["songs"] = len(held_out)
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

