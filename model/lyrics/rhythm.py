"""The rhythm plan: where each syllable's note starts and ends, before any pitch is chosen.

Lines (split by "/" or new lines) share the continuation's bars equally in whole bars (a bar left
over goes to the line with the most syllables); each line starts on a bar line. Within a line the
notes are one onset per syllable, each held to the next or (as often as POP909's singers do,
SHORT_SHARE) a step or two less, and the line ends on its longest note followed by a breath (a
rest of at least an eighth) before the next line. The onsets of a line are drawn over the
sixteenth grid with probability exp(-cost) (forward filtering, backward sampling: each variation's
plan from its own seed, so variations differ in rhythm as well as in pitch), the cost adding up:
- how rare the onset's position in the bar is, and how rare each inter-onset interval is, in
  POP909's training melodies (ONSET_SHARE, IOI_SHARE below; `python -m model.lab.lyrics_eval
  POP909 --grid` recounts them), so the rhythms come out as varied as POP909's;
- 30 nats for a strong syllable (primary stress of a polysyllabic word, a stressed content
  monosyllable) off the beat (it never happens while a beat is free), a little for it on beats 2
  or 4 rather than 1 or 3;
- 4 nats for a weak syllable (unstressed, of a polysyllabic word) on beat 1 or 3, 1 on beats 2 or 4;
- a little for each step a line waits before its first note; a little less for a strong
  syllable held a dotted eighth to a dotted quarter (stressed syllables are sung longer).
A draw whose last note is not the line's longest is drawn again; after SAMPLE_TRIES the cheapest
rhythm is taken (dynamic programming once per cap on the inner intervals, keeping plans whose last
note is at least that long: the rule then holds exactly). Each plan also draws how detached its
notes are (ARTICULATION: songs differ in this more than in anything else here). With melisma, the
longest inner note of a line (an eighth or longer) is sung as two slurred notes of one syllable.

`RhythmPlan.step_codes` turns the plan into what the sampler may do at each step (model.sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from model.lyrics.syllables import Lyrics, LyricsError, Syllable
from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT

# Share of melody onsets at each sixteenth of the bar, and of inter-onset intervals of 1..16
# steps, in POP909's training songs (734 songs, bars from the annotated downbeats).
ONSET_SHARE = (0.1369, 0.0162, 0.0907, 0.0359, 0.0989, 0.0169, 0.0960, 0.0342,
               0.1091, 0.0141, 0.0747, 0.0277, 0.0949, 0.0183, 0.0985, 0.0369)
IOI_SHARE = (0.2464, 0.4774, 0.0462, 0.1131, 0.0088, 0.0317, 0.0055, 0.0223,
             0.0031, 0.0078, 0.0018, 0.0096, 0.0014, 0.0045, 0.0010, 0.0073)
BREATH = 2  # steps of rest at least after each line (an eighth)
LONGEST_NOTE = 8  # steps: a line's last note is held at most a half note, then rests (POP909: 3% of notes are longer)
OFF_BEAT_STRONG = 30.0  # cost of a strong syllable off the beat (in nats, as the priors)
STRONG_ON_2_4 = 0.7  # a strong syllable on beat 2 or 4 rather than 1 or 3
WEAK_ON_1_3 = 4.0  # a weak syllable on beat 1 or 3
WEAK_ON_2_4 = 1.0  # a weak syllable on beat 2 or 4
WAIT = 0.15  # per step a line waits before its first note
SHORT_LAST = 1.0  # a line's last note shorter than a quarter
LONG_STRONG = 1.2  # less cost for a strong syllable held a dotted eighth, a quarter or a dotted quarter (sung long)
NOISE = 0.6  # the cheapest rhythm's fallback: seeded Gumbel noise of this scale on each (syllable, position) cost
SAMPLE_TRIES = 8  # rhythms drawn for a line before the cheapest is taken
CAPS = (1, 2, 3, 4, 6, 8)  # caps on a line's inner intervals tried (its last note at least as long)
# Articulation, as POP909's singers' notes: the share of notes (not a line's last) that end before
# the next onset, by inter-onset interval 2..8 (more: the last), and how early: 1, 2 or 3 steps.
# Songs differ: the share per 8-bar piece is spread almost evenly from 0 to 1 (mean 0.48-0.50, sd
# 0.35), so each plan draws its own level from Beta(ARTICULATION) (mean 0.48) and scales these
# shares by it / 0.48. `python -m model.lab.lyrics_eval POP909 --grid` recounts these tables (GAP_SHARE
# for 5: rounded over 5 steps and longer).
ARTICULATION = (0.50, 0.54)
SHORT_SHARE = {2: 0.43, 3: 0.52, 4: 0.56, 5: 0.66, 6: 0.67, 7: 0.73, 8: 0.69}
GAP_SHARE = {2: (1.0,), 3: (0.75, 0.25), 4: (0.67, 0.27, 0.06), 5: (0.45, 0.35, 0.2)}  # 5: also for longer
DEFAULT_BARS_PER_LINE = 2  # without bars=: two bars a line, more for a long line
SYLLABLES_PER_BAR = 6  # ... so that a line has at most this many syllables a bar

# Step codes: what the sampler may do at a step of the continuation (model.sampling reads them).
FREE, ONSET, HOLD, END, QUIET = 0, 1, 2, 3, 4  # anything; NOTE_ON only; NO_EVENT only; NOTE_OFF only; no NOTE_ON


@dataclass(frozen=True)
class PlannedNote:
    start: int  # continuation step of the onset
    end: int  # exclusive
    line: int  # 0-based
    syllable: Syllable | None  # None: the second, slurred note of a melisma


@dataclass(frozen=True)
class RhythmPlan:
    steps: int  # the continuation's length
    lead_in: int  # steps before the first line's bar line (the primer ends inside a bar)
    line_starts: tuple[int, ...]  # step where each line's bars begin
    notes: tuple[PlannedNote, ...]

    def step_codes(self) -> list[int]:
        """Per step: ONSET where a planned note starts, HOLD while it sounds and through a rest,
        END where a rest begins, QUIET in the lead-in (the primer's last note may end or go on)."""
        codes = [QUIET] * self.lead_in + [HOLD] * (self.steps - self.lead_in)
        for i, note in enumerate(self.notes):
            codes[note.start] = ONSET
            following = self.notes[i + 1].start if i + 1 < len(self.notes) else self.steps
            if note.end < following:  # a rest before the next note: the note must end there
                codes[note.end] = END
        return codes

    def syllable_notes(self) -> list[PlannedNote]:
        return [n for n in self.notes if n.syllable is not None]

    def lyric_events(self, offset: int = 0) -> list[tuple[int, str]]:
        """(step + offset, karaoke text) for each syllable, at its note's onset."""
        return [(n.start + offset, n.syllable.karaoke()) for n in self.syllable_notes()]


def line_bars(counts: list[int], bars: int) -> list[int]:
    """Whole bars per line, as equal as they can be; a bar left over goes to the longest lines."""
    base, extra = divmod(bars, len(counts))
    shares = [base] * len(counts)
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i))[:extra]:
        shares[i] += 1
    return shares


