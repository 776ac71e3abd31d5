"""Stuck takes (EVALUATION.md): how many continuations sit on one pitch for a run of notes.

    python -m model.lab.takes FOLDER [--seeds 0 1] [--conditions defaults chords hot] [--candidates N] [--json]

A take is stuck when its 8 continuation bars hold a run of >= 6 (or >= 8) consecutive notes of
one pitch (rests between them do not break a run: a listener hears the same note again). The
takes: the musical protocol's held-out primers (model.lab.musical_eval: first 2 bars of each song
whose id is divisible by 10), 4 variations each, for every seed and condition:
- defaults: the CLI's defaults;
- chords: told each song's own annotated chords as a lead sheet (the chord-tone protocol);
- hot: temperature 1.3.
Phrase ends (issue 23, point 3): the share of 8-bar pieces whose last note lasts a quarter or
more (to the piece's end when still sounding) on a degree of the song's tonic triad (key_audio.txt).
For each, also the share of variation pairs of one answer that share more than half their bars
(issue 23: four variations are four ideas). Beside them the real continuations (the songs' real
next 8 bars) and every 8-bar window of the held-out melodies after their primer (bar by bar).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from model.lab import musical_eval as me
from model.melody.sampling import SamplingOptions, load_model, shared_bars
from model.music.events import STEPS_PER_BAR, events_to_notes

STUCK_RUNS = (6, 8)
CONDITIONS = {"defaults": {}, "chords": {}, "hot": {"temperature": 1.3}}


def longest_run(piece: list[int]) -> int:
    """The most consecutive notes of one pitch in a piece of events (0 without notes)."""
    best = run = 0
    previous = None
    for note in events_to_notes(piece):
        run = run + 1 if note.pitch == previous else 1
        previous = note.pitch
        best = max(best, run)
    return best


def stuck_shares(pieces: list[list[int]], runs=STUCK_RUNS) -> dict[str, float]:
    """Per run length, the share of pieces holding a run at least that long."""
    longest = [longest_run(p) for p in pieces]
    return {f"run>={n}": sum(r >= n for r in longest) / max(len(longest), 1) for n in runs}


PHRASE_END_STEPS = 4  # a phrase ends on a note of a quarter or longer (or one still sounding at the end)


def tonic_triad(label: str | None) -> set[int] | None:
    """`F#:min` -> the pitch classes of its tonic triad (the stable degrees 1, 3, 5)."""
    if label is None:
        return None
    tonic, minor = me.parse_key_label(label)
    return {(tonic + i) % 12 for i in ((0, 3, 7) if minor else (0, 4, 7))}


def ends_like_phrase(piece: list[int], triad: set[int]) -> bool:
    """The piece's last note is long (PHRASE_END_STEPS or more, counted to the piece's end when it
    still sounds there) and on a degree of the tonic triad."""
    notes = events_to_notes(piece)
    return bool(notes) and notes[-1].end - notes[-1].start >= PHRASE_END_STEPS and notes[-1].pitch % 12 in triad


def phrase_end_share(pieces: list[list[int]], triads: list[set[int] | None]) -> float:
    scored = [ends_like_phrase(p, t) for p, t in zip(pieces, triads) if t is not None]
    return sum(scored) / max(len(scored), 1)


def near_copy_share(takes: list[list[int]], variations: int) -> float:
    """Share of variation pairs of one answer (takes flattened answer by answer) that share more
    than half their bars (same place, Jaccard >= 0.75: model.melody.sampling.shared_bars)."""
    pairs = near = 0
    for start in range(0, len(takes), variations):
        answer = takes[start : start + variations]
        for i in range(len(answer)):
            for j in range(i):
                pairs += 1
                near += 2 * shared_bars(answer[i], answer[j]) > me.BARS
    return near / max(pairs, 1)


def real_windows(protocol: me.Protocol) -> list[list[int]]:
    """Every 8-bar window (bar by bar) of the held-out melodies after their primer."""
    windows = []
    for song in protocol.songs:
        events = song.aligned()[0].tolist()
        for start in range(me.PRIMER_STEPS, len(events) - me.PIECE_STEPS + 1, STEPS_PER_BAR):
            windows.append(events[start : start + me.PIECE_STEPS])
    return windows


def condition_takes(folder: Path, model, protocol: me.Protocol, options: SamplingOptions, condition: str):
    """The generated takes of one condition (flattened song by song)."""
    options = replace(options, **CONDITIONS[condition])
    chords = [me.sheet_chords(folder, song)[1] for song in protocol.songs] if condition == "chords" else None
    return me.generate(model, protocol, options, chords)


def rows(folder: Path, seeds, conditions, candidates: int, variations: int = 4, model=None) -> list[dict]:
    model = model or load_model()
    protocol = me.prepare(folder)
    triads = [tonic_triad(me.song_key_label(folder / s.song_id, me._continuation_start(folder, s)))
              for s in protocol.songs]
    table = [{"set": "real continuations", "takes": len(protocol.real), **stuck_shares(protocol.real),
              "phrase end": phrase_end_share(protocol.real, triads)}]
    windows = real_windows(protocol)
    table.append({"set": "real, every 8-bar window", "takes": len(windows), **stuck_shares(windows)})
    for condition in conditions:
        for seed in seeds:
            options = SamplingOptions(bars=me.BARS, variations=variations, seed=seed, candidates=candidates)
            takes = condition_takes(folder, model, protocol, options, condition)
            table.append({"set": condition, "seed": seed, "takes": len(takes), **stuck_shares(takes),
                          "near-copy pairs": near_copy_share(takes, variations),
                          "phrase end": phrase_end_share(takes, [t for t in triads for _ in range(variations)])})
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--conditions", nargs="+", choices=sorted(CONDITIONS), default=list(CONDITIONS))
    parser.add_argument("--candidates", type=int, default=SamplingOptions.candidates, help="per variation")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    me.print_rows(rows(args.folder, args.seeds, args.conditions, args.candidates), args.json)


if __name__ == "__main__":
    main()
