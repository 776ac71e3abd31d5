"""POP909's own annotations read onto the melody's sixteenth grid: chord labels
(chord_midi.txt, Harte-style "F#:maj7/5") as model.music.chords.Chord, and where its bars begin
(beat_midi.txt). Only the lab reads the dataset; the product never needs it.
"""

from __future__ import annotations

import re
from pathlib import Path

from model.music.chords import QUALITIES, Chord, _note_name
from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT

# POP909 labels: "root:quality[/bass degree]", e.g. "F#:maj7/5", "C:sus4(b7)", "Bb:min/b3".
_POP909 = {
    "maj": "maj", "min": "min", "7": "7", "maj7": "maj7", "min7": "min7", "dim": "dim", "dim7": "dim7",
    "hdim7": "hdim7", "aug": "aug", "sus2": "sus2", "sus4": "sus4", "sus4(b7)": "7sus4", "sus4(b7,9)": "7sus4",
    "maj6": "6", "min6": "min6", "minmaj7": "minmaj7", "9": "9", "maj9": "maj9", "min9": "min9",
    "add9": "add9", "maj(9)": "add9", "min(9)": "min", "7sus4": "7sus4", "5": "5", "1": "5",
}
_DEGREES = {"1": 0, "2": 2, "3": 4, "4": 5, "5": 7, "6": 9, "7": 11, "9": 2, "11": 5, "13": 9}


def parse_pop909_label(label: str) -> Chord | None:
    """A POP909 chord_midi.txt label -> Chord; "N" (or anything unreadable) -> None. Unknown
    qualities go to the nearest canonical quality by shared intervals; never raises."""
    label = label.strip()
    if ":" not in label:
        head = _note_name(label)
        return Chord(head[0], "maj") if head is not None and not head[1] else None
    root_text, _, rest = label.partition(":")
    head = _note_name(root_text)
    if head is None or head[1]:
        return None
    root = head[0]
    flats = True if "b" in root_text[1:] else False if "#" in root_text[1:] else None
    quality_text, _, degree = rest.partition("/")
    quality = _POP909.get(quality_text) or _nearest_quality(_harte_intervals(quality_text))
    bass = None
    if degree:
        interval = _degree(degree)
        bass = None if interval is None else (root + interval) % 12
    return Chord(root, quality, bass, flats)


def _degree(text: str) -> int | None:
    """A scale degree such as "5", "b7", "#4" -> semitones above the root."""
    match = re.fullmatch(r"([b#]*)(\d+)", text.strip())
    if not match or match.group(2) not in _DEGREES:
        return None
    return (_DEGREES[match.group(2)] + match.group(1).count("#") - match.group(1).count("b")) % 12


def _harte_intervals(text: str) -> set[int]:
    """A Harte-style quality ("maj", "min7(9)", "sus4(b7)", "(3,5)") -> its intervals (mod 12)."""
    base, _, extra = text.partition("(")
    intervals = set(QUALITIES.get(base, QUALITIES.get(_POP909.get(base, ""), (0, 4, 7))))
    if base == "" and extra:
        intervals = {0}
    for item in extra.rstrip(")").split(","):
        item = item.strip()
        if item.startswith("*"):
            interval = _degree(item[1:])
            intervals.discard(interval)
        elif item:
            interval = _degree(item)
            if interval is not None:
                intervals.add(interval)
    return {i % 12 for i in intervals}


def _nearest_quality(intervals: set[int]) -> str:
    """The canonical quality sharing the most intervals with `intervals` (fewest extras on ties;
    common qualities win remaining ties by their order in QUALITIES)."""
    def score(item):
        tones = {i % 12 for i in item[1]}
        return len(tones & intervals) - 0.5 * len(tones ^ intervals)
    return max(QUALITIES.items(), key=score)[0]


def song_chords(song_folder: str | Path, midi_path: str | Path | None = None) -> list[Chord | None]:
    """A POP909 song's chord_midi.txt on the sixteenth grid of its MIDI file (default
    FOLDER/NAME.mid): entry i is the chord at absolute step i from tick 0, where
    step = round(tick / (ticks_per_beat / 4)) and seconds become ticks through the file's tempo
    map (as model.music.midi_io reads notes). Steps with no chord are None; the list ends at the last
    chord. Note: model.lab.data's melody events start at the bar line at or before the first note
    (notes_to_events' offset), so a caller crops with song_chords(...)[offset : offset + len]."""
    folder = Path(song_folder)
    to_step = song_clock(folder, midi_path)
    spans = []
    for line in (folder / "chord_midi.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        try:
            start_s, end_s = float(fields[0]), float(fields[1])
        except ValueError:
            continue
        start, end = to_step(start_s), to_step(end_s)
        spans.append((start, end, parse_pop909_label(fields[2])))
    steps: list[Chord | None] = [None] * max((end for _, end, _ in spans), default=0)
    for start, end, chord in spans:
        for step in range(start, end):
            steps[step] = chord
    return steps


def song_downbeat_phase(song_folder: str | Path, midi_path: str | Path | None = None) -> int | None:
    """Where a POP909 song's bars begin on its MIDI's sixteenth grid: the most common step (0..15,
    mod a bar) of the downbeats in beat_midi.txt (lines `seconds beat downbeat`, downbeat 1.0),
    through the same tempo map as song_chords; None without beat_midi.txt or downbeats. POP909's
    beats need not fall on the bar lines counted from tick 0 (most songs are 1-15 steps off)."""
    folder = Path(song_folder)
    beats = folder / "beat_midi.txt"
    if not beats.is_file():
        return None
    to_step = song_clock(folder, midi_path)
    counts = [0] * STEPS_PER_BAR
    for line in beats.read_text().splitlines():
        fields = line.split()
        try:
            if len(fields) >= 3 and float(fields[2]) == 1.0:
                counts[to_step(float(fields[0])) % STEPS_PER_BAR] += 1
        except ValueError:
            continue
    return counts.index(max(counts)) if any(counts) else None


def song_clock(folder: Path, midi_path: str | Path | None):
    """seconds -> the nearest sixteenth step of the song's MIDI file, through its tempo map."""
    import pretty_midi  # noqa: PLC0415 - only training and evaluation read songs

    midi_path = Path(midi_path) if midi_path is not None else folder / f"{folder.name}.mid"
    pm = pretty_midi.PrettyMIDI(str(midi_path))
    ticks_per_step = pm.resolution / STEPS_PER_BEAT
    return lambda seconds: round(pm.time_to_tick(max(seconds, 0.0)) / ticks_per_step)
