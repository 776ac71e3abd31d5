"""The form plan (issue 23): which continuation bars bring a bar of the song back, and which.

Real pop returns to its own material: of the bars that follow a 32-bar stretch of a POP909 song,
half copy one of those 32 bars (onset-in-bar / pitch sets overlapping by 3/4), after a 2-bar start
one in six. The network alone brings back one in five (BENCHMARKS.md, issue 23). So before the
step sampler runs, each variation draws a plan: per whole continuation bar, "new" (the network
decides) or "the bar L bars back" (a context bar, or a continuation bar that the plan itself
placed), and the step sampler then leans hard towards that bar's events (model.melody.stepping,
copy_lag), so a returning bar follows its source while the same-note cap, the key and the
chords still have their say.

A plan is drawn bar by bar from a conditional logit learned on the training songs
(model/lab/form.py, shipped as model/weights/form.json): the options are "new" and each earlier
non-empty bar of the window, and "rest" (a bar where no note starts, a break between sections:
one bar in nine of real continuations) (the context's last WINDOW bars and the bars planned so far), scored
from what a listener of the sketch already knows: is that lag already being followed (the bars
before this one copying the bars before the source), how often the sketch repeats at that lag,
how common the source bar's material is, the lag itself; "new" and "rest" from the sketch's
length, its empty bars, how repetitive it is and what the continuation has done so far (its new
bars, its returning ones). The step sampler keeps a planned-new bar from copying a sketch bar
(model.melody.fresh_bars). A songwriter may ask for the sections instead (`form=BA`: parse_form,
requested_plan): A is the sketch, other letters new, a letter again brings its bars back. Pure
Python and numpy: no torch, no dataset.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from model.defaults import MAX_BARS
from model.music.events import STEPS_PER_BAR, events_to_notes

FORM_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "form.json"
WINDOW = 32  # bars of the context a plan may bring back (as model.lab.c2st's contexts)
COPY_JACCARD = 0.75  # a bar copies another when their (onset in bar, pitch) sets overlap this much
LAGS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # lags with their own weight; others share one
MAX_RUN = 8
REST = -1  # a plan's bar in which no note starts
OPTION_FEATURES = ("following", "following bars", *(f"lag {lag}" for lag in LAGS), "lag other", "log lag",
                   "source material count", "source first heard", "sketch repeats at lag", "source planned",
                   "new copy at 4-bar lag", "first bar following", "lag multiple of 8")  # fmt: skip
NEW_FEATURES = ("bias", "log context bars", "first bar", "bar before new", "sketch repeat share",
                "short sketch", "bar before empty", "bar in continuation", "continuation new so far",
                "continuation copies so far", "sketch empty share")


def bar_sets(events: list[int], start: int = 0) -> list[set[tuple[int, int]]]:
    """Per bar of events whose bar lines lie at `start`, `start` + 16, ... (steps before `start`
    are dropped): the (onset in bar, pitch) of the notes starting in it."""
    bars: list[set[tuple[int, int]]] = [set() for _ in range(max(0, -(-(len(events) - start) // STEPS_PER_BAR)))]
    for note in events_to_notes(events):
        if note.start >= start:
            bars[(note.start - start) // STEPS_PER_BAR].add(((note.start - start) % STEPS_PER_BAR, note.pitch))
    return bars


def jaccard(a: set, b: set) -> float:
    """How alike two bars' (onset in bar, pitch) sets are: shared over all (0 for two empty bars)."""
    return len(a & b) / len(a | b) if a or b else 0.0


def copies(a: set, b: set) -> bool:
    """Whether bar b is a copy of bar a: both non-empty, their (onset in bar, pitch) sets alike."""
    return bool(a) and bool(b) and len(a & b) >= COPY_JACCARD * len(a | b)


def material_ids(bars: list[set]) -> list[int]:
    """Per bar, the id of its material: the id of the latest earlier bar it copies, else a new id
    (its own index); -1 for an empty bar."""
    ids: list[int] = []
    for i, bar in enumerate(bars):
        found = -1 if not bar else i
        if bar:
            for j in range(i - 1, -1, -1):
                if ids[j] >= 0 and copies(bar, bars[j]):
                    found = ids[j]
                    break
        ids.append(found)
    return ids


# What the network is told of the plan (issue 23, NetworkConfig.plan): per decoder step, its bar's
# label and the next bar's, as one code (PLAN_CODES of them; 0: nothing told, the network alone).
LABEL_UNKNOWN, LABEL_NEW, LABEL_RETURN, LABEL_REST = range(4)
PLAN_CODES = 16


def plan_code(label: int, next_label: int) -> int:
    return 4 * label + next_label


