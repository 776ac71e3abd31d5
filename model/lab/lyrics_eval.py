"""The lyric-setting protocol of EVALUATION.md, on the sampler with words.

    python -m model.lab.lyrics_eval FOLDER [--lines FILE] [--seed 0] [--json]
    python -m model.lab.lyrics_eval FOLDER --grid     # recount rhythm.py's ONSET_SHARE and IOI_SHARE

Material: the lines of model/lab/lyric_lines.txt (64 lines written for this project; one to three
consecutive lines a prompt, cycling 1, 2, 3) and the musical protocol's held-out primers (2 bars
of each held-out POP909 song), prompt k on primer k, both cycling until each prompt and each primer
has been set at least once. Each prompt is set with the bot's
defaults (2 bars a line, 4 variations). Per line, measured on the sampled notes, not on the plan:
the note onsets inside the line's bars equal its syllables (exact); primary-stressed syllables of
polysyllabic words and stressed one-syllable content words on a beat; unstressed syllables of
polysyllabic words off beats 1 and 3 (syllables by CMUdict's first pronunciation, as the bot).
In-key: share of continuation notes in the song's annotated key.

Musical protocol with lyrics: every held-out primer continued by 8 bars carrying the next 2 to 6
consecutive lines, as many as come nearest the notes the primer's own pace gives 8 bars (the
sampler's primer_note_rate: a busy primer, wordy lines), 4 variations, scored against the real
next 8 bars as model.lab.musical_eval does (OA per feature, their mean, in-key).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from model.lab.musical_eval import BARS, prepare, print_rows, score_pieces
from model.lyrics.setting import LyricSetting, set_lyrics
from model.lyrics.syllables import parse_lyrics
from model.melody.sampling import SamplingOptions, continue_melodies, load_model, prepare_primer, primer_note_rate
from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT, events_to_notes

LINES = Path(__file__).with_name("lyric_lines.txt")
VARIATIONS = 4
MAX_PACED_LINES = 6  # lines of one 8-bar continuation in the musical protocol (1 or 2 bars a line)


def load_lines(path: Path = LINES) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def prompts(lines: list[str], sizes=(1, 2, 3)) -> list[str]:
    """Consecutive lines grouped one, two, three, one, ... a prompt, "/" between them."""
    out, i, k = [], 0, 0
    while i < len(lines):
        size = sizes[k % len(sizes)]
        out.append(" / ".join(lines[i : i + size]))
        i, k = i + size, k + 1
    return out


def line_scores(setting: LyricSetting, continuation: list[int]) -> list[dict]:
    """Per line of the words: exact onset count, stressed-on-beat and unstressed-off-1-3 counts,
    read from the sampled continuation (steps relative to its start)."""
    onsets = [n.start for n in events_to_notes(continuation) if n.start >= 0]
    plan = setting.plans[0]
    bounds = list(plan.line_starts) + [plan.steps]
    rows = []
    for number, line in enumerate(setting.lyrics.lines):
        start, end = bounds[number], bounds[number + 1]
        inside = [t for t in onsets if start <= t < end]
        syllables = line.syllables
        row = {"exact": len(inside) == len(syllables), "strong": 0, "strong_on_beat": 0, "weak": 0,
               "weak_off_1_3": 0}
        for t, syllable in zip(inside, syllables):
            position = (t - start) % STEPS_PER_BAR  # lines start on a bar line
            if syllable.strong:
                row["strong"] += 1
                row["strong_on_beat"] += position % STEPS_PER_BEAT == 0
            if syllable.weak:
                row["weak"] += 1
                row["weak_off_1_3"] += position % (2 * STEPS_PER_BEAT) != 0
        rows.append(row)
    return rows


def in_key(pieces: list[list[int]], keys: list[set[int] | None]) -> float:
    hits = total = 0
    for piece, key in zip(pieces, keys):
        if key is None:
            continue
        pitches = [n.pitch % 12 for n in events_to_notes(piece)]
        hits += sum(p in key for p in pitches)
        total += len(pitches)
    return hits / max(total, 1)


def alignment(model, protocol, texts: list[str], seed: int) -> dict:
    pairs = max(len(texts), len(protocol.primers))  # every prompt, and every held-out primer, at least once
    texts = [texts[k % len(texts)] for k in range(pairs)]
    primers = [prepare_primer(protocol.primers[k % len(protocol.primers)]) for k in range(pairs)]
    keys = [protocol.keys[k % len(protocol.primers)] for k in range(pairs)]
    settings = [set_lyrics(text, primer, None, VARIATIONS, seed + k) for k, (text, primer) in
                enumerate(zip(texts, primers))]
    options = [SamplingOptions(bars=s.bars, variations=VARIATIONS, seed=seed + k, rhythm=s.rhythm)
               for k, s in enumerate(settings)]
    answers = continue_melodies(model, primers, options)
    rows, pieces, piece_keys = [], [], []
    for setting, continuations, key in zip(settings, answers, keys):
        for v, continuation in enumerate(continuations):
            one = LyricSetting(setting.lyrics, setting.bars, setting.primer_steps, (setting.plans[v],))
            rows += line_scores(one, continuation)
            pieces.append(continuation)
            piece_keys.append(key)
    total = lambda name: sum(r[name] for r in rows)  # noqa: E731
    return {"prompts": len(texts), "lines": len(rows), "exact": total("exact") / len(rows),
            "stressed_on_beat": total("strong_on_beat") / max(total("strong"), 1),
            "unstressed_off_1_3": total("weak_off_1_3") / max(total("weak"), 1), "in_key": in_key(pieces, piece_keys)}


def paced_prompts(lines: list[str], primers: list[list[int]], bars: int = BARS) -> list[str]:
    """Per primer, the next consecutive lines (2 to MAX_PACED_LINES, cycling through `lines`) whose
    syllables come nearest the notes its own pace would give `bars` bars (the sampler's
    primer_note_rate): a songwriter with a busy primer writes wordy lines."""
    counts = [len(parse_lyrics(line).lines[0].syllables) for line in lines]
    texts, at = [], 0
    for primer in primers:
        target = primer_note_rate(primer) * bars * STEPS_PER_BAR
        taken, total = 0, 0
        while taken < MAX_PACED_LINES and (taken < 2 or abs(total + counts[(at + taken) % len(lines)] - target)
                                           < abs(total - target)):
            total += counts[(at + taken) % len(lines)]
            taken += 1
        texts.append(" / ".join(lines[(at + j) % len(lines)] for j in range(taken)))
        at += taken
    return texts


def musical(model, protocol, lines: list[str], seed: int) -> dict:
    primers = [prepare_primer(p) for p in protocol.primers]
    texts = paced_prompts(lines, primers)
    settings = [set_lyrics(t, p, BARS, VARIATIONS, seed) for t, p in zip(texts, primers)]
    options = [SamplingOptions(bars=BARS, variations=VARIATIONS, seed=seed, rhythm=s.rhythm) for s in settings]
    answers = continue_melodies(model, primers, options)
    generated = [c[: BARS * STEPS_PER_BAR] for per in answers for c in per]
    return score_pieces(protocol, generated, VARIATIONS)


def grid(folder: Path) -> dict:
    """rhythm.py's tables from the training melodies: onset positions in the bar, inter-onset
    intervals (1..16 steps), the share of notes ending before the next onset by interval (2..8) and
    how early (1..3 steps), and that share per 8-bar piece (its mean and spread: ARTICULATION)."""
    from model.lab.data import load_songs, split

    train = split(load_songs(folder)[0])[0]
    positions, intervals = np.zeros(STEPS_PER_BAR), np.zeros(33)
    early, total, gaps = np.zeros(17), np.zeros(17), np.zeros((17, 4))
    pieces = []
    for song in train:
        notes = events_to_notes(song.aligned()[0].tolist())
        for a, b in zip(notes, notes[1:]):
            positions[a.start % STEPS_PER_BAR] += 1
            interval = b.start - a.start
            intervals[min(interval, 32)] += 1
            if 2 <= interval <= 16:
                total[interval] += 1
                if a.end < b.start:
                    early[interval] += 1
                    gaps[interval, min(b.start - a.end, 3)] += 1
        for start in range(0, notes[-1].end if notes else 0, 8 * STEPS_PER_BAR):
            piece = [(a, b) for a, b in zip(notes, notes[1:]) if start <= a.start < start + 8 * STEPS_PER_BAR
                     and b.start - a.start >= 2]
            if len(piece) >= 8:
                pieces.append(sum(a.end < b.start for a, b in piece) / len(piece))
    return {"songs": len(train), "onset_share": (positions / positions.sum()).round(4).tolist(),
            "ioi_share": (intervals[1:17] / intervals.sum()).round(4).tolist(),
            "short_share": {i: round(early[i] / total[i], 2) for i in range(2, 9)},
            "gap_share": {i: (gaps[i, 1:] / gaps[i, 1:].sum()).round(2).tolist() for i in range(2, 6)},
            "short_share_per_piece": [round(float(np.mean(pieces)), 2), round(float(np.std(pieces)), 2)]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--lines", type=Path, default=LINES)
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", action="store_true", help="recount the onset and interval shares")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.grid:
        print(json.dumps(grid(args.folder)))
        return
    model = load_model(*([str(args.weights)] if args.weights else []))
    protocol = prepare(args.folder)
    lines = load_lines(args.lines)
    rows = [{"set": "prompts of 1-3 lines", **alignment(model, protocol, prompts(lines), args.seed)},
            {"set": "8 bars, 2-6 lines", **musical(model, protocol, lines, args.seed)}]
    print_rows(rows, args.json)


if __name__ == "__main__":
    main()
