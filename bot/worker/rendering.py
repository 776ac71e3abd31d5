"""A sampled job's previews, made where the worker renders (bot/worker/render_process.py runs
render_job in its child): the chords under each variation (given, the sketch's own, or suggested),
MIDI, MP3 and piano roll (bot/render), and the job's Result; or why it failed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot.jobs import GENERIC_ERROR, Job, JobState, Result, Variation
from bot.observability import job_context
from bot.settings import Settings

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


def warm_renderer(settings: Settings, skip_render: bool) -> None:
    """Load the soundfont and the encoders now, so the first job renders as fast as the next."""
    if skip_render:
        return
    from bot.render import check_setup

    try:
        check_setup(str(settings.soundfont) if settings.soundfont else None)
    except Exception:  # each job then fails with the reason logged
        log.exception("the renderer is not set up")


def render_job(settings: Settings, sampled: Sampled, skip_render: bool = False) -> Outcome:
    """The job's previews and Result, DONE; FAILED with the generic message (the details logged
    with the job id) if rendering fails. skip_render (the load test only): empty previews."""
    job = sampled.job
    with job_context(job.job_id):  # every log line while rendering names the job
        try:
            return Outcome(job, JobState.DONE, result=_result(settings, sampled, skip_render))
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
    progressions = [harmony_of(job, primer, continuation, chords) for continuation in continuations]
    sheets = [lead_sheet(p) if p is not None else None for p in progressions]
    if skip_render:
        variations, combined = [Variation(m, b"", b"", b"", s) for m, s in zip(melodies, sheets)], b""
    else:
        from bot.render import render_variations

        soundfont = str(settings.soundfont) if settings.soundfont else None
        previews, combined, _ = render_variations(
            melodies, len(primer), job.bpm, job.instrument, soundfont=soundfont, chords=progressions
        )
        variations = [Variation(m, p.midi, p.mp3, p.png, s) for m, p, s in zip(melodies, previews, sheets)]
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


def harmony_of(job: Job, primer: list[int], continuation: list[int], chords: list | None) -> list | None:
    """The chords under primer + continuation for the preview: the sketch's own and the given
    ones where there are, suggested (model/harmony/suggest.py) where not; None with chords=off."""
    if not job.harmony:
        return None
    from model.harmony.suggest import suggest_chords
    from model.music.chords import chords_per_step, parse_lead_sheet

    melody = primer + continuation
    suggested = None
    if chords is None or job.primer_chords is None:
        try:
            suggested = suggest_chords(melody)
        except Exception:  # the melody still goes out: suggested chords are an extra
            log.exception("job %s: suggesting chords failed; the preview has none where none were given", job.job_id)
            if chords is None and job.primer_chords is None:
                return None
            suggested = [None] * len(melody)
    if chords is None and job.primer_chords is None:
        return suggested
    under_primer = (chords_per_step(parse_lead_sheet(job.primer_chords), len(primer)) if job.primer_chords
                    else suggested[: len(primer)])
    under_continuation = chords if chords is not None else suggested[len(primer):]
    return list(under_primer) + list(under_continuation[: len(continuation)])
