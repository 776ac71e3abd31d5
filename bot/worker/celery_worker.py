"""The Celery worker: takes jobs from Redis, runs the jobs its pool threads hold as one batch, and
reports every step back to the bot on the Redis list EVENTS_KEY (bot/queue/celery_app.py).

    python -m bot.worker --redis redis://host:6379/0 [--concurrency 8]
    celery -A bot.worker.celery_worker worker -P threads -c 8 -Q melodybot   (settings from MELODYBOT_*)

Never a forking pool with CUDA. Faults it survives:
- Redis goes away (restart, network): Celery reconnects by itself, without limit; the heartbeat and
  the events wait and retry, so an answer computed meanwhile is pushed once Redis is back.
- The bot is away: events queue up in Redis until it reads them.
The bot, not this worker, re-sends what Redis lost, and the jobs of a worker that died.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from celery import signals

from bot.jobs import Job, JobState
from bot.observability import job_context, observe_job, serve_in_thread
from bot.queue import celery_app as protocol
from bot.settings import Settings
from bot.worker.components import MELODY
from bot.worker.generator import Gathering, Generator, pass_rows
from bot.worker.rendering import Outcome, Sampled

log = logging.getLogger(__name__)

REPORT_RETRY_S = 1.0  # while Redis is unreachable, try to push an event again this often


class Batcher:
    """Celery's pool threads hand their jobs to one thread that owns the model; it samples
    whatever is waiting (primers of any lengths; rows as pass_rows allows within `limit`) as one
    batch, and a second thread has it rendered (in the render process, bot/worker/render_process.py),
    so the next batch samples while the last one renders."""

    def __init__(
        self,
        generator: Generator,
        limit: int,
        wanted: Callable[[Job], bool] | None = None,
        on_start: Callable[[list[Job]], None] | None = None,
    ):
        """wanted(job): still worth rendering (not cancelled meanwhile); on_start(jobs): called
        as each batch starts."""
        self.generator, self.limit, self.wanted, self.on_start = generator, limit, wanted, on_start
        self._waiting: list[tuple[Job, Future]] = []
        self._cond = threading.Condition()
        self._renderer = ThreadPoolExecutor(1, thread_name_prefix="melodybot-render")
        self._rows_to_render = 0  # rows of sampled jobs not yet rendered (under _cond)
        self._gathering = Gathering()
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
        time.sleep(self._gathering.wait_s())
        batch, rows = [], 0
        with self._cond:
            limit = pass_rows(self.limit, self._rows_to_render)
            while self._waiting and (not batch or rows + self._waiting[0][0].variations <= limit):
                batch.append(self._waiting.pop(0))
                rows += batch[-1][0].variations
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            jobs = [job for job, _ in batch]
            futures = {id(job): future for job, future in batch}
            rows = sum(j.variations for j in jobs)
            log.info("batch of %d jobs (%d rows): %s", len(jobs), rows, [j.job_id for j in jobs])
            try:
                if self.on_start is not None:
                    self.on_start(jobs)
                for item in self.generator.sample(jobs):  # the renderer thread renders the last batch meanwhile
                    if isinstance(item, Outcome):
                        futures[id(item.job)].set_result(item)
                    else:
                        with self._cond:
                            self._rows_to_render += item.job.variations
                        self._renderer.submit(self._render, item, futures[id(item.job)])
            except BaseException as error:  # noqa: B036 - handed to the waiting task threads
                for future in futures.values():
                    if not future.done():
                        future.set_exception(error)

    def _render(self, sampled: Sampled, future: Future) -> None:
        try:
            outcome = self.generator.render(sampled, self.wanted)
        except BaseException as error:  # noqa: B036 - handed to the waiting task thread
            future.set_exception(error)
        else:
            future.set_result(outcome)
        finally:
            with self._cond:
                self._rows_to_render -= sampled.job.variations


class CeleryWorker:
    """One Celery worker process's state: the warm model behind a Batcher, a Redis client to
    report to the bot, and a heartbeat so the bot knows this worker is alive."""

    def __init__(self, settings: Settings):
        import redis

        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.started_at = time.time()
        self._stopping = threading.Event()
        threading.Thread(target=self._heartbeat, name="melodybot-heartbeat", daemon=True).start()
        atexit.register(self._goodbye)
        self.generator = Generator(settings)
        try:
            self.generator.load()
        except Exception:  # jobs fail with a generic message until it loads
            log.exception("the model cannot be loaded; jobs will fail until it can")
        self.batcher = Batcher(self.generator, settings.batch_limit, self._wanted)
        log.info("worker %s ready", self.name)

    def handle(self, job_data: dict) -> None:
        """The Celery task's body."""
        job = Job.from_dict(job_data)
        with job_context(job.job_id):
            if not self._wanted(job):
                log.info("job %s is already finished or cancelled; skipping it", job.job_id)
                return
            # Said at once, not when the batch starts: the bot then knows this worker holds the
            # job, and re-sends it elsewhere if this worker dies while it waits in the batcher.
            self._report({"job_id": job.job_id, "state": JobState.RUNNING.value}, deadline_s=5.0)
            outcome = self.batcher.run(job)
            observe_job(outcome.result.timings if outcome.result else None, outcome.state)
            if outcome.state == JobState.CANCELLED:
                return
            event = {"job_id": job.job_id, "state": outcome.state.value}
            if outcome.result is not None:
                event["result"] = outcome.result.to_dict()
            if outcome.error is not None:
                event["error"] = outcome.error
            # The bot keeps the job until an answer arrives; it fails it after job_timeout_s.
            self._report(event, deadline_s=self.settings.job_timeout_s, finished=True)

    def _report(self, event: dict, deadline_s: float, finished: bool = False) -> bool:
        """Push an event for the bot, retrying while Redis is unreachable (for `deadline_s`)."""
        event = {**event, "worker": self.name, "at": time.time()}
        data = json.dumps(event)
        give_up = time.monotonic() + deadline_s
        warned = False
        while True:
            try:
                pipe = self.redis.pipeline()
                pipe.rpush(protocol.EVENTS_KEY, data)
                if finished:
                    pipe.set(protocol.finished_key(event["job_id"]), event["state"], ex=protocol.FINISHED_TTL_S)
                pipe.execute()
                if warned:
                    log.info("Redis is back; job %s reported %s", event["job_id"], event["state"])
                return True
            except Exception as error:
                if time.monotonic() > give_up:
                    log.error("could not report job %s %s to Redis: %s", event["job_id"], event["state"], error)
                    return False
                if not warned:
                    log.warning("Redis unreachable (%s); holding job %s's %s event", error, event["job_id"],
                                event["state"])  # fmt: skip
                    warned = True
                time.sleep(REPORT_RETRY_S)

    def _wanted(self, job: Job) -> bool:
        try:
            return not self.redis.exists(protocol.finished_key(job.job_id))
        except Exception:  # Redis unreachable: run it anyway; the bot answers a job once
            return True

    def _beat(self) -> None:
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_at": self.started_at})
        self.redis.set(protocol.worker_key(self.name), info, ex=protocol.HEARTBEAT_TTL_S)

    def _heartbeat(self) -> None:
        down = False
        while not self._stopping.is_set():
            try:
                self._beat()
                if down:
                    log.info("heartbeat: Redis is back")
                down = False
            except Exception as error:
                if not down:
                    log.warning("heartbeat: Redis unreachable (%s); retrying", error)
                down = True
            self._stopping.wait(protocol.HEARTBEAT_S)

    def _goodbye(self) -> None:
        self._stopping.set()
        try:
            self.redis.delete(protocol.worker_key(self.name))
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


