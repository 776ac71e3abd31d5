"""Arrangements built by hand for the mixer's tests and benchmarks: a melody, a chord pad, a bass
locked to the kick and a pop drum groove, as model.band.parts describes them (real parts, no
arranger needed)."""

from __future__ import annotations

from model.band.parts import Arrangement, BandNote, Part

KICK, SNARE, CLOSED_HAT, OPEN_HAT, CRASH = 36, 38, 42, 46, 49
C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]
PROGRESSION = [(48, [60, 64, 67]), (43, [59, 62, 67]), (45, [60, 64, 69]), (41, [60, 65, 69])]  # C G Am F


def melody_part(pitches: list[int], step_length: int = 4, velocity: int = 100, program: int = 0) -> Part:
    notes = [BandNote(p, i * step_length, (i + 1) * step_length, velocity) for i, p in enumerate(pitches)]
    return Part("MELODY", program, notes)


def band(bars: int, melody: list[int] | None = None, melody_program: int = 0, style: str = "pop",
         drum_pan: float = 0.05, keys_pan: float = -0.3, humanise: bool = True) -> Arrangement:
    """`bars` of C | G | Am | F: melody (quarter notes of `melody`, else scale steps), keys (the
    chord struck on beats 1 and 3), bass (root on 1, 2-and, 3), drums (kick, snare on 2 and 4,
    eighth hats, an open hat at each bar's end, a crash on bar 1)."""
    steps = bars * 16
    if melody is None:
        melody = [C_MAJOR[(i * 3) % 8] + (12 if i % 5 == 0 else 0) for i in range(bars * 4)]
    lead = melody_part(melody[: bars * 4], program=melody_program)
    keys, bass, drums = Part("KEYS", 4, pan=keys_pan, level_db=-5.0), Part("BASS", 33, level_db=-4.0), \
        Part("DRUMS", 0, is_drum=True, pan=drum_pan, level_db=-6.0)
    for bar in range(bars):
        root, chord = PROGRESSION[bar % 4]
        at = bar * 16
        jitter = (bar % 3 - 1) * 0.1 if humanise else 0.0  # a little late or early, as players are
        for beat in (0, 8):
            velocity = 74 if beat == 0 else 70
            keys.notes += [BandNote(p, at + beat + jitter, at + beat + 7.5, velocity) for p in chord]
        bass.notes += [BandNote(root - 12, at, at + 5.5, 96), BandNote(root - 12, at + 6, at + 7.5, 80),
                       BandNote(root - 12 + 7, at + 8, at + 15.5, 88)]
        drums.notes += [BandNote(KICK, at, at + 1, 110), BandNote(KICK, at + 8, at + 9, 100),
                        BandNote(SNARE, at + 4, at + 5, 105), BandNote(SNARE, at + 12, at + 13, 108)]
        drums.notes += [BandNote(CLOSED_HAT, at + s, at + s + 1, 80 if s % 4 == 0 else 70) for s in range(0, 14, 2)]
        drums.notes.append(BandNote(OPEN_HAT, at + 14, at + 16, 75))
        if bar == 0:
            drums.notes.append(BandNote(CRASH, at, at + 1, 100))
    return Arrangement(style, steps, [lead, keys, bass, drums])
