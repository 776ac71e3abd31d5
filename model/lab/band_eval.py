"""The arrangement protocol of EVALUATION.md ("The band"), beside real POP909 measured the same way.

    python -m model.lab.band_eval POP909_FOLDER [--variations 4] [--style pop] [--json]

Held-out songs (ids divisible by 10), primer = their first 2 (annotated) bars, chords = their own
annotated chords for the next 8 bars typed as a lead sheet (model.musical_eval.sheet_chords), the
primer's own chords under the primer. The product continues each primer under those chords with
the CLI's defaults, then arranges primer + continuation (model.band.arrange, the default style).
Measured over the 8 continuation bars, against the chords as given:
- fit: the duration-weighted share of keys and bass notes whose pitch class is in the chord
  sounding at their onset (no-chord steps left out), as the chord-tone protocol;
- clash: the share of melody onsets at which a sounding accompaniment note (keys or bass; drums
  have no pitch) lies a minor second or major seventh away, in any octave;
- root: the share of chord changes (a new chord, not N) where the bass starts the chord's root
  (its slash bass for a slash chord) within a beat (4 steps) either side;
- density: accompaniment (keys + bass) note onsets per bar.
Real POP909: the song's own PIANO track over the same 8 bars under the same chords (fit, density,
root from its notes below middle C), and the real melody against it (clash). The real melodies
arranged by the product are a third row (what the arranger does, whatever the melody model does).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT, events_to_notes

PRIMER_STEPS = 2 * STEPS_PER_BAR
PIECE_STEPS = 8 * STEPS_PER_BAR
MIDDLE_C = 60


@dataclass(frozen=True)
class Sounding:
    start: float
    end: float
    pitch: int


def fit_counts(notes: list[Sounding], chords: list) -> tuple[float, float]:
    inside = total = 0.0
    for n in notes:
        step = int(round(n.start))
        chord = chords[step] if 0 <= step < len(chords) else None
        if chord is None:
            continue
        length = n.end - n.start
        total += length
        inside += length * (n.pitch % 12 in chord.pitch_classes)
    return inside, total


def clash_counts(melody: list, accompaniment: list[Sounding]) -> tuple[int, int]:
    clashes = 0
    for m in melody:
        if any(a.start <= m.start + 0.5 and a.end > m.start + 0.5 and (m.pitch - a.pitch) % 12 in (1, 11)
               for a in accompaniment):
            clashes += 1
    return clashes, len(melody)


def root_counts(bass: list[Sounding], chords: list, first: int) -> tuple[int, int]:
    hits = changes = 0
    for step in range(max(first, 1), len(chords)):
        chord = chords[step]
        if chord is None or chord == chords[step - 1]:
            continue
        changes += 1
        want = chord.bass if chord.bass is not None else chord.root
        hits += any(abs(b.start - step) <= STEPS_PER_BEAT and b.pitch % 12 == want for b in bass)
    return hits, changes


class Tally:
    def __init__(self):
        self.sums = {k: [0.0, 0.0] for k in ("fit", "clash", "root", "density")}

    def add(self, name: str, counts: tuple[float, float]) -> None:
        self.sums[name][0] += counts[0]
        self.sums[name][1] += counts[1]

    def row(self, label: str) -> dict:
        return {"set": label, **{k: (a / b if b else None) for k, (a, b) in self.sums.items()}}


def measure(tally: Tally, melody: list, keys: list[Sounding], bass: list[Sounding], chords: list) -> None:
    """One piece, every list on the piece's steps with the continuation at PRIMER_STEPS.."""
    window = [n for n in keys + bass if PRIMER_STEPS <= n.start < PRIMER_STEPS + PIECE_STEPS]
    bass_window = [n for n in bass if PRIMER_STEPS - STEPS_PER_BEAT <= n.start < PRIMER_STEPS + PIECE_STEPS]
    tune = [m for m in melody if PRIMER_STEPS <= m.start < PRIMER_STEPS + PIECE_STEPS]
    tally.add("fit", fit_counts(window, chords))
    tally.add("clash", clash_counts(tune, keys + bass))
    tally.add("root", root_counts(bass_window, chords[: PRIMER_STEPS + PIECE_STEPS], PRIMER_STEPS))
    tally.add("density", (len(window), PIECE_STEPS / STEPS_PER_BAR))


