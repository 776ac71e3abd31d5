"""Faults survived: every scenario submits real jobs, causes a fault with real parts (a redis-server
stopped and restarted, worker processes SIGKILLed or hung, the bot's queue killed), and counts the
answers. The "faults survived" table of BENCHMARKS.md comes from here.

    nice -n 5 .venv/bin/python benchmarks/faults_bench.py [--weights PATH]

Columns: jobs submitted, answered exactly once, lost (never answered), duplicated (answered more
than once), and seconds from the end of the fault to the last answer. Uses the shipped weights
(real sampling and rendering) unless --weights is given; the jobs that must be in flight when the
fault hits are slowed by the worker's test knob (MELODYBOT_TEST_JOB_DELAY_S, "test-slow" jobs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bot.jobs import Job
from bot.queue import make_queue
from bot.queue.local import LocalQueue, worker_environment
from bot.settings import Settings
from bot.storage.jobs import JobStore
from bot.worker.generator import SLOW_USER, TEST_DELAY_ENV
from model.defaults import DEFAULT_WEIGHTS

PRIMER = [26, 0, 0, 0, 30, 0, 0, 0, 33, 0, 0, 0, 35, 0, 0, 1]  # C4 E4 G4 A4
DELAY_S = 3.0  # a "test-slow" job's extra seconds, so the fault hits it in flight


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Redis:
    def __init__(self):
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(self.port),
                                      "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Workers:
    def __init__(self, settings: Settings, folder: Path, count: int = 2, delay_s: float = DELAY_S):
        env = worker_environment(settings, {TEST_DELAY_ENV: str(delay_s), "OMP_NUM_THREADS": "1"})
        command = [sys.executable, "-m", "bot.worker", "--redis", settings.redis_url, "--concurrency", "4",
                   "--visibility-timeout", "600"]  # Celery's own redelivery is not what saves the jobs
        self.logs = [folder / f"worker{n}.log" for n in range(count)]
        self.procs = [subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
                      for log in self.logs]

    async def ready(self) -> None:
        deadline = time.monotonic() + 120
        while not all(" ready." in log.read_text() for log in self.logs):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            await asyncio.sleep(0.2)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def job(user: int, slow: bool = False) -> Job:
    return Job(user_id=user, channel_id=1, primer=PRIMER, bars=8, variations=4, user_name=SLOW_USER if slow else "")


async def answers(queue, ids: list[str], timeout: float = 120) -> tuple[Counter, float]:
    """How often each job was answered, and when the last answer came (monotonic)."""
    counts: Counter = Counter()
    last = time.monotonic()

    async def follow():
        nonlocal last
        async for status in queue.updates():
            if status.state.finished:
                counts[status.job.job_id] += 1
                last = time.monotonic()
                await queue.mark_delivered(status.job.job_id)
            if set(ids) <= set(counts):
                return

    try:
        await asyncio.wait_for(follow(), timeout)
        await asyncio.wait_for(follow(), 2.0)  # anything more is a duplicate
    except TimeoutError:
        pass
    return counts, last


def row(name: str, ids: list[str], counts: Counter, fault_end: float, last: float, note: str = "") -> dict:
    return {"scenario": name, "submitted": len(ids), "once": sum(counts[i] == 1 for i in ids),
            "lost": sum(counts[i] == 0 for i in ids), "duplicated": sum(counts[i] > 1 for i in ids),
            "seconds": max(0.0, last - fault_end), "note": note}


async def redis_scenarios(base: Settings, folder: Path) -> list[dict]:
    rows = []
    redis = Redis()
    redis.start()
    settings = Settings(**{**base.__dict__, "redis_url": redis.url})
    workers = Workers(settings, folder)
    try:
        await workers.ready()
        for name, down_s in (("Redis restarted mid-flight (down 5 s)", 5.0), ("Redis down for 30 s", 30.0)):
            async with make_queue(settings) as queue:
                ids = [(await queue.submit(job(u, slow=True))).job.job_id for u in (1, 2, 3)]
                await asyncio.sleep(1.0)
                redis.stop()
                ids.append((await queue.submit(job(4))).job.job_id)  # accepted while Redis is down
                await asyncio.sleep(down_s)
                redis.start()
                back = time.monotonic()
                counts, last = await answers(queue, ids)
                alive = sum(p.poll() is None for p in workers.procs)
                rows.append(row(name, ids, counts, back, last, f"{alive}/2 workers still running"))

        async with make_queue(settings) as queue:
            ids = [(await queue.submit(job(u, slow=True))).job.job_id for u in range(1, 7)]
            await asyncio.sleep(1.5)
            store = JobStore(settings.database)
            holders = sorted({w for _, w, _ in store.running()})
            store.close()
            victim = int(holders[0].rsplit(":", 1)[1])
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            counts, last = await answers(queue, ids)
            rows.append(row("Celery worker SIGKILLed mid-batch", ids, counts, killed, last))

        first = make_queue(settings)
        await first.start()
        ids = [(await first.submit(job(u, slow=True))).job.job_id for u in (1, 2, 3)]
        for task in [*first._tasks, first._consumer]:  # the bot dies: nothing closed, nothing delivered
            task.cancel()
        await asyncio.sleep(5)
        async with make_queue(settings) as second:
            restarted = time.monotonic()
            counts, last = await answers(second, ids)
        rows.append(row("bot killed with jobs in flight (Redis)", ids, counts, restarted, last))
    finally:
        workers.close()
        redis.stop()

    hung_redis = Redis()
    hung_redis.start()
    hung = Settings(**{**base.__dict__, "redis_url": hung_redis.url, "job_timeout_s": 5.0})
    workers = Workers(hung, folder, count=1, delay_s=120)  # its "test-slow" job never ends in time
    try:
        await workers.ready()
        async with make_queue(hung) as queue:
            status = await queue.submit(job(1, slow=True))
            started = time.monotonic()
            counts, last = await answers(queue, [status.job.job_id])
            failed = await queue.get(status.job.job_id)
            rows.append(row("a worker that hangs (job timeout 5 s)", [status.job.job_id], counts, started + 5.0,
                            last, f"answered {failed.state.value}: {failed.error}"))
    finally:
        workers.close()
        hung_redis.stop()
    return rows


async def local_scenarios(base: Settings) -> list[dict]:
    rows = []
    env = {TEST_DELAY_ENV: str(DELAY_S), "OMP_NUM_THREADS": "1"}
    async with LocalQueue(base, worker_env=env) as queue:
        while not queue.worker_ready:
            await asyncio.sleep(0.1)
        ids = [(await queue.submit(job(u, slow=True))).job.job_id for u in (1, 2, 3)]
        await asyncio.sleep(1.5)
        os.kill(queue.worker_pid, signal.SIGKILL)
        killed = time.monotonic()
        counts, last = await answers(queue, ids)
        rows.append(row("embedded worker SIGKILLed mid-job", ids, counts, killed, last))
    first = LocalQueue(base, worker_env=env, shutdown_grace_s=0)
    await first.start()
    ids = [(await first.submit(job(u, slow=True))).job.job_id for u in (1, 2, 3)]
    await asyncio.sleep(1.0)
    os.kill(first.worker_pid, signal.SIGKILL)  # bot and worker gone together
    for task in first._tasks:
        task.cancel()
    first._supervisor.cancel()
    async with LocalQueue(base, worker_env=env) as second:
        restarted = time.monotonic()
        counts, last = await answers(second, ids)
    rows.append(row("bot and embedded worker SIGKILLed", ids, counts, restarted, last))
    return rows


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="melodybot-faults-") as folder:
        folder = Path(folder)
        base = Settings(data_dir=folder / "redis", weights=args.weights, device="cpu", job_timeout_s=60)
        rows = await redis_scenarios(base, folder)
        rows += await local_scenarios(Settings(data_dir=folder / "local", weights=args.weights, device="cpu"))
    print("| scenario | submitted | answered once | lost | duplicated | s to last answer after the fault | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scenario']} | {r['submitted']} | {r['once']} | {r['lost']} | {r['duplicated']} | "
              f"{r['seconds']:.1f} | {r['note']} |")


if __name__ == "__main__":
    asyncio.run(main())
