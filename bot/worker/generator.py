"""The model service of a worker process: check a job, sample every job of a batch in one pass,
render each job's previews (bot/render, in a child process: bot/worker/render_process.py) and
hand back its Outcome as soon as it is ready.

Batching: every variation of every job taken together is one row of one sampled pass
(model.melody.sampling.continue_melodies), up to settings.batch_limit rows, whatever the lengths of the
jobs' primers (shorter ones are left-padded; a job's answer does not depend on its batch).

Failures: a bad request (options out of range, a primer without notes, an unknown instrument)
fails the job with that reason; anything else fails it with GENERIC_ERROR, the details logged
with the job id.

FOR TESTS ONLY (never set in production):
- MELODYBOT_TEST_JOB_DELAY_S=N: a batch holding a job whose user_name is "test-slow" sleeps N s
  after sampling, so a test can kill the worker "mid-job" (or time a job out) reliably.
- MELODYBOT_TEST_SKIP_RENDER=1: no audio or pictures (empty bytes in each Variation), so the load
  test measures the queue rather than FluidSynth on a busy 2-core machine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

from bot.jobs import GENERIC_ERROR, Job, JobState
from bot.settings import Settings
from bot.worker.allocator import return_large_buffers
from bot.worker.components import (
    CHORDS,
    CHORDS_UNAVAILABLE,
    MELODY,
    component_problem,
    harmony_problem,
    melody_path,
    needs_suggested_chords,
)
from bot.worker.rendering import Outcome, Sampled
from model.defaults import MAX_BARS, length_problem

log = logging.getLogger(__name__)

TEST_DELAY_ENV = "MELODYBOT_TEST_JOB_DELAY_S"  # tests only, see the module docstring
TEST_SKIP_RENDER_ENV = "MELODYBOT_TEST_SKIP_RENDER"  # the load test only
SLOW_USER = "test-slow"  # tests only: the user_name TEST_DELAY_ENV applies to
WARMUP_PRIMER = [2 + 24, 0, 0, 1, 2 + 28, 0, 0, 1]  # C4 and E4 eighths: one short pass at start
FIRST_PASS_ROWS = 16  # a pass while nothing waits to be rendered: its jobs render (and answer) soon
GATHER_S = 0.02  # a job arriving while others keep coming waits this long for those arriving with it
QUIET_S = 0.25  # ... but one arriving this long after the last starts at once (a person typing, not a burst)


def pass_rows(limit: int, rows_to_render: int) -> int:
    """Rows for the next sampling pass. Rendering a job takes longer than its share of a pass, so
    in a burst the renderer must never wait: the first pass is small, so rendering starts soon,
    and each later one twice what waits to be rendered (it is sampled meanwhile), up to `limit`
    (settings.batch_limit)."""
    return min(limit, max(FIRST_PASS_ROWS, 2 * rows_to_render))


class Gathering:
    """How long the worker waits, as a job arrives, for other jobs to join its pass: GATHER_S while
    jobs keep coming (a burst samples in fewer, larger passes), nothing for a job after a quiet
    spell of QUIET_S (on an idle bot the wait was 20 ms of every answer, ~4% of `!continue`)."""

    def __init__(self):
        self._last: float | None = None  # time.monotonic() of the last arrival

    def wait_s(self) -> float:
        """Seconds to wait now that a job arrived (and note its arrival)."""
        now, last = time.monotonic(), self._last
        self._last = now
        return GATHER_S if last is not None and now - last < QUIET_S else 0.0


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


class Generator:
    """The model and the steps of a job: check, sample (batched), render."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model = None
        self.device = "cpu"
        self.delay_s = float(os.environ.get(TEST_DELAY_ENV) or 0)
        self.skip_render = os.environ.get(TEST_SKIP_RENDER_ENV) == "1"
        self._render_process = None  # started by load(), or by the first job to render
        self.problems: dict[str, str] = {}  # learned component -> why it did not load (/healthz says it)
        if self.delay_s or self.skip_render:
            log.warning("test knobs set: delay %.1f s per batch, skip render %s", self.delay_s, self.skip_render)

    def load(self) -> None:
        """Load the model and warm it up. Raises if it cannot (no weights yet?): run() tries again
        for each batch and fails the jobs meanwhile, so users hear why instead of waiting forever.
        The chord model is checked too; one that cannot load is an error said at once (and in
        self.problems), see bot/worker/components.py."""
        import torch

        from model.melody.sampling import SamplingOptions, continue_melodies, load_model

        self._renderer().start()  # it loads the soundfont while the model loads here
        self.check_chords()
        return_large_buffers()  # a pass's tables go back to the system after it (bot/worker/allocator.py)

        if self.settings.worker_threads:  # step-by-step sampling: more threads mostly fight over cores
            torch.set_num_threads(self.settings.worker_threads)
        device = self.settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        started = time.perf_counter()
        try:
            model = load_model(str(melody_path(self.settings)), device)
        except Exception as error:
            self.problems[MELODY] = component_problem(MELODY, melody_path(self.settings), error)
            raise
        self.problems.pop(MELODY, None)
        continue_melodies(model, [WARMUP_PRIMER], [SamplingOptions(bars=1, variations=1)])  # warm up
        from model.lyrics.syllables import warm_up

        warm_up()  # the pronouncing dictionary (~0.2 s), so the first job with words waits no longer
        self._renderer().wait_ready()
        self.model, self.device = model, device
        log.info("model and renderer loaded on %s and warmed up in %.1f s", device, time.perf_counter() - started)

    def check_chords(self) -> None:
        """Whether the chord model loads: an error line the first time it does not, a line when it
        loads again (the file was fixed); self.problems holds the reason meanwhile."""
        reason = harmony_problem(self.settings)
        if reason and CHORDS not in self.problems:
            log.error("%s; jobs that need suggested chords fail until it loads (chords=off still works)", reason)
        elif not reason and CHORDS in self.problems:
            log.info("the %s loads now", CHORDS)
        if reason:
            self.problems[CHORDS] = reason
        else:
            self.problems.pop(CHORDS, None)

    def _prepare(self, job: Job, words: dict | None = None):
        """(primer as sampled, SamplingOptions, the continuation's chords per step or None);
        ValueError with a user-facing reason."""
        from model.melody.sampling import SamplingOptions, prepare_primer
        from model.music.events import NUM_CLASSES

        options = SamplingOptions(
            bars=job.bars,
            variations=job.variations,
            temperature=job.temperature,
            top_p=job.top_p,
            seed=job.seed,
            keep_key=job.keep_key,
            form=job.form,
        )
        options.check()
        problem = length_problem(job.bars, job.bpm)
        if problem:
            raise ValueError(problem)
        if any(not isinstance(e, int) or not 0 <= e < NUM_CLASSES for e in job.primer):
            raise ValueError("the primer holds events the model does not know")
        primer = prepare_primer(job.primer)
        if CHORDS in self.problems and needs_suggested_chords(job):
            raise ValueError(CHORDS_UNAVAILABLE)
        from model.band.styles import resolve_style

        resolve_style(job.style)  # StyleError is a ValueError: a bad request
        if job.lyrics:  # the words' rhythm, one plan a variation (LyricsError is a ValueError: the job fails with it)
            from dataclasses import replace

            from model.lyrics.setting import set_lyrics

            setting = set_lyrics(job.lyrics, primer, job.bars, job.variations, job.seed, job.melisma, MAX_BARS)
            options = replace(options, rhythm=setting.rhythm)
            if words is not None:  # where each syllable goes, handed to the renderer with the notes
                words[job.job_id] = [[list(pair) for pair in setting.placements(v)] for v in range(job.variations)]
        if not self.skip_render:
            from bot.render import RenderError, resolve_instrument

            try:
                resolve_instrument(job.instrument)
            except RenderError as error:
                raise ValueError(str(error)) from None
        return primer, options, given_chords(job, len(primer))

    def run(self, jobs: list[Job], wanted: Callable[[Job], bool] | None = None) -> Iterator[Outcome]:
        """Every job's outcome, each as soon as it is ready: all jobs are sampled in one batched
        pass (keep them within settings.batch_limit rows), then rendered one by one. A job that
        `wanted` says is no longer wanted (cancelled meanwhile) is not rendered: CANCELLED."""
        for item in self.sample(jobs):
            yield item if isinstance(item, Outcome) else self.render(item, wanted)

    def sample(self, jobs: list[Job]) -> Iterator[Outcome | Sampled]:
        """One batched pass over every job: a Sampled for each job to render, an Outcome (FAILED)
        for a job that cannot be sampled. Workers render a Sampled on another thread, so the
        next batch samples while this one renders."""
        from model.melody.sampling import continue_melodies

        started = time.time()
        if self.model is None:
            try:
                self.load()
            except Exception:
                log.exception("the model cannot be loaded; failing jobs %s", [job.job_id for job in jobs])
                for job in jobs:
                    yield Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))
                return
        if CHORDS in self.problems:
            self.check_chords()  # fixed meanwhile? (cheap: a missing or broken file fails at once)
        ready, words = [], {}  # words: job id -> its syllables' placements per variation
        for job in jobs:
            try:
                ready.append((job, *self._prepare(job, words)))  # (job, primer, options, chords)
            except ValueError as error:
                yield Outcome(job, JobState.FAILED, error=_sentence(str(error)))
        if not ready:
            return
        try:
            sampled = continue_melodies(self.model, [r[1] for r in ready], [r[2] for r in ready],
                                        chords=[r[3] for r in ready])
        except Exception:
            if len(ready) == 1:
                job = ready[0][0]
                log.exception("job %s: sampling failed", job.job_id)
                yield Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))
                return
            log.exception("sampling a batch of %d jobs failed; running them one by one", len(ready))
            sampled = []
            for job, primer, options, chords in ready:
                try:
                    sampled.append(continue_melodies(self.model, [primer], [options], chords=[chords])[0])
                except Exception:
                    log.exception("job %s: sampling failed", job.job_id)
                    sampled.append(None)
        sample_s = time.time() - started
        if self.delay_s and any(r[0].user_name == SLOW_USER for r in ready):
            time.sleep(self.delay_s)  # tests only
        for (job, primer, _, chords), continuations in zip(ready, sampled):
            if continuations is None:
                yield Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))
            else:
                yield Sampled(job, primer, continuations, chords, started, sample_s, words.get(job.job_id))

    def render(self, sampled: Sampled, wanted: Callable[[Job], bool] | None = None) -> Outcome:
        """The job's previews and Result, rendered in the render process (bot/worker/render_process.py:
        beside the next batch's sampling, not taking turns with it); CANCELLED if not wanted."""
        job = sampled.job
        if wanted is not None and not wanted(job):
            return Outcome(job, JobState.CANCELLED)
        return self._renderer().render(sampled)

    def _renderer(self):
        if self._render_process is None:
            from bot.worker.render_process import RenderProcess

            self._render_process = RenderProcess(self.settings, self.skip_render)
        return self._render_process

    def close(self) -> None:
        """Stop the render process, if one was started."""
        if self._render_process is not None:
            self._render_process.close()


def given_chords(job: Job, primer_steps: int) -> list | None:
    """The continuation's chords per step from the job's lead sheet, or None when it gives none."""
    if not job.harmony or not job.chords:
        return None
    from model.melody.sampling import continuation_chords
    from model.music.chords import parse_lead_sheet
    from model.music.events import STEPS_PER_BAR

    return continuation_chords(parse_lead_sheet(job.chords), primer_steps, job.bars * STEPS_PER_BAR)
