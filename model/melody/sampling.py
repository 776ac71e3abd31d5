"""Continue melodies with a trained network: options, the primer's key, batched sampling.

The CLI (`model.generate`) and the bot's worker both call `continue_melodies`; it samples every
variation of every request in one batched pass. Each variation is the best of a few candidates
sampled in that same pass: the one that re-uses the melody's own bars about as often as pop songs
do, is likely under the model, and differs from the variations chosen before it. Before the pass,
each variation draws a form plan (model.melody.form: which bars bring a bar of the sketch back, which
are new, which rest), and the step sampler follows it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from model.defaults import (
    DEFAULT_CANDIDATES,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DEFAULT_WEIGHTS,
    MAX_BARS,
    MAX_CANDIDATES,
    MAX_REST_LIMIT,
    MAX_SEED,
    MAX_VARIATIONS,
    TEMPERATURE_RANGE,
    TOP_P_RANGE,
)
from model.melody import stepping
from model.melody.critic import fake_logits
from model.melody.form import REST, jaccard, load_form, parse_form, requested_plan
from model.melody.form import bar_sets as form_bar_sets
from model.melody.network import CHORD_ROOT, NO_CHORD, MelodyNet, load_checkpoint
from model.music.chords import chord_tone_share, chords_per_step
from model.music.events import (
    FIRST_NOTE_ON,
    MIN_PITCH,
    NO_EVENT,
    NOTE_OFF,
    NUM_CLASSES,
    PAD,
    STEPS_PER_BAR,
    event_pitch,
    events_to_notes,
    is_note_on,
)
from model.music.keys import KEY_NAMES, MAJOR_PROFILE, MAJOR_SCALE, MINOR_PROFILE, MINOR_SCALE, Key, detect_key  # noqa: F401

MAX_PRIMER_STEPS = 64 * STEPS_PER_BAR  # longer primers keep only their last 64 bars
CANDIDATE_SEED_STEP = 0x9E3779B97F4A7C15  # odd, 64-bit golden ratio: candidates' seeds far apart

@dataclass(frozen=True)
class SamplingOptions:
    bars: int = 8  # length of each continuation
    variations: int = 4  # continuations of the same primer
    temperature: float = DEFAULT_TEMPERATURE  # > 1 wilder, < 1 safer
    top_p: float = DEFAULT_TOP_P  # nucleus: sample among the likeliest events holding this much probability
    seed: int = 0  # same seed, same primer, same options -> same continuations
    keep_key: bool = True  # only notes of the primer's key (and any other pitch class it uses)
    # steps a note may be held or a rest may last before something happens; 0: no limit; None: by the
    # sketch (_rest_limit)
    max_rest: int | None = None
    candidates: int = DEFAULT_CANDIDATES  # continuations sampled per variation; the best by choice_score is kept
    # Per variation, what may happen at each continuation step (model.lyrics.rhythm step codes:
    # a lyric's rhythm plan); None: anything. With it, max_rest does not apply (the plan holds notes).
    rhythm: tuple[tuple[int, ...], ...] | None = None
    # The continuation's sections, as the songwriter asks for them (model.melody.form.parse_form:
    # "BA", "B2A2B4"; A is the sketch); None: the form plan draws them (the default).
    form: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the first option out of range."""
        if not 1 <= self.bars <= MAX_BARS:
            raise ValueError(f"bars must be between 1 and {MAX_BARS}, not {self.bars}")
        if not 1 <= self.variations <= MAX_VARIATIONS:
            raise ValueError(f"variations must be between 1 and {MAX_VARIATIONS}, not {self.variations}")
        low, high = TEMPERATURE_RANGE
        if not low <= self.temperature <= high:
            raise ValueError(f"temperature must be between {low} and {high}, not {self.temperature}")
        low, high = TOP_P_RANGE
        if not low <= self.top_p <= high:
            raise ValueError(f"top_p must be between {low} and {high}, not {self.top_p}")
        if self.max_rest is not None and not 0 <= self.max_rest <= MAX_REST_LIMIT:
            raise ValueError(f"max_rest must be between 0 and {MAX_REST_LIMIT} steps, not {self.max_rest}")
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise ValueError(f"candidates must be between 1 and {MAX_CANDIDATES}, not {self.candidates}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, not {self.seed}")
        if self.rhythm is not None and (len(self.rhythm) != self.variations
                                        or any(len(r) != self.bars * STEPS_PER_BAR for r in self.rhythm)):
            raise ValueError(f"rhythm must give {self.variations} plans of {self.bars * STEPS_PER_BAR} steps")
        if self.form is not None:
            if self.rhythm is not None:
                raise ValueError("a form cannot be combined with lyrics yet: the words decide where notes go")
            parse_form(self.form, self.bars)


