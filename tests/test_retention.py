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
    """Jobs stored before 2026-12-06 carry their files in base64 inside the result's JSON, and
    those before 2026-12-04 an (empty) "png" per variation too: they load as before, and pruning
    them leaves their events."""
    import base64
    import json

    store = JobStore(tmp_path / "melodybot.sqlite3")
    job_id = finished_job(store, age_days=31, size=10)
    stored = store.get(job_id).result.to_dict()  # as such a job was stored
    for variation in stored["variations"]:
        variation["png"] = base64.b64encode(b"").decode()
    with store._write() as db:
        db.execute("UPDATE queue_jobs SET result = ?, previews = NULL WHERE job_id = ?", (json.dumps(stored), job_id))
    loaded = store.get(job_id).result
    assert [len(v.midi) for v in loaded.variations] == [10, 10] and len(loaded.combined_png) == 10
    assert store.prune_previews(time.time()) == 1
    pruned = store.get(job_id).result
    assert [v.events for v in pruned.variations] == [PRIMER + [34, 0, 1], PRIMER + [34, 0, 1] * 2]
    assert all(v.midi == v.mp3 == b"" for v in pruned.variations) and not pruned.combined_png
    store.close()


def test_a_result_keeps_its_files_as_raw_bytes_beside_its_json(tmp_path):
    """The files go in their own column, end to end (no base64: a third smaller, and no encoding on
    an answer's way); they come back byte for byte, and pruning empties that column."""
    store = JobStore(tmp_path / "melodybot.sqlite3")
    job_id = finished_job(store, age_days=31, size=1000)
    with store._write() as db:
        text, files = db.execute("SELECT result, previews FROM queue_jobs WHERE job_id = ?", (job_id,)).fetchone()
    assert len(files) == 5 * 1000 and len(text) < 1000  # two MIDI files, two MP3s and the picture
    loaded = store.get(job_id).result
    assert b"".join(x for v in loaded.variations for x in (v.midi, v.mp3)) + loaded.combined_png == files
    assert loaded.key == "C major" and loaded.timings == {"total": 1.0}
    assert store.prune_previews(time.time()) == 1
    with store._write() as db:
        assert db.execute("SELECT previews FROM queue_jobs WHERE job_id = ?", (job_id,)).fetchone()[0] is None
    pruned = store.get(job_id).result
    assert [v.events for v in pruned.variations] == [v.events for v in loaded.variations]
    assert all(v.midi == v.mp3 == b"" for v in pruned.variations) and not pruned.combined_png
    store.close()


def test_a_database_from_before_the_previews_column_gets_it_and_keeps_its_jobs(tmp_path):
    """A database made by an older version (no previews column, files in the JSON) opens: the
    column is added, the old result loads, and new results are stored the new way."""
    import json
    import sqlite3

    path = tmp_path / "melodybot.sqlite3"
    store = JobStore(path)
    job_id = finished_job(store, age_days=1, size=10)
    stored = store.get(job_id).result.to_dict()
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE queue_jobs DROP COLUMN previews")  # as the older version made it
    db.execute("UPDATE queue_jobs SET result = ? WHERE job_id = ?", (json.dumps(stored), job_id))
    db.commit()
    db.close()
    store = JobStore(path)
    assert [len(v.mp3) for v in store.get(job_id).result.variations] == [10, 10]
    second = finished_job(store, age_days=0, size=10)
    assert len(store.get(second).result.combined_png) == 10
    JobStore(path).close()  # a second process opening it finds the column there
    store.close()
