"""What the sampler actually produces, beside real continuations of the same primers.

    python -m model.musical_eval FOLDER [--samples 4] [--temperature 1.0 --top-p 0.95 | --sweep]

Primers: the first 2 bars of each held-out song; 8 bars generated, several samples each; the real
next 8 bars are the reference. MGEval-style features (Yang & Lerch 2018): for each feature, the
distances within the real set and between real and generated sets are smoothed into densities,
and their overlapping area (OA, 0..1, higher = closer to real) is reported. Also: share of notes
in the primer's key, and how often a bar repeats (or echoes, same rhythm) an earlier bar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from model.data import Song, load_songs, split
from model.events import NOTE_OFF, STEPS_PER_BAR, events_to_notes, is_note_on
from model.sampling import SamplingOptions, continue_melodies, detect_key, load_model

PRIMER_STEPS = 2 * STEPS_PER_BAR
BARS = 8
FEATURES = ("pitch_class_hist", "pitch_range", "interval_hist", "note_length_hist", "ioi_hist", "notes_per_bar")


def features(continuation: list[int]) -> dict[str, np.ndarray]:
    notes = events_to_notes(continuation)
    pitches = np.array([n.pitch for n in notes]) if notes else np.zeros(0)
    starts = np.array([n.start for n in notes]) if notes else np.zeros(0)
    lengths = np.array([n.end - n.start for n in notes]) if notes else np.zeros(0)

    def hist(values, bins):
        h = np.histogram(values, bins=bins)[0].astype(float)
        return h / h.sum() if h.sum() else h

    return {
        "pitch_class_hist": hist(pitches % 12, np.arange(13)),
        "pitch_range": np.array([float(np.ptp(pitches)) if len(pitches) else 0.0]),
        "interval_hist": hist(np.clip(np.diff(pitches), -12, 12), np.arange(-12, 14)),
        # lengths and inter-onset intervals in steps: 1,2,3,4,6,8,12,16+ (sixteenth .. whole)
        "note_length_hist": hist(np.clip(lengths, 1, 16), [1, 2, 3, 4, 6, 8, 12, 16, 17]),
        "ioi_hist": hist(np.clip(np.diff(starts), 1, 16), [1, 2, 3, 4, 6, 8, 12, 16, 17]),
        "notes_per_bar": np.array([len(notes) / (len(continuation) / STEPS_PER_BAR)]),
    }


def overlap_area(intra: np.ndarray, inter: np.ndarray) -> float:
    """Overlapping area of two Gaussian kernel density estimates of distance samples."""
    both = np.concatenate([intra, inter])
    grid = np.linspace(both.min() - 1e-6, both.max() + 1e-6, 512)

    def kde(x):
        bandwidth = 1.06 * max(x.std(), 1e-3) * len(x) ** (-1 / 5)  # Silverman's rule
        density = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bandwidth) ** 2).sum(1)
        return density / np.trapezoid(density, grid)

    return float(np.trapezoid(np.minimum(kde(intra), kde(inter)), grid))


def pairwise(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    if b is None:
        d = np.linalg.norm(a[:, None] - a[None, :], axis=-1)
        return d[np.triu_indices(len(a), 1)]
    return np.linalg.norm(a[:, None] - b[None, :], axis=-1).ravel()


def in_key_share(primer: list[int], continuation: list[int]) -> float | None:
    key = detect_key(primer)
    pitches = [n.pitch for n in events_to_notes(continuation)]
    if key is None or not pitches:
        return None
    return sum(p % 12 in key.pitch_classes for p in pitches) / len(pitches)


def bar_repeats(sequence: list[int], first_bar: int) -> tuple[float, float]:
    """Shares of bars with notes (from first_bar on) equal to an earlier bar: exactly (repeat),
    or in rhythm only (echo: the same onsets and releases, any pitches)."""
    bars = [sequence[i : i + STEPS_PER_BAR] for i in range(0, len(sequence) - STEPS_PER_BAR + 1, STEPS_PER_BAR)]
    rhythm = [[e if e <= NOTE_OFF else 2 for e in bar] for bar in bars]
    checked = [i for i in range(max(first_bar, 1), len(bars)) if any(map(is_note_on, bars[i]))]
    repeat = [bars[i] in bars[:i] for i in checked]
    echo = [rhythm[i] in rhythm[:i] for i in checked]
    return float(np.mean(repeat)) if repeat else 0.0, float(np.mean(echo)) if echo else 0.0


def evaluate_sampler(model, songs: list[Song], options: SamplingOptions) -> dict:
    songs = [s for s in songs if len(s.events) >= PRIMER_STEPS + BARS * STEPS_PER_BAR]
    primers = [s.events[:PRIMER_STEPS].tolist() for s in songs]
    real = [s.events[PRIMER_STEPS : PRIMER_STEPS + BARS * STEPS_PER_BAR].tolist() for s in songs]
    generated = [c for per_song in continue_melodies(model, primers, [options] * len(songs)) for c in per_song]
    gen_primers = [p for p in primers for _ in range(options.variations)]
    row = {}
    real_f = [features(c) for c in real]
    gen_f = [features(c) for c in generated]
    for name in FEATURES:
        r = np.stack([f[name] for f in real_f])
        g = np.stack([f[name] for f in gen_f])
        row[name] = overlap_area(pairwise(r), pairwise(r, g))
    row["mean_oa"] = float(np.mean([row[n] for n in FEATURES]))
    for label, continuations, its_primers in (("real", real, primers), ("gen", generated, gen_primers)):
        shares = [in_key_share(p, c) for p, c in zip(its_primers, continuations)]
        row[f"in_key_{label}"] = float(np.mean([s for s in shares if s is not None]))
        reps = [bar_repeats(p + c, 2) for p, c in zip(its_primers, continuations)]
        row[f"repeat_{label}"] = float(np.mean([r[0] for r in reps]))
        row[f"echo_{label}"] = float(np.mean([r[1] for r in reps]))
        its_features = real_f if label == "real" else gen_f
        row[f"notes_per_bar_{label}"] = float(np.mean([f["notes_per_bar"][0] for f in its_features]))
    # One number to choose defaults by: closeness of the feature distributions, less how far the
    # repetition structure (exact repeats and rhythmic echoes of earlier bars) is from the real one.
    structure_gap = abs(row["repeat_gen"] - row["repeat_real"]) + abs(row["echo_gen"] - row["echo_real"])
    row["score"] = row["mean_oa"] - structure_gap
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--samples", type=int, default=4, help="samples per primer")
    parser.add_argument("--temperature", type=float, default=SamplingOptions.temperature)
    parser.add_argument("--top-p", type=float, default=SamplingOptions.top_p)
    parser.add_argument("--no-key", action="store_true", help="sample without keeping the primer's key")
    parser.add_argument("--max-rest", type=int, default=SamplingOptions.max_rest, help="0: no limit")
    parser.add_argument("--sweep", action="store_true", help="a grid of temperatures and top-p values")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = load_model(*([args.weights] if args.weights else []))
    held_out = split(load_songs(args.folder)[0])[1]
    grid = [(t, p) for t in (0.8, 0.9, 0.95, 1.0, 1.1) for p in (0.9, 0.95, 1.0)] if args.sweep else [
        (args.temperature, args.top_p)]
    rows = []
    for temperature, top_p in grid:
        options = SamplingOptions(bars=BARS, variations=args.samples, temperature=temperature, top_p=top_p,
                                  seed=args.seed, keep_key=not args.no_key, max_rest=args.max_rest)
        rows.append({"temperature": temperature, "top_p": top_p, **evaluate_sampler(model, held_out, options)})
    if args.json:
        print(json.dumps(rows))
        return
    columns = ["temperature", "top_p", *FEATURES, "mean_oa", "score", "in_key_gen", "in_key_real", "repeat_gen",
               "repeat_real", "echo_gen", "echo_real", "notes_per_bar_gen", "notes_per_bar_real"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
