"""Songs of a POP909-style folder as event arrays, the held-out split, and training batches.

A folder holds one sub-folder per song, `NNN/NNN.mid`; the melody is the track named MELODY
(the evaluation protocol). A song's annotated chords (`chord_midi.txt`, when there) ride along
on the melody's grid as one chord code per step (model.melody.network.NO_CHORD where none sounds).
The protocol's grid counts bars from the file's tick 0, but POP909's bars rarely begin there
(38 of 818 songs): each song also carries its annotated downbeat phase (`beat_midi.txt`), so
training windows start at real bar lines (Song.aligned) and the scorer can tell the network
where the bars are (model.lab.evaluate) while scoring exactly the protocol's steps.
Parsed songs are cached outside the song folder, in CACHE_DIR (MELODYBOT_CACHE, default
~/.cache/melodybot).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.melody.form import LABEL_UNKNOWN, bar_labels, bar_sets, plan_code
from model.melody.network import CHORD_ROOT, NO_CHORD
from model.music.events import (
    FIRST_NOTE_ON,
    MAX_PITCH,
    MIN_PITCH,
    NO_EVENT,
    NUM_CLASSES,
    PAD,
    STEPS_PER_BAR,
    notes_to_events,
)
from model.music.midi_io import MidiError, read_midi

MELODY_TRACK = "MELODY"
HELD_OUT_EVERY = 10  # song ids divisible by this form the held-out split (about 10%)
CACHE_DIR = Path(os.environ.get("MELODYBOT_CACHE", Path.home() / ".cache" / "melodybot"))
CACHE_VERSION = 3  # 2: chords; 3: downbeat phases


@dataclass
class Song:
    song_id: str
    events: np.ndarray  # (T,) int64 event classes from the protocol's bar line (a multiple of 16 file steps)
    chords: np.ndarray | None = None  # (T,) int64 chord codes on the same steps; None: not annotated
    phase: int = 0  # the step of `events` where the song's annotated bars begin, 0..15 (0: not annotated)

    def chord_codes(self) -> np.ndarray:
        return self.chords if self.chords is not None else np.full(len(self.events), NO_CHORD, dtype=np.int64)

    def downbeat_start(self) -> int:
        """Where the real downbeat at or before the first note lies, in steps of `events`
        (phase, or phase - 16 when the first note comes before it: a pickup)."""
        first_note = int(np.argmax(self.events >= FIRST_NOTE_ON)) if (self.events >= FIRST_NOTE_ON).any() else 0
        return self.phase if self.phase <= first_note else self.phase - STEPS_PER_BAR

    def aligned(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(events, chords) starting at downbeat_start(): cut there, or led in by silence."""
        start = self.downbeat_start()
        if start >= 0:
            return self.events[start:], None if self.chords is None else self.chords[start:]
        lead = -start
        events = np.concatenate([np.full(lead, NO_EVENT, dtype=np.int64), self.events])
        chords = None if self.chords is None else np.concatenate([np.full(lead, NO_CHORD, dtype=np.int64),
                                                                  self.chords])
        return events, chords

    def plan_labels(self) -> list[int]:
        """Per bar of aligned(), its form-plan label (model.melody.form.bar_labels), worked out once."""
        if "_plan_labels" not in self.__dict__:
            self.__dict__["_plan_labels"] = bar_labels(bar_sets(self.aligned()[0].tolist()))
        return self.__dict__["_plan_labels"]


def window_plan_codes(labels: list[int], start: int, primer_steps: int, target_steps: int) -> np.ndarray:
    """The plan codes of a window's target steps (its primer from step `start` of the aligned
    song): each whole bar's label and the next bar's, as a plan would tell them: nothing for a
    bar the primer began, nor for the bar after the window."""
    codes = np.zeros(target_steps, dtype=np.int64)
    first = start + primer_steps
    end = first + target_steps

    def known(bar: int) -> bool:  # a bar of the song that begins inside the window
        return bar < len(labels) and first <= bar * STEPS_PER_BAR < end

    for t in range(target_steps):
        bar = (first + t) // STEPS_PER_BAR
        label = labels[bar] if known(bar) else LABEL_UNKNOWN
        following = labels[bar + 1] if known(bar + 1) else LABEL_UNKNOWN
        codes[t] = plan_code(label, following)
    return codes