def capacity(steps: int) -> int:
    """Syllables a line of `steps` can hold: one a sixteenth, less the breath."""
    return max(0, steps - BREATH)


def _line_spans(counts: list[int], bars: int, lead_in: int) -> list[tuple[int, int]]:
    shares = line_bars(counts, bars)
    spans, start = [], lead_in
    for i, share in enumerate(shares):
        end = bars * STEPS_PER_BAR if i == len(shares) - 1 else start + share * STEPS_PER_BAR
        spans.append((start, end))
        start = end
    return spans


def fits(counts: list[int], bars: int, lead_in: int = 0) -> bool:
    if bars < len(counts):
        return False
    return all(n <= capacity(end - start) for n, (start, end) in zip(counts, _line_spans(counts, bars, lead_in)))


def bars_needed(counts: list[int], lead_in: int = 0, most: int = 10**4) -> int | None:
    """The fewest bars that hold these lines, or None if even `most` do not."""
    for bars in range(len(counts), most + 1):
        if fits(counts, bars, lead_in):
            return bars
    return None


def choose_bars(lyrics: Lyrics, bars: int | None, max_bars: int, lead_in: int = 0) -> int:
    """The continuation's bars for these lyrics: `bars` when given (LyricsError when the words
    do not fit, naming how many bars they need), else DEFAULT_BARS_PER_LINE a line (more for a
    long line: at most SYLLABLES_PER_BAR syllables a bar), within max_bars."""
    counts = lyrics.counts()
    need = bars_needed(counts, lead_in)
    if bars is not None:
        if need is not None and bars >= need:
            return bars
        return _too_many(counts, bars, need, max_bars)
    per_line = max(DEFAULT_BARS_PER_LINE, max(math.ceil(n / SYLLABLES_PER_BAR) for n in counts))
    chosen = min(per_line * len(counts) + (1 if lead_in else 0), max_bars)
    if need is None or need > chosen:
        return _too_many(counts, None, need, max_bars)
    return chosen


