"""The key of a melody (Krumhansl-Kessler profiles), without torch: the sampler keeps to it, and
the bot's lead sheets (bot/render/leadsheet.py) write its key signature. model.sampling
re-exports these names."""

from __future__ import annotations

from dataclasses import dataclass

from model.events import events_to_notes

# Krumhansl-Kessler key profiles (major, minor), index 0 = tonic.
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
KEY_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


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