def chord_code(chord) -> int:
    """A model.music.chords.Chord (or None) -> the network's chord code."""
    if chord is None:
        return NO_CHORD
    return CHORD_ROOT * (chord.root % 12) + sum(1 << (pc % 12) for pc in set(chord.pitch_classes))


def chord_codes(chords) -> np.ndarray:
    return np.array([chord_code(c) for c in chords], dtype=np.int64)


def transpose_chords(codes: np.ndarray, shift: int) -> np.ndarray:
    """Chord codes moved by `shift` semitones (roots and pitch-class masks rotate)."""
    root, mask = codes // CHORD_ROOT, codes % CHORD_ROOT
    shift %= 12
    mask = ((mask << shift) | (mask >> (12 - shift))) & 0xFFF
    return np.where(root == 12, NO_CHORD, (root + shift) % 12 * CHORD_ROOT + mask)


def song_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p / f"{p.name}.mid" for p in folder.iterdir() if (p / f"{p.name}.mid").is_file())


def melody_events(path: Path) -> tuple[np.ndarray, int] | None:
    """The MELODY track as (events, the step of the file where they start), or None when the
    file has no such track."""
    midi = read_midi(path, max_bytes=64 * 1024 * 1024)
    for track in midi.tracks:
        if track.name.strip().upper() == MELODY_TRACK:
            events, offset = notes_to_events(track.notes)
            return np.asarray(events, dtype=np.int64), offset
    return None


def song_chord_codes(folder: Path, offset: int, length: int) -> np.ndarray | None:
    """The chords of a song folder for `length` melody steps from file step `offset`, or None
    when the song has no chord annotation."""
    if not (folder / "chord_midi.txt").is_file():
        return None
    from model.lab.pop909 import song_chords  # noqa: PLC0415 - only the training data needs it

    codes = chord_codes(song_chords(folder)[offset : offset + length])
    return np.concatenate([codes, np.full(length - len(codes), NO_CHORD, dtype=np.int64)])


def song_phase(folder: Path, offset: int) -> int:
    """The step of a melody starting at file step `offset` where the song's annotated bars begin
    (model.music.chords.song_downbeat_phase), 0 without beat annotations."""
    if not (folder / "beat_midi.txt").is_file():
        return 0
    from model.lab.pop909 import song_downbeat_phase  # noqa: PLC0415 - only the training data needs it

    phase = song_downbeat_phase(folder)
    return 0 if phase is None else (phase - offset) % STEPS_PER_BAR


def load_songs(folder: str | Path, use_cache: bool = True) -> tuple[list[Song], list[str]]:
    """All songs of a folder. Returns (songs, skipped ids); skipped songs lack a MELODY track."""
    files = song_files(folder)
    key = hashlib.sha1("".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files).encode())
    key.update(f"v{CACHE_VERSION}".encode() + "".join(_annotation_stamp(p.parent) for p in files).encode())
    cache = CACHE_DIR / f"songs-{key.hexdigest()[:16]}.npz"
    if use_cache and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        chorded = set(stored["chorded"])
        songs = [Song(i, stored[f"s{i}"], stored[f"c{i}"] if i in chorded else None, int(phase))
                 for i, phase in zip(stored["ids"], stored["phases"])]
        return songs, list(stored["skipped"])
    songs, skipped = [], []
    for path in files:
        try:
            melody = melody_events(path)
        except MidiError:
            melody = None
        if melody is None or len(melody[0]) == 0:
            skipped.append(path.parent.name)
        else:
            events, offset = melody
            songs.append(Song(path.parent.name, events, song_chord_codes(path.parent, offset, len(events)),
                              song_phase(path.parent, offset)))
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        chorded = [s for s in songs if s.chords is not None]
        np.savez(cache, ids=np.array([s.song_id for s in songs]), skipped=np.array(skipped, dtype=str),
                 phases=np.array([s.phase for s in songs], dtype=np.int64),
                 chorded=np.array([s.song_id for s in chorded], dtype=str),
                 **{f"s{s.song_id}": s.events for s in songs}, **{f"c{s.song_id}": s.chords for s in chorded})
    return songs, skipped


