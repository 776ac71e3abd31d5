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
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from model.music.chords import Chord, parse_chord
from model.music.events import STEPS_PER_BAR, events_to_notes

DEFAULT_HARMONY_WEIGHTS = Path(__file__).parents[1] / "weights" / "harmony.json"
VOCAB = ("maj", "min", "7", "maj7", "min7", "dim", "sus4", "sus2")  # the qualities suggested
# per major tonic: spell the key's chords with flats (F Bb Eb Ab Db Gb), sharps (G D A E B), or as C does
KEY_FLATS = [None, True, False, True, False, True, True, False, True, False, True, False]
FRAME = STEPS_PER_BAR // 2  # steps per frame: half a bar
ROUNDING = 1e-6  # more than a path score's rounding error (scores are ~1e2..1e3, float64)
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

    @cached_property
    def transitions_into(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """trans_bar, trans_mid and trans_whole transposed, (S to, S from), contiguous (see _viterbi)."""
        return tuple(np.ascontiguousarray(table.T) for table in (self.trans_bar, self.trans_mid, self.trans_whole))

    @cached_property
    def best_entries(self) -> np.ndarray:
        """(3, S) per transition table (bar, mid, whole), the best transition into each state."""
        return np.stack([table.max(1) for table in self.transitions_into])

    @cached_property
    def key_profiles(self) -> np.ndarray:
        """(12 tonics, 12) key_profile rolled to each tonic: log p(melody pitch class | tonic)."""
        return np.stack([np.roll(self.key_profile, tonic) for tonic in range(12)])

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


_METRIC_OF = np.array([metric_class(position) for position in range(STEPS_PER_BAR)])  # (STEPS_PER_BAR,)


def melody_features(events: list[int], frame: int, first: int = 0, bar_position: int = 0) -> np.ndarray:
    """(frames, METRIC, 12) sounding steps per frame by metric class and pitch class. Frame 0
    ends at step `first` when first > 0 (a partial frame before the first frame line), else frames
    start at step 0; `bar_position` is the bar position of step 0."""
    bounds = _frame_bounds(len(events), frame, first)
    starts = [begin for begin, _ in bounds]
    pitch_class = np.full(len(events), -1)  # per step: the sounding note's pitch class, -1 for none
    for note in events_to_notes(list(events)):
        pitch_class[note.start : note.end] = note.pitch % 12
    steps = np.flatnonzero(pitch_class >= 0)
    frame_of = np.searchsorted(starts, steps, side="right") - 1
    metric = _METRIC_OF[(bar_position + steps) % STEPS_PER_BAR]
    cells = (frame_of * METRIC + metric) * 12 + pitch_class[steps]
    counts = np.bincount(cells, minlength=len(bounds) * METRIC * 12)  # whole numbers: exact in any order
    return counts.reshape(len(bounds), METRIC, 12).astype(np.float64)


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
    first = (-bar_position) % frame
    features = melody_features(events, frame, first, bar_position)  # (T, METRIC, 12)
    if not features.any():  # no notes (every note sounds at least a step)
        return [None] * len(events)
    profile = features.sum(1)  # (T, 12)
    bounds = _frame_bounds(len(events), frame, first)
    # a frame boundary on a bar line uses trans_bar, inside a bar trans_mid
    at_bar = [(bar_position + begin) % STEPS_PER_BAR == 0 for begin, _ in bounds[1:]]
    tonics = list(range(12)) if key is None else [_key_tonic(key)]
    heard = profile.sum(0)  # (12,)
    key_scores = [model.key_weight * float(heard @ model.key_profiles[t]) for t in tonics]
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
    rotated = features[:, :, _ROTATIONS].transpose(2, 0, 1, 3).reshape(12, len(features), -1)  # (12 roots, T, M*12)
    scores = np.empty((len(tonics), len(features), 12 * q))
    # kept a degree at a time: one product with the whole (S, M*12) table is summed by BLAS in
    # another order, so the scores would move in their last bits and a near tie could flip a chord
    for degree in range(12):
        by_root = rotated @ model.emission[degree * q : (degree + 1) * q].T  # (12 roots, T, q)
        scores[:, :, degree * q : (degree + 1) * q] = by_root[[(tonic + degree) % 12 for tonic in tonics]]
    return model.emission_weight * scores


_ROTATIONS = (np.arange(12)[:, None] + np.arange(12)) % 12  # [root, pc]: the pitch class pc semitones above root


def _viterbi(model: HarmonyModel, features: np.ndarray, tonics: list[int], at_bar: list[bool], whole: bool,
             key_scores: np.ndarray) -> tuple[int, list[int]]:
    """The likeliest key and state path: Viterbi in every key (tonics), each key's best path scored
    with its key_scores added -> (index into tonics, path; the first key of equals). Most keys
    cannot win, and an upper bound on each key's best path (every frame's best state, each
    entered by its best transition) says which: the key with the highest bound is decoded first,
    then, side by side, only the keys whose bound still reaches its score (on the bot's melodies
    3 keys are decoded in all, on average, instead of 12). A key left out scores below the winner
    by more than any rounding, so the answer is the one decoding all 12 gives, bit for bit
    (tests/test_harmonize.py checks it against the plain decoder)."""
    emit = _emission_scores(model, features, tonics)  # (K, T, S)
    which = np.array([2 if whole else 0 if bar else 1 for bar in at_bar], dtype=int)  # per step: bar, mid or whole
    tables = [model.transitions_into[w] for w in which]  # per step: (S to, S from)
    entry = model.best_entries[which]  # (T-1, S)
    bounds = (model.prior + emit[:, 0]).max(1) + (emit[:, 1:] + entry).max(2).sum(1) + key_scores  # (K,)
    totals = np.full(len(tonics), -np.inf)  # a key not decoded cannot win
    decoded = {}  # key index -> (end state, back pointers)

    def decode(keys: list[int]) -> None:
        score, back = _decode(model.prior, emit[keys], tables)  # (len(keys), S)
        ends = score.argmax(1)
        for row, k in enumerate(keys):
            totals[k] = score[row, ends[row]] + key_scores[k]
            decoded[k] = (int(ends[row]), [arg[row] for arg in back])

    first = int(bounds.argmax())
    decode([first])
    rivals = [k for k in range(len(tonics)) if k != first and bounds[k] >= totals[first] - ROUNDING]
    if rivals:
        decode(rivals)
    best = int(totals.argmax())  # the first of equals
    state, back = decoded[best]
    path = [state]
    for arg in reversed(back):
        state = int(arg[state])
        path.append(state)
    return best, path[::-1]


def _decode(prior: np.ndarray, emit: np.ndarray, tables: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Viterbi's forward pass in K keys side by side: (K, S) the best path's score ending in each
    state, and per step (K, S) each state's best predecessor. The transitions are read transposed
    (to, from), so the best predecessor is an argmax along contiguous rows (along the middle axis
    numpy copies the whole (K, S, S) table first: 5 times slower); the sums and the choice among
    equals (the first) are the same either way, and no key's numbers depend on the others'."""
    keys, _, states = emit.shape
    rows = np.arange(keys * states)
    score = prior + emit[:, 0]  # (K, S)
    back = []
    for t, into in enumerate(tables, 1):
        total = (score[:, None, :] + into).reshape(keys * states, states)  # (K * S to, S from)
        arg = total.argmax(1)  # (K * S to,)
        back.append(arg.reshape(keys, states))
        score = total[rows, arg].reshape(keys, states) + emit[:, t]
    return score, back


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
