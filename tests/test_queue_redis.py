"""The Redis queue (Celery) against a real redis-server and two real worker processes: one is
killed with SIGKILL mid-job, and its jobs still complete, on the other, answered exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import aiohttp
import redis
from conftest import QUEUE_WORKER_ENV, collect, free_port
from prometheus_client.parser import text_string_to_metric_families

from bot.jobs import Job, JobState
from bot.queue import make_queue
from bot.queue.celery_backend import CeleryQueue
from bot.queue.local import worker_environment
from bot.storage.jobs import JobStore
from bot.worker.generator import SLOW_USER, TEST_DELAY_ENV

PRIMER = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0]
VISIBILITY_TIMEOUT_S = 4  # a killed worker's jobs go to another worker after this long


def job(user: int, **fields) -> Job:
    return Job(user_id=user, channel_id=user, primer=PRIMER, bars=1, variations=2, **fields)


async def test_a_worker_killed_mid_job_loses_nothing_and_answers_once(queue_settings, redis_url, tmp_path):
    redis.Redis.from_url(redis_url).flushall()
    settings = queue_settings(redis_url=redis_url, job_timeout_s=60)
    env = worker_environment(settings, {**QUEUE_WORKER_ENV, TEST_DELAY_ENV: "2"})
    command = [sys.executable, "-m", "bot.worker", "--redis", redis_url, "--concurrency", "2",
               "--visibility-timeout", str(VISIBILITY_TIMEOUT_S)]  # fmt: skip
    logs = [tmp_path / f"worker{n}.log" for n in (1, 2)]
    ports = [free_port(), free_port()]  # each worker serves /healthz and /metrics
    workers = [
        subprocess.Popen(command, env={**env, "MELODYBOT_HTTP_PORT": str(port)}, stdout=log.open("w"),
                         stderr=subprocess.STDOUT)
        for log, port in zip(logs, ports)
    ]
    try:
        queue = make_queue(settings)
        assert isinstance(queue, CeleryQueue)
        async with queue:
            deadline = time.monotonic() + 60
            while not all(" ready." in log.read_text() for log in logs):  # Celery consumes
                assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "workers did not start"
                await asyncio.sleep(0.2)
            assert (await queue.stats())["workers_alive"] == 2

            slow = await queue.submit(job(1, user_name=SLOW_USER))
            others = [await queue.submit(job(user)) for user in (2, 3, 4, 5)]
            unwanted = await queue.submit(job(6))
            assert slow.position == 1  # the workers start on them at once: later positions vary
            assert (await queue.cancel(unwanted.job.job_id, user_id=6)).state == JobState.CANCELLED
            seen = await collect(queue, lambda seen: seen[-1].job.job_id == slow.job.job_id)  # RUNNING
            store = JobStore(settings.database)
            holder = next(worker for job_id, worker, _ in store.running() if job_id == slow.job.job_id)
            killed = int(holder.rsplit(":", 1)[1])
            assert killed in [w.pid for w in workers]
            await asyncio.sleep(0.5)  # mid-job: it sleeps 2 s after sampling
            os.kill(killed, signal.SIGKILL)

            ids = [s.job.job_id for s in [slow, *others]]
            seen += await collect(queue, lambda seen: set(ids) <= {s.job.job_id for s in seen if s.state.finished})
            try:
                seen += await collect(queue, lambda seen: True, timeout=0.5)
            except TimeoutError:
                pass
            answers = Counter((s.job.job_id, s.state) for s in seen if s.state.finished)
            expected = {**{(i, JobState.DONE): 1 for i in ids}, (unwanted.job.job_id, JobState.CANCELLED): 1}
            assert answers == Counter(expected)
            done = {s.job.job_id: s for s in seen if s.state == JobState.DONE}
            assert all(len(done[i].result.variations) == 2 and done[i].result.variations[0].mp3 for i in ids)
            finishers = dict(store.db.execute("SELECT job_id, worker FROM queue_jobs").fetchall())
            store.close()
            assert finishers[slow.job.job_id] != holder  # the other worker finished it
            deadline = time.monotonic() + 10  # the dead one's heartbeat runs out
            while (await queue.stats())["workers_alive"] != 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert (await queue.stats())["workers_alive"] == 1

            survivor = next(port for worker, port in zip(workers, ports) if worker.pid != killed)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{survivor}/healthz") as response:
                    assert response.status == 200 and (await response.json())["status"] == "ok"
                async with http.get(f"http://127.0.0.1:{survivor}/metrics") as response:
                    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
            finished = {s.labels["state"]: s.value for s in families["melodybot_jobs_finished"].samples
                        if s.name.endswith("_total")}
            assert finished.get("done", 0) >= 1  # the survivor counted the jobs it answered
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
