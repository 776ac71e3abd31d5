"""Words set to a continuation: the lyrics parsed, the bars chosen, one rhythm plan per variation.

Both sides call `set_lyrics` with the same inputs and get the same plans (they are a function of
the words, the bars, where the primer ends, melisma and the seed): the bot to check the words and
choose the bars before a job is queued, the worker to sample (SamplingOptions.rhythm) and to
place each syllable on its note (MIDI lyric events, lead sheet, piano roll). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.lyrics.rhythm import RhythmPlan, choose_bars, plan_rhythm
from model.lyrics.syllables import Lyrics, parse_lyrics, split_lines
from model.music.events import NOTE_OFF, STEPS_PER_BAR

PLAN_SEEDS = 16  # a variation's plan seed is seed * PLAN_SEEDS + variation (model.defaults.MAX_VARIATIONS)


@dataclass(frozen=True)
class LyricSetting:
    lyrics: Lyrics
    bars: int
    primer_steps: int  # the primer as sampled (model.melody.sampling.prepare_primer)
    plans: tuple[RhythmPlan, ...]  # one per variation

    @property
    def rhythm(self) -> tuple[tuple[int, ...], ...]:
        """SamplingOptions.rhythm: per variation, its step codes."""
        return tuple(tuple(plan.step_codes()) for plan in self.plans)

    def placements(self, variation: int) -> list[tuple[int, str]]:
        """(step of primer + continuation, karaoke syllable) of a variation (0-based)."""
        return self.plans[variation].lyric_events(self.primer_steps)


def sampled_length(primer: list[int]) -> int:
    """The primer's length as the sampler continues it: without a trailing NOTE_OFF (whole bars cut
    from the front of a long one do not move the bar lines)."""
    return len(primer) - 1 if len(primer) > 1 and primer[-1] == NOTE_OFF else len(primer)


def lead_in(primer_steps: int) -> int:
    """Steps from the continuation's start to its first bar line."""
    return -primer_steps % STEPS_PER_BAR


def set_lyrics(text: str | Lyrics, primer: list[int] | int, bars: int | None, variations: int, seed: int,
               melisma: bool = False, max_bars: int = 32) -> LyricSetting:
    """Parse (unless parsed), choose the bars (`bars` when given) and plan each variation's
    rhythm; LyricsError with a songwriter's reason when the words cannot be set. `primer`: its
    events, or its sampled length."""
    lyrics = parse_lyrics(text) if isinstance(text, str) else text
    steps = primer if isinstance(primer, int) else sampled_length(primer)
    bars = choose_bars(lyrics, bars, max_bars, lead_in(steps))
    plans = tuple(plan_rhythm(lyrics, bars, lead_in(steps), melisma, seed * PLAN_SEEDS + v) for v in range(variations))
    return LyricSetting(lyrics, bars, steps, plans)


def round_lines(text: str, rounds: int) -> list[str]:
    """A jam's words shared by its rounds: consecutive lines, as many a round as it takes to sing
    them all once (round r sings part r; with fewer parts than rounds they come round again, a
    refrain). No dictionary needed: LyricsError only for what split_lines refuses."""
    lines = split_lines(text)
    per_round = -(-len(lines) // rounds)
    return [" / ".join(lines[i : i + per_round]) for i in range(0, len(lines), per_round)]
