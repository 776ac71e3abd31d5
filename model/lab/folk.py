"""Folk tunes for the out-of-genre check of the musical protocol, in the POP909 layout.

    python -m model.lab.folk OUT [--collection fink0] [--count 100]
    python -m model.lab.folk OUT --training    # every other collection's tunes, for model/lab/key_profile.py

Reads public-domain German folk songs from the Essen Folksong Collection (the ABC files that
ship in music21's corpus: `pip install music21==10.5.0`, the `eval` extra), keeps 4/4 tunes of at
least 10 bars, and writes OUT/NNN/NNN.mid (one track named MELODY, pickups moved so that bar lines
fall on the grid's) and OUT/NNN/key_audio.txt (the tune's key signature as its major key), so that
`python -m model.lab.musical_eval OUT --all` scores the sampler on them. `--training` writes the 4/4
tunes of every other collection instead (1,074; none of fink0's, nor a tune that opens like one
of fink0's: the same first 12 intervals and lengths), for learning from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT, Note, notes_to_events
from model.music.midi_io import write_midi

MIN_BARS = 10  # a 2-bar primer and the 8 bars to compare with
KEY_NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]


def tune_notes(score) -> list[Note] | None:
    """A 4/4 tune's notes on the grid, bar lines on multiples of 16 steps; None for other metres."""
    signatures = {ts.ratioString for ts in score.recurse().getElementsByClass("TimeSignature")}
    if signatures != {"4/4"}:
        return None
    part = score.parts[0] if score.parts else score
    measures = list(part.getElementsByClass("Measure"))
    pickup = float(measures[0].paddingLeft) if measures else 0.0  # a pickup bar starts late
    notes = []
    for note in part.stripTies().flatten().notes:
        pitch = note.pitches[-1].midi  # a chord's top note
        start = round((float(note.getOffsetInHierarchy(part)) + pickup) * STEPS_PER_BEAT)
        end = start + max(1, round(float(note.quarterLength) * STEPS_PER_BEAT))
        notes.append(Note(start, end, pitch))
    if not notes or notes[-1].end < MIN_BARS * STEPS_PER_BAR:
        return None
    return notes


def major_key(score) -> str:
    signatures = list(score.recurse().getElementsByClass("KeySignature"))
    sharps = signatures[0].sharps if signatures else 0
    return f"{KEY_NAMES[7 * sharps % 12]}:maj"  # a minor tune's signature names its relative major


def write_folder(out: Path, collection: str, count: int) -> int:
    from music21 import corpus  # noqa: PLC0415 - an evaluation-only dependency

    return _write(out, corpus.parse(f"essenFolksong/{collection}").scores, count, set())


def write_training_folder(out: Path, held_out: str = "fink0") -> int:
    """Every 4/4 tune of the other Essen collections (not the test files), as OUT/NNNN."""
    from music21 import corpus  # noqa: PLC0415 - an evaluation-only dependency

    kept_apart = {_opening(n) for n in map(tune_notes, corpus.parse(f"essenFolksong/{held_out}").scores) if n}
    written = 0
    for path in sorted((Path(corpus.__file__).parent / "essenFolksong").glob("*.abc")):
        if path.stem.startswith((held_out[:-1], "test")):
            continue
        opus = corpus.parse(f"essenFolksong/{path.stem}")
        written += _write(out, getattr(opus, "scores", [opus]), None, kept_apart, first=written + 1)
    return written


def _opening(notes: list[Note]) -> tuple:
    """A tune's first 12 intervals and note lengths: the same tune in two collections shares them."""
    return tuple(n.pitch - notes[0].pitch for n in notes[:12]) + tuple(n.end - n.start for n in notes[:12])


def _write(out: Path, scores, count: int | None, kept_apart: set, first: int = 1) -> int:
    written = 0
    for score in scores:
        notes = tune_notes(score)
        if notes is None or _opening(notes) in kept_apart:
            continue
        number = first + written
        written += 1
        folder = out / (f"{number:03d}" if count is not None else f"{number:04d}")
        folder.mkdir(parents=True, exist_ok=True)
        events, _ = notes_to_events(notes)
        (folder / f"{folder.name}.mid").write_bytes(write_midi(events, 100.0, track_name="MELODY"))
        (folder / "key_audio.txt").write_text(f"0.0\t100000.0\t{major_key(score)}\n")
        if written == count:
            break
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--collection", default="fink0", help="an Essen collection in music21's corpus")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--training", action="store_true", help="every other collection's tunes")
    args = parser.parse_args(argv)
    written = write_training_folder(args.out) if args.training else write_folder(args.out, args.collection, args.count)
    print(f"wrote {written} tunes to {args.out}")


if __name__ == "__main__":
    main()
