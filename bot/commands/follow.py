"""Following the queue, for both front-ends: `UpdateFollower` reads the queue's status updates and
hands each to the front-end's `deliver` in its own task, in order per job and in parallel across
jobs; `start_task` runs long work as a task whose failure is logged and told to the user.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from bot.jobs import JobStatus
from bot.queue import JobQueue

log = logging.getLogger(__name__)


def start_task(coro: Awaitable, tasks: set[asyncio.Task], name: str,
               on_failure: Callable[[BaseException], Awaitable[None] | None] | None = None) -> asyncio.Task:
    """Run `coro` as a task kept in `tasks`; a failure is logged and handed to `on_failure` (to tell
    the user), the Red-DiscordBot habit for long work."""
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    tasks.add(task)

    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        log.error("%s failed", name, exc_info=error)
        if on_failure is not None:
            followup = on_failure(error)
            if asyncio.iscoroutine(followup):
                inner = asyncio.ensure_future(followup)
                tasks.add(inner)
                inner.add_done_callback(_log_quietly(tasks, f"{name}: telling the user"))

    task.add_done_callback(done)
    return task


def _log_quietly(tasks: set[asyncio.Task], name: str):
    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", name, exc_info=task.exception())

    return done


class UpdateFollower:
    """Reads `queue.updates()` and hands each status to `deliver` in its own task, in order per job
    (a job's RUNNING edit never lands after its result), different jobs in parallel."""

    RETRY_S = 2.0  # wait before following again when the update stream breaks
    DELIVERY_RETRIES_S = (2.0, 10.0, 30.0)  # waits before trying a failed delivery again; then the user is told

    def __init__(self, queue: JobQueue, deliver: Callable[[JobStatus], Awaitable[None]],
                 accept: Callable[[JobStatus], bool] = lambda status: True,
                 observe: Callable[[JobStatus], None] | None = None,
                 on_failure: Callable[[JobStatus, BaseException], Awaitable[None] | None] | None = None):
        """accept: which updates are this front-end's to deliver; observe: sees every accepted
        update first (metrics); on_failure: tells the user when a delivery failed (it is logged)."""
        self.queue = queue
        self.deliver = deliver
        self.accept = accept
        self.observe = observe
        self.on_failure = on_failure
        self.tasks: set[asyncio.Task] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._main: asyncio.Task | None = None

    def start(self) -> None:
        self._main = start_task(self._follow(), self.tasks, "following the job queue")

    async def stop(self) -> None:
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            try:
                async for status in self.queue.updates():
                    if self.accept(status):
                        job_id = status.job.job_id
                        if self.observe is not None:
                            try:
                                self.observe(status)
                            except Exception:
                                log.exception("job %s: observing the update failed", job_id)
                        tell = None
                        if self.on_failure is not None:
                            tell = functools.partial(self.on_failure, status)
                        start_task(self._deliver(status), self.tasks, f"job {job_id}: delivering {status.state.value}",
                                   tell)
                return  # the queue closed
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the job queue failed; retrying in %.0f s", self.RETRY_S)
                await asyncio.sleep(self.RETRY_S)

    async def _deliver(self, status: JobStatus) -> None:
        job_id = status.job.job_id
        lock = self._locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            for wait in (*self.DELIVERY_RETRIES_S, None):
                try:
                    await self.deliver(status)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    if wait is None or not status.state.finished:  # a lost progress edit is not worth a retry
                        raise
                    log.warning("job %s: delivering %s failed (%s); trying again in %.0f s", job_id,
                                status.state.value, error, wait)  # fmt: skip
                    status.replayed = True  # part of it may have reached the user: the front-end checks
                    await asyncio.sleep(wait)
        if status.state.finished and not lock.locked():
            self._locks.pop(job_id, None)
