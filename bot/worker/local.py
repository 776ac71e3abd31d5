"""The embedded queue's worker: claims jobs from the bot's SQLite database (bot/storage/jobs.py) in
batches, runs them through the Generator, writes the outcomes back. Started and supervised by
bot/queue/local.py: a line on stdin is a wake-up (a job arrived), stdin closing means the bot died.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.jobs import JobState
from bot.settings import Settings
from bot.storage.jobs import JobStore
from bot.worker.generator import Gathering, Generator, pass_rows
from bot.worker.rendering import Outcome, Sampled

log = logging.getLogger(__name__)

# The embedded worker shares the bot's machine: a lower CPU priority keeps the bot answering
# commands at once while a job renders (FluidSynth and ffmpeg inherit it).
LOCAL_WORKER_NICENESS = 5
IDLE_POLL_S = 0.5  # how often an idle worker looks for jobs without a wake-up
BACKLOG_POLL_S = 0.02  # how often a worker whose renderer is full looks again

def run_local(database: Path, token: str, supervised: bool) -> None:
    """Claim jobs from the SQLite queue, run them, write the outcomes back, until SIGTERM (after
    the batch in hand) or, when supervised, until stdin closes (the bot is gone). Rendering runs
    on a thread of its own (which hands each job to the render process, bot/worker/render_process.py),
    so the next batch samples while the last one renders."""
    settings = Settings.load(dotenv=None if supervised else Path(".env"))
    if supervised:
        os.nice(LOCAL_WORKER_NICENESS)
    store = JobStore(database)
    generator = Generator(settings)
    try:
        generator.load()
    except Exception:  # jobs fail with a generic message until it loads; not "ready" meanwhile
        log.exception("the model cannot be loaded; jobs will fail until it can")
    renderer = Renderer(database, token, generator)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    announced = False
    gathering = Gathering()
    while not stop.is_set():
        if generator.model is not None and not announced:
            tell_bot("ready")
            announced = True
        if supervised and os.getppid() != parent:  # the bot died: a new one will start its own worker
            log.info("the bot is gone; exiting")
            break
        rows = pass_rows(settings.batch_limit, renderer.waiting_rows())
        jobs = store.claim(token, rows) if renderer.waiting() < RENDER_BACKLOG else []
        if not jobs:
            if not _wait_for_wakeup(supervised, IDLE_POLL_S if renderer.waiting() == 0 else BACKLOG_POLL_S, gathering):
                log.info("the bot is gone; exiting")
                break
            continue
        tell_bot("changed")  # they are running
        log.info("batch of %d jobs (%d rows): %s", len(jobs), sum(j.variations for j in jobs), [j.job_id for j in jobs])
        for item in generator.sample(jobs):
            if isinstance(item, Outcome):
                finish(store, token, item)
            else:
                renderer.submit(item)
    renderer.close()  # what was sampled is rendered and written before the worker exits
    store.close()


# Sampled jobs waiting for the renderer beyond which the worker claims no more: enough to keep
# both sampling and rendering busy, few enough that a claimed job is soon rendered.
RENDER_BACKLOG = 8


class Renderer:
    """One thread that has sampled jobs rendered (in the render process) and writes their outcomes,
    on its own connection."""

    def __init__(self, database: Path, token: str, generator: Generator):
        self.token, self.generator = token, generator
        self._local = threading.local()
        self._database = database
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="melodybot-render")
        self._pending: dict = {}  # future -> the job's rows (variations)

    def submit(self, sampled: Sampled) -> None:
        future = self._pool.submit(self._render, sampled)
        self._pending[future] = sampled.job.variations
        future.add_done_callback(lambda done: self._pending.pop(done, None))

    def waiting(self) -> int:
        """Sampled jobs not yet rendered and written."""
        return len(self._pending)

    def waiting_rows(self) -> int:
        """Rows (variations) of the jobs waiting(): a copy first, as the render thread's callback
        removes finished jobs meanwhile."""
        return sum(list(self._pending.values()))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.generator.close()

    def _render(self, sampled: Sampled) -> None:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = JobStore(self._database)
        outcome = self.generator.render(sampled, wanted=lambda job: store.holds(job.job_id, self.token))
        finish(store, self.token, outcome)


def finish(store: JobStore, token: str, outcome: Outcome) -> None:
    if outcome.state == JobState.CANCELLED:
        return
    kept = store.finish(outcome.job.job_id, outcome.state, result=outcome.result, error=outcome.error, worker=token)
    if kept:
        tell_bot("changed")
    else:
        log.info("job %s was cancelled or taken back meanwhile; its result is dropped", outcome.job.job_id)


_STDOUT = threading.Lock()  # the sampling and the render thread both write lines


def tell_bot(line: str) -> None:
    """A line for the supervising bot (bot/queue/local.py): "ready" once the model is loaded,
    "changed" when jobs' states were written, so it reads them now rather than at its next poll
    (bot.queue.base.POLL_S, 50 ms)."""
    with _STDOUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _wait_for_wakeup(supervised: bool, timeout: float, gathering: Gathering) -> bool:
    """Wait until the bot writes a line on stdin (a job arrived; then as long as `gathering` says,
    so that jobs submitted together join the same pass) or `timeout` passes. False if stdin
    closed: the supervising bot died."""
    if not supervised:
        time.sleep(timeout)
        return True
    readable, _, _ = select.select([sys.stdin.buffer], [], [], timeout)
    if readable:
        if not os.read(sys.stdin.fileno(), 4096):
            return False
        time.sleep(gathering.wait_s())
    return True


