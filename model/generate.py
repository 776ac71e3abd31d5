"""Continue a melody from the command line: typed notes or a MIDI sketch -> MIDI files.

    python -m model.generate "C4 E4 G4 A4" --bars 8 --variations 4 --out out
    python -m model.generate "C4 E4 G4 A4" --chords "C | G | Am F | F" --bars 8 --out out
    python -m model.generate --midi sketch.mid --out out
    python -m model.generate "C4 E4 G4 A4" --lyrics "walking down the empty street / every window dark" --out out

Writes DIR/variation-N.mid (the primer, then the continuation, at the primer's tempo, arranged for
a band: MELODY, KEYS or GUITAR, BASS and DRUMS tracks, chord symbols as markers) and prints the key
it heard, the chords and each path. With --chords (a lead sheet: bars split by "|", a bar's chords
share it evenly, the list repeats to cover the continuation) the continuation follows them;
without, it goes on over a sketch's own chords, else chords are suggested as the bot suggests them
(model.band.harmony); --chords off: no harmony. --style picks the band (--style none: the melody
over block chords). Given both a sketch and typed notes, the sketch wins and a notice on
stderr says the typed notes were ignored, as the bot's !continue does. Mistakes in the notes, the
file or the options end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from model.band.styles import DEFAULT_STYLE, StyleError, resolve_style, style_list
from model.defaults import BPM_RANGE, DEFAULT_BPM, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, length_problem
from model.lyrics.syllables import LyricsError
from model.music.chords import ChordError, lead_sheet, parse_lead_sheet
from model.music.events import STEPS_PER_BAR
from model.music.midi_io import MidiError, write_arrangement
from model.music.primer import (
    DEFAULT_MAX_BARS,
    NOTATION,
    Primer,
    PrimerError,
    primer_from_midi,
    primer_from_text,
)


class UsageError(Exception):
    """A mistake of the caller, reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m model.generate",
        description=__doc__,
        epilog="Typed notes:\n" + NOTATION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notes", nargs="?", default="", help='typed notes, e.g. "C4 E4 G4 A4" (quote them)')
    parser.add_argument("--midi", type=Path,
                        help="a MIDI sketch to continue (its melody track); typed notes are then ignored")
    parser.add_argument("--max-bars", type=int, default=DEFAULT_MAX_BARS, help="bars of a sketch kept, its last ones")
    parser.add_argument("--bars", type=int, help="length of each continuation in bars (default 8; with --lyrics, "
                                                  "2 a line)")
    parser.add_argument("--variations", type=int, default=4, help="continuations to write (default 4)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help=f"> 1 wilder, < 1 safer (default {DEFAULT_TEMPERATURE:g})")
    parser.add_argument("--top-p", type=float, default=DEFAULT_TOP_P,
                        help=f"nucleus sampling mass (default {DEFAULT_TOP_P:g})")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same result (default 0)")
    parser.add_argument("--program", "--instrument", type=int, default=0, metavar="0-127",
                        help="General MIDI program of the written track (default 0, piano)")
    parser.add_argument("--bpm", type=float, help=f"tempo (default {DEFAULT_BPM:g} for typed notes, the sketch's)")
    parser.add_argument("--no-key", action="store_true", help="allow notes outside the primer's key")
    parser.add_argument("--max-rest", type=int, metavar="STEPS",
                        help="sixteenths a note may be held or a rest may last, 0 for no limit (default: 16, 32 "
                             "for a sketch of 8 bars or more, or the sketch's own longest)")
    parser.add_argument("--chords", default="", metavar="LEAD_SHEET",
                        help='chords for the continuation, e.g. "C | G | Am F | F" (bars split by |)')
    parser.add_argument("--style", default=DEFAULT_STYLE, help=f"the band that plays it: {style_list()}")
    parser.add_argument("--lyrics", default="", metavar="WORDS",
                        help='words to set, lines split by / (e.g. "walking down the street / every window dark")')
    parser.add_argument("--melisma", action="store_true", help="with --lyrics: a syllable may take two slurred notes")
    parser.add_argument("--form", help="the continuation's sections, e.g. BA (B new, then the sketch, A) or B2A6 "
                        "(a number: a section's bars); default: drawn by the form plan")
    parser.add_argument("--weights", type=Path, help="network weights (default: the shipped ones)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: sampling goes step by step, more threads gain "
                             "little and slow down badly when the cores are busy)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the MIDI files (default out)")
    return parser


def load_primer(notes: str, midi: Path | None, max_bars: int) -> Primer:
    """The primer from a sketch, else from typed notes. With both, the sketch wins (typed notes are
    not even parsed), as in the bot: one behaviour in the product; `run` says they were ignored."""
    if midi is None:
        if not notes.strip():
            raise UsageError("give notes to continue, e.g. \"C4 E4 G4 A4\", or --midi FILE")
        return primer_from_text(notes)
    try:
        primer = primer_from_midi(midi, max_bars)
    except MidiError as error:
        raise MidiError(f"{midi}: {error}") from error
    return primer


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.program <= 127:
        raise UsageError(f"--program must be between 0 and 127, not {args.program}")
    if args.bpm is not None and not BPM_RANGE[0] <= args.bpm <= BPM_RANGE[1]:
        raise UsageError(f"--bpm must be between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g}, not {args.bpm:g}")
    if args.max_bars < 1:
        raise UsageError(f"--max-bars must be at least 1, not {args.max_bars}")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, not {args.threads}")
    primer = load_primer(args.notes, args.midi, args.max_bars)  # before torch loads: bad notes fail fast
    style = resolve_style(args.style)  # so do bad styles and chords
    harmony = args.chords.strip().lower() not in ("off", "none")
    sheet = parse_lead_sheet(args.chords) if args.chords.strip() and harmony else None
    if sheet is None and harmony and primer.chords is not None and any(primer.chords):
        sheet = parse_lead_sheet(lead_sheet(primer.chords))  # the sketch's own progression goes on, as in the bot
    words = None
    if args.lyrics.strip():  # and bad words, or too many for --bars
        from model.defaults import MAX_BARS
        from model.lyrics.setting import set_lyrics

        words = set_lyrics(args.lyrics, primer.events, args.bars, args.variations, args.seed, args.melisma, MAX_BARS)
        args.bars = words.bars
    args.bars = 8 if args.bars is None else args.bars
    if args.bpm is None and primer.tempo_remark:
        print(f"note: {primer.tempo_remark}", file=sys.stderr)
    problem = length_problem(args.bars, args.bpm or primer.bpm)
    if problem:
        raise UsageError(problem)

    import torch  # about 1.5 s

    from model.melody.form import parse_form
    from model.melody.network import DEFAULT_WEIGHTS
    from model.melody.sampling import (
        SamplingOptions,
        continuation_chords,
        continue_melodies,
        detect_key,
        load_model,
        prepare_primer,
    )

    torch.set_num_threads(args.threads)

    options = SamplingOptions(bars=args.bars, variations=args.variations, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed, keep_key=not args.no_key,
                              rhythm=words.rhythm if words else None)
    if args.max_rest is not None:
        options = replace(options, max_rest=args.max_rest)
    if args.form:
        if words:
            raise UsageError("--form cannot be combined with --lyrics yet: the words decide where the notes go")
        try:
            parse_form(args.form, options.bars)
        except ValueError as error:
            raise UsageError(f"--form: {error}") from error
        options = replace(options, form=args.form)
    try:
        options.check()
    except ValueError as error:
        raise UsageError("--" + str(error).replace("_", "-", 1)) from error  # "top_p must be ..."
    weights = args.weights or DEFAULT_WEIGHTS
    if not weights.is_file():
        raise UsageError(f"no weights at {weights}; pass --weights PATH or export a trained model there "
                         f"(python -m model.lab.train FOLDER --export {weights})")
    try:
        model = load_model(str(weights))
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"cannot load weights from {weights} (not a checkpoint?): {first_line}") from error

    bpm = args.bpm or primer.bpm
    try:
        events = prepare_primer(primer.events)
    except ValueError as error:  # rests so long that the last 64 bars hold no note
        raise UsageError(str(error)) from error
    key = detect_key(events)
    chords = continuation_chords(sheet, len(events), options.bars * STEPS_PER_BAR) if sheet else None
    continuations = continue_melodies(model, [events], [options], chords=[chords])[0]
    bars = len(events) / STEPS_PER_BAR
    if args.midi is not None and args.notes.strip():  # told only now, so a failed run still has one stderr line
        print(f"note: you gave a sketch ({args.midi}), so the typed notes were ignored", file=sys.stderr)
    print(f"primer: {primer.notes} notes, {bars:g} bar{'s' * (bars != 1)} from {primer.source}, "
          f"{bpm:g} bpm" + (f" (kept the last {args.max_bars} bars)" if primer.trimmed_bars else ""))
    print(f"key: {key.name if key else 'none'}" + (" (not enforced)" if args.no_key else ""))
    from model.band.arrange import arrange
    from model.band.harmony import chords_under

    under_primer = primer.chords[: len(events)] if harmony and primer.chords is not None else None
    progressions = [chords_under(events + c, len(events), under_primer, chords) if harmony else None
                    for c in continuations]
    sheets = list(dict.fromkeys(lead_sheet(p[len(events):]) for p in progressions if p))
    for number, sheet_text in enumerate(sheets, 1):
        label = "" if len(sheets) == 1 else f" {number}"
        print(f"chords{label}: {sheet_text}" + ("" if chords else " (suggested)"))
    print(f"style: {style}")
    if words:
        print(f"words: {words.lyrics.display()} ({args.bars} bars)")
    args.out.mkdir(parents=True, exist_ok=True)
    for number, (continuation, progression) in enumerate(zip(continuations, progressions), 1):
        path = args.out / f"variation-{number}.mid"
        band = arrange(events + continuation, progression, bpm, style, seed=args.seed * 16 + number - 1,
                       primer_steps=len(events), melody_program=args.program)
        path.write_bytes(write_arrangement(band, bpm, progression,
                                           lyrics=words.placements(number - 1) if words else None))
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except (UsageError, PrimerError, MidiError, ChordError, StyleError, LyricsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the output folder cannot be written
        print(f"error: {error.strerror}: {error.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
