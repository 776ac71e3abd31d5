"""Train the melody network on a POP909-style folder.

    python -m model.lab.train path/to/pop909 --out runs/main --steps 2000 --hidden 192 --export model/weights/melody.pt
    python -m model.lab.train path/to/pop909 --out runs/chords --init model/weights/melody.pt --steps 3000 --lr 1e-3
    python -m model.lab.train path/to/pop909 --extra path/to/folk --extra-share 0.25 ...

Cuts (primer, continuation) pairs from random bar lines of the training songs (their annotated
downbeats, model.lab.data.Song.aligned), transposed at random, with the songs' chords as decoder
inputs (dropped from a share of the windows, so one model serves requests with and without
chords); scores the held-out split (every 10th song id) with the evaluation protocol, told each
song's downbeat phase, without chords (the number that picks the best checkpoint) and with them;
keeps the best checkpoint; resumes from `--out` when a checkpoint is there. `--init` starts from
other weights (a model without chord inputs gets them, initially silent). `--extra` adds another
folder of songs (e.g. folk tunes from model/lab/folk.py) to the training windows only: a share
`--extra-share` of the windows comes from it, and the held-out split stays the main folder's.
`--export` writes the small float16 weights file the project ships. `--plan` gives the decoder
the form plan as an input (issue 23): each bar's label as its song has it (new, returning, rest:
model.melody.form.bar_labels) and the next bar's, to all but a share `--plan-dropout` of the
windows; the held-out split is then also scored told its songs' labels (`nll_plan`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.lab.data import load_songs, sample_chord_batch, split
from model.lab.evaluate import score
from model.melody.network import MelodyNet, NetworkConfig, load_checkpoint, save_checkpoint
from model.music.events import PAD


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer steps
    batch_size: int = 64  # windows per step
    primer_steps: tuple[int, ...] = (8, 16, 32, 32, 48, 64)  # primer length drawn per batch, in steps
    target_steps: int = 192  # continuation length per window, in steps
    max_shift: int = 5  # transposition augmentation, +- semitones
    lr: float = 2e-3  # peak learning rate (cosine decay to 5% after warm-up)
    warmup: int = 200  # steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 500  # steps between held-out scorings
    save_every: int = 100  # steps between resumable checkpoints
    chord_dropout: float = 0.4  # share of windows trained without chords
    plan_dropout: float = 0.3  # share of windows told no form plan (models with plan inputs)
    extra_share: float = 0.0  # share of windows cut from the --extra folder's songs
    minutes: float = 0.0  # wall-clock budget (0: none); the schedule then follows the share of it used
    seed: int = 1234


def learning_rate(step: int, config: TrainConfig, time_used: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5% over the steps or, when the run has a time budget
    (`minutes`: a lent GPU's lease, whose step rate is not known before), over whichever share of
    steps or time is used up first."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = max((step - config.warmup) / max(1, config.steps - config.warmup), time_used)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def warm_start(model: MelodyNet, path: Path) -> None:
    """Load the weights of `path` into model; decoder input columns the old model lacked (the
    chord inputs, then the plan's, appended last) start at zero, so the model begins as the old one."""
    old, _ = load_checkpoint(path)
    state = model.state_dict()
    for name, value in old.float().state_dict().items():
        if name not in state:
            continue
        if value.shape != state[name].shape:  # decoder.weight_ih_l0: (4H, old inputs)
            grown = torch.zeros_like(state[name])
            grown[:, : value.shape[1]] = value
            value = grown
        state[name] = value
    model.load_state_dict(state)


def evaluate(model: MelodyNet, held_out, device: str) -> dict:
    """The protocol's score without chords, and with the songs' chords (models with chord inputs)."""
    result = score(model, held_out, device=device)
    if model.config.chords:
        with_chords = score(model, held_out, device=device, chords=True)
        result.update(nll_chords=with_chords["nll"], note_accuracy_chords=with_chords["note_accuracy"])
    if model.config.plan:
        result["nll_plan"] = score(model, held_out, device=device, plan=True)["nll"]
    return result


def train(folder: Path, out: Path, config: TrainConfig, net: NetworkConfig, device: str, threads: int,
          init: Path | None = None, extra: Path | None = None) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    songs, _ = load_songs(folder)
    train_songs, held_out = split(songs)
    print(f"{len(train_songs)} training songs, {len(held_out)} held out")
    extra_songs = load_songs(extra)[0] if extra is not None else []
    if extra_songs:
        print(f"{len(extra_songs)} more training songs from {extra} ({config.extra_share:.0%} of the windows)")

    out.mkdir(parents=True, exist_ok=True)
    last, best = out / "last.pt", out / "best.pt"
    model = MelodyNet(net).to(device)
    if init is not None:
        warm_start(model, init)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start, best_nll, history = 0, float("inf"), []
    if last.exists():
        checkpoint = torch.load(last, map_location=device, weights_only=False)
        model = MelodyNet(NetworkConfig(**checkpoint["model_args"])).to(device)
        model.load_state_dict(checkpoint["state_dict"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        optimizer.load_state_dict(checkpoint["optimizer"])
        start, best_nll, history = checkpoint["step"], checkpoint["best_nll"], checkpoint["history"]
        rng = np.random.default_rng([config.seed, start])  # a resumed run draws fresh batches
        print(f"resumed at step {start} (best held-out nll {best_nll:.4f})")
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters on {device}")

    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="training")
    began, running = time.time(), None
    time_used = lambda: (time.time() - began) / (60 * config.minutes) if config.minutes else 0.0  # noqa: E731
    scored_tenths = 0  # with a time budget, the held-out split is scored at each tenth of it too
    for step in progress:
        model.train()
        primer_steps = int(rng.choice(config.primer_steps))
        primer, target, mask, chords, plan = (torch.as_tensor(a).to(device) for a in sample_chord_batch(
            train_songs, config.batch_size, primer_steps, config.target_steps, rng, config.max_shift,
            config.chord_dropout, extra_songs, config.extra_share, config.plan_dropout if net.plan else None))
        logits = model(primer, target, chords=chords, plan=plan)
        loss = F.cross_entropy(logits[mask], target[mask].clamp(max=PAD - 1))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config, time_used())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        progress.set_postfix(loss=f"{running:.3f}", refresh=False)  # the bar redraws at its own pace

        done, used = step + 1, time_used()
        out_of_time = used >= 1.0
        last_step = done == config.steps or out_of_time
        extra = dict(step=done, history=history, train_config=asdict(config))
        tenth_reached = config.minutes and int(used * 10) > scored_tenths
        scored_tenths = max(scored_tenths, int(used * 10))
        if done % config.eval_every == 0 or last_step or tenth_reached:
            result = evaluate(model, held_out, device)
            result.update(step=done, train_loss=running, minutes=(time.time() - began) / 60)
            history.append(result)
            tqdm.write(json.dumps(result))
            if result["nll"] < best_nll:
                best_nll = result["nll"]
                save_checkpoint(best, model, **extra)
        if done % config.eval_every == 0 or done % config.save_every == 0 or last_step or tenth_reached:
            save_checkpoint(last, model, optimizer=optimizer.state_dict(), best_nll=best_nll, **extra)
        if out_of_time:
            tqdm.write(f"time budget of {config.minutes:g} minutes used at step {done}")
            break
    return history[-1] if history else {}


def export(checkpoint_path: Path, weights_path: Path) -> None:
    """Write the model's weights in float16 with its constructor arguments (a few MB)."""
    model, checkpoint = load_checkpoint(checkpoint_path)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_args": checkpoint["model_args"], "state_dict": state,
                "history": checkpoint.get("history", []), "train_config": checkpoint.get("train_config")},
               weights_path)
    print(f"wrote {weights_path} ({weights_path.stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of songs laid out as NNN/NNN.mid")
    parser.add_argument("--out", type=Path, default=Path("runs/main"), help="checkpoint folder (resumes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--export", type=Path, help="after training, write float16 weights here")
    parser.add_argument("--init", type=Path, help="start from these weights (ignored when resuming)")
    parser.add_argument("--extra", type=Path, help="another folder of songs, for training windows only")
    parser.add_argument("--no-chords", dest="chords", action="store_false", help="a model without chord inputs")
    parser.add_argument("--plan", action="store_true", help="a model told each bar's form-plan label (issue 23)")
    for group in (TrainConfig, NetworkConfig):
        for f in fields(group):
            if f.type in ("int", "float"):
                parser.add_argument(f"--{f.name.replace('_', '-')}", type=eval(f.type), default=f.default)
    args = parser.parse_args(argv)
    pick = lambda cls: cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})  # noqa: E731
    train(args.folder, args.out, pick(TrainConfig), pick(NetworkConfig), args.device, args.threads, args.init,
          args.extra)
    if args.export:
        export(args.out / "best.pt", args.export)


if __name__ == "__main__":
    main()
