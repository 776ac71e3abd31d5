"""The embedded queue: SQLite plus one supervised worker process on this machine.

The worker (`python -m bot.worker --local DB --token T --supervised`) loads the model once, claims
queued jobs from the database in batches, and writes the results back; the bot follows the
database's state-change log. The queue supervises the process: if it dies (a crash, the OOM
killer, kill -9), the jobs it held go back to the front of the queue and a new worker starts. A
line on the worker's stdin wakes it when a job arrives, and a line on its stdout ("changed") has the
bot read the log at once; its stdin closing (the bot died) tells it to exit. A job accepted is in
the database before submit() returns, so it survives both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import fields
from pathlib import Path

from bot.jobs import GENERIC_ERROR, Job
from bot.queue.base import MAX_ATTEMPTS, StoreQueue
from bot.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # on the worker's PYTHONPATH: runs from a checkout too
QUICK_DEATH_S = 60.0  # a worker dying sooner than this after starting counts towards the back-off
MAX_BACKOFF_S = 30.0


def worker_environment(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a worker process: ours, with the settings as MELODYBOT_* variables
    (so the worker's Settings.load() sees exactly these) and without the Discord token."""
    names = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    env = {k: v for k, v in os.environ.items() if k not in names and k != "DISCORD_TOKEN"}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path):  # the worker runs in another folder: the bot's paths, absolute
            value = value.absolute()
        if f.name != "discord_token" and value is not None:
            env[ENV_PREFIX + f.name.upper()] = str(value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class LocalQueue(StoreQueue):
    backend = "local"

    def __init__(self, settings: Settings, *, shutdown_grace_s: float = 5.0, worker_env: dict[str, str] | None = None):
        """shutdown_grace_s: how long close() lets the worker finish its batch before killing it
        (its unfinished jobs run again at the next start). worker_env: extra environment for the
        worker process (tests use it for bot.worker's test-only knobs)."""
        super().__init__(settings)
        self.shutdown_grace_s = shutdown_grace_s
        self._extra_env = dict(worker_env or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._token: str | None = None
        self._ready = False
        self._restarts = 0
        self._supervisor: asyncio.Task | None = None

    @property
    def worker_pid(self) -> int | None:
        """The worker process's pid while it runs (for tests and diagnostics)."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def worker_ready(self) -> bool:
        """True once the running worker has loaded the model."""
        return self._ready and self.worker_pid is not None

    async def _start_backend(self) -> None:
        # No worker runs for this database now, so jobs left running (the bot or its worker died)
        # go back to the queue. Not counted as failed attempts: the job did not kill anything.
        running = [job_id for job_id, _, _ in await self._db(self._store.running)]
        if running:
            await self._db(self._store.requeue, running, None, GENERIC_ERROR)
            log.info("requeued %d jobs left running by the last worker", len(running))
        self._supervisor = asyncio.create_task(self._run_worker())

    async def _close_backend(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)  # finish the batch, then exit
            try:
                await asyncio.wait_for(proc.wait(), self.shutdown_grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if self._supervisor is not None:
            self._supervisor.cancel()  # it may be sleeping between restarts
            await asyncio.gather(self._supervisor, return_exceptions=True)
        # What the worker did not finish runs at the next start (requeued there).

    async def _queued(self, job: Job) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.write(b"\n")

    async def _worker_alive(self, worker: str | None) -> bool:
        return worker is not None and worker == self._token and self.worker_pid is not None

    async def _workers_alive(self) -> int:
        return int(self.worker_ready)

    def health_problem(self) -> str | None:
        if self.worker_ready or self._restarts == 0:  # ready, or still starting for the first time
            return None
        return "The generator is restarting; your job is kept and will run when it is back."

    async def _timed_out(self, job_id: str, worker: str | None) -> None:
        # The worker is stuck in that job (sampling cannot be interrupted): replace it. The other
        # jobs of its batch go back to the queue.
        if worker == self._token and self._proc is not None and self._proc.returncode is None:
            log.warning("killing worker %s stuck in job %s", self._proc.pid, job_id)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def stats(self) -> dict:
        stats = await super().stats()
        stats["worker_restarts"] = self._restarts
        return stats

    async def _run_worker(self) -> None:
        try:
            await self._keep_worker_running()
        finally:  # closing: never leave a worker behind
            proc = self._proc
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _keep_worker_running(self) -> None:
        quick_deaths = 0
        while not self._closing:
            self._token = f"local-{uuid.uuid4().hex[:10]}"
            started = time.monotonic()
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot.worker", "--local", str(self.settings.database.absolute()),
                    "--token", self._token, "--supervised",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=worker_environment(self.settings, self._extra_env),
                )  # fmt: skip
            except OSError:
                log.exception("could not start the worker process")
            else:
                log.info("worker %s started (pid %d)", self._token, self._proc.pid)
                await self._read_stdout(self._proc)
                returncode = await self._proc.wait()
                self._ready = False
                if self._closing:
                    break
                held = [job_id for job_id, worker, _ in await self._db(self._store.running) if worker == self._token]
                requeued, failed = await self._db(self._store.requeue, held, MAX_ATTEMPTS, GENERIC_ERROR)
                log.error(
                    "worker %s (pid %d) exited with %s; back in the queue: %s; failed after %d attempts: %s",
                    self._token, self._proc.pid, returncode, requeued, MAX_ATTEMPTS, failed,
                )  # fmt: skip
            self._restarts += 1
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH_S else 0
            if quick_deaths > 1:  # crashing on start (a broken install?): back off, 1 s doubling to 30 s
                await asyncio.sleep(min(MAX_BACKOFF_S, 2.0 ** (quick_deaths - 2)))

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        """The worker says "ready" once its model is loaded, and "changed" each time it has
        written a job's state; other lines are ignored."""
        while line := await proc.stdout.readline():
            if line.strip() == b"changed":
                self.announce_change()
            elif line.strip() == b"ready":
                self._ready = True
                log.info("worker %s ready", self._token)
