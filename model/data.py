"""Songs of a POP909-style folder as event arrays, the held-out split, and training batches.

A folder holds one sub-folder per song, `NNN/NNN.mid`; the melody is the track named MELODY
(the evaluation protocol). Parsed songs are cached outside the song folder, in CACHE_DIR
(MELODYBOT_CACHE, default ~/.cache/melodybot).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.events import FIRST_NOTE_ON, MAX_PITCH, MIN_PITCH, NUM_CLASSES, PAD, notes_to_events
from model.midi_io import MidiError, read_midi

MELODY_TRACK = "MELODY"
HELD_OUT_EVERY = 10  # song ids divisible by this form the held-out split (about 10%)
CACHE_DIR = Path(os.environ.get("MELODYBOT_CACHE", Path.home() / ".cache" / "melodybot"))


@dataclass
class Song:
    song_id: str
    events: np.ndarray  # (T,) int64 event classes, starting at a bar line


def song_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p / f"{p.name}.mid" for p in folder.iterdir() if (p / f"{p.name}.mid").is_file())


def melody_events(path: Path) -> np.ndarray | None:
    """The MELODY track as events, or None when the file has no such track."""
    midi = read_midi(path, max_bytes=64 * 1024 * 1024)
    for track in midi.tracks:
        if track.name.upper() == MELODY_TRACK:
            events, _ = notes_to_events(track.notes)
            return np.asarray(events, dtype=np.int64)
    return None


def load_songs(folder: str | Path, use_cache: bool = True) -> tuple[list[Song], list[str]]:
    """All songs of a folder. Returns (songs, skipped ids); skipped songs lack a MELODY track."""
    files = song_files(folder)
    key = hashlib.sha1("".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files).encode())
    cache = CACHE_DIR / f"songs-{key.hexdigest()[:16]}.npz"
    if use_cache and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        songs = [Song(i, stored[f"s{i}"]) for i in stored["ids"]]
        return songs, list(stored["skipped"])
    songs, skipped = [], []
    for path in files:
        try:
            events = melody_events(path)
        except MidiError:
            events = None
        if events is None or len(events) == 0:
            skipped.append(path.parent.name)
        else:
            songs.append(Song(path.parent.name, events))
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.array([s.song_id for s in songs]), skipped=np.array(skipped, dtype=str),
                 **{f"s{s.song_id}": s.events for s in songs})
    return songs, skipped


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
    """Cut (primer, continuation) windows from random songs at random bar lines.

    Returns primer (B, P), target (B, T) and a mask (B, T) of real (not padded) target steps.
    Windows past a song's end are padded with PAD; padded targets are masked out of the loss.
    """
    primer = np.full((batch_size, primer_steps), PAD, dtype=np.int64)
    target = np.full((batch_size, target_steps), PAD, dtype=np.int64)
    for b in range(batch_size):
        events = songs[rng.integers(len(songs))].events
        bars = max(1, (len(events) - primer_steps) // 16)
        start = 16 * int(rng.integers(bars))
        if max_shift:
            events = transpose(events, int(rng.integers(-max_shift, max_shift + 1)))
        window = events[start : start + primer_steps + target_steps]
        p = window[:primer_steps]
        primer[b, primer_steps - len(p):] = p  # a short song's primer is left-padded
        t = window[primer_steps:]
        target[b, : len(t)] = t
    return primer, target, target != PAD


assert NUM_CLASSES == PAD  # PAD sits just past the predicted classes