def allowed_events(primer: list[int], keep_key: bool, also: set[int] = frozenset()) -> torch.Tensor:
    """(NUM_CLASSES,) bool: with keep_key, NOTE_ONs of the primer's key and pitch classes, and of
    the pitch classes `also` (those of the chords a request gives)."""
    allowed = torch.ones(NUM_CLASSES, dtype=torch.bool)
    key = detect_key(primer) if keep_key else None
    if key is None:
        return allowed
    classes = key.pitch_classes | {event_pitch(e) % 12 for e in primer if is_note_on(e)} | set(also)
    for event in range(NUM_CLASSES):
        if is_note_on(event) and event_pitch(event) % 12 not in classes:
            allowed[event] = False
    return allowed


def prepare_primer(events: list[int]) -> list[int]:
    """The primer as the network continues it: at most MAX_PRIMER_STEPS (whole bars cut from
    the front) and without a trailing NOTE_OFF, so the network decides how the last note ends."""
    events = list(events)
    if len(events) > MAX_PRIMER_STEPS:
        cut = (len(events) - MAX_PRIMER_STEPS + STEPS_PER_BAR - 1) // STEPS_PER_BAR * STEPS_PER_BAR
        events = events[cut:]
    if len(events) > 1 and events[-1] == NOTE_OFF:
        events = events[:-1]
    if not any(is_note_on(e) for e in events):
        raise ValueError("the primer has no notes")
    return events


def continuation_chords(sheet: list[list], primer_steps: int, steps: int) -> list:
    """Per-step chords for a continuation of `steps` after a (prepared) primer of `primer_steps`:
    the lead sheet's bars (model.music.chords.parse_lead_sheet) repeat from the bar line where the
    continuation starts (or the primer's last bar line, when it starts inside a bar)."""
    return chords_per_step(sheet, steps, start=primer_steps % STEPS_PER_BAR)


def variation_seed(seed: int, variation: int, candidate: int = 0) -> int:
    """The noise seed of a candidate of a variation; candidate 0 keeps the seeds of before. (torch's
    CPU generator reads only the low 32 bits of a seed: the candidate's offset changes them.)"""
    return (seed * MAX_VARIATIONS + variation + candidate * CANDIDATE_SEED_STEP) % 2**63


@lru_cache(maxsize=2)
def load_model(path: str | Path = DEFAULT_WEIGHTS, device: str = "cpu") -> MelodyNet:
    """The network from a checkpoint, loaded once per process, in float32 for sampling."""
    model, _ = load_checkpoint(path, device)
    return model.float()


# -- one pitch again and again ----------------------------------------------------------------------
# Left alone the network reinforces its own repetition (BENCHMARKS.md, issue 23): after r notes of
# one pitch in a row, real pop's next note is the same one 17, 31, 37, 50, 27% of the time (r = 1..5,
# held-out songs' 8-bar windows), the network's own samples 21, 32, 37, 39, 48, 56% (r = 1..6), with chords 25, 43,
# 45, 54, 61%: takes sat on one pitch for bars. The step sampler caps that share (of the probability
# that the next note starts, after temperature) at SAME_NOTE_CAPS[r], lowering only what is above it.
# r = 5 at 0.1, not 0.2, since the critic (model.melody.critic) picks the takes with more repeated
# notes: at temperature 1.3, 5.4% of takes had a run of 6 with 0.2, 2.1-2.4% with 0.1 (real 5.4-7.1%).
SAME_NOTE_CAPS = (1.0, 1.0, 0.5, 0.4, 0.3, 0.1, 0.1, 0.0)  # by r, the last entry for any longer run
MAX_SAME_NOTES = SAME_NOTE_CAPS.index(0.0)  # the most notes of one pitch in a row (the primer's count too)


def same_note_caps() -> torch.Tensor:
    return torch.tensor(SAME_NOTE_CAPS)


def continue_melodies(
    model: MelodyNet, primers: list[list[int]], options: list[SamplingOptions], chords: list | None = None
) -> list[list[list[int]]]:
    """For each (primer, options), `options.variations` continuations of `options.bars` bars.

    chords: per request None or its chords, one model.music.chords.Chord (or None) per step of the
    continuation (missing steps: no chord); a network without chord inputs only lets their
    pitch classes into the key. Every candidate of every variation of every request is one row
    of a single batched pass, primers of different lengths left-padded to the longest (the
    network reads no padding, so a request's answer does not depend on its batch). Returns, per
    request, its continuations (the events after the primer)."""
    primers = [prepare_primer(p) for p in primers]
    for opt in options:
        opt.check()
    chords = [None] * len(primers) if chords is None else list(chords)
    if len(chords) != len(primers):
        raise ValueError(f"{len(chords)} chord lists for {len(primers)} primers")
    return _sample(primers, options, model, chords)


