"""`python -m bot.export_votes OUT.jsonl`: one row per finished job (primer, options, variations,
votes, winner), from the real database a bot writes; `!forget me` takes a user's votes and jobs
out of it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.commands import DISCORD, CommandHandler, Request
from bot.export_votes import export, rows
from bot.jobs import Job, JobState, Result, Variation
from bot.queue.base import StoreQueue
from bot.settings import Settings
from bot.storage import BotStore
from bot.storage.jams import Jam
from bot.storage.jobs import JobStore
from model.defaults import DEFAULT_TOP_P
from model.music.events import NO_EVENT, NOTE_OFF, note_on

ROOT = Path(__file__).resolve().parents[1]
ANN, BOB = 1, 2  # the users who asked
PRIMER = [note_on(60), NO_EVENT, NOTE_OFF, NO_EVENT]


def melody(*pitches: int) -> list[int]:
    return PRIMER + [e for p in pitches for e in (note_on(p), NO_EVENT, NO_EVENT, NOTE_OFF)]


def finished(jobs: JobStore, job: Job, variations: list[list[int]], state: JobState = JobState.DONE) -> Job:
    jobs.add(job, 10, 100)
    result = Result(job.job_id, len(job.primer), [Variation(v, b"midi", b"mp3", "C | G") for v in variations],
                    b"", "C major", {"total": 0.1}) if state == JobState.DONE else None
    jobs.finish(job.job_id, state, result=result, error=None if result else "the worker died")
    time.sleep(0.01)  # finish times in order
    return job


@pytest.fixture
async def database(tmp_path):
    """A bot's database: ann's job A (voted on, then extended by bob as job B), ann's failed job,
    bob's jam round D; votes by several users."""
    settings = Settings(data_dir=tmp_path)
    jobs = JobStore(settings.database)
    store = BotStore(settings.database)
    try:
        a = finished(jobs, Job(user_id=ANN, channel_id=9, primer=PRIMER, bars=1, variations=2, seed=7,
                               temperature=1.2, instrument="flute"), [melody(62), melody(64)])
        finished(jobs, Job(user_id=ANN, channel_id=9, primer=PRIMER), [], JobState.FAILED)
        b = finished(jobs, Job(user_id=BOB, channel_id=9, primer=melody(64), bars=1, variations=3,
                               parent=f"{a.job_id}:2"), [melody(64, 65), melody(64, 67), melody(64, 69)])
        d = finished(jobs, Job(user_id=BOB, channel_id=9, primer=PRIMER, bars=1, variations=3),
                     [melody(60), melody(61), melody(62)])
        for user, job, number in [(5, a, 2), (6, a, 2), (BOB, a, 1), (ANN, b, 3), (7, b, 1)]:
            await store.votes.vote(job.job_id, user, number)
            time.sleep(0.01)  # vote times in order: ann's vote on B comes before user 7's
        jam = Jam("jamxyz", 9, None, BOB, "bob", 2, 1.0, d.to_dict(), list(PRIMER), job_id=d.job_id)
        await store.jams.create(jam)
        assert await store.jams.open_round(jam, time.time())
        jam = await store.jams.get(jam.jam_id)
        assert await store.jams.close_round(jam, 3, 0, 0, "no votes", melody(62), None)
    finally:
        store.close()
        jobs.close()
    return settings, {"a": a.job_id, "b": b.job_id, "d": d.job_id}


def test_the_command_writes_one_row_per_finished_job(database, tmp_path):
    settings, ids = database
    out = tmp_path / "votes.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELODYBOT_")}
    done = subprocess.run([sys.executable, "-m", "bot.export_votes", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**env, "MELODYBOT_DATA_DIR": str(settings.data_dir)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"3 finished jobs written to {out}"
    a, b, d = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["job_id"], b["job_id"], d["job_id"]] == [ids["a"], ids["b"], ids["d"]]  # the failed job is not in it

    assert a["primer"] == PRIMER and a["primer_steps"] == 4 and a["parent"] is None and a["jam"] is None
    assert a["options"] == {"bars": 1, "variations": 2, "temperature": 1.2, "top_p": DEFAULT_TOP_P, "seed": 7,
                            "bpm": 120.0, "instrument": "flute", "keep_key": True, "chords": None, "harmony": True,
                            "style": "pop"}
    assert a["variations"] == [{"number": 1, "events": melody(62), "chords": "C | G"},
                               {"number": 2, "events": melody(64), "chords": "C | G"}]
    assert (a["counts"], a["winner"], a["winner_by"], a["extended"]) == ([1, 2], 2, "votes", [2])
    assert [v["variation"] for v in a["votes"]] == [2, 2, 1] and "user" not in json.dumps(a["votes"])

    assert b["parent"] == f"{ids['a']}:2" and b["key"] == "C major"
    assert (b["counts"], b["winner"], b["winner_by"], b["extended"]) == ([1, 0, 1], 3, "votes", [])  # a tie
    assert (d["jam"], d["winner"], d["winner_by"], d["counts"]) == ({"jam_id": "jamxyz", "round": 1}, 3, "jam",
                                                                     [0, 0, 0])  # fmt: skip

    missing = subprocess.run([sys.executable, "-m", "bot.export_votes", str(out), "--database",
                              str(tmp_path / "none.sqlite3")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no database at" in missing.stderr


async def test_forget_me_takes_a_users_votes_and_jobs_out_of_the_export(database, tmp_path):
    settings, ids = database
    store = BotStore(settings.database)
    queue = StoreQueue(settings)
    await queue.start()
    try:
        handler = CommandHandler(settings, queue, store, platform=DISCORD, rng=random.Random(1))
        (reply,) = await handler.handle_line(Request(user_id=ANN, channel_id=9, user_name="ann"), "!forget me")
        assert reply.text == "Done: I deleted 1 of your votes, 2 finished jobs and 0 jams." and reply.private
        assert await queue.get(ids["a"]) is None and (await queue.get(ids["b"])).state == JobState.DONE
    finally:
        await queue.close()
        store.close()
    left = list(rows(settings.database))
    assert [row["job_id"] for row in left] == [ids["b"], ids["d"]]
    b = left[0]
    assert (b["counts"], b["winner"]) == ([1, 0, 0], 1)  # ann's vote on B is gone too
    assert export(settings.database, tmp_path / "after.jsonl") == 2