def bar_labels(bars: list[set]) -> list[int]:
    """Per bar of a song (bar_sets), what a plan would have called it: LABEL_REST (no note starts),
    LABEL_RETURN (it copies one of the WINDOW bars before it) or LABEL_NEW."""
    labels = []
    for i, bar in enumerate(bars):
        if not bar:
            labels.append(LABEL_REST)
        elif any(copies(bars[j], bar) for j in range(max(0, i - WINDOW), i)):
            labels.append(LABEL_RETURN)
        else:
            labels.append(LABEL_NEW)
    return labels


def repeat_shares(ids: list[int]) -> np.ndarray:
    """(WINDOW + 1,) per lag L, the share of the bars (both non-empty) whose material is that of the
    bar L before."""
    shares = np.zeros(WINDOW + 1)
    arr = np.asarray(ids)
    for lag in range(1, min(WINDOW, len(ids) - 1) + 1):
        a, b = arr[lag:], arr[:-lag]
        both = (a >= 0) & (b >= 0)
        if both.any():
            shares[lag] = float((a[both] == b[both]).sum()) / both.sum()
    return shares


def option_features(ids: list[int], bar: int, lag: int, context_bars: int, shares: np.ndarray) -> list[float]:
    """The features of "bar `bar` brings back the bar `lag` before" (ids: the window's material
    ids so far, bar >= context_bars the bar being planned)."""
    source = bar - lag
    run = 0
    while run < MAX_RUN and bar - run - 1 - lag >= 0:
        a, b = ids[bar - run - 1], ids[bar - run - 1 - lag]
        if a < 0 or a != b:
            break
        run += 1
    count = ids[:bar].count(ids[source])
    lag_hot = [float(lag == k) for k in LAGS]
    return [float(run > 0), run / MAX_RUN, *lag_hot, float(lag not in LAGS), math.log(lag) / math.log(WINDOW),
            math.log1p(count), float(ids[source] == source), float(shares[lag]) if lag <= WINDOW else 0.0,
            float(source >= context_bars), float(lag % 4 == 0 and run == 0), float(bar == context_bars and run > 0),
            float(lag % 8 == 0)]  # fmt: skip


def new_features(ids: list[int], bar: int, context_bars: int) -> list[float]:
    before = ids[bar - 1] if bar > 0 else -1
    repeated = [i for k, i in enumerate(ids[:context_bars]) if i >= 0]
    share = sum(i != k for k, i in enumerate(ids[:context_bars]) if i >= 0) / max(len(repeated), 1)
    done = ids[context_bars:bar]
    new_so_far = sum(i == context_bars + k for k, i in enumerate(done)) / max(len(done), 1)
    copies_so_far = sum(0 <= i < context_bars + k for k, i in enumerate(done)) / max(len(done), 1)
    empty_share = sum(i < 0 for i in ids[:context_bars]) / max(context_bars, 1)
    return [1.0, math.log(max(context_bars, 1)) / math.log(WINDOW), float(bar == context_bars),
            float(before >= 0 and before == bar - 1), share, float(context_bars <= 2), float(before < 0),
            (bar - context_bars) / 8, new_so_far, copies_so_far, empty_share]  # fmt: skip


@dataclass(frozen=True)
class FormModel:
    option_weights: np.ndarray
    new_weights: np.ndarray
    rest_weights: np.ndarray  # "a bar without a note" (a break between sections), from NEW_FEATURES
    new_shift: float = 0.0  # added to "new"'s logit when planning (form.json's "new_shift", default 0)
    rest_shift: float = 0.0  # added to "rest"'s: the network leaves some bars empty by itself (form.json)

    def scores(self, ids: list[int], bar: int, context_bars: int, shares: np.ndarray) -> tuple[list[int], np.ndarray]:
        """(the lags that may be brought back, the probabilities of [new, rest, *those lags])."""
        lags = [lag for lag in range(1, bar + 1) if ids[bar - lag] >= 0 and lag <= WINDOW + bar - context_bars]
        rows = np.array([option_features(ids, bar, lag, context_bars, shares) for lag in lags]).reshape(
            len(lags), len(OPTION_FEATURES))  # fmt: skip
        new = new_features(ids, bar, context_bars)
        fixed = [np.dot(self.new_weights, new) + self.new_shift, np.dot(self.rest_weights, new) + self.rest_shift]
        logits = np.concatenate([fixed, rows @ self.option_weights])
        probs = np.exp(logits - logits.max())
        return lags, probs / probs.sum()

    def plan(self, context: list[set], bars: int, rng: np.random.Generator) -> list[int]:
        """Per continuation bar, 0 (new), REST (no note starts in it) or the lag of the bar it
        brings back; context: the bar sets of the sketch's last bars (at most WINDOW)."""
        context = context[-WINDOW:]
        ids = material_ids(context)
        shares = repeat_shares(ids)
        plan = []
        for bar in range(len(context), len(context) + bars):
            lags, probs = self.scores(ids, bar, len(context), shares)
            pick = int(rng.choice(len(probs), p=probs))
            lag = lags[pick - 2] if pick >= 2 else (0, REST)[pick]
            plan.append(lag)
            ids.append(ids[bar - lag] if lag > 0 else bar if lag == 0 else -1)
        return plan


