"""What an arrangement hands on: named parts of notes on the sixteenth grid. MIDI writing makes one
track per part; the mixer renders, pans and levels each part. No torch, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass  # not frozen: a frozen dataclass's __init__ costs 3.5 times as much, and a band makes ~2000 a job
class BandNote:
    pitch: int  # MIDI key 0..127 (drums: a General MIDI percussion key)
    start: float  # in sixteenth steps from the piece's first step; fractional = humanised timing
    end: float  # exclusive, > start
    velocity: int  # 1..127


def clamp_velocity(velocity: int) -> int:
    """A MIDI velocity, 1..127 (inline comparisons: builtin max and min cost 3 times as much)."""
    return 1 if velocity < 1 else 127 if velocity > 127 else velocity


@dataclass
class Part:
    name: str  # the MIDI track name: MELODY, KEYS, GUITAR, BASS or DRUMS
    program: int  # General MIDI program 0..127 (drums: the kit, usually 0)
    notes: list[BandNote] = field(default_factory=list)
    is_drum: bool = False  # True: MIDI channel 10, the percussion bank
    pan: float = 0.0  # -1 hard left .. +1 hard right
    level_db: float = 0.0  # the part's gain in the mix, relative to the melody


@dataclass
class Arrangement:
    style: str  # the style that played (see model.band's styles), "none": melody over block chords
    steps: int  # the piece's length in sixteenth steps
    parts: list[Part] = field(default_factory=list)

    def part(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name), None)
