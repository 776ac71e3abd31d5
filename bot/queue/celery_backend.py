"""The Redis queue: Celery carries jobs to any number of workers; answers come back on a Redis list.

    bot:     CeleryQueue(settings)                        (settings.redis_url set)
    workers: python -m bot.worker --redis redis://host:6379/0 [--concurrency 8]
        or:  celery -A bot.queue.celery_backend worker -P threads -c 8 -Q melodybot
             (settings from MELODYBOT_* variables / .env; never a forking pool with CUDA)

Flow: submit() persists the job in the bot's SQLite (positions, caps, undelivered answers work
exactly as in the embedded mode) and sends a Celery task with the job as JSON (task id = job id).
A worker pushes events to the Redis list EVENTS_KEY: "running" when it starts a batch, then
"done" with the result or "failed" with the reason. The bot moves each event to PROCESSING_KEY,
applies it to SQLite and only then removes it (a bot crash in between re-applies it at the next
start; applying is idempotent).

Durability: tasks are acknowledged late (after the answer is pushed), with prefetch 1 per pool
thread, so a task whose worker is killed stays unacknowledged in Redis and another worker takes it
once `visibility_timeout` has passed (kombu checks every RESTORE_INTERVAL_S). The visibility timeout
must exceed the longest a task can be held, waiting in the worker's batcher plus running: by
default 2 x job_timeout_s + 30 s. A job that finishes twice (a redelivery raced the first run)
is answered once: the store only lets the first finish through, and workers skip jobs whose
FINISHED key is set (done, failed, cancelled or timed out).

Workers heartbeat (worker_key, HEARTBEAT_TTL_S). The bot sends a running job whose worker's
heartbeat is gone back to "queued" (it shows its position again) until it is redelivered; it fails
a job running longer than job_timeout_s on a live worker (Celery's solo/threads pools cannot
enforce time limits themselves).
"""

from __future__ import annotations

import asyncio
import json
import logging

from celery import Celery, signals

from bot.jobs import Job, JobState, Result
from bot.queue import QueueError
from bot.queue.base import GENERIC_ERROR, MAX_ATTEMPTS, StoreQueue
from bot.settings import Settings

log = logging.getLogger(__name__)

TASK_NAME = "melodybot.generate"
QUEUE_NAME = "melodybot"
EVENTS_KEY = "melodybot:events"  # list of JSON events from the workers
PROCESSING_KEY = "melodybot:events:processing"  # events the bot is applying
FINISHED_TTL_S = 7 * 86400
HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 6  # a worker silent this long is dead
RESTORE_INTERVAL_S = 2  # how often workers look for unacknowledged tasks past the visibility timeout


def finished_key(job_id: str) -> str:
    return f"melodybot:finished:{job_id}"


def worker_key(name: str) -> str:
    return f"melodybot:worker:{name}"


