"""What every queue backend offers the bot: the JobQueue interface and its user-facing errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from bot.jobs import Job, JobStatus


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
