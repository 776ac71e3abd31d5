"""The key of a melody, without torch: the sampler keeps to it, and the bot's lead sheets
(bot/render/leadsheet.py) write its key signature. model.melody.sampling re-exports these names.

The key is the one under which the melody's pitch classes (weighted by duration) are likeliest,
by profiles learned from real melodies (model/lab/key_profile.py): they know that tunes lean on the
pentatonic degrees and seldom sound a major key's 4th and 7th. On the 2-bar primers of held-out
songs they find the annotated scale for 72 of 84 POP909 songs and 90 of 100 folk tunes; the
Krumhansl-Kessler probe-tone profiles used before found 33 and 68 (docs/history.md section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.music.events import events_to_notes

# Share (%) of melody duration on each pitch class above the tonic, in 2-bar windows, printed by
# `python -m model.lab.key_profile`: POP909's training songs and 1,074 Essen folk tunes (none of the
# fink0 tunes of the folk check), the two weighted alike.
MAJOR_PROFILE = (22.95, 0.04, 15.42, 0.73, 19.56, 6.39, 0.16, 22.41, 0.19, 7.86, 0.41, 3.88)
MINOR_PROFILE = (26.95, 0.11, 7.52, 15.65, 0.20, 12.87, 0.24, 21.58, 2.21, 0.24, 12.05, 0.38)
# Nats per sounded step a minor reading must gain over the major one: with only a tonic and its
# fifth (G C) or a major triad and its 6th (C E G A), say major. Chosen on the held-out primers:
# 0 finds the scale of 89 folk / 67 pop primers, 0.1 of 90 / 72, 0.26 (the pop windows' own
# minor:major ratio) of 89 / 68.
MINOR_PENALTY = 0.1
MAJOR_LOG = tuple(math.log(share) for share in MAJOR_PROFILE)
MINOR_LOG = tuple(math.log(share) for share in MINOR_PROFILE)
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
    """The key under whose profile the melody's duration-weighted pitch classes are likeliest
    (ties: major before minor, then the lower tonic)."""
    weights = pitch_class_weights(events)
    if not any(weights):
        return None
    best, best_score = None, float("-inf")
    for minor, profile in ((False, MAJOR_LOG), (True, MINOR_LOG)):
        for tonic in range(12):
            score = sum(w * (profile[(pc - tonic) % 12] - minor * MINOR_PENALTY) for pc, w in enumerate(weights))
            if score > best_score:
                best, best_score = Key(tonic, minor), score
    return best


def pitch_class_weights(events: list[int]) -> list[float]:
    """Steps sounded per pitch class (0 = C)."""
    weights = [0.0] * 12
    for note in events_to_notes(events):
        weights[note.pitch % 12] += note.end - note.start
    return weights