def _annotation_stamp(folder: Path) -> str:
    paths = (folder / "chord_midi.txt", folder / "beat_midi.txt")
    return "".join(f"{p.stat().st_size}:{p.stat().st_mtime_ns};" if p.is_file() else "-;" for p in paths)


def is_held_out(song_id: str) -> bool:
    digits = "".join(c for c in song_id if c.isdigit())
    return bool(digits) and int(digits) % HELD_OUT_EVERY == 0


def split(songs: list[Song]) -> tuple[list[Song], list[Song]]:
    """(training songs, held-out songs)."""
    return [s for s in songs if not is_held_out(s.song_id)], [s for s in songs if is_held_out(s.song_id)]


def transpose(events: np.ndarray, shift: int) -> np.ndarray:
    """Shift every NOTE_ON by `shift` semitones, folding by octaves into the pitch range."""
    out = events.copy()
    on = out >= FIRST_NOTE_ON
    pitch = out[on] - FIRST_NOTE_ON + MIN_PITCH + shift
    pitch = np.where(pitch < MIN_PITCH, pitch + 12, pitch)
    pitch = np.where(pitch > MAX_PITCH, pitch - 12, pitch)
    out[on] = pitch - MIN_PITCH + FIRST_NOTE_ON
    return out


def sample_batch(
    songs: list[Song],
    batch_size: int,
    primer_steps: int,
    target_steps: int,
    rng: np.random.Generator,
    max_shift: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut (primer, continuation) windows from random songs at random (annotated) bar lines.

    Returns primer (B, P), target (B, T) and a mask (B, T) of real (not padded) target steps.
    Windows past a song's end are padded with PAD; padded targets are masked out of the loss.
    """
    primer, target, mask, *_ = sample_chord_batch(songs, batch_size, primer_steps, target_steps, rng, max_shift)
    return primer, target, mask


def sample_chord_batch(
    songs: list[Song],
    batch_size: int,
    primer_steps: int,
    target_steps: int,
    rng: np.random.Generator,
    max_shift: int = 0,
    chord_dropout: float = 0.0,
    extra: list[Song] = (),
    extra_share: float = 0.0,
    plan_dropout: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sample_batch, the windows' chord codes (B, P+T), transposed with the melody, and their
    target steps' plan codes (B, T); a share `chord_dropout` of the windows (and songs without
    chords) get NO_CHORD everywhere, so one model learns both with and without chords, and
    likewise a share `plan_dropout` is told no plan (None: no window is). With `extra` songs, a
    share `extra_share` of the windows is cut from them instead."""
    primer = np.full((batch_size, primer_steps), PAD, dtype=np.int64)
    target = np.full((batch_size, target_steps), PAD, dtype=np.int64)
    chords = np.full((batch_size, primer_steps + target_steps), NO_CHORD, dtype=np.int64)
    plans = np.zeros((batch_size, target_steps), dtype=np.int64)
    for b in range(batch_size):
        pool = extra if extra and rng.random() < extra_share else songs
        song = pool[rng.integers(len(pool))]
        events, codes = song.aligned()
        bars = max(1, (len(events) - primer_steps) // 16)
        start = 16 * int(rng.integers(bars))
        shift = int(rng.integers(-max_shift, max_shift + 1)) if max_shift else 0
        if shift:
            events = transpose(events, shift)
        window = events[start : start + primer_steps + target_steps]
        p = window[:primer_steps]
        primer[b, primer_steps - len(p):] = p  # a short song's primer is left-padded
        t = window[primer_steps:]
        target[b, : len(t)] = t
        if codes is not None and rng.random() >= chord_dropout:
            c = transpose_chords(codes[start : start + primer_steps + target_steps], shift)
            chords[b, primer_steps - len(p) : primer_steps - len(p) + len(c)] = c
        if plan_dropout is not None and rng.random() >= plan_dropout:
            plans[b] = window_plan_codes(song.plan_labels(), start, primer_steps, target_steps)
    return primer, target, target != PAD, chords, plans


assert NUM_CLASSES == PAD  # PAD sits just past the predicted classes
