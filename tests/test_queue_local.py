"""The embedded queue: the SQLite bookkeeping (bot/store.py) and LocalQueue with its real worker
process (tiny network, real rendering), killed with SIGKILL, timed out, and across bot restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest
from conftest import QUEUE_WORKER_ENV, collect

from bot.jobs import Job, JobState, JobStatus, Result, Variation
from bot.queue import QueueError, QueueFull, TooManyJobs, make_queue
from bot.queue.local import LocalQueue
from bot.storage.jobs import JobStore, Rejected, StoreError
from bot.storage.sqlite import WAL_CHECKPOINT_PAGES
from bot.worker.generator import SLOW_USER, TEST_DELAY_ENV

PRIMER = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0]  # C4 E4 G4, a bar


def job(user: int = 1, **fields) -> Job:
    fields = {"primer": PRIMER, "bars": 1, "variations": 1, **fields}
    return Job(user_id=user, channel_id=100 + user, **fields)


def finished(ids):
    ids = set(ids)
    return lambda seen: ids <= {s.job.job_id for s in seen if s.state.finished}


async def no_updates_for(queue, seconds: float) -> list[JobStatus]:
    try:
        return await collect(queue, lambda seen: True, timeout=seconds)
    except TimeoutError:
        return []


# -- the bookkeeping alone -------------------------------------------------------------------------
def test_store_positions_caps_and_cancel(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    statuses = [store.add(job(user), max_per_user=2, max_queue=5) for user in (1, 1, 2, 3, 4)]
    assert [s.position for s in statuses] == [1, 2, 3, 4, 5]
    assert all(s.state == JobState.QUEUED for s in statuses)
    with pytest.raises(Rejected) as rejected:
        store.add(job(1), max_per_user=2, max_queue=10)
    assert (rejected.value.kind, rejected.value.count) == ("user", 2)
    with pytest.raises(Rejected) as rejected:
        store.add(job(5), max_per_user=2, max_queue=5)
    assert (rejected.value.kind, rejected.value.count, rejected.value.retry_after_s) == ("queue", 5, 30.0)

    first, second = statuses[0].job.job_id, statuses[1].job.job_id
    with pytest.raises(StoreError, match="not yours"):
        store.cancel(first, user_id=2)
    with pytest.raises(StoreError, match="no job"):
        store.cancel("zzzzzz")
    assert store.cancel(first, user_id=1).state == JobState.CANCELLED
    with pytest.raises(StoreError, match="already finished"):
        store.cancel(first)
    assert [s.position for s in store.user_jobs(1)] == [1]  # the one behind moved up
    assert store.get(second).position == 1
    assert [store.get(s.job.job_id).position for s in statuses[2:]] == [2, 3, 4]
    assert store.get("zzzzzz") is None
    assert store.add(job(5), max_per_user=2, max_queue=5).position == 5  # a slot is free again


def test_store_claims_batches_and_lets_one_finish_through(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    ids = [store.add(job(user, variations=3), 5, 50).job.job_id for user in range(4)]
    batch = store.claim("w1", max_rows=7)
    assert [j.job_id for j in batch] == ids[:2]  # 6 rows; a third job would make 9
    assert [store.get(i).state for i in ids] == [JobState.RUNNING] * 2 + [JobState.QUEUED] * 2
    assert store.get(ids[2]).position == 1
    result = Result(ids[0], 16, [], b"", "C major", {})
    assert not store.finish(ids[0], JobState.DONE, result=result, worker="w2")  # not its job
    assert store.finish(ids[0], JobState.DONE, result=result, worker="w1")
    assert not store.finish(ids[0], JobState.DONE, result=result, worker="w1")  # only once
    assert not store.finish(ids[0], JobState.FAILED, error="late")
    store.cancel(ids[1])
    assert not store.finish(ids[1], JobState.DONE, result=result, worker="w1")  # cancelled: dropped
    assert store.get(ids[0]).result.key == "C major"
    events = [(job_id, state) for _, job_id, state in store.events_since(0)]
    assert events == [
        (ids[0], JobState.RUNNING), (ids[1], JobState.RUNNING), (ids[0], JobState.DONE), (ids[1], JobState.CANCELLED)
    ]  # fmt: skip
    assert store.claim("w1", max_rows=1) == [store.get(ids[2]).job]  # one job even if over max_rows
    finished_at = store.db.execute("SELECT finished_at FROM queue_jobs WHERE job_id = ?", (ids[0],)).fetchone()[0]
    assert store.last_progress(since=0) == {"w1": finished_at}  # the cancelled job held by w1 does not count
    assert store.last_progress(since=finished_at) == {}


def test_store_writes_its_workers_result_without_waiting_for_the_disk_and_checkpoints_it_with_the_next_write(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = JobStore(path)
    job_id = store.add(job(1), 5, 50).job.job_id
    store.claim("w1", max_rows=1)
    page = store.db.execute("PRAGMA page_size").fetchone()[0]
    previews = os.urandom(WAL_CHECKPOINT_PAGES * page)  # MP3s past the WAL's checkpoint length (as base64 text)
    before = path.stat().st_size
    result = Result(job_id, 16, [Variation([26], b"", previews)], b"", None, {})
    assert store.finish(job_id, JobState.DONE, result=result, worker="w1")
    assert path.with_name(path.name + "-wal").stat().st_size > len(previews)  # committed to the WAL...
    assert path.stat().st_size == before  # ... and not copied into the database on the answer's way
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again: accepting a job waits for the disk
    assert JobStore(path).get(job_id).result.variations[0].mp3 == previews  # another connection reads it
    store.mark_delivered(job_id)  # an ordinary write, once the answer is out
    assert path.stat().st_size > len(previews)  # it checkpointed the result into the database

    applied = store.add(job(2), 5, 50).job.job_id  # a result from Redis, applied by the bot (no worker named)
    store.claim("w1", max_rows=1)
    size = path.stat().st_size
    result = Result(applied, 16, [Variation([26], b"", previews)], b"", None, {})
    assert store.finish(applied, JobState.DONE, result=result)
    assert path.stat().st_size > size + len(previews)  # its event is deleted next: checkpointed (and synced) at once


def test_store_requeues_dead_workers_jobs_at_the_front_until_attempts_run_out(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    first, second = (store.add(job(user), 5, 50).job.job_id for user in (1, 2))
    assert [j.job_id for j in store.claim("w1", 1)] == [first]
    assert store.requeue([first], None, "unused") == ([first], [])  # the bot shut down: not an attempt
    assert [j.job_id for j in store.claim("w1", 1)] == [first]  # attempt 1
    assert store.requeue([first], 2, "error in {job_id}") == ([first], [])  # its worker died
    assert (store.get(first).position, store.get(second).position) == (1, 2)  # back at the front
    assert [j.job_id for j in store.claim("w2", 1)] == [first]  # attempt 2
    assert store.requeue([first], 2, "error in {job_id}") == ([], [first])  # died again: give up
    failed = store.get(first)
    assert (failed.state, failed.error) == (JobState.FAILED, f"error in {first}")
    assert store.requeue([first], 2, "error in {job_id}") == ([], [])  # not running any more


def test_store_follow_start_returns_undelivered_answers_once(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    ids = [store.add(job(user), 5, 50).job.job_id for user in range(3)]
    store.claim("w", 10)
    for job_id in ids[:2]:
        store.finish(job_id, JobState.FAILED, error="no")
    store.mark_delivered(ids[0])
    cursor, undelivered = store.follow_start()
    assert undelivered == [ids[1]]
    assert store.events_since(cursor) == []
    store.finish(ids[2], JobState.FAILED, error="no")
    assert [job_id for _, job_id, _ in store.events_since(cursor)] == [ids[2]]


def test_store_estimates_the_wait_from_recent_jobs(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    now = 1000.0
    for user in range(4):  # four jobs, one every 2 s, each running 3 s
        job_id = store.add(job(user), 5, 50, now=now + 2 * user).job.job_id
        store.claim("w", 1, now=now + 2 * user)
        store.finish(job_id, JobState.FAILED, error="x", now=now + 2 * user + 3)
    queued = [store.add(job(10 + user), 5, 50, now=now + 20).job.job_id for user in range(3)]
    assert len(queued) == 3
    with pytest.raises(Rejected) as rejected:
        store.add(job(20), 5, 2)  # 3 unfinished, cap 2: two must finish, one every 2 s
    assert rejected.value.retry_after_s == pytest.approx(4.0)
    assert str(QueueFull(rejected.value.retry_after_s)) == "The queue is full; try again in ~4 s."


# -- LocalQueue with its worker process ------------------------------------------------------------
async def test_local_queue_answers_jobs_and_enforces_limits(queue_settings):
    settings = queue_settings(default_bars=1, max_bars=4, max_variations=2, max_queued_per_user=2)
    queue = make_queue(settings)
    assert isinstance(queue, LocalQueue)
    async with LocalQueue(settings, worker_env=QUEUE_WORKER_ENV) as queue:
        with pytest.raises(QueueError, match="1 to 4 bars"):
            await queue.submit(job(bars=5))
        with pytest.raises(QueueError, match="1 to 2 variations"):
            await queue.submit(job(variations=3))
        first = await queue.submit(job(1, variations=2, seed=7))
        second = await queue.submit(job(1, bars=2))
        with pytest.raises(TooManyJobs, match="You already have 2 jobs waiting; wait for one to finish or !cancel"):
            await queue.submit(job(1))
        bad = await queue.submit(job(2, primer=[0, 0, 0, 0]))
        unwanted = await queue.submit(job(3))
        assert [first.position, second.position, bad.position, unwanted.position] == [1, 2, 3, 4]
        assert [s.job.job_id for s in await queue.user_jobs(1)] == [first.job.job_id, second.job.job_id]
        with pytest.raises(QueueError, match="not yours"):
            await queue.cancel(unwanted.job.job_id, user_id=1)
        assert (await queue.cancel(unwanted.job.job_id, user_id=3)).state == JobState.CANCELLED
        ids = [s.job.job_id for s in (first, second, bad, unwanted)]
        seen = await collect(queue, finished(ids))

        final = {s.job.job_id: s for s in seen if s.state.finished}
        assert Counter(s.job.job_id for s in seen if s.state.finished) == Counter(ids)
        done = final[first.job.job_id]
        assert done.state == JobState.DONE and done.result.job_id == first.job.job_id
        assert len(done.result.variations) == 2 and done.result.primer_steps == len(PRIMER)
        for variation in done.result.variations:
            assert variation.events[: done.result.primer_steps] == PRIMER
            assert len(variation.events) == done.result.primer_steps + 16
            assert variation.mp3 and variation.midi.startswith(b"MThd")
        assert done.result.combined_png.startswith(b"\x89PNG") and done.result.key == "C major"
        assert set(done.result.timings) >= {"queued", "sample", "render", "total"}
        assert len(final[second.job.job_id].result.variations[0].events) == len(PRIMER) + 32
        assert final[bad.job.job_id].state == JobState.FAILED
        assert final[bad.job.job_id].error == "The primer has no notes."
        assert final[unwanted.job.job_id].state == JobState.CANCELLED
        running = {s.job.job_id for s in seen if s.state == JobState.RUNNING}
        assert {first.job.job_id, second.job.job_id, bad.job.job_id} <= running

        assert (await queue.get(first.job.job_id)).result.variations[0].mp3 == done.result.variations[0].mp3
        assert await queue.get("zzzzzz") is None
        assert await queue.user_jobs(1) == []
        with pytest.raises(QueueError, match="already finished"):
            await queue.cancel(first.job.job_id)
        with pytest.raises(QueueError, match="no job"):
            await queue.cancel("zzzzzz")
        stats = await queue.stats()
        assert stats["jobs"]["done"] == 2 and stats["jobs"]["failed"] == 1 and stats["jobs"]["cancelled"] == 1
        assert (stats["backend"], stats["queue_depth"], stats["running"], stats["workers_alive"]) == ("local", 0, 0, 1)
        for job_id in ids:
            await queue.mark_delivered(job_id)


async def test_the_worker_says_when_it_wrote_so_answers_do_not_wait_for_the_poll(queue_settings, monkeypatch):
    import bot.queue.base

    monkeypatch.setattr(bot.queue.base, "POLL_S", 120.0)  # the log would be read every two minutes
    async with LocalQueue(queue_settings(), worker_env=QUEUE_WORKER_ENV) as queue:
        submitted = await queue.submit(job(seed=3))
        seen = await collect(queue, finished([submitted.job.job_id]), timeout=30)
        assert [s.state for s in seen if s.job.job_id == submitted.job.job_id][-1] == JobState.DONE
        await queue.mark_delivered(submitted.job.job_id)


async def test_local_worker_killed_mid_job_restarts_and_the_job_completes_once(queue_settings):
    env = {**QUEUE_WORKER_ENV, TEST_DELAY_ENV: "2"}
    async with LocalQueue(queue_settings(), worker_env=env) as queue:
        slow = await queue.submit(job(1, user_name=SLOW_USER))
        other = await queue.submit(job(2, bars=2))
        await collect(queue, lambda seen: seen[-1].state == JobState.RUNNING and seen[-1].job.job_id == slow.job.job_id)
        killed = queue.worker_pid
        await asyncio.sleep(0.5)
        os.kill(killed, signal.SIGKILL)
        ids = [slow.job.job_id, other.job.job_id]
        seen = await collect(queue, finished(ids))
        seen += await no_updates_for(queue, 0.5)

        assert Counter((s.job.job_id, s.state) for s in seen if s.state.finished) == {
            (slow.job.job_id, JobState.DONE): 1,
            (other.job.job_id, JobState.DONE): 1,
        }
        requeued = [s for s in seen if s.state == JobState.QUEUED]
        assert requeued and requeued[0].job.job_id == slow.job.job_id and requeued[0].position == 1
        assert queue.worker_pid not in (None, killed)
        stats = await queue.stats()
        assert stats["worker_restarts"] == 1 and stats["jobs"]["done"] == 2


async def test_local_job_over_the_timeout_fails_and_the_worker_is_replaced(queue_settings):
    env = {**QUEUE_WORKER_ENV, TEST_DELAY_ENV: "8"}
    async with LocalQueue(queue_settings(job_timeout_s=2.0), worker_env=env) as queue:
        while not queue.worker_ready:  # the timeout counts from the start of the run
            await asyncio.sleep(0.1)
        stuck = await queue.submit(job(1, user_name=SLOW_USER))
        pid = queue.worker_pid
        seen = await collect(queue, finished([stuck.job.job_id]))
        assert seen[-1].state == JobState.FAILED
        assert seen[-1].error.startswith(f"Job {stuck.job.job_id} took too long (over 2 s) and was stopped")
        deadline = time.monotonic() + 10
        while queue.worker_pid in (None, pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert queue.worker_pid not in (None, pid)  # the stuck worker was killed and replaced


async def test_bot_restart_runs_queued_jobs_and_delivers_unanswered_ones(queue_settings):
    settings = queue_settings()
    first = LocalQueue(settings, shutdown_grace_s=0, worker_env={**QUEUE_WORKER_ENV, TEST_DELAY_ENV: "30"})
    await first.start()
    running = await first.submit(job(1, user_name=SLOW_USER))
    waiting = await first.submit(job(2))
    await collect(first, lambda seen: seen[-1].job.job_id == running.job.job_id)  # RUNNING
    await first.close()  # mid-job: the worker is killed, nothing was answered
    ids = [running.job.job_id, waiting.job.job_id]

    async with LocalQueue(settings, worker_env=QUEUE_WORKER_ENV) as second:  # the bot again, no delay now
        seen = await collect(second, finished(ids))
        assert sorted(s.job.job_id for s in seen if s.state == JobState.DONE) == sorted(ids)
        await second.mark_delivered(waiting.job.job_id)  # the bot answered one, then stopped

    async with LocalQueue(settings, worker_env=QUEUE_WORKER_ENV) as third:
        seen = await collect(third, lambda seen: True, timeout=10)
        assert [(s.job.job_id, s.state) for s in seen] == [(running.job.job_id, JobState.DONE)]
        assert seen[0].result.job_id == running.job.job_id and seen[0].result.variations
        await third.mark_delivered(running.job.job_id)
        assert await no_updates_for(third, 0.5) == []

    async with LocalQueue(settings, worker_env=QUEUE_WORKER_ENV) as fourth:
        assert await no_updates_for(fourth, 0.5) == []  # delivered: never again
