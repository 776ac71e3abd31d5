"""Storage stays bounded: the previews of old results are deleted, their events kept, so the
channel can still extend, reroll and vote on them."""

from __future__ import annotations

import asyncio
import os
import time

from bot.commands import DISCORD, CommandHandler, Request
from bot.jobs import Job, JobState, Result, Variation
from bot.queue.base import StoreQueue
from bot.settings import Settings
from bot.storage import BotStore
from bot.storage.jobs import JobStore

PRIMER = [26, 0, 0, 1, 30, 0, 0, 1]


def finished_job(store: JobStore, age_days: float, size: int = 200_000) -> str:
    job = Job(user_id=1, channel_id=2, primer=PRIMER, bars=1, variations=2)
    store.add(job, 10, 100)
    store.claim("w", 64)
    variations = [Variation(PRIMER + [34, 0, 1] * n, os.urandom(size), os.urandom(size)) for n in (1, 2)]
    result = Result(job.job_id, len(PRIMER), variations, os.urandom(size), "C major", {"total": 1.0})
    store.finish(job.job_id, JobState.DONE, result=result, worker="w", now=time.time() - age_days * 86400)
    return job.job_id


async def test_old_previews_are_deleted_and_the_job_still_extends(tmp_path):
    settings = Settings(data_dir=tmp_path, preview_retention_days=30)
    store = JobStore(settings.database)
    old, new = finished_job(store, age_days=31), finished_job(store, age_days=29)
    store.mark_delivered(old)
    store.mark_delivered(new)
    store.close()
    votes = BotStore(settings.database)
    async with StoreQueue(settings) as queue:
        deadline = time.monotonic() + 10
        while (await queue.get(old)).result.combined_png:  # the first check runs within a second
            assert time.monotonic() < deadline, "old previews were not pruned"
            await asyncio.sleep(0.1)
        pruned, kept = (await queue.get(old)).result, (await queue.get(new)).result
        assert [v.events for v in pruned.variations] == [PRIMER + [34, 0, 1], PRIMER + [34, 0, 1] * 2]
        assert all(v.midi == v.mp3 == b"" for v in pruned.variations)
        assert all(len(v.mp3) == 200_000 for v in kept.variations) and kept.combined_png
        handler = CommandHandler(settings, queue, votes, platform=DISCORD)
        (reply,) = await handler.handle_line(Request(user_id=1, channel_id=2), f"!extend {old} 2")
        assert reply.status_of is not None, reply.text
        child = await queue.get(reply.status_of)
        assert child.job.primer == PRIMER + [34, 0, 1] * 2 and child.job.parent == f"{old}:2"
    votes.close()


def test_a_job_stored_with_a_picture_per_variation_still_loads_and_prunes(tmp_path):
    """Jobs stored before 2026-12-04 carry an (empty) "png" per variation: they load as before,
    and pruning them leaves their events."""
    import base64
    import json

    store = JobStore(tmp_path / "melodybot.sqlite3")
    job_id = finished_job(store, age_days=31, size=10)
    with store._write() as db:
        stored = json.loads(db.execute("SELECT result FROM queue_jobs WHERE job_id = ?", (job_id,)).fetchone()[0])
        for variation in stored["variations"]:
            variation["png"] = base64.b64encode(b"").decode()
        db.execute("UPDATE queue_jobs SET result = ? WHERE job_id = ?", (json.dumps(stored), job_id))
    loaded = store.get(job_id).result
    assert [len(v.midi) for v in loaded.variations] == [10, 10]
    assert store.prune_previews(time.time()) == 1
    pruned = store.get(job_id).result
    assert [v.events for v in pruned.variations] == [PRIMER + [34, 0, 1], PRIMER + [34, 0, 1] * 2]
    assert all(v.midi == v.mp3 == b"" for v in pruned.variations) and not pruned.combined_png
    store.close()