def make_celery(settings: Settings, visibility_timeout_s: float | None = None) -> Celery:
    """The Celery app for settings.redis_url, for the bot (sending) and workers (running)."""
    if visibility_timeout_s is None:
        visibility_timeout_s = 2 * settings.job_timeout_s + 30
    app = Celery("melodybot", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # answers come back on EVENTS_KEY
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE_NAME,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s,
            "unacked_restore_interval": RESTORE_INTERVAL_S,
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.melodybot_settings = settings

    @app.task(name=TASK_NAME)
    def generate(job: dict) -> None:
        from bot.worker import celery_worker  # the worker process only: torch

        celery_worker(settings).handle(job)

    return app


@signals.worker_init.connect(dispatch_uid="melodybot-load-model")
def _load_model_before_consuming(sender=None, **_) -> None:
    """`celery -A bot.queue.celery_backend worker`: load the model before taking jobs."""
    settings = getattr(getattr(sender, "app", None), "melodybot_settings", None)
    if settings is not None:
        from bot.worker import celery_worker

        celery_worker(settings)


def __getattr__(name: str):
    """`celery -A bot.queue.celery_backend` finds `app`: built on first use, from the environment."""
    if name == "app":
        global app
        app = make_celery(Settings.load())
        return app
    raise AttributeError(name)


class CeleryQueue(StoreQueue):
    backend = "redis"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.app = make_celery(settings)
        self.redis = None
        self._alive: set[str] = set()
        self._consumer: asyncio.Task | None = None

    async def _start_backend(self) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(self.settings.redis_url)
        try:
            await self.redis.ping()
        except Exception as error:
            await self.redis.aclose()
            raise QueueError(f"Cannot reach Redis at {self.settings.redis_url}: {error}") from error
        for raw in await self.redis.lrange(PROCESSING_KEY, 0, -1):  # the last bot died applying these
            await self._apply_and_forget(raw)
        for job in await self._db(self._store.undispatched):  # the last bot died before sending these
            log.info("sending job %s again", job.job_id)
            await self._send(job)
        self._alive = await self._alive_workers()
        self._consumer = asyncio.create_task(self._consume())

    async def _close_backend(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()
        await asyncio.to_thread(self.app.close)

    async def _send(self, job: Job) -> None:
        await asyncio.to_thread(self.app.send_task, TASK_NAME, args=[job.to_dict()], task_id=job.job_id)
        await self._db(self._store.mark_dispatched, job.job_id)

    async def _queued(self, job: Job) -> None:
        try:
            await self._send(job)
        except Exception:
            log.exception("could not send job %s to Redis", job.job_id)
            await self._db(self._store.remove, job.job_id)
            raise QueueError("The job queue cannot be reached right now; try again in a minute.") from None

    async def _finished_elsewhere(self, job_id: str) -> None:
        try:
            await self.redis.set(finished_key(job_id), "cancelled", ex=FINISHED_TTL_S)
        except Exception:  # only saves a worker the work; the answer is dropped anyway
            log.warning("could not mark job %s finished in Redis", job_id, exc_info=True)

    async def _alive_workers(self) -> set[str]:
        prefix = worker_key("")
        return {key.decode()[len(prefix) :] async for key in self.redis.scan_iter(match=prefix + "*")}

    async def _worker_alive(self, worker: str | None) -> bool:
        return worker in self._alive

    async def _workers_alive(self) -> int:
        self._alive = await self._alive_workers()
        return len(self._alive)

    async def _tick(self) -> None:
        running = await self._db(self._store.running)  # before the heartbeats: a job started since has a live worker
        self._alive = await self._alive_workers()
        orphans = [job_id for job_id, worker, _ in running if worker not in self._alive]
        if orphans:
            # Celery hands these to another worker once the visibility timeout passes.
            requeued, failed = await self._db(self._store.requeue, orphans, MAX_ATTEMPTS, GENERIC_ERROR)
            log.warning("workers of jobs %s are gone; awaiting redelivery: %s; failed: %s", orphans, requeued, failed)
            for job_id in failed:
                await self._finished_elsewhere(job_id)
        await super()._tick()

    async def _consume(self) -> None:
        while True:
            try:
                raw = await self.redis.blmove(EVENTS_KEY, PROCESSING_KEY, 1, "LEFT", "RIGHT")
                if raw is not None:
                    await self._apply_and_forget(raw)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading worker events from Redis failed; retrying")
                await asyncio.sleep(1.0)

    async def _apply_and_forget(self, raw: bytes) -> None:
        try:
            await self._apply(json.loads(raw))
        except Exception:
            log.exception("dropping a worker event that cannot be applied: %.200r", raw)
        await self.redis.lrem(PROCESSING_KEY, 1, raw)

    async def _apply(self, event: dict) -> None:
        job_id, state = event["job_id"], JobState(event["state"])
        if state == JobState.RUNNING:
            await self._db(self._store.start, job_id, event["worker"])  # our clock: timeouts count on it
        elif state == JobState.DONE:
            result = Result.from_dict(event["result"])
            await self._db(self._store.finish, job_id, state, result=result)
        elif state == JobState.FAILED:
            error = event.get("error") or GENERIC_ERROR.format(job_id=job_id)
            await self._db(self._store.finish, job_id, state, error=error)
