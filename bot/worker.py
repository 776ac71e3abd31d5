"""The worker process: holds the model (loaded once, kept warm), samples jobs in batches, renders.

    python -m bot.worker --redis redis://host:6379/0    # a Celery worker for the Redis queue
    python -m bot.worker --local data/melodybot.sqlite3  # the embedded queue's worker (LocalQueue
                                                         # starts and supervises it itself)

Settings come from the environment / .env as for the bot (bot/settings.py). The bot process
never imports this module's torch side: torch and the model are imported inside the worker only.

Batching: every variation of every job taken together is one row of one sampled pass
(model.sampling.continue_melodies), up to settings.batch_limit rows. The embedded worker claims
all queued jobs that fit; a Celery worker runs its pool threads' jobs through one Batcher thread,
so jobs that arrive together share a pass. Each job is rendered (bot/render) right after the pass
and reported as soon as it is ready.

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

import argparse
import atexit
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from bot.jobs import Job, JobState, Result, Variation
from bot.observability import job_context, observe_job, serve_in_thread, setup_logging
from bot.queue.base import GENERIC_ERROR
from bot.settings import Settings, SettingsError
from model.defaults import DEFAULT_WEIGHTS

log = logging.getLogger("bot.worker")

TEST_DELAY_ENV = "MELODYBOT_TEST_JOB_DELAY_S"  # tests only, see the module docstring
TEST_SKIP_RENDER_ENV = "MELODYBOT_TEST_SKIP_RENDER"  # the load test only
SLOW_USER = "test-slow"  # tests only: the user_name TEST_DELAY_ENV applies to
IDLE_POLL_S = 0.5  # embedded worker: how often an idle worker looks for jobs without a wake-up
GATHER_S = 0.02  # after a wake-up, wait this long for other jobs arriving together
WARMUP_PRIMER = [2 + 24, 0, 0, 1, 2 + 28, 0, 0, 1]  # C4 and E4 eighths: one short pass at start


@dataclass
class Outcome:
    job: Job
    state: JobState  # DONE, FAILED, or CANCELLED (the job was cancelled meanwhile: nothing to report)
    result: Result | None = None
    error: str | None = None


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
        if self.delay_s or self.skip_render:
            log.warning("test knobs set: delay %.1f s per batch, skip render %s", self.delay_s, self.skip_render)

    def load(self) -> None:
        """Load the model and warm it up. Raises if it cannot (no weights yet?): run() tries again
        for each batch and fails the jobs meanwhile, so users hear why instead of waiting forever."""
        import torch

        from model.sampling import SamplingOptions, continue_melodies, load_model

        if self.settings.worker_threads:  # step-by-step sampling: more threads mostly fight over cores
            torch.set_num_threads(self.settings.worker_threads)
        device = self.settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        started = time.perf_counter()
        model = load_model(str(self.settings.weights or DEFAULT_WEIGHTS), device)
        continue_melodies(model, [WARMUP_PRIMER], [SamplingOptions(bars=1, variations=1)])  # warm up
        self.model, self.device = model, device
        log.info("model loaded on %s and warmed up in %.1f s", device, time.perf_counter() - started)

    def _prepare(self, job: Job):
        """(primer as sampled, SamplingOptions); ValueError with a user-facing reason."""
        from model.events import NUM_CLASSES
        from model.sampling import SamplingOptions, prepare_primer

        options = SamplingOptions(
            bars=job.bars,
            variations=job.variations,
            temperature=job.temperature,
            top_p=job.top_p,
            seed=job.seed,
            keep_key=job.keep_key,
        )
        options.check()
        if any(not isinstance(e, int) or not 0 <= e < NUM_CLASSES for e in job.primer):
            raise ValueError("the primer holds events the model does not know")
        primer = prepare_primer(job.primer)
        if not self.skip_render:
            from bot.render import RenderError, resolve_instrument

            try:
                resolve_instrument(job.instrument)
            except RenderError as error:
                raise ValueError(str(error)) from None
        return primer, options

    def run(self, jobs: list[Job], wanted: Callable[[Job], bool] | None = None) -> Iterator[Outcome]:
        """Every job's outcome, each as soon as it is ready: all jobs are sampled in one batched
        pass (keep them within settings.batch_limit rows), then rendered one by one. A job that
        `wanted` says is no longer wanted (cancelled meanwhile) is not rendered: CANCELLED."""
        from model.sampling import continue_melodies

        started = time.time()
        if self.model is None:
            try:
                self.load()
            except Exception:
                log.exception("the model cannot be loaded; failing jobs %s", [job.job_id for job in jobs])
                for job in jobs:
                    yield Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))
                return
        ready = []
        for job in jobs:
            try:
                ready.append((job, *self._prepare(job)))
            except ValueError as error:
                yield Outcome(job, JobState.FAILED, error=_sentence(str(error)))
        if not ready:
            return
        try:
            sampled = continue_melodies(self.model, [p for _, p, _ in ready], [o for _, _, o in ready])
        except Exception:
            if len(ready) == 1:
                job = ready[0][0]
                log.exception("job %s: sampling failed", job.job_id)
                yield Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))
                return
            log.exception("sampling a batch of %d jobs failed; running them one by one", len(ready))
            sampled = []
            for job, primer, options in ready:
                try:
                    sampled.append(continue_melodies(self.model, [primer], [options])[0])
                except Exception:
                    log.exception("job %s: sampling failed", job.job_id)
                    sampled.append(None)
        sample_s = time.time() - started
        if self.delay_s and any(job.user_name == SLOW_USER for job, _, _ in ready):
            time.sleep(self.delay_s)  # tests only
        for (job, primer, _), continuations in zip(ready, sampled):
            if continuations is None:
                yield Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))
                continue
            if wanted is not None and not wanted(job):
                yield Outcome(job, JobState.CANCELLED)
                continue
            with job_context(job.job_id):  # every log line while rendering names the job
                try:
                    result = self._result(job, primer, continuations, started, sample_s)
                    outcome = Outcome(job, JobState.DONE, result=result)
                except Exception:
                    log.exception("job %s: rendering failed", job.job_id)
                    outcome = Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))
            yield outcome

    def _result(self, job: Job, primer: list[int], continuations, started: float, sample_s: float) -> Result:
        from model.sampling import detect_key

        melodies = [primer + continuation for continuation in continuations]
        render_started = time.time()
        if self.skip_render:  # tests only
            variations, combined = [Variation(m, b"", b"", b"") for m in melodies], b""
        else:
            from bot.render import render_variations

            soundfont = str(self.settings.soundfont) if self.settings.soundfont else None
            previews, combined, _ = render_variations(
                melodies, len(primer), job.bpm, job.instrument, soundfont=soundfont
            )
            variations = [Variation(m, p.midi, p.mp3, p.png) for m, p in zip(melodies, previews)]
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


# -- the embedded worker ---------------------------------------------------------------------------
# The embedded worker shares the bot's machine: a lower CPU priority keeps the bot answering
# commands at once while a job renders (FluidSynth and ffmpeg inherit it).
LOCAL_WORKER_NICENESS = 5


def run_local(database: Path, token: str, supervised: bool) -> None:
    """Claim jobs from the SQLite queue, run them, write the outcomes back, until SIGTERM (after
    the batch in hand) or, when supervised, until stdin closes (the bot is gone)."""
    from bot.store import Store

    settings = Settings.load(dotenv=None if supervised else Path(".env"))
    if supervised:
        os.nice(LOCAL_WORKER_NICENESS)
    store = Store(database)
    generator = Generator(settings)
    try:
        generator.load()
    except Exception:  # jobs fail with a generic message until it loads; not "ready" meanwhile
        log.exception("the model cannot be loaded; jobs will fail until it can")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    announced = False
    while not stop.is_set():
        if generator.model is not None and not announced:
            print("ready", flush=True)
            announced = True
        if supervised and os.getppid() != parent:  # the bot died: a new one will start its own worker
            log.info("the bot is gone; exiting")
            break
        jobs = store.claim(token, settings.batch_limit)
        if not jobs:
            if not _wait_for_wakeup(supervised, IDLE_POLL_S):
                log.info("the bot is gone; exiting")
                break
            continue
        log.info("batch of %d jobs (%d rows): %s", len(jobs), sum(j.variations for j in jobs), [j.job_id for j in jobs])
        for outcome in generator.run(jobs, wanted=lambda job: store.holds(job.job_id, token)):
            if outcome.state == JobState.CANCELLED:
                continue
            kept = store.finish(
                outcome.job.job_id, outcome.state, result=outcome.result, error=outcome.error, worker=token
            )
            if not kept:
                log.info("job %s was cancelled or taken back meanwhile; its result is dropped", outcome.job.job_id)
    store.close()


def _wait_for_wakeup(supervised: bool, timeout: float) -> bool:
    """Wait until the bot writes a line on stdin (a job arrived) or `timeout` passes. False if
    stdin closed: the supervising bot died."""
    if not supervised:
        time.sleep(timeout)
        return True
    readable, _, _ = select.select([sys.stdin.buffer], [], [], timeout)
    if readable:
        if not os.read(sys.stdin.fileno(), 4096):
            return False
        time.sleep(GATHER_S)  # jobs submitted together join the same batch
    return True


# -- the Celery worker -----------------------------------------------------------------------------
class Batcher:
    """Celery's pool threads hand their jobs to one thread that owns the model; it runs whatever
    is waiting (up to `limit` rows) as one batch."""

    def __init__(
        self,
        generator: Generator,
        limit: int,
        on_start: Callable[[list[Job]], None],
        wanted: Callable[[Job], bool] | None = None,
    ):
        self.generator, self.limit, self.on_start, self.wanted = generator, limit, on_start, wanted
        self._waiting: list[tuple[Job, Future]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._loop, name="melodybot-batcher", daemon=True).start()

    def run(self, job: Job) -> Outcome:
        future: Future = Future()
        with self._cond:
            self._waiting.append((job, future))
            self._cond.notify()
        return future.result()

    def _take(self) -> list[tuple[Job, Future]]:
        with self._cond:
            while not self._waiting:
                self._cond.wait()
        time.sleep(GATHER_S)
        batch, rows = [], 0
        with self._cond:
            while self._waiting and (not batch or rows + self._waiting[0][0].variations <= self.limit):
                batch.append(self._waiting.pop(0))
                rows += batch[-1][0].variations
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            futures = {id(job): future for job, future in batch}
            try:
                self.on_start([job for job, _ in batch])
                for outcome in self.generator.run([job for job, _ in batch], self.wanted):
                    futures[id(outcome.job)].set_result(outcome)
            except BaseException as error:  # noqa: B036 - handed to the waiting task threads
                for future in futures.values():
                    if not future.done():
                        future.set_exception(error)


class CeleryWorker:
    """One Celery worker process's state: the warm model behind a Batcher, a Redis client to
    report to the bot, and a heartbeat so the bot knows this worker is alive."""

    def __init__(self, settings: Settings):
        import redis

        from bot.queue import celery_backend as cb

        self.cb = cb
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.started_at = time.time()
        self._beat()  # alive before it takes any job
        threading.Thread(target=self._heartbeat, name="melodybot-heartbeat", daemon=True).start()
        atexit.register(self._goodbye)
        self.generator = Generator(settings)
        try:
            self.generator.load()
        except Exception:  # jobs fail with a generic message until it loads
            log.exception("the model cannot be loaded; jobs will fail until it can")
        self.batcher = Batcher(self.generator, settings.batch_limit, self._started, self._wanted)
        log.info("worker %s ready", self.name)

    def handle(self, job_data: dict) -> None:
        """The Celery task's body."""
        job = Job.from_dict(job_data)
        with job_context(job.job_id):
            self._handle(job)

    def _handle(self, job: Job) -> None:
        if self.redis.exists(self.cb.finished_key(job.job_id)):
            log.info("job %s is already finished or cancelled; skipping it", job.job_id)
            return
        outcome = self.batcher.run(job)
        observe_job(outcome.result.timings if outcome.result else None, outcome.state)
        if outcome.state == JobState.CANCELLED:
            return
        event = {"job_id": job.job_id, "state": outcome.state.value, "worker": self.name, "at": time.time()}
        if outcome.result is not None:
            event["result"] = outcome.result.to_dict()
        if outcome.error is not None:
            event["error"] = outcome.error
        pipe = self.redis.pipeline()
        pipe.rpush(self.cb.EVENTS_KEY, json.dumps(event))
        pipe.set(self.cb.finished_key(job.job_id), outcome.state.value, ex=self.cb.FINISHED_TTL_S)
        pipe.execute()

    def _wanted(self, job: Job) -> bool:
        try:
            return not self.redis.exists(self.cb.finished_key(job.job_id))
        except Exception:  # Redis unreachable: render anyway
            return True

    def _started(self, jobs: list[Job]) -> None:
        log.info("batch of %d jobs (%d rows): %s", len(jobs), sum(j.variations for j in jobs), [j.job_id for j in jobs])
        now = time.time()
        pipe = self.redis.pipeline()
        for job in jobs:
            event = {"job_id": job.job_id, "state": JobState.RUNNING.value, "worker": self.name, "at": now}
            pipe.rpush(self.cb.EVENTS_KEY, json.dumps(event))
        pipe.execute()

    def _beat(self) -> None:
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_at": self.started_at})
        self.redis.set(self.cb.worker_key(self.name), info, ex=self.cb.HEARTBEAT_TTL_S)

    def _heartbeat(self) -> None:
        while True:
            time.sleep(self.cb.HEARTBEAT_S)
            try:
                self._beat()
            except Exception:
                log.warning("heartbeat to Redis failed", exc_info=True)

    def _goodbye(self) -> None:
        try:
            self.redis.delete(self.cb.worker_key(self.name))
        except Exception:
            pass


