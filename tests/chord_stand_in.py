"""Chords for the render tests: the part of model.chords.Chord that rendering reads (root, quality,
bass, pitch_classes, symbol()), so these tests do not depend on the chord parser's own tests."""

from __future__ import annotations

from dataclasses import dataclass

from model.events import STEPS_PER_BAR

NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
QUALITIES = {"": (0, 4, 7), "m": (0, 3, 7), "7": (0, 4, 7, 10), "m7": (0, 3, 7, 10), "maj7": (0, 4, 7, 11)}


@dataclass(frozen=True)
class StandInChord:
    root: int
    quality: str
    bass: int | None
    pitch_classes: frozenset

    def symbol(self) -> str:
        slash = f"/{NAMES[self.bass]}" if self.bass is not None else ""
        return NAMES[self.root] + self.quality + slash


def chord(symbol: str) -> StandInChord | None:
    """"Am7", "F#", "C/E", "Bb7" (names as in NAMES), or "N" for no chord."""
    if symbol == "N":
        return None
    symbol, _, bass = symbol.partition("/")
    root = next(name for name in sorted(NAMES, key=len, reverse=True) if symbol.startswith(name))
    quality = symbol[len(root) :]
    tonic = NAMES.index(root)
    pitch_classes = frozenset((tonic + interval) % 12 for interval in QUALITIES[quality])
    return StandInChord(tonic, quality, NAMES.index(bass) if bass else None, pitch_classes)


def per_step(bars: str, steps: int | None = None) -> list:
    """Lead-sheet text ("C | G | Am F") -> one chord per step: a bar's chords share it evenly, and
    the bars repeat to cover `steps` (default: one pass)."""
    grid = []
    for bar in bars.split("|"):
        symbols = bar.split()
        grid += [chord(symbols[step * len(symbols) // STEPS_PER_BAR]) for step in range(STEPS_PER_BAR)]
    steps = len(grid) if steps is None else steps
    return [grid[step % len(grid)] for step in range(steps)]
