"""Continue melodies with a trained network: options, the primer's key, batched sampling.

The CLI (`model.generate`) and the bot's worker both call `continue_melodies`; it samples every
variation of every request in one batched pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from model.defaults import (
    DEFAULT_WEIGHTS,
    MAX_BARS,
    MAX_REST_LIMIT,
    MAX_SEED,
    MAX_VARIATIONS,
    TEMPERATURE_RANGE,
    TOP_P_RANGE,
)
from model.events import NOTE_OFF, NUM_CLASSES, PAD, STEPS_PER_BAR, event_pitch, events_to_notes, is_note_on
from model.network import MelodyNet, load_checkpoint

MAX_PRIMER_STEPS = 64 * STEPS_PER_BAR  # longer primers keep only their last 64 bars

# Krumhansl-Kessler key profiles (major, minor), index 0 = tonic.
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
KEY_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


@dataclass(frozen=True)
class SamplingOptions:
    bars: int = 8  # length of each continuation
    variations: int = 4  # continuations of the same primer
    temperature: float = 1.0  # > 1 wilder, < 1 safer
    top_p: float = 0.95  # nucleus: sample among the likeliest events holding this much probability
    seed: int = 0  # same seed, same primer, same options -> same continuations
    keep_key: bool = True  # only notes of the primer's key (and any other pitch class it uses)
    max_rest: int = 16  # steps a note may be held or a rest may last before something happens; 0: no limit

    def check(self) -> None:
        """Raise ValueError naming the first option out of range."""
        if not 1 <= self.bars <= MAX_BARS:
            raise ValueError(f"bars must be between 1 and {MAX_BARS}, not {self.bars}")
        if not 1 <= self.variations <= MAX_VARIATIONS:
            raise ValueError(f"variations must be between 1 and {MAX_VARIATIONS}, not {self.variations}")
        low, high = TEMPERATURE_RANGE
        if not low <= self.temperature <= high:
            raise ValueError(f"temperature must be between {low} and {high}, not {self.temperature}")
        low, high = TOP_P_RANGE
        if not low <= self.top_p <= high:
            raise ValueError(f"top_p must be between {low} and {high}, not {self.top_p}")
        if not 0 <= self.max_rest <= MAX_REST_LIMIT:
            raise ValueError(f"max_rest must be between 0 and {MAX_REST_LIMIT} steps, not {self.max_rest}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, not {self.seed}")


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, 0 = C
    minor: bool

    @property
    def name(self) -> str:
        return f"{KEY_NAMES[self.tonic]} {'minor' if self.minor else 'major'}"

    @property
    def pitch_classes(self) -> set[int]:
        return {(self.tonic + i) % 12 for i in (MINOR_SCALE if self.minor else MAJOR_SCALE)}


def detect_key(events: list[int]) -> Key | None:
    """The key whose profile best correlates with the primer's duration-weighted pitch classes."""
    weights = [0.0] * 12
    for note in events_to_notes(events):
        weights[note.pitch % 12] += note.end - note.start
    if not any(weights):
        return None
    best, best_score = None, float("-inf")
    for minor, profile in ((False, MAJOR_PROFILE), (True, MINOR_PROFILE)):
        for tonic in range(12):
            rotated = [profile[(pc - tonic) % 12] for pc in range(12)]
            score = _correlation(weights, rotated)
            if score > best_score:
                best, best_score = Key(tonic, minor), score
    return best


def _correlation(a: list[float], b: list[float]) -> float:
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    norm = (sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b)) ** 0.5
    return cov / norm if norm else 0.0


def allowed_events(primer: list[int], keep_key: bool) -> torch.Tensor:
    """(NUM_CLASSES,) bool: with keep_key, NOTE_ONs of the primer's key and pitch classes."""
    allowed = torch.ones(NUM_CLASSES, dtype=torch.bool)
    key = detect_key(primer) if keep_key else None
    if key is None:
        return allowed
    classes = key.pitch_classes | {event_pitch(e) % 12 for e in primer if is_note_on(e)}
    for event in range(NUM_CLASSES):
        if is_note_on(event) and event_pitch(event) % 12 not in classes:
            allowed[event] = False
    return allowed


def prepare_primer(events: list[int]) -> list[int]:
    """The primer as the network continues it: at most MAX_PRIMER_STEPS (whole bars cut from
    the front) and without a trailing NOTE_OFF, so the network decides how the last note ends."""
    events = list(events)
    if len(events) > MAX_PRIMER_STEPS:
        cut = (len(events) - MAX_PRIMER_STEPS + STEPS_PER_BAR - 1) // STEPS_PER_BAR * STEPS_PER_BAR
        events = events[cut:]
    if len(events) > 1 and events[-1] == NOTE_OFF:
        events = events[:-1]
    if not any(is_note_on(e) for e in events):
        raise ValueError("the primer has no notes")
    return events


def variation_seed(seed: int, variation: int) -> int:
    return seed * MAX_VARIATIONS + variation


@lru_cache(maxsize=2)
def load_model(path: str | Path = DEFAULT_WEIGHTS, device: str = "cpu") -> MelodyNet:
    """The network from a checkpoint, loaded once per process, in float32 for sampling."""
    model, _ = load_checkpoint(path, device)
    return model.float()


def continue_melodies(
    model: MelodyNet, primers: list[list[int]], options: list[SamplingOptions]
) -> list[list[list[int]]]:
    """For each (primer, options), `options.variations` continuations of `options.bars` bars.

    Every variation of every request with the same primer length is one row of a single batched
    pass. (Rows of different lengths would need padding, and padding would change the result
    of a seed.) Returns, per request, its continuations (the events after the primer)."""
    primers = [prepare_primer(p) for p in primers]
    for opt in options:
        opt.check()
    answers: list[list[list[int]]] = [[] for _ in options]
    by_length: dict[int, list[int]] = {}
    for i, primer in enumerate(primers):
        by_length.setdefault(len(primer), []).append(i)
    for requests in by_length.values():
        sampled = _sample([primers[i] for i in requests], [options[i] for i in requests], model)
        for i, continuations in zip(requests, sampled):
            answers[i] = continuations
    return answers


def _sample(primers: list[list[int]], options: list[SamplingOptions], model: MelodyNet) -> list[list[list[int]]]:
    """One batched pass over primers of equal length."""
    device = next(model.parameters()).device
    rows = [(i, v) for i, opt in enumerate(options) for v in range(opt.variations)]
    if len(primers[0]) < 2:  # the network needs two primer steps; a rest before is harmless
        primers = [[PAD] + p for p in primers]
    primer = torch.tensor([primers[i] for i, _ in rows], dtype=torch.long, device=device)
    offset = torch.full((len(rows),), int(primers[0][0] == PAD), dtype=torch.long, device=device)
    steps = max(opt.bars for opt in options) * STEPS_PER_BAR
    keys = [allowed_events(p, opt.keep_key) for p, opt in zip(primers, options)]
    result = model.generate(
        primer,
        steps,
        temperature=torch.tensor([options[i].temperature for i, _ in rows], device=device),
        top_p=torch.tensor([options[i].top_p for i, _ in rows], device=device),
        allowed_events=torch.stack([keys[i] for i, _ in rows]).to(device),
        seeds=[variation_seed(options[i].seed, v) for i, v in rows],
        offset=offset,
        max_run=torch.tensor([options[i].max_rest for i, _ in rows], device=device),
    ).cpu()
    answers: list[list[list[int]]] = [[] for _ in options]
    for row, (i, _) in enumerate(rows):
        answers[i].append(result[row, : options[i].bars * STEPS_PER_BAR].tolist())
    return answers
