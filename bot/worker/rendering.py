"""A sampled job's previews, made where the worker renders (bot/worker/render_process.py runs
render_job in its child): the chords under each variation (given, the sketch's own, or suggested),
the band that plays it in the job's style (model/band: one Arrangement per variation), its MIDI
(model.music.midi_io.write_arrangement), MP3 and piano roll (bot/render, handed the arrangements
and MIDI where it takes them), and the job's Result; or why it failed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot.jobs import GENERIC_ERROR, Job, JobState, Result, Variation
from bot.observability import job_context
from bot.settings import Settings
from bot.worker.components import CHORDS_FAILED, ChordsUnavailable, load_harmony

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    job: Job
    state: JobState  # DONE, FAILED, or CANCELLED (the job was cancelled meanwhile: nothing to report)
    result: Result | None = None
    error: str | None = None


@dataclass
class Sampled:
    """A job whose continuations are sampled, waiting to be rendered."""

    job: Job
    primer: list[int]  # as sampled (model.melody.sampling.prepare_primer)
    continuations: list[list[int]]
    chords: list | None  # the continuation's given chords per step
    started: float  # when its batch started (unix seconds)
    sample_s: float  # seconds its batch took to sample
    lyrics: list | None = None  # per variation, [step, syllable] of each sung syllable (jobs with words)


def warm_renderer(settings: Settings, skip_render: bool) -> None:
    """Load the soundfont, the encoders and the band's texture table now, so the first job renders
    as fast as the next."""
    if skip_render:
        return
    from bot.render import check_setup
    from model.band.keys import load_library

    # Not the pronouncing dictionary (26 MiB here): the worker hands each job's syllables over with its
    # notes (Sampled.lyrics); lyric_placements loads it only for a job that comes without them.
    try:
        load_library()
        check_setup(str(settings.soundfont) if settings.soundfont else None)
    except Exception:  # each job then fails with the reason logged
        log.exception("the renderer is not set up")
    try:
        load_harmony(settings)  # here too, so the first job's chords come as fast as the next
    except Exception:  # the worker said so at start (bot/worker/components.py); jobs needing it fail
        pass


def render_job(settings: Settings, sampled: Sampled, skip_render: bool = False) -> Outcome:
    """The job's previews and Result, DONE; FAILED with the generic message (the details logged
    with the job id) if rendering fails. skip_render (the load test only): empty previews."""
    job = sampled.job
    with job_context(job.job_id):  # every log line while rendering names the job
        try:
            return Outcome(job, JobState.DONE, result=_result(settings, sampled, skip_render))
        except ChordsUnavailable as error:  # logged where it happened; the user hears why
            return Outcome(job, JobState.FAILED, error=str(error))
        except Exception:
            log.exception("job %s: rendering failed", job.job_id)
            return Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))


def _result(settings: Settings, sampled: Sampled, skip_render: bool) -> Result:
    from model.melody.sampling import detect_key
    from model.music.chords import lead_sheet

    job, primer, continuations, chords = sampled.job, sampled.primer, sampled.continuations, sampled.chords
    started, sample_s = sampled.started, sampled.sample_s
    melodies = [primer + continuation for continuation in continuations]
    render_started = time.time()
    progressions = [harmony_of(job, primer, continuation, chords, settings) for continuation in continuations]
    sheets = [lead_sheet(p) if p is not None else None for p in progressions]
    words = sampled.lyrics if sampled.lyrics is not None else lyric_placements(job, primer, len(continuations))
    if skip_render:
        variations, combined = [Variation(m, b"", b"", s, w) for m, s, w in zip(melodies, sheets, words)], b""
    else:
        from bot.render import render_variations
        from model.music.midi_io import write_arrangement

        arrangements = arrange_variations(job, melodies, len(primer), progressions)
        # the MIDI a songwriter drags into a DAW: one named track per part, chord markers, the tempo
        midis = [write_arrangement(a, job.bpm, p, lyrics=w if job.lyrics else None)
                 for a, p, w in zip(arrangements, progressions, words)]
        soundfont = str(settings.soundfont) if settings.soundfont else None
        previews, combined, _ = render_variations(
            melodies, len(primer), job.bpm, job.instrument, soundfont=soundfont, chords=progressions,
            arrangements=arrangements, midis=midis, lyrics=words if job.lyrics else None,
        )
        variations = [Variation(m, midi, p.mp3, s, w)
                      for m, midi, p, s, w in zip(melodies, midis, previews, sheets, words)]
    now = time.time()
    key = detect_key(primer)
    return Result(
        job_id=job.job_id,
        primer_steps=len(primer),
        variations=variations,
        combined_png=combined,
        key=key.name if key else None,
        timings={
            "queued": max(0.0, started - job.created_at),
            "sample": sample_s,
            "render": now - render_started,
            "total": max(0.0, now - job.created_at),
        },
    )


def arrange_variations(job: Job, melodies: list[list[int]], primer_steps: int,
                       progressions: list[list | None]) -> list:
    """One model.band Arrangement per variation, in the job's style: the band under each melody
    (primer + continuation) and its chords; each variation's band differs (seed + number)."""
    from bot.render import INSTRUMENTS, resolve_instrument
    from model.band.arrange import arrange

    program = INSTRUMENTS[resolve_instrument(job.instrument)]
    return [arrange(melody, chords, job.bpm, job.style, seed=job.seed * 16 + number, primer_steps=primer_steps,
                    melody_program=program)
            for number, (melody, chords) in enumerate(zip(melodies, progressions))]


def lyric_placements(job: Job, primer: list[int], variations: int) -> list[list | None]:
    """Per variation, [step, syllable] of each sung syllable (the plans the sampler followed: the
    same inputs give the same plans), or None for each without words."""
    if not job.lyrics:
        return [None] * variations
    from model.defaults import MAX_BARS
    from model.lyrics.setting import set_lyrics

    setting = set_lyrics(job.lyrics, primer, job.bars, job.variations, job.seed, job.melisma, MAX_BARS)
    return [[list(pair) for pair in setting.placements(v)] for v in range(variations)]


def harmony_of(job: Job, primer: list[int], continuation: list[int], chords: list | None,
               settings: Settings | None = None) -> list | None:
    """The chords under primer + continuation for the preview: the sketch's own and the given
    ones where there are, suggested where not (model.band.harmony, the CLI's rule, with the chord
    model of settings.harmony_weights); None with chords=off. Raises ChordsUnavailable when chords
    must be suggested and cannot be: the job fails saying so, rather than going out without them."""
    if not job.harmony:
        return None
    from model.band.harmony import chords_under
    from model.music.chords import chords_per_step, parse_lead_sheet

    under_primer = chords_per_step(parse_lead_sheet(job.primer_chords), len(primer)) if job.primer_chords else None
    harmony = None
    if chords is None or under_primer is None:
        try:
            harmony = load_harmony(settings or Settings())
        except Exception as error:  # the worker said why at start and says it in /healthz
            log.error("job %s: suggesting chords failed: the chord model did not load (%s)", job.job_id, error)
            raise ChordsUnavailable() from error
    try:
        return chords_under(primer + continuation, len(primer), under_primer, chords, harmony=harmony, strict=True)
    except Exception as error:
        log.exception("job %s: suggesting chords failed", job.job_id)
        raise ChordsUnavailable(CHORDS_FAILED.format(job_id=job.job_id)) from error
