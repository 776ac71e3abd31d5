"""Score a model on a POP909-style folder with the protocol of EVALUATION.md.

    python -m model.lab.evaluate FOLDER --json [--checkpoint PATH] [--held-out] [--chords] [--no-phase]

For each song the first 32 steps are the primer; every later step is predicted from everything
before it (teacher forcing). As in the reference counts (912,292 predicted steps on 818 songs),
the first step scored is step 33: targets are events[1:] and the first 32 of them are primer.
The steps are the protocol's (its grid counts bars from the file's tick 0); our network is also
told where the song's annotated bars begin (Song.phase, from beat_midi.txt) for its position in
the bar, unless --no-phase (then it counts bars from the protocol's grid, as before).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.lab.data import Song, load_songs, split, window_plan_codes
from model.melody.network import DEFAULT_WEIGHTS, NO_CHORD, load_checkpoint
from model.music.events import FIRST_NOTE_ON, PAD

PRIMER_STEPS = 32
FIRST_SCORED_STEP = PRIMER_STEPS + 1


@torch.no_grad()
def score(model, songs: list[Song], batch_size: int = 16, device: str = "cpu", chords: bool = False,
          phase: bool = True, plan: bool = False) -> dict:
    """Total nll (nats) and note accuracy over the scored steps of all songs; with chords, a
    model with chord inputs is told each song's annotated chords; with phase, our network is
    told where each song's bars begin (the baselines have no positions); with plan, a model with
    plan inputs is told each bar's label as its song has it (what the labels are worth)."""
    model.eval()
    total_nll, steps, notes, notes_right = 0.0, 0, 0, 0
    ordered = sorted((s for s in songs if len(s.events) > FIRST_SCORED_STEP), key=lambda s: len(s.events))
    for i in range(0, len(ordered), batch_size):
        batch = ordered[i : i + batch_size]
        longest = max(len(s.events) for s in batch)
        sequence = torch.full((len(batch), longest), PAD, dtype=torch.long)
        codes = torch.full((len(batch), longest), NO_CHORD, dtype=torch.long)
        for row, song in enumerate(batch):
            sequence[row, : len(song.events)] = torch.as_tensor(song.events)
            codes[row, : len(song.events)] = torch.as_tensor(song.chord_codes())
        extra = {"chords": codes.to(device)} if chords and _has_chord_inputs(model) else {}
        if plan and getattr(getattr(model, "config", None), "plan", False):
            extra["plan"] = torch.tensor(np.stack([np.pad(  # aligned() starts at step downbeat_start()
                window_plan_codes(s.plan_labels(), -s.downbeat_start(), PRIMER_STEPS, len(s.events) - PRIMER_STEPS),
                (0, longest - len(s.events))) for s in batch]), device=device)  # fmt: skip
        if phase and getattr(model, "config", None) is not None:  # MelodyNet: bars begin at step `offset`
            extra["offset"] = torch.tensor([s.phase for s in batch], dtype=torch.long, device=device)
        logits = model(sequence[:, :PRIMER_STEPS].to(device), sequence[:, PRIMER_STEPS:].to(device), **extra).cpu()
        # logits[:, k] predicts step PRIMER_STEPS + k; score from FIRST_SCORED_STEP on.
        first = FIRST_SCORED_STEP - PRIMER_STEPS
        logits, truth = logits[:, first:], sequence[:, FIRST_SCORED_STEP:]
        real = truth != PAD
        nll = F.cross_entropy(logits.transpose(1, 2), truth.clamp(max=PAD - 1), reduction="none")
        total_nll += nll[real].sum().item()
        steps += int(real.sum())
        is_note = real & (truth >= FIRST_NOTE_ON)
        notes += int(is_note.sum())
        notes_right += int((is_note & (logits.argmax(-1) == truth)).sum())
    return {
        "nll": total_nll / max(steps, 1),
        "note_accuracy": notes_right / max(notes, 1),
        "steps": steps,
        "notes": notes,
    }


def _has_chord_inputs(model) -> bool:
    config = getattr(model, "config", None)  # the baselines have none
    return bool(config and getattr(config, "chords", False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of songs laid out as NNN/NNN.mid")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_WEIGHTS, help="weights to score")
    parser.add_argument("--held-out", action="store_true", help="score only this project's held-out split")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--chords", action="store_true", help="tell the model each song's annotated chords")
    parser.add_argument("--no-phase", dest="phase", action="store_false",
                        help="count bars from the protocol's grid, not the songs' annotated downbeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    songs, skipped = load_songs(args.folder)
    if args.held_out:
        songs = split(songs)[1]
    model, _ = load_checkpoint(args.checkpoint, args.device)
    result = {"songs": len(songs), "skipped": len(skipped)}
    result.update(score(model, songs, device=args.device, chords=args.chords, phase=args.phase))
    result["chords"] = args.chords and _has_chord_inputs(model)
    result["phase"] = args.phase
    result["checkpoint"] = str(args.checkpoint)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
