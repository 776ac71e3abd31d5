"""The Redis queue: Celery carries jobs to any number of workers; answers come back on a Redis list.

    bot:     CeleryQueue(settings)                        (settings.redis_url set)
    workers: python -m bot.worker --redis redis://host:6379/0 [--concurrency 8]   (bot/worker/)

Flow: submit() persists the job in the bot's SQLite (positions, caps, undelivered answers work
exactly as in the embedded mode) and sends a Celery task with the job as JSON (task id = job id).
A worker pushes events to the Redis list EVENTS_KEY (bot/queue/celery_app.py): "running" as soon
as it takes the task, then "done" with the result or "failed" with the reason. The bot moves each
event to PROCESSING_KEY, applies it to SQLite and only then removes it (a bot crash in between
re-applies it at the next start; applying is idempotent).

SQLite, not Redis, is the record of what was accepted; the bot makes Redis agree with it:
- Redis unreachable (down, restarting): submit() still accepts and keeps the job; users are told
  the generators are unreachable; what could not be sent is sent once Redis answers again.
- Redis lost jobs (a restart without persistence, a flush): every RECONCILE_S the bot looks for
  each queued job among the tasks in Redis (waiting or taken); one missing twice in a row is sent
  again.
- A worker dies (its heartbeat, HEARTBEAT_TTL_S, runs out): the jobs it held, running or waiting
  in its batcher, are sent again at once (not after Celery's visibility timeout, which stays as a
  backstop); after MAX_ATTEMPTS deaths a job fails, as it may be what kills them.
- A job running longer than job_timeout_s on a live worker fails with a message.
A job that runs twice (a resend raced the first run) is answered once: the store lets only the
first finish through, and workers skip jobs whose FINISHED key is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from bot.jobs import GENERIC_ERROR, Job, JobState, Result
from bot.queue import celery_app as protocol
from bot.queue.base import MAX_ATTEMPTS, StoreQueue
from bot.settings import Settings, safe_url

log = logging.getLogger(__name__)

REDIS_DOWN = (RedisError, OperationalError, OSError)  # what Redis, kombu and sockets raise when Redis is gone

RECONCILE_S = 3.0  # how often queued jobs are looked for in Redis
UNREACHABLE = "The generators are unreachable right now; your job is kept and will run when they are back."
NO_WORKERS = "No generator is running right now; your job is kept and will run when one starts."
NO_WORKERS_GRACE_S = 10.0  # no live worker for this long (with Redis up) counts as unhealthy
DEAD_LETTERS_KEY = "melodybot:events:failed"  # events that could not be applied, kept for a human
APPLY_ATTEMPTS = 3


class CeleryQueue(StoreQueue):
    backend = "redis"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.app = protocol.make_celery(settings)
        self.redis = None
        self._alive: set[str] = set()
        self._consumer: asyncio.Task | None = None
        self._reachable = True
        self._reachable_since = time.monotonic()
        self._no_workers_since: float | None = None
        self._next_reconcile = 0.0
        self._missing: set[str] = set()  # queued jobs not found in Redis at the last reconcile

    async def _start_backend(self) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            await self.redis.ping()
        except Exception as error:  # start anyway: jobs are kept and sent once Redis answers
            self._set_reachable(False, error)
        self._consumer = asyncio.create_task(self._consume())

    async def _close_backend(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()
        await asyncio.to_thread(self.app.close)

    def health_problem(self) -> str | None:
        if not self._reachable:
            return UNREACHABLE
        if self._no_workers_since is not None and time.monotonic() - self._no_workers_since > NO_WORKERS_GRACE_S:
            return NO_WORKERS
        return None

    def _set_reachable(self, reachable: bool, error: Exception | None = None) -> None:
        if reachable and not self._reachable:
            log.warning("Redis at %s answers again", safe_url(self.settings.redis_url))
            self._reachable_since = time.monotonic()
        elif not reachable and self._reachable:
            log.warning("Redis at %s is unreachable (%s: %s); accepted jobs are kept and sent when it is back",
                        safe_url(self.settings.redis_url), type(error).__name__, error)  # fmt: skip
        self._reachable = reachable

    async def _send(self, job: Job) -> None:
        await asyncio.to_thread(self.app.send_task, protocol.TASK_NAME, args=[job.to_dict()], task_id=job.job_id)
        await self._db(self._store.mark_dispatched, job.job_id)

    async def _queued(self, job: Job) -> None:
        try:
            await self._send(job)
        except Exception as error:  # kept (dispatched = 0): the next reconcile sends it
            self._set_reachable(False, error)

    async def _finished_elsewhere(self, job_id: str) -> None:
        try:
            await self.redis.set(protocol.finished_key(job_id), "cancelled", ex=protocol.FINISHED_TTL_S)
        except Exception:  # only saves a worker the work; the answer is dropped anyway
            log.info("could not mark job %s finished in Redis", job_id)

    async def _alive_workers(self) -> set[str]:
        prefix = protocol.worker_key("")
        return {key.decode()[len(prefix) :] async for key in self.redis.scan_iter(match=prefix + "*")}

    async def _worker_alive(self, worker: str | None) -> bool:
        return worker in self._alive

    async def _workers_alive(self) -> int:
        return len(self._alive) if self._reachable else 0

    async def _tick(self) -> None:
        running = await self._db(self._store.running)  # before the heartbeats: a job started since has a live worker
        before = self._alive
        try:
            self._alive = await self._alive_workers()
        except Exception as error:
            self._set_reachable(False, error)
            return  # nothing can be said about workers or sent; the timeouts wait too
        self._set_reachable(True)
        now = time.monotonic()
        self._no_workers_since = None if self._alive else (self._no_workers_since or now)
        # Just after Redis came back, heartbeats are not there yet: give the workers time to beat.
        try:
            if now - self._reachable_since > protocol.HEARTBEAT_TTL_S:
                orphans = [job_id for job_id, worker, _ in running if worker not in self._alive]
                if orphans:
                    requeued, failed = await self._db(self._store.requeue, orphans, MAX_ATTEMPTS, GENERIC_ERROR)
                    log.warning("the workers of jobs %s are gone; sending again: %s; failed: %s", orphans, requeued,
                                failed)  # fmt: skip
                    for job_id in failed:
                        await self._finished_elsewhere(job_id)
                    await self._resend(requeued)  # jobs it cannot send now stay queued: the reconcile sends them
                if orphans or before - self._alive:
                    await self._resend_taken_not_started()
            if now >= self._next_reconcile:
                self._next_reconcile = now + RECONCILE_S
                await self._reconcile()
        except REDIS_DOWN as error:  # Redis went away mid-way: one warning, not a traceback a tick
            self._set_reachable(False, error)
            return
        await super()._tick()

    async def _resend(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            status = await self._db(self._store.get, job_id)
            if status is not None and status.state == JobState.QUEUED:
                await self._send(status.job)

    async def _reconcile(self) -> None:
        """Send again every queued job that Redis does not hold (twice in a row: a worker may be
        between taking a task and saying so), and every job never sent."""
        queued = await self._db(self._store.queued_jobs)
        if not queued:
            self._missing = set()
            return
        held = await self._tasks_in_redis()
        missing = {job.job_id for job, dispatched in queued if dispatched and job.job_id not in held}
        lost = missing & self._missing
        self._missing = missing - lost
        for job, dispatched in queued:
            if not dispatched or job.job_id in lost:
                if dispatched:
                    log.warning("job %s is no longer in Redis (restarted or flushed?); sending it again", job.job_id)
                await self._send(job)

    async def _resend_taken_not_started(self) -> None:
        """After a worker died: send again each queued job whose task a worker has taken (Redis
        holds it unacknowledged) but not started. It may be in the dead worker's prefetch, which
        only Celery's visibility timeout (minutes) would free. A live worker holding it runs it
        too: the job is still answered once."""
        queued = await self._db(self._store.queued_jobs)
        taken = await self._taken_tasks() if queued else set()
        for job, dispatched in queued:
            if dispatched and job.job_id in taken:
                log.warning("job %s was taken but not started when a worker died; sending it again", job.job_id)
                await self._send(job)

    async def _tasks_in_redis(self) -> set[str]:
        """Ids of the tasks Redis holds: waiting in the queue's lists or taken and unacknowledged."""
        ids = set()
        keys = [key async for key in self.redis.scan_iter(match=protocol.QUEUE_NAME + "*")]
        for key in keys:
            if await self.redis.type(key) == b"list":
                for raw in await self.redis.lrange(key, 0, -1):
                    ids.add(_task_id(raw))
        return ids | await self._taken_tasks()

    async def _taken_tasks(self) -> set[str]:
        """Ids of the tasks workers have taken and not acknowledged (kombu's Redis transport keeps
        them in the "unacked" hash as [message, exchange, key] until the visibility timeout)."""
        ids = set()
        for raw in await self.redis.hvals("unacked"):
            try:
                ids.add(_task_id(json.dumps(json.loads(raw)[0])))
            except (ValueError, IndexError, TypeError):
                continue
        return ids

    async def _consume(self) -> None:
        first = True
        while True:
            try:
                if first:  # the last bot died applying these
                    for raw in await self.redis.lrange(protocol.PROCESSING_KEY, 0, -1):
                        await self._apply_and_forget(raw)
                    first = False
                raw = await self.redis.blmove(protocol.EVENTS_KEY, protocol.PROCESSING_KEY, 1, "LEFT", "RIGHT")
                self._set_reachable(True)
                if raw is not None:
                    await self._apply_and_forget(raw)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._set_reachable(False, error)
                await asyncio.sleep(1.0)

    async def _apply_and_forget(self, raw: bytes) -> None:
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            try:
                await self._apply(json.loads(raw))
                break
            except (ValueError, KeyError, TypeError):  # malformed: it will never apply
                log.error("a worker event cannot be read; kept in %s: %.200r", DEAD_LETTERS_KEY, raw)
                await self.redis.rpush(DEAD_LETTERS_KEY, raw)
                break
            except Exception:
                if attempt == APPLY_ATTEMPTS:
                    log.exception("a worker event could not be applied; kept in %s: %.200r", DEAD_LETTERS_KEY, raw)
                    await self.redis.rpush(DEAD_LETTERS_KEY, raw)
                else:
                    await asyncio.sleep(0.5 * attempt)
        await self.redis.lrem(protocol.PROCESSING_KEY, 1, raw)

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


def _task_id(raw: bytes | str) -> str | None:
    """The task id of a message as kombu's Redis transport stores it (Celery protocol 2)."""
    try:
        return json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
