"""What the sampler produces, scored with the musical protocol of EVALUATION.md.

    python -m model.lab.musical_eval FOLDER [--seed 0] [--variations 4] [--temperature T --top-p P | --sweep]
    python -m model.lab.musical_eval FOLDER --chords        # the chord-tone protocol

Primers: the first 2 bars (32 steps) of each held-out song's melody, its bars counted from the
song's annotated downbeats (beat_midi.txt; Song.aligned) as the sampler expects a primer to start
at a bar line, the protocol's grid when there are none (or --no-phase); each is continued by 8 bars
with the CLI's defaults, 4 variations (seeds as the CLI derives them from --seed); the real next
8 bars (steps 32..159) are the reference. Features per 8-bar piece (MGEval, Yang & Lerch 2018):
note count, pitch count, pitch range, mean absolute interval, mean inter-onset interval, the
pitch-class histogram and the note-length histogram. For each feature, the Gaussian KDE of the
distances between pairs of real pieces and that of the distances between (real, generated) pairs
are compared by their overlapping area (OA, 1 = indistinguishable). In-key: share of generated
notes in the song's annotated key (key_audio.txt; a minor key read as its relative major).
Structure: share of generated bars whose set of (onset in bar, pitch) has Jaccard >= 0.75 with
some earlier bar of the same piece, primer included.

Chord-tone protocol (--chords): the same primers; the chords are each song's own annotated chords
for the 8 bars, typed as a lead sheet (a bar's chords share it evenly); the share of continuation
note duration whose pitch class belongs to the chord at the note's onset, for the real melodies,
the model told the chords, and the model not told them.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model.lab.data import Song, load_songs, split
from model.melody.sampling import SamplingOptions, continue_melodies, load_model, repeated_bars
from model.music.events import STEPS_PER_BAR, events_to_notes

PRIMER_STEPS = 2 * STEPS_PER_BAR
BARS = 8
PIECE_STEPS = BARS * STEPS_PER_BAR
LENGTH_BINS = (1, 2, 3, 4, 6, 8, 12, 16)  # note-length histogram: at most 1, 2, ..., 16 steps, then more
FEATURES = ("note_count", "pitch_count", "pitch_range", "mean_interval", "mean_ioi", "pitch_class_hist",
            "note_length_hist")
# pitch classes of a major scale; a minor key is read as its relative major
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def features(piece: list[int]) -> dict[str, np.ndarray]:
    """The protocol's features of one piece of events (8 bars)."""
    notes = events_to_notes(piece)
    pitches = np.array([n.pitch for n in notes], dtype=float)
    onsets = np.array([n.start for n in notes], dtype=float)
    lengths = np.array([n.end - n.start for n in notes])
    pc_hist = np.bincount(pitches.astype(int) % 12, minlength=12).astype(float)
    bins = np.searchsorted(LENGTH_BINS, lengths, side="left")  # index of the first bin edge >= length
    length_hist = np.bincount(bins, minlength=len(LENGTH_BINS) + 1).astype(float)
    return {
        "note_count": np.array([len(notes)], dtype=float),
        "pitch_count": np.array([len(set(pitches))], dtype=float),
        "pitch_range": np.array([np.ptp(pitches) if len(notes) else 0.0]),
        "mean_interval": np.array([np.abs(np.diff(pitches)).mean() if len(notes) > 1 else 0.0]),
        "mean_ioi": np.array([np.diff(onsets).mean() if len(notes) > 1 else 0.0]),
        "pitch_class_hist": pc_hist / max(pc_hist.sum(), 1.0),
        "note_length_hist": length_hist / max(length_hist.sum(), 1.0),
    }


def kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of 1-D samples on a grid, Scott's bandwidth (scipy's gaussian_kde,
    which MGEval uses)."""
    spread = samples.std(ddof=1) if len(samples) > 1 else 0.0
    bandwidth = max(spread, 1e-3) * len(samples) ** (-1 / 5)
    density = np.zeros_like(grid)
    for chunk in np.array_split(samples, max(1, len(samples) // 2048)):
        density += np.exp(-0.5 * ((grid[:, None] - chunk[None, :]) / bandwidth) ** 2).sum(1)
    return density / (len(samples) * bandwidth * math.sqrt(2 * math.pi))


def overlap_area(intra: np.ndarray, inter: np.ndarray, points: int = 1000) -> float:
    """Area under the minimum of the two densities, over the range of both samples (as MGEval)."""
    low, high = min(intra.min(), inter.min()), max(intra.max(), inter.max())
    if high - low < 1e-9:  # every distance equal: the same distribution
        return 1.0
    grid = np.linspace(low, high, points)
    return float(np.trapezoid(np.minimum(kde(intra, grid), kde(inter, grid)), grid))


def intra_distances(a: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(a[:, None] - a[None, :], axis=-1)
    return d[np.triu_indices(len(a), 1)]


def inter_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[:, None] - b[None, :], axis=-1).ravel()


def overlap_areas(real: list[list[int]], generated: list[list[int]]) -> dict[str, float]:
    real_f, gen_f = [features(p) for p in real], [features(p) for p in generated]
    row = {}
    for name in FEATURES:
        r, g = np.stack([f[name] for f in real_f]), np.stack([f[name] for f in gen_f])
        row[name] = overlap_area(intra_distances(r), inter_distances(r, g))
    row["mean_oa"] = float(np.mean([row[n] for n in FEATURES]))
    return row


def parse_key(label: str) -> set[int]:
    """`G:maj`, `F#:min`, `Bb:min` -> the pitch classes of the (relative) major scale."""
    tonic, minor = parse_key_label(label)
    tonic += 3 if minor else 0  # the relative major
    return {(tonic + i) % 12 for i in MAJOR_SCALE}


def parse_key_label(label: str) -> tuple[int, bool]:
    """`G:maj`, `F#:min`, `Bb:min` -> (tonic pitch class, minor)."""
    name, _, mode = label.strip().partition(":")
    tonic = NOTE_NAMES[name[0].upper()] + name[1:].count("#") - name[1:].count("b")
    return tonic % 12, mode.lower().startswith("min")


def song_key(folder: Path, melody_start_step: float) -> set[int] | None:
    """The annotated key's scale (key_audio.txt) sounding at a step of the song's MIDI file, or None."""
    label = song_key_label(folder, melody_start_step)
    return None if label is None else parse_key(label)


def song_key_label(folder: Path, melody_start_step: float) -> str | None:
    """The annotated key (key_audio.txt, e.g. `F#:min`) sounding at a step of the song's MIDI file."""
    path = folder / "key_audio.txt"
    if not path.is_file():
        return None
    spans = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not spans:
        return None
    import pretty_midi  # noqa: PLC0415 - only for the seconds of a step

    pm = pretty_midi.PrettyMIDI(str(folder / f"{folder.name}.mid"))
    seconds = pm.tick_to_time(int(round(melody_start_step * pm.resolution / 4)))
    for _start, end, label in spans:
        if seconds < float(end):
            return label
    return spans[-1][2]


def in_key_share(pieces: list[list[int]], keys: list[set[int] | None]) -> float:
    inside = total = 0
    for piece, key in zip(pieces, keys):
        if key is None:
            continue
        pitches = [n.pitch % 12 for n in events_to_notes(piece)]
        inside += sum(p in key for p in pitches)
        total += len(pitches)
    return inside / max(total, 1)


def structure_share(primers: list[list[int]], pieces: list[list[int]]) -> float:
    counts = [repeated_bars(p, c) for p, c in zip(primers, pieces)]
    return sum(h for h, _ in counts) / max(sum(n for _, n in counts), 1)


@dataclass
class Protocol:
    """The held-out material: primers, the real next 8 bars, each song's key."""

    songs: list[Song]
    primers: list[list[int]]
    real: list[list[int]]
    keys: list[set[int] | None]


def prepare(folder: Path, songs: list[Song] | None = None, every_song: bool = False, phase: bool = True) -> Protocol:
    """The protocol's material from the held-out songs of a folder (every_song: all of them);
    phase False: bars counted from the protocol's grid, not the annotated downbeats."""
    if songs is None:
        songs = load_songs(folder)[0]
        songs = songs if every_song else split(songs)[1]
    if not phase:
        songs = [replace(s, phase=0) for s in songs]
    songs = [s for s in songs if len(s.aligned()[0]) >= PRIMER_STEPS + PIECE_STEPS]
    primers = [s.aligned()[0][:PRIMER_STEPS].tolist() for s in songs]
    real = [s.aligned()[0][PRIMER_STEPS : PRIMER_STEPS + PIECE_STEPS].tolist() for s in songs]
    keys = [song_key(Path(folder) / s.song_id, _continuation_start(Path(folder), s)) for s in songs]
    return Protocol(songs, primers, real, keys)


def _continuation_start(folder: Path, song: Song) -> int:
    """The file step where a song's continuation (after its aligned primer) begins."""
    return _melody_offset(folder / song.song_id) + song.downbeat_start() + PRIMER_STEPS


def _melody_offset(folder: Path) -> int:
    from model.lab.data import melody_events  # noqa: PLC0415

    path = folder / f"{folder.name}.mid"
    melody = melody_events(path) if path.is_file() else None
    return melody[1] if melody else 0


def generate(model, protocol: Protocol, options: SamplingOptions, chords=None) -> list[list[int]]:
    """options.variations continuations of each primer, flattened song by song."""
    answers = continue_melodies(model, protocol.primers, [options] * len(protocol.primers),
                                **({"chords": chords} if chords is not None else {}))
    return [c[:PIECE_STEPS] for per_song in answers for c in per_song]


def score_pieces(protocol: Protocol, generated: list[list[int]], variations: int) -> dict:
    primers = [p for p in protocol.primers for _ in range(variations)]
    keys = [k for k in protocol.keys for _ in range(variations)]
    row = overlap_areas(protocol.real, generated)
    row["in_key"] = in_key_share(generated, keys)
    row["structure"] = structure_share(primers, generated)
    return row