def arranged(tally: Tally, events: list[int], chords: list, style: str, seed: int) -> None:
    from model.band.arrange import arrange  # noqa: PLC0415

    arrangement = arrange(events, chords, 120.0, style, seed=seed, primer_steps=PRIMER_STEPS)
    keys = [Sounding(n.start, n.end, n.pitch) for p in arrangement.parts if p.name in ("KEYS", "GUITAR", "CHORDS")
            for n in p.notes]
    bass = [Sounding(n.start, n.end, n.pitch) for p in arrangement.parts if p.name == "BASS" for n in p.notes]
    if style == "none":  # block chords: their lowest note is the bass
        bass = [k for k in keys if k.pitch < 53]
        keys = [k for k in keys if k.pitch >= 53]
    measure(tally, events_to_notes(events), keys, bass, chords)


def evaluate(folder: Path, style: str = "pop", variations: int = 4, seed: int = 0, generate: bool = True,
             limit: int | None = None, also: tuple[str, ...] = ()) -> list[dict]:
    """The protocol's rows: real POP909, the real melodies arranged in `style` (and in each of
    `also`), the product's continuations arranged in `style`."""
    from model.lab.musical_eval import _continuation_start, prepare, sheet_chords  # noqa: PLC0415
    from model.lab.pop909 import song_chords  # noqa: PLC0415
    from model.music.midi_io import read_midi  # noqa: PLC0415

    protocol = prepare(folder)
    songs = protocol.songs[:limit] if limit else protocol.songs
    real, product = Tally(), Tally()
    arranged_real = {name: Tally() for name in (style, *also)}
    pieces = []
    for index, song in enumerate(songs):
        start = _continuation_start(folder, song)
        under_primer = song_chords(folder / song.song_id)[start - PRIMER_STEPS : start]
        under_primer += [None] * (PRIMER_STEPS - len(under_primer))
        chords = under_primer + sheet_chords(folder, song)[1]
        primer, continuation = protocol.primers[index], protocol.real[index]
        pieces.append((primer, chords))
        # real POP909: the PIANO track over the same steps
        midi = read_midi(folder / song.song_id / f"{song.song_id}.mid", max_bytes=64 * 1024 * 1024)
        piano = next((t for t in midi.tracks if t.name.strip().upper() == "PIANO"), None)
        if piano is not None:
            shift = PRIMER_STEPS - start
            notes = [Sounding(n.start + shift, n.end + shift, n.pitch) for n in piano.notes
                     if 0 <= n.start + shift < PRIMER_STEPS + PIECE_STEPS]
            measure(real, events_to_notes(primer + continuation), [n for n in notes if n.pitch >= MIDDLE_C],
                    [n for n in notes if n.pitch < MIDDLE_C], chords)
        for name, tally in arranged_real.items():
            arranged(tally, primer + continuation, chords, name, seed)
    rows = [real.row("real POP909 (PIANO, real melody)")]
    rows += [tally.row(f"real melody, arranged ({name})") for name, tally in arranged_real.items()]
    if generate:
        from model.lab.musical_eval import generate as continue_all  # noqa: PLC0415
        from model.melody.sampling import SamplingOptions, load_model  # noqa: PLC0415

        options = SamplingOptions(bars=PIECE_STEPS // STEPS_PER_BAR, variations=variations, seed=seed)
        protocol.primers, protocol.songs = protocol.primers[: len(songs)], songs
        generated = continue_all(load_model(), protocol, options, [c[PRIMER_STEPS:] for _, c in pieces])
        for number, continuation in enumerate(generated):
            primer, chords = pieces[number // variations]
            arranged(product, primer + continuation, chords, style, seed + number % variations)
        rows.append(product.row(f"product, arranged ({style}, {variations} variations)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.lab.band_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--style", default="pop")
    parser.add_argument("--also", default="", help="more styles for the real melodies, comma-separated")
    parser.add_argument("--variations", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="only the first N held-out songs")
    parser.add_argument("--no-generate", dest="generate", action="store_false",
                        help="real melodies only (no network)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    also = tuple(name for name in args.also.split(",") if name)
    rows = evaluate(args.folder, args.style, args.variations, args.seed, args.generate, args.limit, also)
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| set | fit | clash | root | onsets/bar |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [row["fit"], row["clash"], row["root"], row["density"]]
        print(f"| {row['set']} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells[:3])
              + f" | {cells[3]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
