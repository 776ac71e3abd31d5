"""The keys' texture library: real accompaniment phrases taken from POP909's PIANO tracks.

    python -m model.lab.band_textures POP909_FOLDER [--out model/weights/band_textures.json]

Each training song (ids not divisible by 10) is cut into 4-bar phrases on its annotated bars
(beat_midi.txt's downbeats, through model.chords.song_downbeat_phase) and its annotated chords
(chord_midi.txt, model.chords.song_chords). A note is kept relative to the chord sounding at its
onset, not as a pitch: its onset and length in steps from the phrase start, its *slot* (which
chord tone it plays: 0 root, 1 third (or sus tone), 2 fifth, 3 seventh or sixth, 4 ninth, 5 the
slash bass), its height in semitones above the phrase's centre (its mean pitch) and its velocity.
Notes on no chord tone (passing tones: about 3% of PIANO's note time) are left out, so a phrase
laid over other chords (model.band.keys) sounds only chord tones. Bars under no chord, phrases
with an empty or overfull bar, and exact duplicates (repeated choruses) are dropped; what remains
is sampled evenly over density and chord rhythm so the file stays small (< 2 MB).

The file: {"version", "source", "stats", "phrases": [{"song", "centre", "masks": [4 ints: bit s
set when a chord changes at step s of the bar], "counts": [4 note counts], "chords": [8 codes: per
half bar, its root above the phrase's first root, + 12 if minor], "notes": base64 of 5 bytes a
note (onset 0..63, length 1..64, slot, height + 64, velocity)}]}.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from model.lab.pop909 import song_chords, song_downbeat_phase
from model.music.chords import QUALITIES, Chord
from model.music.events import STEPS_PER_BAR
from model.music.midi_io import read_midi

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "weights" / "band_textures.json"
PHRASE_BARS = 4
PHRASE_STEPS = PHRASE_BARS * STEPS_PER_BAR
MAX_NOTES_PER_BAR = 40  # more is a glissando or a transcription error
MIN_NOTES_PER_BAR = 2
MAX_DROPPED = 0.2  # a phrase with more note time off its chords is likely mislabelled
MAX_PHRASES = 2600  # ~1 MB
SLOT_BASS = 5
VERSION = 2


def is_held_out(song_id: str) -> bool:
    return song_id.isdigit() and int(song_id) % 10 == 0


def chord_slot(chord: Chord, pitch: int) -> int | None:
    """Which tone of `chord` the pitch plays (see the module doc), or None for a non-chord tone."""
    intervals = [i % 12 for i in QUALITIES[chord.quality]]
    interval = (pitch - chord.root) % 12
    if interval in intervals:
        return intervals.index(interval)
    if chord.bass is not None and pitch % 12 == chord.bass:
        return SLOT_BASS
    return None


def song_phrases(folder: Path) -> tuple[list[dict], dict]:
    """The 4-bar phrases of one song's PIANO track, and counts for the stats."""
    midi = read_midi(folder / f"{folder.name}.mid", max_bytes=64 * 1024 * 1024)
    piano = next((t for t in midi.tracks if t.name.strip().upper() == "PIANO"), None)
    stats = {"bars": 0, "notes": 0, "kept_time": 0, "dropped_time": 0}
    if piano is None or not piano.notes:
        return [], stats
    chords = song_chords(folder)
    phase = song_downbeat_phase(folder) or 0
    by_bar: dict[int, list] = defaultdict(list)
    for note in piano.notes:
        if note.start >= phase:
            by_bar[(note.start - phase) // STEPS_PER_BAR].append(note)
    last_bar = (len(chords) - phase) // STEPS_PER_BAR
    phrases = []
    for first in range(0, last_bar - PHRASE_BARS + 1, PHRASE_BARS):
        begin = phase + first * STEPS_PER_BAR
        span = chords[begin : begin + PHRASE_STEPS]
        if len(span) < PHRASE_STEPS or any(c is None for c in span):
            continue
        notes = [n for bar in range(first, first + PHRASE_BARS) for n in by_bar.get(bar, [])]
        counts = [len(by_bar.get(bar, [])) for bar in range(first, first + PHRASE_BARS)]
        if min(counts) < MIN_NOTES_PER_BAR or max(counts) > MAX_NOTES_PER_BAR:
            continue
        centre = round(sum(n.pitch for n in notes) / len(notes))
        kept, dropped, kept_time = [], 0, 0
        for n in notes:
            onset = n.start - begin
            length = max(1, min(n.end, begin + PHRASE_STEPS) - n.start, 1)
            slot = chord_slot(span[onset], n.pitch)
            if slot is None:
                dropped += length
                continue
            kept_time += length
            kept.append((onset, min(length, 64), slot, max(-64, min(63, n.pitch - centre)), max(1, n.velocity)))
        stats["notes"] += len(notes)
        stats["kept_time"] += kept_time
        stats["dropped_time"] += dropped
        if dropped > MAX_DROPPED * (kept_time + dropped):
            continue
        masks = []
        for bar in range(PHRASE_BARS):
            steps = span[bar * STEPS_PER_BAR : (bar + 1) * STEPS_PER_BAR]
            masks.append(sum(1 << s for s in range(1, STEPS_PER_BAR) if steps[s] != steps[s - 1]))
        stats["bars"] += PHRASE_BARS
        phrases.append({"song": folder.name, "centre": centre, "masks": masks, "counts": counts,
                        "chords": progression(span), "notes": sorted(kept)})
    return phrases, stats


def progression(span: list[Chord]) -> list[int]:
    """The phrase's chord progression, key-free: for each half bar, the root of its first chord
    in semitones above the phrase's first root, plus 12 when the chord is minor (0..23)."""
    first = span[0].root
    codes = []
    for half in range(0, len(span), STEPS_PER_BAR // 2):
        chord = span[half]
        minor = QUALITIES[chord.quality][1] == 3 if len(QUALITIES[chord.quality]) > 1 else False
        codes.append((chord.root - first) % 12 + 12 * minor)
    return codes


def select(phrases: list[dict], limit: int, seed: int = 0) -> tuple[list[dict], int]:
    """Exact duplicates dropped, then up to `limit` phrases drawn evenly over groups of (mean
    notes per bar, in steps of 2; chord changes per bar, up to 4), so sparse ballad phrases and
    one-chord-a-beat phrases are kept as well as the common ones."""
    seen, unique = set(), []
    for phrase in phrases:
        key = tuple((o, d, s, h) for o, d, s, h, _ in phrase["notes"])
        if key not in seen:
            seen.add(key)
            unique.append(phrase)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for phrase in unique:
        density = min(sum(phrase["counts"]) // (2 * PHRASE_BARS), 12)
        changes = min(max(bin(m).count("1") for m in phrase["masks"]), 4)
        groups[(density, changes)].append(phrase)
    rng = random.Random(seed)
    for members in groups.values():
        rng.shuffle(members)
    chosen: list[dict] = []
    while len(chosen) < limit and any(groups.values()):  # round robin over the groups
        for key in sorted(groups):
            if groups[key] and len(chosen) < limit:
                chosen.append(groups[key].pop())
    return chosen, len(unique)


def encode(notes: list[tuple]) -> str:
    flat = bytearray()
    for onset, length, slot, height, velocity in notes:
        flat += bytes((onset, length, slot, height + 64, velocity))
    return base64.b64encode(bytes(flat)).decode()


def build(folder: Path, limit: int = MAX_PHRASES) -> dict:
    songs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "chord_midi.txt").is_file()
                   and (p / f"{p.name}.mid").is_file() and not is_held_out(p.name))
    phrases, totals = [], defaultdict(int)
    for song in songs:
        try:
            found, stats = song_phrases(song)
        except (ValueError, OSError) as error:
            print(f"skipped {song.name}: {error}", file=sys.stderr)
            continue
        phrases += found
        for name, value in stats.items():
            totals[name] += value
    chosen, unique = select(phrases, limit)
    counts = [c for p in phrases for c in p["counts"]]
    stats = {
        "songs": len(songs), "phrases": len(phrases), "unique": unique, "kept": len(chosen),
        "notes_per_bar_mean": round(sum(counts) / max(len(counts), 1), 2),
        "chord_tone_time": round(totals["kept_time"] / max(totals["kept_time"] + totals["dropped_time"], 1), 4),
    }
    return {
        "version": VERSION,
        "source": "POP909 PIANO tracks, training songs (ids not divisible by 10), 4-bar phrases",
        "stats": stats,
        "phrases": [{"song": p["song"], "centre": p["centre"], "masks": p["masks"], "counts": p["counts"],
                     "chords": p["chords"], "notes": encode(p["notes"])} for p in chosen],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.lab.band_textures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a POP909-style folder (NNN/NNN.mid, chord_midi.txt, beat_midi.txt)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--limit", type=int, default=MAX_PHRASES, help="phrases kept")
    args = parser.parse_args(argv)
    library = build(args.folder, args.limit)
    args.out.write_text(json.dumps(library, separators=(",", ":")))
    print(json.dumps(library["stats"]), f"-> {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