def longest_quiet(events: list[int]) -> int:
    """The most NO_EVENTs in a row in events (a held note or a rest), padding not counted."""
    best = run = 0
    for e in events:
        run = run + 1 if e == NO_EVENT else 0
        best = max(best, run)
    return best


# The rest limit when a request sets none (issue 23). Real pop breaks between its sections: a third
# of the 8-bar continuations of 32-bar stretches hold a rest of two bars or more, and a fixed limit
# of a bar gave the two-sample test a spike of rests of just that length (BENCHMARKS.md). A short
# sketch is an idea, not a section: its answer keeps going (folk tunes, all short sketches, never
# rest a bar). A section-long one may break for two bars. Either may rest as long as the sketch
# itself did, never longer: with no limit at all, one take of a 12-bar sketch rested 7 of its 8 bars.
AUTO_REST_STEPS = 16  # for a sketch shorter than SECTION_BARS
SECTION_BARS = 8
SECTION_REST_STEPS = 32  # for a sketch of SECTION_BARS or more


def _rest_limit(primer: list[int], opt: SamplingOptions) -> int:
    """stepping.generate's max_run for a request: none under a lyric's rhythm (its plan holds the
    notes), else max_rest, or when it is None, by the sketch (AUTO_REST_STEPS, SECTION_REST_STEPS
    or the sketch's own longest held note or rest)."""
    if opt.rhythm:
        return 0
    if opt.max_rest is not None:
        return opt.max_rest
    floor = SECTION_REST_STEPS if len(primer) >= SECTION_BARS * STEPS_PER_BAR else AUTO_REST_STEPS
    return min(max(floor, longest_quiet(primer)), MAX_REST_LIMIT)


def _chord_codes(chords: list | None, steps: int) -> list[int]:
    codes = [NO_CHORD] * steps
    for step, chord in enumerate((chords or [])[:steps]):
        if chord is not None:
            codes[step] = CHORD_ROOT * (chord.root % 12) + sum(1 << (pc % 12) for pc in set(chord.pitch_classes))
    return codes


def _rhythm_masks(plans: list, steps: int, device) -> torch.Tensor | None:
    """(rows, steps, NUM_CLASSES) bool from each row's step codes (None: anything), or None."""
    if not any(plans):
        return None
    from model.lyrics.rhythm import END, FREE, HOLD, ONSET, QUIET  # no torch there: the bot plans too

    table = torch.zeros(5, NUM_CLASSES, dtype=torch.bool)
    table[FREE] = True
    table[ONSET, FIRST_NOTE_ON:] = True
    table[HOLD, NO_EVENT] = True
    table[END, NOTE_OFF] = True
    table[QUIET, [NO_EVENT, NOTE_OFF]] = True
    codes = torch.full((len(plans), steps), FREE, dtype=torch.long)
    for row, plan in enumerate(plans):
        if plan:
            codes[row, : len(plan)] = torch.tensor(plan)
    return table[codes].to(device)


