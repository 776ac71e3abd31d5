"""What both backends share: the bot's bookkeeping in SQLite (bot/storage/jobs.py), submission limits,
following the state-change log for `updates()`, and job timeouts.

SQLite calls are blocking, so they run on one dedicated thread that owns the connection
(bot/storage/sqlite.py's AsyncSQLite, as for every store); the event loop only awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from bot.jobs import Job, JobState, JobStatus
from bot.queue.api import JobQueue, QueueError, QueueFull, TooManyJobs
from bot.settings import Settings
from bot.storage.jobs import JobStore, Rejected, StoreError
from bot.storage.sqlite import AsyncSQLite

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often the state-change log is read (the latency of an update no one announces)
TICK_S = 0.5  # how often timeouts and workers are checked
PRUNE_EVERY_S = 3600.0  # how often old previews are deleted (settings.preview_retention_days)
MAX_ATTEMPTS = 3  # a job whose worker died this many times fails instead of running again
TIMEOUT_ERROR = "Job {job_id} took too long (over {timeout:g} s) and was stopped; try fewer bars or variations."


class StoreQueue(JobQueue):
    backend = "?"

    def __init__(self, settings: Settings):
        settings.check()  # here, not in a worker process that would die on start over and over
        self.settings = settings
        self._store: JobStore | None = None
        self._sqlite: AsyncSQLite | None = None
        self._updates: asyncio.Queue[JobStatus | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._cursor = 0
        self._closing = False
        self._next_prune = 0.0
        self._changed = asyncio.Event()  # set by a backend told that the log grew (announce_change)

    # -- to implement ------------------------------------------------------------------------------
    async def _start_backend(self) -> None: ...

    async def _close_backend(self) -> None: ...

    async def _queued(self, job: Job) -> None:
        """A job was persisted: hand it on (wake the worker, send it to the broker)."""

    async def _finished_elsewhere(self, job_id: str) -> None:
        """The bot cancelled or timed out a job: its worker need not run (or finish) it."""

    async def _worker_alive(self, worker: str | None) -> bool:
        return True

    async def _workers_alive(self) -> int:
        return 0

    async def _tick(self) -> None:
        """Called every TICK_S: fail jobs that run too long on a live worker. A worker renders the
        jobs of a batch one after another, so a job's clock starts when its batch started or when
        its worker last finished a job, whichever is later: a long batch that keeps delivering is
        not stuck, a job its worker makes no progress on for job_timeout_s is."""
        timeout = self.settings.job_timeout_s
        now = time.time()
        running = await self._db(self._store.running)
        progress = await self._db(self._store.last_progress, now - timeout) if running else {}
        for job_id, worker, started_at in running:
            if started_at is None or not await self._worker_alive(worker):
                continue
            if now - max(started_at, progress.get(worker, 0.0)) <= timeout:
                continue
            error = TIMEOUT_ERROR.format(job_id=job_id, timeout=timeout)
            if await self._db(self._store.finish, job_id, JobState.FAILED, error=error):
                log.warning("job %s timed out after %.0f s on worker %s", job_id, now - started_at, worker)
                await self._finished_elsewhere(job_id)
                await self._timed_out(job_id, worker)

    async def _timed_out(self, job_id: str, worker: str | None) -> None: ...

    # -- the interface -----------------------------------------------------------------------------
    async def _db(self, fn, *args, **kwargs):
        return await self._sqlite.run(fn, *args, **kwargs)

    async def start(self) -> None:
        self._closing = False
        self._sqlite = AsyncSQLite("melodybot-jobs-db")
        self._store = await self._db(JobStore, self.settings.database)
        self._cursor, undelivered = await self._db(self._store.follow_start)
        for job_id in undelivered:
            status = await self._db(self._store.get, job_id)
            if status is not None:
                status.replayed = True
                self._updates.put_nowait(status)
        if undelivered:
            log.info("%d answers were not delivered before the last shutdown; emitting them again", len(undelivered))
        await self._start_backend()
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._supervise())]

    async def close(self) -> None:
        if self._store is None:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_backend()
        await self._db(self._store.close)
        self._sqlite.close()
        self._store = self._sqlite = None
        self._updates.put_nowait(None)

    def _check_limits(self, job: Job) -> None:
        s = self.settings
        if not 1 <= job.bars <= s.max_bars:
            raise QueueError(f"A job can continue a melody by 1 to {s.max_bars} bars, not {job.bars}.")
        if not 1 <= job.variations <= s.max_variations:
            raise QueueError(f"A job can make 1 to {s.max_variations} variations, not {job.variations}.")

    async def submit(self, job: Job) -> JobStatus:
        self._running()
        self._check_limits(job)
        try:
            status = await self._db(self._store.add, job, self.settings.max_queued_per_user, self.settings.max_queue)
        except Rejected as rejected:
            if rejected.kind == "user":
                raise TooManyJobs(
                    f"You already have {rejected.count} jobs waiting; wait for one to finish or "
                    f"{self.settings.command_prefix}cancel one."
                ) from None
            raise QueueFull(rejected.retry_after_s) from None
        await self._queued(status.job)
        return status

    async def cancel(self, job_id: str, user_id: int | None = None) -> JobStatus:
        self._running()
        try:
            status = await self._db(self._store.cancel, job_id, user_id)
        except StoreError as error:
            raise QueueError(str(error)) from None
        await self._finished_elsewhere(job_id)
        return status

    async def get(self, job_id: str) -> JobStatus | None:
        self._running()
        return await self._db(self._store.get, job_id)

    async def user_jobs(self, user_id: int) -> list[JobStatus]:
        self._running()
        return await self._db(self._store.user_jobs, user_id)

    async def updates(self) -> AsyncIterator[JobStatus]:
        while True:
            status = await self._updates.get()
            if status is None:
                return
            yield status

    async def mark_delivered(self, job_id: str) -> None:
        self._running()
        await self._db(self._store.mark_delivered, job_id)

    async def stats(self) -> dict:
        self._running()
        counts = await self._db(self._store.counts)
        return {
            "backend": self.backend,
            "jobs": counts,
            "queue_depth": counts[JobState.QUEUED.value],
            "running": counts[JobState.RUNNING.value],
            "workers_alive": await self._workers_alive(),
        }

    def _running(self) -> None:
        if self._store is None:
            raise QueueError("The queue is not running; try again in a moment.")

    # -- background tasks --------------------------------------------------------------------------
    async def _follow(self) -> None:
        """Turn the store's state-change log into updates."""
        while True:
            try:
                events = await self._db(self._store.events_since, self._cursor)
                for seq, job_id, state in events:
                    status = await self._db(self._store.status_at, job_id, state)
                    if status is not None:
                        self._updates.put_nowait(status)
                    self._cursor = seq
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the job log failed; retrying")
                events = []
                await asyncio.sleep(1.0)
            if not events:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), POLL_S)
                self._changed.clear()  # before the next read: a change announced after it wakes the wait

    def announce_change(self) -> None:
        """The state-change log grew (a worker said so): read it now rather than at the next poll."""
        self._changed.set()

    async def _prune(self) -> None:
        days = self.settings.preview_retention_days
        now = time.monotonic()
        if not days or now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        pruned = await self._db(self._store.prune_previews, time.time() - days * 86400)
        if pruned:
            log.info("deleted the previews of %d results older than %g days (their events are kept)", pruned, days)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self._prune()
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking jobs and workers failed; retrying")
