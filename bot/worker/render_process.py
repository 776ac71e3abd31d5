"""Rendering in a child process of the worker, beside sampling.

Why a process and not a thread: a crash in a native library (libfluidsynth, LAME) while rendering
one odd job takes down only this child, which is replaced; the job is tried once more, and fails
with the generic message if the child dies again. The child also has a GIL of its own, so the
Python parts of rendering do not take turns with the sampler's thousands of small torch calls;
measured, that gains only a few per cent in a burst (docs/history.md section 8).

The child gets each sampled job through a pipe, renders it (bot/worker/rendering.py) and sends back
its Outcome (the previews' bytes: about 1 MB, a millisecond to pickle). It exits when the worker
closes the pipe, or when the worker dies (the pipe's other end closes with it). It is started with
the worker and again if it dies; a job whose renderer died twice fails.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading

from bot.jobs import GENERIC_ERROR, JobState
from bot.worker.allocator import keep_freed_buffers
from bot.worker.rendering import Outcome, render_job, warm_renderer

log = logging.getLogger(__name__)

# Seconds the worker waits for one job's previews before it gives the renderer up: the renderer
# stops its own work at bot.render's timeout, so this is only for a child that hangs.
RENDER_WAIT_S = 120.0
START_WAIT_S = 60.0  # seconds the child may take to start and load the renderer


class RenderProcess:
    """One child process that renders sampled jobs, one at a time (callers take turns)."""

    def __init__(self, settings, skip_render: bool = False):
        self.settings, self.skip_render = settings, skip_render
        self._lock = threading.Lock()
        self._process = None
        self._conn = None
        self._started = False  # the child said it is ready

    def render(self, sampled):
        """The job's Outcome, rendered in the child (started if needed)."""
        job = sampled.job
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._ready()
                    self._conn.send(sampled)
                    if not self._conn.poll(RENDER_WAIT_S):
                        raise TimeoutError(f"no previews after {RENDER_WAIT_S:.0f} s")
                    return self._conn.recv()
                except Exception as error:  # a dead or hung child, or a pipe that broke: start afresh
                    exitcode = self._process.exitcode if self._process is not None else None
                    log.warning("job %s: the render process failed (%s: %s, exit code %s); attempt %d of 2",
                                job.job_id, type(error).__name__, error, exitcode, attempt)
                    self._stop()
        return Outcome(job, JobState.FAILED, error=GENERIC_ERROR.format(job_id=job.job_id))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(None)  # "no more jobs"
                except OSError:
                    pass
            self._stop(grace_s=5.0)

    def start(self) -> None:
        """Start the child now, without waiting for it (the worker loads its model meanwhile)."""
        with self._lock:
            if self._process is None:
                self._start()

    def wait_ready(self) -> None:
        """Block until the child has loaded the renderer (a child that cannot start is logged and
        started again for the first job)."""
        with self._lock:
            try:
                self._ready()
            except Exception as error:  # as in render(): whatever went wrong, the first job starts afresh
                log.warning("the render process did not start (%s: %s); trying again with the first job",
                            type(error).__name__, error)
                self._stop()

    def _start(self) -> None:
        # spawn, not fork: the child must not share the parent's torch threads or the pipe's other
        # end (with that, it would not see the worker die).
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        process = context.Process(target=serve, args=(self.settings, theirs, self.skip_render),
                                  name="melodybot-render", daemon=True)
        process.start()
        theirs.close()  # the child holds it now: when the child dies, recv() here ends at once
        self._process, self._conn, self._started = process, mine, False

    def _ready(self) -> None:
        """Start the child if there is none, and wait until it has loaded the renderer."""
        if self._process is None:
            self._start()
        if not self._started:
            if not self._conn.poll(START_WAIT_S) or self._conn.recv() != "ready":
                raise TimeoutError("the render process did not start")
            self._started = True
            log.info("render process %d ready", self._process.pid)

    def _stop(self, grace_s: float = 0.0) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            self._process.join(grace_s)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._process = self._conn = None


def serve(settings, conn, skip_render: bool) -> None:
    """The child: render each sampled job that arrives until None, or until the worker is gone."""
    from bot.observability import setup_logging

    setup_logging(settings.log_level.upper(), json=settings.log_format == "json", secrets=settings.secrets())
    keep_freed_buffers()
    warm_renderer(settings, skip_render)
    conn.send("ready")
    while True:
        try:
            sampled = conn.recv()
        except (EOFError, OSError):
            return  # the worker died
        if sampled is None:
            return
        conn.send(render_job(settings, sampled, skip_render))
