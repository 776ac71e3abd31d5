"""The bass: the chord's root (the slash chord's bass) on every chord change, the style's
kick-locked steps in between (root, fifth, octave), and an approach note into the next chord
where there is room, moved off any note that would rub a semitone against the melody."""

from __future__ import annotations

import random
from collections.abc import Sequence

from model.band.grid import Grid, changes
from model.band.parts import BandNote
from model.band.styles import Style
from model.music.chords import QUALITIES, Chord
from model.music.events import STEPS_PER_BAR

LOW, HIGH = 28, 50  # E1..D3: the bass's register
CENTRE = 38  # D2: where the line starts


def bass_pitch_class(chord: Chord) -> int:
    return chord.bass if chord.bass is not None else chord.root


def nearest(pitch_class: int, near: int, low: int = LOW, high: int = HIGH) -> int:
    """The pitch of `pitch_class` closest to `near` inside low..high (ties go down)."""
    delta = (pitch_class - near) % 12
    pitch = near + delta if delta < 6 else near + delta - 12
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return pitch


def scale_of(chords: Sequence[Chord | None]) -> set[int]:
    """The 7 pitch classes the chords sound most (their time-weighted tones): the key the
    approach notes keep to."""
    weight = [0] * 12
    for start, end, chord in chord_spans(chords):
        if chord is not None:
            for pc in chord.pitch_classes:
                weight[pc] += end - start
    return set(sorted(range(12), key=lambda pc: -weight[pc])[:7])


def chord_spans(chords: Sequence[Chord | None]) -> list[tuple[int, int, Chord | None]]:
    """(start, end, chord) for each run of one chord."""
    spans, start = [], 0
    for step in range(1, len(chords) + 1):
        if step == len(chords) or changes(chords[step - 1], chords[step]):  # equal to the run's start
            spans.append((start, step, chords[start]))
            start = step
    return spans


def fifth_of(chord: Chord) -> int:
    """The chord's fifth in semitones above its root: perfect, else diminished or augmented."""
    intervals = QUALITIES[chord.quality]
    return next((i for i in (7, 6, 8) if i in intervals), 0)


def bass_notes(style: Style, chords: Sequence[Chord | None], melody: Sequence, rng: random.Random,
               grid: Grid | None = None) -> list[BandNote]:
    grid = grid or Grid.of(melody, chords)
    notes: list[BandNote] = []
    previous = CENTRE
    spans = chord_spans(chords)
    scale = scale_of(chords)
    for index, (start, end, chord) in enumerate(spans):
        if chord is None:
            continue
        root = nearest(bass_pitch_class(chord), previous)
        fifth = nearest(chord.root + fifth_of(chord), root + 5)
        # where the bass strikes inside this span: its first step, then the style's kick-locked steps
        strikes = [start] + [s for s in range(start + 1, end) if s % STEPS_PER_BAR in style.bass_steps]
        following = spans[index + 1][2] if index + 1 < len(spans) else None
        for number, step in enumerate(strikes):
            stop = strikes[number + 1] if number + 1 < len(strikes) else end
            if number == 0:
                pitch = root
            elif following is not None and number == len(strikes) - 1 and end - step <= 4 and end - start >= 8:
                target = nearest(bass_pitch_class(following), root)
                steps_away = [target + d for d in ((-2, 2, -1, 1) if target > root else (2, -2, 1, -1))]
                in_key = [p for p in steps_away if p % 12 in scale and p != root]
                pitch = in_key[0] if in_key and target != root else fifth  # approach from a step away
                if not LOW <= pitch <= HIGH + 2:
                    pitch = fifth
            elif step % STEPS_PER_BAR in (8,) or (style.name in ("bossa", "folk") and number % 2):
                pitch = fifth
            elif style.name == "rock" or rng.random() < 0.75:
                pitch = root
            else:
                pitch = root + 12 if root + 12 <= HIGH + 7 else fifth
            if number and grid.rubs(pitch, step, stop):
                pitch = root  # the root is the chord's own: keep the line, lose the rub
            length = (stop - step) * (0.55 if style.name == "rock" else 0.92)
            velocity = style.velocity + (10 if step % STEPS_PER_BAR == 0 else 4 if number == 0 else -4)
            velocity += int(rng.random() * 11) - 5
            jitter = rng.uniform(-0.03, 0.03) if step else 0.0
            notes.append(BandNote(pitch, step + jitter, step + jitter + max(0.5, length), max(1, min(127, velocity))))
        previous = root
    return notes