@lru_cache(maxsize=2)
def load_form(path: str | Path = FORM_WEIGHTS) -> FormModel | None:
    """The shipped form model, or None when there is none (then no plan: every bar is new)."""
    path = Path(path)
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored["option_features"] != list(OPTION_FEATURES) or stored["new_features"] != list(NEW_FEATURES):
        raise ValueError(f"{path} was trained on other features")
    return FormModel(np.asarray(stored["option_weights"]), np.asarray(stored["new_weights"]),
                     np.asarray(stored["rest_weights"]), float(stored.get("new_shift", 0.0)),
                     float(stored.get("rest_shift", 0.0)))


# -- a form the songwriter asks for (form=BA: something new, then the sketch's opening again) ------
SKETCH_LETTER = "A"  # the sketch itself: a section named A brings the sketch's opening bars back
FORM_PATTERN = re.compile(r"(?:[A-Za-z]\d*)+")


def parse_form(text: str, bars: int, most_bars: int = MAX_BARS) -> list[tuple[str, int]]:
    """A requested form -> [(letter, bars of its section)], covering `bars`. Letters name sections
    (upper and lower case alike); a number after a letter is its length in bars, and the letters
    without one share the bars left as evenly as they can (the earlier ones a bar more):
    "BA" over 8 bars is B 4, A 4; "B2A6" is B 2, A 6. Raises ValueError saying what is wrong
    (most_bars: the longest continuation the asker may have, which a form must fit)."""
    text = text.strip()
    if not FORM_PATTERN.fullmatch(text):
        raise ValueError(f'"{text}" is not a form: write section letters, e.g. form=BA or form=B2A2B4 '
                         f"(a number after a letter is its bars; {SKETCH_LETTER} is your sketch)")
    parts = [(m[1].upper(), int(m[2]) if m[2] else None) for m in re.finditer(r"([A-Za-z])(\d*)", text)]
    if any(length == 0 for _, length in parts):
        raise ValueError(f'form "{text}" gives a section 0 bars; each needs 1 or more')
    fixed = sum(length for _, length in parts if length)
    free = [i for i, (_, length) in enumerate(parts) if not length]
    left = bars - fixed
    if left < 0 or (free and left < len(free)) or (not free and left):
        need = fixed + len(free)
        if need > most_bars:
            raise ValueError(f'form "{text}" needs {need} bars{" or more" if free else ""}, and a continuation '
                             f"has at most {most_bars}: shorten its sections")
        raise ValueError(f'form "{text}" needs {"exactly " if not free else ""}{need}'
                         f'{" bars or more" if free else " bars"}, and the continuation is {bars}: '
                         f"set bars= to match{'' if free else f' (bars={fixed})'} or change the form")
    for k, i in enumerate(free):
        parts[i] = (parts[i][0], left // len(free) + (k < left % len(free)))
    return parts


def requested_plan(text: str, sketch: list[int], bars: int) -> list[int]:
    """The form plan (as FormModel.plan's) of a requested form over a continuation of `bars`
    bars: its whole bars, from the first bar line after the sketch (one fewer bar when the sketch
    ends inside one). sketch: events from a bar line. A section named SKETCH_LETTER brings the
    sketch's whole bars back from its first bar with a note (cycling through them when it is
    longer); another letter's first section is new, and each later one brings that first one
    back, bar for bar (cycling through it when it is longer)."""
    sections = parse_form(text, bars)
    whole = len(sketch) // STEPS_PER_BAR
    first_bar = -(-len(sketch) // STEPS_PER_BAR)  # the first planned bar, counted from the sketch's first
    skipped = first_bar - whole  # continuation bars before the first planned one (0 or 1)
    sounding = [m for m, notes in enumerate(bar_sets(sketch)[:whole]) if notes]
    sources = list(range(sounding[0], whole)) if sounding else [0]
    firsts: dict[str, tuple[int, int]] = {}  # letter -> (its first section's first bar, length)
    plan, bar = [], 0  # bar: the continuation's bar, from 0
    for letter, length in sections:
        firsts.setdefault(letter, (bar, length))
        start, first_length = firsts[letter]
        for k in range(length):
            if bar >= skipped:
                if letter == SKETCH_LETTER:
                    plan.append(first_bar + bar - skipped - sources[k % len(sources)])
                elif start < bar - k:  # a section that returns
                    plan.append(bar - (start + k % first_length))
                else:
                    plan.append(0)
            bar += 1
    return plan
