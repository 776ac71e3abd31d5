"""Load: 200 jobs from 20 simulated users against the embedded queue and its real worker process.

Every job is answered exactly once; the per-user cap (3) and the queue cap (40) hold at every
moment (checked afterwards from the database's timestamps, which follow commit order); users
whose submissions bounce (TooManyJobs, QueueFull) retry; the positions reported are consistent
with the order the jobs actually ran in.

Jobs are tiny (1 bar, 1 variation, tiny network) and, FOR THIS TEST ONLY, the worker skips
rendering (MELODYBOT_TEST_SKIP_RENDER=1): FluidSynth and the MP3 encoder would make this a
benchmark of the renderer on a busy 2-core machine rather than a test of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict

from conftest import QUEUE_WORKER_ENV

from bot.jobs import Job, JobState
from bot.queue import QueueFull, TooManyJobs
from bot.queue.local import LocalQueue
from bot.storage.jobs import JobStore
from bot.worker.generator import TEST_SKIP_RENDER_ENV

USERS, JOBS_PER_USER = 20, 10
PER_USER_CAP, QUEUE_CAP = 3, 40
PRIMER = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0]


async def test_200_jobs_from_20_users_are_each_answered_once_within_the_caps(queue_settings):
    settings = queue_settings(default_bars=1, max_queued_per_user=PER_USER_CAP, max_queue=QUEUE_CAP)
    total = USERS * JOBS_PER_USER
    submitted: dict[str, int] = {}  # job id -> position reported by submit()
    bounced: Counter[str] = Counter()
    answers: Counter[tuple[str, JobState]] = Counter()
    seen_positions: dict[str, list[int]] = defaultdict(list)  # job id -> positions over time
    snapshot_errors: list[str] = []
    wake = {user: asyncio.Event() for user in range(USERS)}
    started = time.monotonic()

    async with LocalQueue(settings, worker_env={**QUEUE_WORKER_ENV, TEST_SKIP_RENDER_ENV: "1"}) as queue:

        async def consume():
            async for status in queue.updates():
                if status.state.finished:
                    answers[status.job.job_id, status.state] += 1
                    await queue.mark_delivered(status.job.job_id)
                    wake[status.job.user_id].set()
                    if sum(answers.values()) == total:
                        return

        async def user(user_id: int):
            for number in range(JOBS_PER_USER):
                job = Job(user_id=user_id, channel_id=user_id, primer=PRIMER, bars=1, variations=1, seed=number)
                while True:
                    try:
                        status = await queue.submit(job)
                    except TooManyJobs:
                        bounced["user"] += 1
                        wake[user_id].clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake[user_id].wait(), 0.5)
                    except QueueFull as full:
                        bounced["queue"] += 1
                        assert full.retry_after_s > 0 and "The queue is full; try again in ~" in str(full)
                        await asyncio.sleep(min(full.retry_after_s, 0.25))
                    else:
                        assert 1 <= status.position <= QUEUE_CAP
                        submitted[status.job.job_id] = status.position
                        break

        async def watch_positions():
            while True:
                for user_id in range(USERS):
                    statuses = await queue.user_jobs(user_id)  # one snapshot
                    queued = [s.position for s in statuses if s.state == JobState.QUEUED]
                    if queued != sorted(set(queued)) or any(not 1 <= p <= QUEUE_CAP for p in queued):
                        snapshot_errors.append(f"user {user_id}: positions {queued}")
                    if len(statuses) > PER_USER_CAP:
                        snapshot_errors.append(f"user {user_id}: {len(statuses)} unfinished jobs")
                    for s in statuses:
                        if s.state == JobState.QUEUED:
                            seen_positions[s.job.job_id].append(s.position)
                await asyncio.sleep(0.02)

        consumer = asyncio.create_task(consume())
        watcher = asyncio.create_task(watch_positions())
        await asyncio.wait_for(asyncio.gather(*(user(u) for u in range(USERS))), 80)
        await asyncio.wait_for(consumer, 30)
        watcher.cancel()
        elapsed = time.monotonic() - started
        stats = await queue.stats()

    # Every job answered exactly once, all of them done.
    assert len(submitted) == total
    assert answers == Counter({(job_id, JobState.DONE): 1 for job_id in submitted})
    assert stats["jobs"]["done"] == total and stats["queue_depth"] == 0
    # The caps bit, and users got through by retrying.
    assert bounced["user"] > 0 and bounced["queue"] > 0
    assert snapshot_errors == []
    # A job's position only ever moves up, from where submit() put it.
    for job_id, positions in seen_positions.items():
        assert positions == sorted(positions, reverse=True) and positions[0] <= submitted[job_id], job_id

    store = JobStore(settings.database)
    columns = "seq, job_id, user_id, created_at, started_at, finished_at"
    rows = store.db.execute(f"SELECT {columns} FROM queue_jobs").fetchall()
    store.close()
    # The caps held at every moment: unfinished jobs per user and in all, swept over time.
    moments = sorted([(created, 1, user) for _, _, user, created, _, _ in rows] +
                     [(finished, 0, user) for _, _, user, _, _, finished in rows])  # fmt: skip
    per_user, everyone, most_per_user, most = Counter(), 0, 0, 0
    for _, arrives, user_id in moments:
        step = 1 if arrives else -1
        per_user[user_id] += step
        everyone += step
        most_per_user, most = max(most_per_user, per_user[user_id]), max(most, everyone)
    assert most_per_user == PER_USER_CAP and most == QUEUE_CAP
    # Jobs ran in queue order, and each position submit() reported was 1 + the jobs still
    # waiting ahead of it then (those that started after it was queued).
    rows.sort()
    assert [r[4] for r in rows] == sorted(r[4] for r in rows)
    for index, (_, job_id, _, created, _, _) in enumerate(rows):
        ahead = sum(1 for r in rows[:index] if r[4] > created)
        assert submitted[job_id] == ahead + 1, job_id
    print(f"\n{total} jobs in {elapsed:.1f} s; bounced: {dict(bounced)}")