def _too_many(counts: list[int], bars: int | None, need: int | None, max_bars: int) -> int:
    lines = f"{len(counts)} line{'s' * (len(counts) != 1)} of {', '.join(map(str, counts))} syllables"
    if need is None or need > max_bars:
        raise LyricsError(f"{lines} need more than the {max_bars} bars one continuation can have; send fewer "
                          f"lines, or shorter ones, and go on with !extend")
    asked = f"{bars} bar{'s' * (bars != 1)}" if bars is not None else "the bars I'd choose"
    raise LyricsError(f"{lines} don't fit in {asked}: they need at least {need} bars "
                      f"(bars={need}), or fewer words a line")


def plan_rhythm(lyrics: Lyrics, bars: int, lead_in: int = 0, melisma: bool = False, seed: int = 0) -> RhythmPlan:
    """The plan for `lyrics` over a continuation of `bars` bars whose first bar line comes after
    `lead_in` steps (0 when the primer ends on a bar line). LyricsError when they do not fit."""
    counts = lyrics.counts()
    if not fits(counts, bars, lead_in):
        _too_many(counts, bars, bars_needed(counts, lead_in), bars)
    rng = np.random.default_rng(seed)
    detached = rng.beta(*ARTICULATION) / 0.48  # this plan's articulation, relative to POP909's mean
    spans = _line_spans(counts, bars, lead_in)
    notes: list[PlannedNote] = []
    for number, (line, (start, end)) in enumerate(zip(lyrics.lines, spans)):
        syllables = line.syllables
        onsets, last_end = _line_onsets(syllables, end - start, rng)
        ends = onsets[1:] + [last_end]
        line_notes = [PlannedNote(start + t, start + e, number, s) for t, e, s in zip(onsets, ends, syllables)]
        if melisma:
            line_notes = _with_melisma(line_notes)
        for i, (note, following) in enumerate(zip(line_notes, line_notes[1:])):  # not the last, nor a slur
            if following.syllable is not None:
                end = _articulated(note.start - start, note.end - start, rng, detached)
                line_notes[i] = replace(note, end=start + end)
        notes += line_notes
    return RhythmPlan(bars * STEPS_PER_BAR, lead_in, tuple(s for s, _ in spans), tuple(notes))


def _position_costs(syllable: Syllable, length: int) -> np.ndarray:
    """Cost of each onset position 0..length-1 of a line (its start on a bar line) for a syllable."""
    position = np.arange(length) % STEPS_PER_BAR
    cost = -np.log(np.asarray(ONSET_SHARE))[position]
    on_beat = position % STEPS_PER_BEAT == 0
    on_1_3 = position % (2 * STEPS_PER_BEAT) == 0
    if syllable.strong:
        cost = cost + np.where(on_beat, np.where(on_1_3, 0.0, STRONG_ON_2_4), OFF_BEAT_STRONG)
    elif syllable.weak:
        cost = cost + np.where(on_1_3, WEAK_ON_1_3, np.where(on_beat, WEAK_ON_2_4, 0.0))
    return cost


_IOI_COST = -np.log(np.asarray(IOI_SHARE))
_LONG = np.isin(np.arange(1, len(IOI_SHARE) + 1), (3, 4, 6)).astype(float)


