"""The job queue between the bot and the worker(s) that hold the model.

    queue = make_queue(settings)
    await queue.start()
    status = await queue.submit(job)          # QUEUED, position 1 = next
    async for status in queue.updates():      # RUNNING, DONE (result), FAILED (error), CANCELLED
        ...answer...; await queue.mark_delivered(status.job.job_id)

Two backends with the same behaviour, both keeping the bot's bookkeeping (positions, caps, results
not yet delivered) in SQLite (bot/storage/jobs.py):
- `LocalQueue` (no redis_url): one worker process on this machine, started and supervised by the
  queue; it claims jobs from the SQLite database and writes the results back into it.
- `CeleryQueue` (redis_url set): any number of workers (`python -m bot.worker --redis URL`) take
  jobs from Redis through Celery and report back through a Redis list.

Nothing here imports torch: the model lives only in the worker processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from bot.jobs import Job, JobStatus
from bot.settings import Settings


class QueueError(Exception):
    """A queue request that cannot be done; the message is user-facing."""


class QueueFull(QueueError):
    def __init__(self, retry_after_s: float):
        self.retry_after_s = retry_after_s
        super().__init__(f"The queue is full; try again in ~{max(1, round(retry_after_s))} s.")


class TooManyJobs(QueueError):
    """The user's cap on unfinished jobs."""


class JobQueue(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Open the database and connect (embedded: also start the local worker process)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop following and disconnect; unfinished jobs stay in the database and run later."""

    @abstractmethod
    async def submit(self, job: Job) -> JobStatus:
        """Persist the job and queue it: QUEUED with its position (1 = next). Raises QueueFull,
        TooManyJobs, or QueueError (bars or variations over the limits)."""

    @abstractmethod
    async def cancel(self, job_id: str, user_id: int | None = None) -> JobStatus:
        """Cancel a queued or running job (a running job's result is dropped). QueueError if the
        job is unknown, someone else's (when user_id is given), or already finished."""

    @abstractmethod
    async def get(self, job_id: str) -> JobStatus | None:
        """The job's status now (with its result if done), None if unknown."""

    @abstractmethod
    async def user_jobs(self, user_id: int) -> list[JobStatus]:
        """The user's unfinished jobs in queue order, queued ones with positions."""

    @abstractmethod
    def updates(self) -> AsyncIterator[JobStatus]:
        """Every state change: RUNNING, DONE (with result), FAILED (error), CANCELLED, and QUEUED
        when a job goes back to the queue because its worker died. After a restart, finished jobs
        not yet marked delivered come again first. One consumer; ends when the queue closes."""

    @abstractmethod
    async def mark_delivered(self, job_id: str) -> None:
        """The bot answered the job: it is never emitted again."""

    def health_problem(self) -> str | None:
        """A user-facing sentence when jobs cannot run now (e.g. the generators are unreachable),
        else None. Accepted jobs are kept either way."""
        return None

    @abstractmethod
    async def stats(self) -> dict:
        """For metrics: {"backend", "jobs": {state: count}, "queue_depth", "running",
        "workers_alive"}."""

    async def __aenter__(self) -> JobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def make_queue(settings: Settings) -> JobQueue:
    """The embedded queue when settings.redis_url is None, else the Celery one."""
    if settings.redis_url is None:
        from bot.queue.local import LocalQueue

        return LocalQueue(settings)
    from bot.queue.celery_backend import CeleryQueue  # imports celery: only when it is used

    return CeleryQueue(settings)


__all__ = ["JobQueue", "QueueError", "QueueFull", "TooManyJobs", "make_queue"]