_celery_worker: CeleryWorker | None = None
_celery_worker_lock = threading.Lock()


def celery_worker(settings: Settings) -> CeleryWorker:
    """This process's CeleryWorker, created (model loaded) on first use."""
    global _celery_worker
    with _celery_worker_lock:
        if _celery_worker is None:
            _celery_worker = CeleryWorker(settings)
        return _celery_worker


def run_celery(settings: Settings, concurrency: int, visibility_timeout_s: float | None, loglevel: str) -> None:
    from bot.queue.celery_backend import QUEUE_NAME, make_celery

    app = make_celery(settings, visibility_timeout_s=visibility_timeout_s)
    worker = celery_worker(settings)  # load the model before taking jobs

    async def health() -> dict:
        return {"status": "ok" if worker.generator.model is not None else "model not loaded", "worker": worker.name}

    serve_in_thread(settings.http_port, health)  # /healthz and /metrics of this worker
    app.worker_main([
        "worker", "--pool", "threads", "--concurrency", str(concurrency), "--queues", QUEUE_NAME,
        "--hostname", f"melodybot-{os.getpid()}@%h", "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.worker", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--redis", metavar="URL", help="take jobs from this Redis through Celery")
    mode.add_argument("--local", metavar="DB", type=Path, help="take jobs from this SQLite queue")
    parser.add_argument("--token", help="--local: this worker's name in the database")
    parser.add_argument("--supervised", action="store_true", help="--local: started by the bot (stdin: wake-ups)")
    parser.add_argument("--concurrency", type=int, default=8, help="--redis: jobs taken at once (batched together)")
    parser.add_argument("--visibility-timeout", type=float, help="--redis: seconds before a taken job that was "
                        "not acknowledged goes to another worker (default: 2 x job timeout + 30)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(dotenv=None if args.supervised else Path(".env"),
                                 **({"redis_url": args.redis} if args.redis else {}))
    except SettingsError as error:
        print(f"melodybot worker: bad setting: {error}", file=sys.stderr)
        sys.exit(2)
    level = settings.log_level.upper()
    setup_logging(level, json=settings.log_format == "json")
    if args.local is not None:
        run_local(args.local, args.token or f"local-{os.getpid()}", args.supervised)
    else:
        run_celery(settings, args.concurrency, args.visibility_timeout, level)


if __name__ == "__main__":
    main()