def worker_app(settings: Settings, visibility_timeout_s: float | None = None):
    """The Celery app with the generate task registered."""
    app = protocol.make_celery(settings, visibility_timeout_s)
    app.melodybot_settings = settings

    @app.task(name=protocol.TASK_NAME)
    def generate(job: dict) -> None:
        celery_worker(settings).handle(job)

    return app


@signals.worker_init.connect(dispatch_uid="melodybot-load-model")
def _load_model_before_consuming(sender=None, **_) -> None:
    """`celery -A bot.worker.celery_worker worker`: load the model before taking jobs."""
    settings = getattr(getattr(sender, "app", None), "melodybot_settings", None)
    if settings is not None:
        celery_worker(settings)


def __getattr__(name: str):
    """`celery -A bot.worker.celery_worker` finds `app`: built on first use, from the environment."""
    if name == "app":
        global app
        app = worker_app(Settings.load())
        return app
    raise AttributeError(name)


def run_celery(settings: Settings, concurrency: int, visibility_timeout_s: float | None, loglevel: str) -> None:
    app = worker_app(settings, visibility_timeout_s)
    worker = celery_worker(settings)  # load the model before taking jobs

    async def health() -> dict:
        """503 while a learned component is not loaded, naming each and why."""
        generator = worker.generator
        problems = dict(generator.problems)
        if generator.model is None:
            problems.setdefault(MELODY, "the melody model is not loaded")
        body = {"status": "ok", "worker": worker.name}
        if problems:
            body.update(status="unavailable", reason="; ".join(problems.values()), problems=problems)
        return body

    serve_in_thread(settings.http_port, health)  # /healthz and /metrics of this worker
    app.worker_main([
        "worker", "--pool", "threads", "--concurrency", str(concurrency), "--queues", protocol.QUEUE_NAME,
        "--hostname", f"melodybot-{os.getpid()}@%h", "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])  # fmt: skip
