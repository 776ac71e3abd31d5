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

from bot.queue.api import JobQueue, QueueError, QueueFull, TooManyJobs
from bot.settings import Settings


def make_queue(settings: Settings) -> JobQueue:
    """The embedded queue when settings.redis_url is None, else the Celery one."""
    if settings.redis_url is None:
        from bot.queue.local import LocalQueue

        return LocalQueue(settings)
    from bot.queue.celery_backend import CeleryQueue  # imports celery: only when it is used

    return CeleryQueue(settings)


__all__ = ["JobQueue", "QueueError", "QueueFull", "TooManyJobs", "make_queue"]
