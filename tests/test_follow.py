"""bot/commands/follow.py on the real queue: a failed delivery is tried again, in order, without a
restart, marked as a replay (the front-end then checks what already reached the user), and the
user is told only when every try failed."""

from __future__ import annotations

import asyncio

from bot.commands import UpdateFollower
from bot.jobs import Job, JobState, Result, Variation
from bot.queue.base import StoreQueue
from bot.settings import Settings
from bot.storage.jobs import JobStore


def finish_one(database) -> str:
    store = JobStore(database)
    job = Job(user_id=1, channel_id=1, primer=[26, 0, 0, 1], bars=1, variations=1)
    store.add(job, 10, 10)
    store.claim("w", 10)
    result = Result(job.job_id, 4, [Variation([26, 0, 0, 1], b"m", b"")], b"", None, {})
    store.finish(job.job_id, JobState.DONE, result=result, worker="w")
    store.close()
    return job.job_id


async def follow(settings, fail_times: int) -> tuple[list, list, object]:
    tries, told = [], []

    async def deliver(status):
        if status.state.finished:
            tries.append(status.replayed)
            if len(tries) <= fail_times:
                raise ConnectionError("Discord is unreachable")
            await queue.mark_delivered(status.job.job_id)

    async with StoreQueue(settings) as queue:
        follower = UpdateFollower(queue, deliver, on_failure=lambda status, error: told.append(str(error)))
        follower.DELIVERY_RETRIES_S = (0.05, 0.05)
        follower.start()
        job_id = finish_one(settings.database)
        for _ in range(100):
            if len(tries) > fail_times or told:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        await follower.stop()
        return tries, told, (await queue.get(job_id))


async def test_a_failed_delivery_is_tried_again_and_delivered_once(tmp_path):
    tries, told, status = await follow(Settings(data_dir=tmp_path), fail_times=2)
    assert tries == [False, True, True] and told == []  # the retries know part of it may have gone out
    assert status.state == JobState.DONE


async def test_the_user_is_told_when_every_try_failed(tmp_path):
    tries, told, _ = await follow(Settings(data_dir=tmp_path), fail_times=5)
    assert len(tries) == 3 and told == ["Discord is unreachable"]
