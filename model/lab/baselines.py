"""Reference models scored with the same protocol and split as ours (BENCHMARKS.md):

    python -m model.lab.baselines ngram FOLDER [--order 3]     # Witten-Bell n-gram
    python -m model.lab.baselines lstm FOLDER --steps 3000     # plain 2x128 LSTM (Magenta basic_rnn size)

Both train on the training split and print the held-out score as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from model.lab.data import Song, load_songs, sample_batch, split
from model.lab.evaluate import FIRST_SCORED_STEP, score
from model.music.events import NUM_CLASSES, PAD


class WittenBellNGram:
    """Interpolated Witten-Bell n-gram over events, backing off to a uniform distribution."""

    def __init__(self, order: int):
        self.order = order
        self.counts: list[dict[tuple, Counter]] = [defaultdict(Counter) for _ in range(order)]

    def fit(self, songs: list[Song]) -> WittenBellNGram:
        for song in songs:
            events = [PAD] * (self.order - 1) + song.events.tolist()
            for t in range(self.order - 1, len(events)):
                for n in range(self.order):  # context length n
                    self.counts[n][tuple(events[t - n : t])][events[t]] += 1
        return self

    def prob(self, context: tuple, event: int) -> float:
        p = 1.0 / NUM_CLASSES
        for n in range(self.order):
            counter = self.counts[n].get(context[len(context) - n :] if n else ())
            if not counter:
                continue
            total, distinct = sum(counter.values()), len(counter)
            weight = total / (total + distinct)
            p = weight * counter[event] / total + (1 - weight) * p
        return p

    def score(self, songs: list[Song]) -> dict:
        nll, steps = 0.0, 0
        for song in songs:
            events = [PAD] * (self.order - 1) + song.events.tolist()
            for t in range(self.order - 1 + FIRST_SCORED_STEP, len(events)):
                nll -= math.log(self.prob(tuple(events[t - self.order + 1 : t]), events[t]))
                steps += 1
        return {"nll": nll / max(steps, 1), "steps": steps}


class PlainLSTM(nn.Module):
    """Magenta basic_rnn size: event embedding -> 2x128 LSTM -> softmax; primer and continuation
    read as one sequence (the same forward(primer, target) interface as MelodyNet)."""

    def __init__(self, hidden: int = 128, layers: int = 2, embed: int = 64):
        super().__init__()
        self.embed = nn.Embedding(NUM_CLASSES + 1, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True, dropout=0.1)
        self.out = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, primer: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sequence = torch.cat([primer, target], 1)
        hidden, _ = self.lstm(self.embed(sequence[:, :-1]))
        return self.out(hidden[:, primer.shape[1] - 1 :])  # predictions of the target steps


def train_lstm(train_songs: list[Song], held_out: list[Song], steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PlainLSTM()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in tqdm(range(steps), desc="plain LSTM"):
        model.train()
        primer, target, mask = (torch.as_tensor(a) for a in sample_batch(train_songs, 64, 32, 192, rng, 5))
        logits = model(primer, target)
        loss = F.cross_entropy(logits[mask], target[mask].clamp(max=PAD - 1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return score(model, held_out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["ngram", "lstm"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--order", type=int, default=3, help="n-gram order")
    parser.add_argument("--steps", type=int, default=3000, help="LSTM training steps (batch 64 x 224 steps)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    train_songs, held_out = split(load_songs(args.folder)[0])
    began = time.time()
    if args.model == "ngram":
        result = WittenBellNGram(args.order).fit(train_songs).score(held_out)
    else:
        result = train_lstm(train_songs, held_out, args.steps, args.seed)
    result.update(model=args.model, songs=len(held_out), seconds=round(time.time() - began, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
