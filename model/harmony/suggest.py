"""Chords for a melody ("chords out"): a hidden Markov model learned from POP909's melody-chord pairs.

The melody is cut into frames of half a bar. A frame's hidden state is a chord (root, quality from
VOCAB), written relative to the song's key tonic (the relative major's, so a minor key shares its
major's degrees). Each state emits the frame's melody: every sounding sixteenth draws (its metric
position, its interval above the chord's root) from the state's multinomial, backed off to its
quality's (naive Bayes; transposition-invariant, as everything is relative). Transitions between
key-relative states are learned separately at bar lines and inside bars, so chords change mostly
at bar lines but may change mid-bar; a bar-frame matrix serves one chord per bar. Decoding is
Viterbi, maximised jointly over the 12 tonics (the key's fit to the melody counts), so no key is
needed. Everything is counting with smoothing; the parameters ship as a small JSON file
(model/weights/harmony.json), loaded lazily once. Pure numpy: the bot process may call it.
Its training and evaluation live in the lab: model/lab/harmony.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from model.music.chords import Chord, parse_chord
from model.music.events import STEPS_PER_BAR, events_to_notes

DEFAULT_HARMONY_WEIGHTS = Path(__file__).parents[1] / "weights" / "harmony.json"
VOCAB = ("maj", "min", "7", "maj7", "min7", "dim", "sus4", "sus2")  # the qualities suggested
# per major tonic: spell the key's chords with flats (F Bb Eb Ab Db Gb), sharps (G D A E B), or as C does
KEY_FLATS = [None, True, False, True, False, True, True, False, True, False, True, False]
FRAME = STEPS_PER_BAR // 2  # steps per frame: half a bar
METRIC = 4  # metric classes of a sounding step: beats 1 and 3, beats 2 and 4, off-beat eighths, sixteenths


@dataclass
class HarmonyModel:
    """Log-probabilities. States are key-relative: index = degree * len(VOCAB) + quality index."""

    emission: np.ndarray  # (S, METRIC * 12) log p(metric class, melody pitch class - root | state), per sounding step
    key_profile: np.ndarray  # (12,) log p(melody pitch class - tonic), per sounding step
    prior: np.ndarray  # (S,) log p(state)
    trans_bar: np.ndarray  # (S, S) log p(next | this) across a bar line, half-bar frames
    trans_mid: np.ndarray  # (S, S) the same inside a bar
    trans_whole: np.ndarray  # (S, S) from one bar's chord to the next, bar frames
    emission_weight: float = 1.0  # how much one sounding step counts against the transitions
    key_weight: float = 1.0

    def to_json(self) -> dict:
        def rounded(a):
            return np.round(a, 3).tolist()
        return {"vocab": list(VOCAB), "frame": FRAME, "metric": METRIC, "emission_weight": self.emission_weight,
                "key_weight": self.key_weight, "emission": rounded(self.emission),
                "key_profile": rounded(self.key_profile), "prior": rounded(self.prior),
                "trans_bar": rounded(self.trans_bar), "trans_mid": rounded(self.trans_mid),
                "trans_whole": rounded(self.trans_whole)}

    @classmethod
    def from_json(cls, data: dict) -> HarmonyModel:
        if tuple(data["vocab"]) != VOCAB or data["frame"] != FRAME or data.get("metric") != METRIC:
            raise ValueError("these harmony weights were made for another chord vocabulary or frame")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in
                  ("emission", "key_profile", "prior", "trans_bar", "trans_mid", "trans_whole")}
        return cls(**arrays, emission_weight=float(data["emission_weight"]), key_weight=float(data["key_weight"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")))


@lru_cache(maxsize=4)
def load_model(path: str | Path = DEFAULT_HARMONY_WEIGHTS) -> HarmonyModel:
    return HarmonyModel.from_json(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------------------------------------
# Decoding


def metric_class(bar_position: int) -> int:
    """0: beats 1 and 3, 1: beats 2 and 4, 2: off-beat eighths, 3: the other sixteenths."""
    return 0 if bar_position % 8 == 0 else 1 if bar_position % 4 == 0 else 2 if bar_position % 2 == 0 else 3


def melody_features(events: list[int], frame: int, first: int = 0, bar_position: int = 0) -> np.ndarray:
    """(frames, METRIC, 12) sounding steps per frame by metric class and pitch class. Frame 0
    ends at step `first` when first > 0 (a partial frame before the first frame line), else frames
    start at step 0; `bar_position` is the bar position of step 0."""
    bounds = _frame_bounds(len(events), frame, first)
    starts = [begin for begin, _ in bounds]
    features = np.zeros((len(bounds), METRIC, 12))
    frame_of = np.searchsorted(starts, np.arange(len(events)), side="right") - 1
    for note in events_to_notes(list(events)):
        for step in range(note.start, min(note.end, len(events))):
            features[frame_of[step], metric_class((bar_position + step) % STEPS_PER_BAR), note.pitch % 12] += 1
    return features


def melody_profiles(events: list[int], frame: int, first: int = 0) -> np.ndarray:
    """(frames, 12) sounding steps of each pitch class per frame (see melody_features)."""
    return melody_features(events, frame, first).sum(1)


def _frame_bounds(steps: int, frame: int, first: int) -> list[tuple[int, int]]:
    edges = [0] + list(range(first if first > 0 else frame, steps, frame)) + [steps]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def suggest_chords(events: list[int], steps_per_chord: int | None = None, key=None, bar_position: int = 0,
                   model: HarmonyModel | None = None) -> list[Chord | None]:
    """One suggested Chord per step of `events` (a melody on the sixteenth grid). steps_per_chord:
    None lets a chord last half a bar or longer, changing mostly at bar lines; 16 gives one chord a
    bar. key: None (found with the chords), a tonic pitch class of the major key, a chord-like
    name ("Am", "Eb") or anything with .tonic and .minor (model.melody.sampling.Key). bar_position: the
    step within its bar where the melody starts (0: on a bar line). A melody without notes gets
    no chords (all None)."""
    model = model or load_model()
    if steps_per_chord not in (None, FRAME, STEPS_PER_BAR):
        raise ValueError(f"steps_per_chord must be {FRAME} or {STEPS_PER_BAR} (or None), not {steps_per_chord}")
    frame = steps_per_chord or FRAME
    if not events_to_notes(list(events)):
        return [None] * len(events)
    first = (-bar_position) % frame
    features = melody_features(events, frame, first, bar_position)  # (T, METRIC, 12)
    profile = features.sum(1)  # (T, 12)
    bounds = _frame_bounds(len(events), frame, first)
    # a frame boundary on a bar line uses trans_bar, inside a bar trans_mid
    at_bar = [(bar_position + begin) % STEPS_PER_BAR == 0 for begin, _ in bounds[1:]]
    tonics = list(range(12)) if key is None else [_key_tonic(key)]
    key_scores = [model.key_weight * float(profile.sum(0) @ np.roll(model.key_profile, t)) for t in tonics]
    best, path = _viterbi(model, features, tonics, at_bar, frame == STEPS_PER_BAR, np.array(key_scores))
    tonic = tonics[best]
    chords = []
    q = len(VOCAB)
    flats = KEY_FLATS[tonic]
    for state, (begin, end) in zip(path, bounds):
        chord = Chord((tonic + state // q) % 12, VOCAB[state % q], flats=flats)
        chords += [chord] * (end - begin)
    return chords


def _emission_scores(model: HarmonyModel, features: np.ndarray, tonics: list[int]) -> np.ndarray:
    """(K, T, S) weighted log-likelihood of each frame's melody under each key-relative state, per
    key (tonic)."""
    q = len(VOCAB)
    rotated = np.stack([np.roll(features, -root, axis=2).reshape(len(features), -1) for root in range(12)])
    scores = np.empty((len(tonics), len(features), 12 * q))
    for degree in range(12):
        by_root = rotated @ model.emission[degree * q : (degree + 1) * q].T  # (12 roots, T, q)
        scores[:, :, degree * q : (degree + 1) * q] = by_root[[(tonic + degree) % 12 for tonic in tonics]]
    return model.emission_weight * scores


def _viterbi(model: HarmonyModel, features: np.ndarray, tonics: list[int], at_bar: list[bool], whole: bool,
             key_scores: np.ndarray) -> tuple[int, list[int]]:
    """The likeliest key and state path: Viterbi in every key (tonics) side by side, each key's
    best path scored with its key_scores added -> (index into tonics, path)."""
    emit = _emission_scores(model, features, tonics)  # (K, T, S)
    score = model.prior + emit[:, 0]  # (K, S)
    back = []
    for t in range(1, emit.shape[1]):
        trans = model.trans_whole if whole else (model.trans_bar if at_bar[t - 1] else model.trans_mid)
        total = score[:, :, None] + trans  # (K, S from, S to)
        arg = total.argmax(1)  # (K, S to)
        back.append(arg)
        score = np.take_along_axis(total, arg[:, None, :], 1)[:, 0] + emit[:, t]
    ends = score.argmax(1)
    best = int((score[np.arange(len(tonics)), ends] + key_scores).argmax())  # the first of equals
    state = int(ends[best])
    path = [state]
    for arg in reversed(back):
        state = int(arg[best, state])
        path.append(state)
    return best, path[::-1]


def _key_tonic(key) -> int:
    """The major tonic pitch class of a key: an int, "C"/"Am"/"F# major"/"A minor", or .tonic/.minor."""
    if isinstance(key, int):
        return key % 12
    if hasattr(key, "tonic"):
        return (key.tonic + (3 if getattr(key, "minor", False) else 0)) % 12
    text = str(key).strip().replace(" major", "").replace(" minor", "m").replace(":maj", "").replace(":min", "m")
    chord = parse_chord(text)
    if chord is None:
        raise ValueError(f'"{key}" is not a key')
    return (chord.root + (3 if chord.quality == "min" else 0)) % 12