def _sample(primers: list[list[int]], options: list[SamplingOptions], model: MelodyNet,
            chords: list) -> list[list[list[int]]]:
    """One batched pass over every request."""
    device = next(model.parameters()).device
    rows = [(i, v, k) for i, opt in enumerate(options) for v in range(opt.variations) for k in range(opt.candidates)]
    # The network needs two primer steps: a rest before one note is harmless (its bar starts after it).
    primers = [[PAD] + p if len(p) < 2 else p for p in primers]
    bar_start = [int(p[0] == PAD) for p in primers]
    p_len = max(len(p) for p in primers)
    padded = [[PAD] * (p_len - len(p)) + p for p in primers]  # left padding: every row ends where the pass starts
    primer = torch.tensor([padded[i] for i, _, _ in rows], dtype=torch.long, device=device)
    lengths = torch.tensor([len(primers[i]) for i, _, _ in rows], dtype=torch.long, device=device)
    offset = torch.tensor([p_len - len(primers[i]) + bar_start[i] for i, _, _ in rows], dtype=torch.long,
                          device=device)
    steps = max(opt.bars for opt in options) * STEPS_PER_BAR
    codes = [[NO_CHORD] * p_len + _chord_codes(c, steps) for c in chords]
    chord_classes = [{pc for c in (per or []) if c is not None for pc in c.pitch_classes} for per in chords]
    keys = [allowed_events(p, opt.keep_key, also) for p, opt, also in zip(primers, options, chord_classes)]
    rest_limits = [_rest_limit(p, opt) for p, opt in zip(primers, options)]
    result, loglik = stepping.generate(model,
        primer,
        steps,
        temperature=torch.tensor([options[i].temperature for i, _, _ in rows], device=device),
        top_p=torch.tensor([options[i].top_p for i, _, _ in rows], device=device),
        allowed_events=torch.stack([keys[i] for i, _, _ in rows]).to(device),
        seeds=[variation_seed(options[i].seed, v, k) for i, v, k in rows],
        offset=offset,
        max_run=torch.tensor([rest_limits[i] for i, _, _ in rows], device=device),
        chords=torch.tensor([codes[i] for i, _, _ in rows], dtype=torch.long, device=device) if any(chords) else None,
        with_loglik=True,
        chord_scale=CHORD_SCALE,
        lengths=lengths,
        step_allowed=_rhythm_masks([options[i].rhythm and options[i].rhythm[v] for i, v, _ in rows], steps, device),
        repeat_cap=same_note_caps(),
        copy_lag=_copy_lags(primers, bar_start, options, rest_limits, rows, steps, device),
        copy_bias=COPY_BIAS,
        motif_bias=_motif_bias(options, rows, device),
        loop_penalty=LOOP_PENALTY,
        fresh_penalty=FRESH_PENALTY,
        fresh_pitch_bias=FRESH_PITCH_BIAS,
        event_bias=_lift([primers[i] for i, _, _ in rows], device),
        **_cadence(primers, options, chords, rows, device),
    )
    result, loglik = result.cpu(), loglik.cpu()
    answers: list[list[list[int]]] = [[] for _ in options]
    row = 0
    for i, opt in enumerate(options):
        length = opt.bars * STEPS_PER_BAR
        for _ in range(opt.variations):
            candidates = [(result[r, :length].tolist(), float(loglik[r, :length].sum()) / length)
                          for r in range(row, row + opt.candidates)]
            answers[i].append(choose(primers[i], candidates, answers[i], chords[i]))
            row += opt.candidates
    return answers


# -- the form plan: bars that bring the song's own material back (issue 23, model.melody.form) --------
FORM_PLAN = True  # off: every bar is the network's own (as before issue 23's form plan)
COPY_BIAS = 10.0  # added to the (temperature-scaled) logit of a returning bar's source event
FALLBACK_FROM = 3  # candidates per variation from which the last one follows a plan of its own (a fallback)
PLAN_TRIES = 8  # draws of a variation's plan until it shares at most half its bars with another's