def real_row(protocol: Protocol) -> dict:
    """Real vs real: half the songs against the other half for OA; in-key and structure of all."""
    half = len(protocol.real) // 2
    row = overlap_areas(protocol.real[:half], protocol.real[half:])
    row["in_key"] = in_key_share(protocol.real, protocol.keys)
    row["structure"] = structure_share(protocol.primers, protocol.real)
    return row


def evaluate_sampler(model, protocol: Protocol, options: SamplingOptions) -> dict:
    return score_pieces(protocol, generate(model, protocol, options), options.variations)


# -- the chord-tone protocol ---------------------------------------------------------------------
def sheet_chords(folder: Path, song: Song) -> tuple[str, list]:
    """The song's annotated chords for the 8 bars after the primer, typed as a lead sheet, and
    the per-step chords that lead sheet gives (a bar's chords share it evenly)."""
    from model.lab.pop909 import song_chords  # noqa: PLC0415
    from model.music.chords import chords_per_step, lead_sheet, parse_lead_sheet  # noqa: PLC0415

    start = _continuation_start(folder, song)
    annotated = song_chords(folder / song.song_id)[start : start + PIECE_STEPS]
    annotated += [None] * (PIECE_STEPS - len(annotated))
    sheet = lead_sheet(annotated)
    return sheet, chords_per_step(parse_lead_sheet(sheet), PIECE_STEPS)


def chord_tone_counts(piece: list[int], chords: list) -> tuple[int, int]:
    """(duration of notes on a tone of the chord at their onset, duration of notes under a chord)."""
    inside = total = 0
    for note in events_to_notes(piece):
        chord = chords[note.start] if note.start < len(chords) else None
        if chord is not None:
            total += note.end - note.start
            inside += (note.end - note.start) * (note.pitch % 12 in chord.pitch_classes)
    return inside, total


def chord_tone_share(pieces: list[list[int]], chords: list[list]) -> float:
    counts = [chord_tone_counts(p, c) for p, c in zip(pieces, chords)]
    return sum(i for i, _ in counts) / max(sum(t for _, t in counts), 1)


def chord_tone_rows(folder: Path, model, protocol: Protocol, options: SamplingOptions) -> list[dict]:
    """Real melodies, the model told the chords, the model not told them: chord-tone shares under
    each song's own chords as a lead sheet, with the musical protocol's numbers beside."""
    sheets = [sheet_chords(folder, song)[1] for song in protocol.songs]
    per_piece = [c for c in sheets for _ in range(options.variations)]
    rows = [{"set": "real", "chord_tone": chord_tone_share(protocol.real, sheets)}]
    for label, chords in (("told the chords", sheets), ("not told", None)):
        generated = generate(model, protocol, options, chords)
        rows.append({"set": label, "chord_tone": chord_tone_share(generated, per_piece),
                     **score_pieces(protocol, generated, options.variations)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--variations", type=int, default=SamplingOptions.variations, help="per primer")
    parser.add_argument("--seed", type=int, default=SamplingOptions.seed, help="as the CLI's --seed")
    parser.add_argument("--temperature", type=float, default=SamplingOptions.temperature)
    parser.add_argument("--top-p", type=float, default=SamplingOptions.top_p)
    parser.add_argument("--sweep", action="store_true", help="a grid of temperatures and top-p values")
    parser.add_argument("--candidates", type=int, default=SamplingOptions.candidates, help="per variation")
    parser.add_argument("--real", action="store_true", help="also the real-vs-real row")
    parser.add_argument("--chords", action="store_true", help="the chord-tone protocol instead")
    parser.add_argument("--all", action="store_true", help="every song of the folder, not the held-out split")
    parser.add_argument("--no-phase", dest="phase", action="store_false",
                        help="primers from the protocol's grid (bars from tick 0), not the annotated downbeats")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = load_model(*([str(args.weights)] if args.weights else []))
    protocol = prepare(args.folder, every_song=args.all, phase=args.phase)
    base = SamplingOptions(bars=BARS, variations=args.variations, seed=args.seed, candidates=args.candidates,
                           temperature=args.temperature, top_p=args.top_p)
    if args.chords:
        print_rows(chord_tone_rows(args.folder, model, protocol, base), args.json)
        return
    grid = [(t, p, c) for t in (0.9, 1.0, 1.1) for p in (0.95, 0.98, 1.0) for c in (1, 3)] if args.sweep else [
        (args.temperature, args.top_p, args.candidates)]
    rows = [{"set": "real", **real_row(protocol)}] if args.real else []
    for temperature, top_p, candidates in grid:
        options = replace(base, temperature=temperature, top_p=top_p, candidates=candidates)
        rows.append({"set": "generated", "temperature": temperature, "top_p": top_p, "candidates": candidates,
                     "seed": args.seed, **evaluate_sampler(model, protocol, options)})
    print_rows(rows, args.json)


def print_rows(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells) + " |")


if __name__ == "__main__":
    main()