def _line_onsets(syllables: list[Syllable], length: int, rng: np.random.Generator) -> tuple[list[int], int]:
    """Onsets (steps from the line's start) and the last note's end for one line of `length` steps:
    sampled with probability exp(-cost), the last note the longest; else the cheapest rhythm."""
    n, room = len(syllables), length - BREATH  # every note ends by `room`
    unary = np.stack([_position_costs(s, room) for s in syllables])  # (n, room)
    unary[0] += WAIT * np.arange(room)
    # the last note: held to the breath, at most LONGEST_NOTE
    last_length = np.minimum(room - np.arange(room), LONGEST_NOTE)  # (room,)
    last_cost = np.where(last_length < STEPS_PER_BEAT, SHORT_LAST, 0.0)
    interval_costs = [_IOI_COST - (LONG_STRONG * _LONG if s.strong else 0.0) for s in syllables]
    sampled = _sampled_onsets(unary, interval_costs, last_length, last_cost, rng)
    if sampled is not None:
        return sampled, sampled[-1] + int(last_length[sampled[-1]])
    unary = unary + NOISE * rng.gumbel(size=unary.shape)
    best: tuple[float, list[int]] | None = None
    for cap in CAPS:
        cost = unary[0].copy()
        back = np.zeros((n, room), dtype=np.int64)
        for i in range(1, n):
            options = np.full((cap, room), np.inf)
            ioi_cost = interval_costs[i - 1]
            for gap in range(1, cap + 1):
                options[gap - 1, gap:] = cost[:-gap] + ioi_cost[gap - 1]
            back[i] = options.argmin(0) + 1
            cost = options.min(0) + unary[i]
        final = np.where(last_length >= cap, cost + last_cost, np.inf)
        t = int(final.argmin())
        if not np.isfinite(final[t]) or (best is not None and final[t] >= best[0]):
            continue
        onsets = [t]
        for i in range(n - 1, 0, -1):
            t -= int(back[i, t])
            onsets.append(t)
        best = (float(final.min()), onsets[::-1])
    if best is None:  # fits() let it through, so this is a bug
        raise AssertionError(f"{n} syllables found no rhythm in {length} steps")
    onsets = best[1]
    return onsets, onsets[-1] + int(last_length[onsets[-1]])


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis))


def _draw(log_weights: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probability exp(log_weights): what rng.choice(p=...) does, without its checks."""
    cdf = np.cumsum(np.exp(log_weights - log_weights.max()))
    return int(np.searchsorted(cdf / cdf[-1], rng.random(), side="right"))


def _sampled_onsets(unary: np.ndarray, interval_costs: list, last_length: np.ndarray, last_cost: np.ndarray,
                    rng: np.random.Generator) -> list[int] | None:
    """Onsets drawn with probability exp(-cost) (forward filtering, backward sampling), inner
    intervals up to LONGEST_NOTE; a draw whose last note is not the longest is drawn again (up to
    SAMPLE_TRIES times), None if none is."""
    n, room = unary.shape
    cap = max(CAPS)
    forward = [-unary[0]]
    for i in range(1, n):
        options = np.full((cap, room), -np.inf)
        for gap in range(1, min(cap, room - 1) + 1):
            options[gap - 1, gap:] = forward[-1][:-gap] - interval_costs[i - 1][gap - 1]
        forward.append(_logsumexp(options, 0) - unary[i])
    final = forward[-1] - last_cost
    if not np.isfinite(final).any():
        return None
    for _ in range(SAMPLE_TRIES):
        t = _draw(final, rng)
        onsets = [t]
        for i in range(n - 1, 0, -1):
            gaps = np.arange(1, min(cap, t) + 1)
            t -= int(gaps[_draw(forward[i - 1][t - gaps] - interval_costs[i - 1][gaps - 1], rng)])
            onsets.append(t)
        onsets.reverse()
        if n == 1 or max(np.diff(onsets)) <= last_length[onsets[-1]]:
            return onsets
    return None


def _articulated(onset: int, following: int, rng: np.random.Generator, detached: float = 1.0) -> int:
    """Where a note that the next one follows at `following` ends: there, or a little before."""
    interval = following - onset
    if interval < 2 or rng.random() >= detached * SHORT_SHARE[min(interval, max(SHORT_SHARE))]:
        return following
    shares = GAP_SHARE[min(interval, max(GAP_SHARE))]
    gap = 1 + int(rng.choice(len(shares), p=np.asarray(shares) / sum(shares)))
    return following - min(gap, interval - 1)


def _with_melisma(notes: list[PlannedNote]) -> list[PlannedNote]:
    """The longest inner note of a line (an eighth or more) as two slurred notes of its syllable."""
    inner = [(n.end - n.start, -i) for i, n in enumerate(notes[:-1]) if n.end - n.start >= 2]
    if not inner:
        return notes
    i = -max(inner)[1]
    note = notes[i]
    half = (note.end - note.start) // 2
    middle = note.start + (half // 2 * 2 if half >= 2 else half)  # on an eighth-note step when long enough
    return notes[:i] + [PlannedNote(note.start, middle, note.line, note.syllable),
                        PlannedNote(middle, note.end, note.line, None)] + notes[i + 1 :]