def form_plans(primer: list[int], bars: int, variations: int, seed: int) -> tuple[int, list[list[int]]]:
    """(the first planned bar's step in the primer's bar grid, per variation its plan: 0 (new), -1
    (a rest bar) or the lag in bars of each whole bar from there on). primer: the sketch's events from a bar line. A
    variation's plan is drawn again (up to PLAN_TRIES) while it brings back the same material to the
    same bars as an earlier variation's in half of them or more (a new bar may match by itself: the
    choice's limit is more than half): four variations, four ideas."""
    form = load_form() if FORM_PLAN else None
    first = -(-len(primer) // STEPS_PER_BAR)
    count = (len(primer) + bars * STEPS_PER_BAR) // STEPS_PER_BAR - first
    if form is None or count <= 0:
        return first * STEPS_PER_BAR, [[0] * max(count, 0) for _ in range(variations)]
    from model.melody.form import WINDOW, material_ids  # noqa: PLC0415

    context = form_bar_sets(primer)[-WINDOW:]
    ids = material_ids(context)
    plans: list[list[int]] = []
    sources: list[list[int]] = []
    for v in range(variations):
        rng = np.random.default_rng([seed, v, zlib.crc32(bytes(e % 256 for e in primer))])  # the sketch's own draws
        best = None
        for _ in range(PLAN_TRIES):
            plan = form.plan(context, count, rng)
            source = _planned_material(ids, plan)
            shared = max([sum(a == b >= 0 for a, b in zip(source, other)) for other in sources] + [0])
            if best is None or shared < best[0]:
                best = (shared, plan, source)
            if shared < count // 2:  # at most half, less one: a new bar may match by itself
                break
        plans.append(best[1])
        sources.append(best[2])
    return first * STEPS_PER_BAR, plans


def candidate_plans(primer: list[int], bars: int, variations: int, candidates: int,
                    seed: int, requested: str | None = None) -> tuple[int, list[list[list[int]]]]:
    """As form_plans, per variation a plan per candidate: the variation's plan, but with
    FALLBACK_FROM candidates or more the last one draws its own, and the choice (its critic
    included) weighs the two plans' takes: the second is also the way out when every candidate
    of the first is a near-copy of another variation (a sketch whose bars the network repeats by
    itself). With a requested form (`requested`, as form=BA: model.melody.form.requested_plan),
    every candidate follows it."""
    if requested is not None:
        plan = requested_plan(requested, primer, bars)
        return -(-len(primer) // STEPS_PER_BAR) * STEPS_PER_BAR, [[plan] * candidates for _ in range(variations)]
    first, plans = form_plans(primer, bars, variations, seed)
    form = load_form() if FORM_PLAN else None
    if form is None or candidates < FALLBACK_FROM or not plans or not plans[0]:
        return first, [[plan] * candidates for plan in plans]
    from model.melody.form import WINDOW  # noqa: PLC0415

    context = form_bar_sets(primer)[-WINDOW:]
    crc = zlib.crc32(bytes(e % 256 for e in primer))
    return first, [[plan] * (candidates - 1) + [form.plan(context, len(plan), np.random.default_rng([seed, v, crc, 1]))]
                   for v, plan in enumerate(plans)]  # fmt: skip


def _planned_material(ids: list[int], plan: list[int]) -> list[int]:
    """Per planned bar, the material id it brings back, -1 for a new bar."""
    ids = list(ids)
    out = []
    for lag in plan:
        material = ids[len(ids) - lag] if lag > 0 else -1
        out.append(material)
        ids.append(material if lag > 0 else -2 - len(ids))
    return out


# logit (after temperature) for a next note that finishes one of the sketch's 4-note interval patterns
# (model.melody.motifs): real continuations re-use 0.64 of them, the untold network's 0.56 with the form
# plan, 0.63 with an echo of 1.0 (2.0 overshot: 0.69). The network told the plan re-uses fewer: 0.61 at
# 1.0, 0.66 at 2.0, where the two-sample test's four-seed mean is 0.648 against 0.661 (BENCHMARKS.md, issue 23)
MOTIF_BIAS = 2.0
FRESH_PITCH_BIAS = 1.0  # logit on a note the continuation has not played yet (model.melody.pitch_variety)
# logit taken from a note that would repeat, in place, a bar following two alike bars (model.melody.bar_loops):
# a ban in effect, a form plan's copy included (8 left some: a looping network is that sure of itself);
# real pop holds no third alike bar in a row in 5,273 windows
LOOP_PENALTY = 30.0
# logit taken from a note that would go on copying a sketch bar note for note in a bar the plan
# calls new (model.melody.fresh_bars): real pop's new bars copy nothing
FRESH_PENALTY = 8.0


def _motif_bias(options: list[SamplingOptions], rows: list, device) -> torch.Tensor | None:
    """(rows,) MOTIF_BIAS for each row, but none for a fallback candidate (candidate_plans): it is
    there to differ when the others are near-copies (a sketch of one bar twice, which the echo
    would only bring back again)."""
    if not MOTIF_BIAS:
        return None
    fallback = [FORM_PLAN and options[i].rhythm is None and options[i].candidates >= FALLBACK_FROM
                and k == options[i].candidates - 1 for i, _, k in rows]  # fmt: skip
    return torch.tensor([0.0 if last else MOTIF_BIAS for last in fallback], device=device)


LIFT = 0.6  # logit per octave above the sketch's mean pitch (real continuations sit 0.8 semitones above it)
LIFT_BARS = 8  # the sketch's last bars whose mean pitch is the reference


def _lift(primers: list[list[int]], device) -> torch.Tensor | None:
    if not LIFT:
        return None
    pitches = torch.arange(NUM_CLASSES, dtype=torch.float32) - FIRST_NOTE_ON + MIN_PITCH
    out = torch.zeros(len(primers), NUM_CLASSES)
    for r, p in enumerate(primers):
        notes = [event_pitch(e) for e in p[-LIFT_BARS * STEPS_PER_BAR :] if is_note_on(e)] or [event_pitch(e) for e in p
                                                                                               if is_note_on(e)]
        mean = sum(notes) / len(notes)
        out[r, FIRST_NOTE_ON:] = LIFT * ((pitches[FIRST_NOTE_ON:] - mean) / 12).clamp(-1, 1)
    return out.to(device)


# -- a phrase's end (issue 23, point 3) ----------------------------------------------------------------
# Real 8-bar continuations end on a note of a quarter or more on the tonic triad in 32% of songs, most
# of those landing by the last bar's third beat; the network's own takes in 14-30% (at temperature
# 1.3 the fewest): their last note mostly starts in the last beat, short. A variation's candidates
# share its plan, so the choice (PHRASE_END_WEIGHT) has few endings to pick from. So the step sampler
# leans towards a cadence on each continuation's last bar: stable notes up to its third beat, fewer
# notes starting after it, sampled no hotter than temperature 1 (stepping.generate's end_bias).
CADENCE_STEPS = STEPS_PER_BAR  # the last bar
CADENCE_LATE_STEPS = 7  # after its third beat's onset
CADENCE_STABLE = 1.0  # logit added before that to a note of the tonic triad, and again to a tone of the chord under it
CADENCE_LATE = 1.0  # logit taken from every note starting in the last CADENCE_LATE_STEPS


def _cadence(primers: list[list[int]], options: list[SamplingOptions], chords: list, rows: list, device) -> dict:
    """stepping.generate's end_bias and end_start: per row, the bias on its last CADENCE_STEPS."""
    if not (CADENCE_STABLE or CADENCE_LATE):
        return {}
    note_classes = torch.tensor([event_pitch(e) % 12 for e in range(FIRST_NOTE_ON, NUM_CLASSES)])

    def stable(pitch_classes) -> torch.Tensor:  # 1 on each NOTE_ON of these pitch classes
        return torch.isin(note_classes, torch.tensor(sorted(pitch_classes), dtype=torch.long)).float()

    per_request = []
    for primer, opt, chord in zip(primers, options, chords):
        length = opt.bars * STEPS_PER_BAR
        tonic = stable(_tonic_triad(tuple(primer)))
        bias = torch.zeros(CADENCE_STEPS, NUM_CLASSES)
        for j, step in enumerate(range(length - CADENCE_STEPS, length)):
            under = chord[step] if chord and 0 <= step < len(chord) else None
            if step >= length - CADENCE_LATE_STEPS:
                bias[j, FIRST_NOTE_ON:] = -CADENCE_LATE
            else:
                bias[j, FIRST_NOTE_ON:] = CADENCE_STABLE * (tonic + (stable(under.pitch_classes) if under else 0))
        per_request.append((length - CADENCE_STEPS, bias))
    return {"end_bias": torch.stack([per_request[i][1] for i, _, _ in rows]).to(device),
            "end_start": torch.tensor([per_request[i][0] for i, _, _ in rows], device=device)}


def _copy_lags(primers: list[list[int]], bar_start: list[int], options: list[SamplingOptions],
               rest_limits: list[int], rows: list, steps: int, device) -> torch.Tensor | None:
    """(rows, steps) per continuation step of each row, 0 (no plan), stepping.REST_BAR,
    stepping.NEW_BAR or the steps back of the event it copies. rest_limits: per request, its
    _rest_limit, which planned rest bars keep to as well: a take is no silence."""
    if not FORM_PLAN:
        return None
    lags = torch.zeros(len(rows), steps, dtype=torch.long)
    plans = {}
    for i, opt in enumerate(options):
        if opt.rhythm is None:
            sketch = primers[i][bar_start[i]:]
            plans[i] = (len(sketch), *candidate_plans(sketch, opt.bars, opt.variations, opt.candidates, opt.seed,
                                                      opt.form))
    for r, (i, v, k) in enumerate(rows):
        if i not in plans:
            continue
        length, first, plan = plans[i]
        quiet_bars = None if rest_limits[i] == 0 else rest_limits[i] // STEPS_PER_BAR
        run = 0
        for b, lag in enumerate(plan[v][k]):
            run = run + 1 if lag == REST else 0
            if lag == REST and quiet_bars is not None and run > quiet_bars:
                lag = 0
            start = first + b * STEPS_PER_BAR - length  # continuation steps of the bar
            code = lag * STEPS_PER_BAR if lag > 0 else stepping.REST_BAR if lag == REST else stepping.NEW_BAR
            lags[r, max(start, 0) : start + STEPS_PER_BAR] = code
    return lags.to(device) if bool(lags.any()) else None


# -- choosing a variation among its candidates -----------------------------------------------------
# The weights below were chosen by the sweeps in BENCHMARKS.md section 1 (musical protocol, pop and folk).
# Share of bars that re-use an earlier bar (real pop: about 0.22; chosen ones land lower, the more
# so since the same-note cap: issue 23 raised it from 0.3 and the weight from 2).
STRUCTURE_TARGET = 0.45
STRUCTURE_WEIGHT = 12.0  # 3 before the critic; 8 with it; 12 with the lean to unplayed notes (0.16 at 8, bar 0.17)
# Sketches under SHORT_SKETCH_BARS bars: real continuations re-use 0.21 of their bars, and the network told
# the form plan writes a bar called new as new (the untold one often repeated a bar by itself), so the
# choice leans harder to repeats there: the musical protocol's structure (2-bar sketches) 0.167 -> 0.214
# (real 0.214); section-long sketches keep the weight above (BENCHMARKS.md, issue 23, the told network).
SHORT_SKETCH_BARS = 8
SHORT_STRUCTURE_TARGET, SHORT_STRUCTURE_WEIGHT = 0.6, 20.0
# The critic's rounds a sketch under SHORT_SKETCH_BARS hears (None: all). Its later rounds learned from
# windows whose sketches are mostly long (one a song ends at bar 2): on 2-bar sketches its third round
# cost the musical protocol's structure (0.174) and stuck takes with chords (0.051; BENCHMARKS.md, issue
# 23, the critic's rounds).
SHORT_SKETCH_CRITIC_ROUNDS = 2
LIKELIHOOD_WEIGHT = 1.0  # per nat of mean log-likelihood per step
SAMENESS_WEIGHT = 2.0  # against the (onset, pitch) Jaccard with an already chosen variation
DENSITY_WEIGHT = 4.0  # against |log| of the ratio of notes per step, continuation to primer_note_rate
# Real continuations have this times the primer's notes per step counted from its first note
# (log ratio -0.21 on POP909's held-out songs, -0.18 on the folk tunes; from the bar line: -0.03 / +0.17).
RATE_AFTER_PRIMER = 0.83
RANGE_WEIGHT = 0.1  # per semitone of the continuation's pitch range outside RANGE_USUAL
RANGE_USUAL = (10, 17)  # semitones: 8 bars of pop melody span 14 +- 3
CHORD_TONE_TARGET = 0.67  # with chords: share of note duration on chord tones (real POP909 melodies: 0.67)
CHORD_TONE_WEIGHT = 3.0  # against the distance from it
CHORD_SCALE = 1.4  # the network's direct chord-to-output bias, scaled by this when sampling
# A phrase ends on a long stable note: real 8-bar continuations end on a note of a quarter or more
# on the tonic triad in 32% of songs, the sampler's in 17-21% (issue 23, model/lab/takes.py); the
# cadence (CADENCE_*) makes such endings likelier, the choice picks them: for a continuation whose last
# note is that long and on a tonic-triad degree or chord tone (1 before the form plan: its candidates
# share a variation's plan, so the choice has fewer endings to pick from; with the cadence, 1 leaves
# temperature 1.3 at 0.30 and below; 4 since the critic: at 2 it outweighed the endings, 0.25-0.28).
PHRASE_END_WEIGHT = 4.0
# per logit of the critic's "generated, not a song" (model.melody.critic): with the second plan
# competing, the two-sample test's AUC 0.738 -> 0.666 / 0.672 (BENCHMARKS.md, issue 23, the critic);
# 5 for the network told the form plan, with a critic of its own takes (3: 0.694 / 0.677; 8: 0.675)
CRITIC_WEIGHT = 5.0
PHRASE_END_STEPS = 4
REPEAT_JACCARD = 0.75  # a bar re-uses an earlier one when their (onset in bar, pitch) sets overlap this much


@lru_cache(maxsize=64)
def _notes(events: tuple[int, ...]) -> tuple:
    """events_to_notes, remembered: choosing a variation reads each candidate's notes (and the
    primer's with them) several times, for its score and against every variation chosen before."""
    return tuple(events_to_notes(events))


def onset_pitches(events: list[int], start: int = 0) -> set[tuple[int, int]]:
    return {(start + n.start, n.pitch) for n in _notes(tuple(events))}


def bar_sets(sequence: list[int]) -> list[set[tuple[int, int]]]:
    """Per bar of a sequence that starts at a bar line: its notes' (onset in bar, pitch)."""
    bars: list[set[tuple[int, int]]] = [set() for _ in range((len(sequence) + STEPS_PER_BAR - 1) // STEPS_PER_BAR)]
    for note in _notes(tuple(sequence)):
        bars[note.start // STEPS_PER_BAR].add((note.start % STEPS_PER_BAR, note.pitch))
    return bars


def repeated_bars(primer: list[int], continuation: list[int]) -> tuple[int, int]:
    """(bars of the continuation whose notes re-use an earlier bar of primer + continuation,
    bars of the continuation); an empty bar re-uses nothing. The primer starts at a bar line;
    a bar it shares with the continuation counts as the continuation's."""
    bars = bar_sets(list(primer) + list(continuation))
    first = len(primer) // STEPS_PER_BAR
    hits = sum(bool(bars[i]) and any(jaccard(bars[i], b) >= REPEAT_JACCARD for b in bars[:i])
               for i in range(first, len(bars)))
    return hits, len(bars) - first


def primer_note_rate(primer: list[int]) -> float:
    """Notes per step a continuation of this primer is expected to have: the primer's rate from its
    first note on (the empty beats before a pickup say nothing of the tune's pace), times
    RATE_AFTER_PRIMER."""
    onsets = [step for step, event in enumerate(primer) if is_note_on(event)]
    span = len(primer) - (onsets[0] if onsets else 0)
    return RATE_AFTER_PRIMER * (len(onsets) + 0.5) / max(span, 1)


@lru_cache(maxsize=64)
def _tonic_triad(primer: tuple[int, ...]) -> frozenset[int]:
    key = detect_key(list(primer))
    if key is None:
        return frozenset()
    return frozenset((key.tonic + i) % 12 for i in ((0, 3, 7) if key.minor else (0, 4, 7)))


def ends_on_stable_note(primer: list[int], continuation: list[int], chords: list | None = None) -> bool:
    """The continuation's last note lasts PHRASE_END_STEPS or more (to its end when still sounding)
    on a degree of the primer's tonic triad, or with chords, a tone of the chord under it."""
    notes = _notes(tuple(continuation))
    if not notes or notes[-1].end - notes[-1].start < PHRASE_END_STEPS:
        return False
    last = notes[-1]
    chord = chords[last.start] if chords and last.start < len(chords) else None
    stable = chord.pitch_classes if chord is not None else _tonic_triad(tuple(primer))
    return last.pitch % 12 in stable


def is_short_sketch(primer: list[int]) -> bool:
    """Under SHORT_SKETCH_BARS: an idea rather than a section (its own structure weight, the critic's first rounds)."""
    return len(primer) < SHORT_SKETCH_BARS * STEPS_PER_BAR


def choice_score(primer: list[int], continuation: list[int], loglik: float, chosen: list[list[int]],
                 chords: list | None = None, fake: float = 0.0) -> float:
    """Higher is better: structure near STRUCTURE_TARGET, likely, unlike the chosen variations,
    with chords (per continuation step) their tones about as often as in real songs, and heard as
    a song's by the critic (fake: its log-odds of "generated", model.melody.critic.fake_logits)."""
    hits, bars = repeated_bars(primer, continuation)
    short = is_short_sketch(primer)
    weight, target = (SHORT_STRUCTURE_WEIGHT, SHORT_STRUCTURE_TARGET) if short else (STRUCTURE_WEIGHT, STRUCTURE_TARGET)
    score = -weight * abs(hits / max(bars, 1) - target) + LIKELIHOOD_WEIGHT * loglik
    mine = onset_pitches(continuation)
    if DENSITY_WEIGHT:
        rate = (len(mine) + 0.5) / max(len(continuation), 1)
        score -= DENSITY_WEIGHT * abs(math.log(rate / primer_note_rate(primer)))
    if RANGE_WEIGHT and mine:
        pitches = [p for _, p in mine]
        span = max(pitches) - min(pitches)
        score -= RANGE_WEIGHT * max(RANGE_USUAL[0] - span, span - RANGE_USUAL[1], 0)
    if chosen:
        score -= SAMENESS_WEIGHT * max(jaccard(mine, onset_pitches(other)) for other in chosen)
    if PHRASE_END_WEIGHT and len(continuation) >= 2 * STEPS_PER_BAR and ends_on_stable_note(primer, continuation,
                                                                                            chords):
        score += PHRASE_END_WEIGHT
    if chords and CHORD_TONE_WEIGHT:
        share = chord_tone_share(continuation, chords)
        if share is not None:
            score -= CHORD_TONE_WEIGHT * abs(share - CHORD_TONE_TARGET)
    return score - CRITIC_WEIGHT * fake


def shared_bars(a: list[int], b: list[int]) -> int:
    """Bars at the same place in two continuations whose (onset in bar, pitch) sets overlap by
    REPEAT_JACCARD or more (two empty bars share nothing)."""
    return sum(jaccard(x, y) >= REPEAT_JACCARD for x, y in zip(bar_sets(a), bar_sets(b)))


def near_copy(events: list[int], chosen: list[list[int]]) -> int:
    """How many bars a candidate shares with the chosen variation it is closest to, beyond half its
    bars (0: a new idea; a variation may share at most half its bars with another)."""
    bars = (len(events) + STEPS_PER_BAR - 1) // STEPS_PER_BAR
    return max([shared_bars(events, other) - bars // 2 for other in chosen] + [0])


def choose(primer: list[int], candidates: list[tuple[list[int], float]], chosen: list[list[int]],
           chords: list | None = None) -> list[int]:
    """The candidate (events, mean log-likelihood per step) with the best choice_score among those
    that are not near-copies of a chosen variation (sharing more than half their bars with it;
    when every candidate is one, those that share the fewest); ties go to the earlier candidate,
    so one candidate gives the sampler of before."""
    if len(candidates) == 1:
        return candidates[0][0]
    excess = [near_copy(events, chosen) for events, _ in candidates]
    rounds = SHORT_SKETCH_CRITIC_ROUNDS if is_short_sketch(primer) else None
    fakes = fake_logits(primer, [e for e, _ in candidates], rounds) if CRITIC_WEIGHT else [0.0] * len(candidates)
    scores = [choice_score(primer, events, loglik, chosen, chords, fake) if e == min(excess) else -math.inf
              for (events, loglik), e, fake in zip(candidates, excess, fakes)]
    return candidates[scores.index(max(scores))][0]
