"""Hostile and odd sketches through the real command handler and SQLite queue: a tempo MIDI
cannot go below, a file at the note limit, a flood of tempo changes, many sketches at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from midi_factory import TrackSpec, line, make_midi

import bot.commands.sketches as sketches
from bot.commands import DISCORD, CommandHandler, Request, Upload
from bot.jobs import JobState
from bot.queue.base import StoreQueue
from bot.settings import Settings
from bot.storage import BotStore
from model.defaults import BPM_RANGE
from model.music.midi_io import MAX_NOTES

MELODY = line([60, 64, 67, 69, 67, 64, 62, 60])


@pytest.fixture
async def handler(tmp_path):
    settings = Settings(data_dir=tmp_path)
    store = BotStore(settings.database)
    async with StoreQueue(settings) as queue:
        yield CommandHandler(settings, queue, store, platform=DISCORD)
    store.close()


def upload(data: bytes, name: str = "sketch.mid") -> Upload:
    async def read() -> bytes:
        return data

    return Upload(name, len(data), read)


async def say(handler, line_: str, data: bytes | None = None, user_id: int = 1):
    request = Request(user_id=user_id, channel_id=5, user_name="ann", uploads=[upload(data)] if data else [])
    (reply,) = await handler.handle_line(request, line_)
    return reply


async def test_the_slowest_tempo_midi_can_encode_is_moved_into_range_and_said_so(handler):
    slow = make_midi([TrackSpec("Melody", MELODY)], bpm=3.6)
    reply = await say(handler, "!continue bars=4", slow)
    assert reply.status_of is not None, reply.text
    assert "the sketch's tempo (3.6 BPM) is outside 20-300 BPM, so I used 20 BPM" in reply.text
    status = await handler.queue.get(reply.status_of)
    assert status.state == JobState.QUEUED and status.job.bpm == BPM_RANGE[0]
    fast = make_midi([TrackSpec("Melody", MELODY)], bpm=900)
    reply = await say(handler, "!continue bars=4", fast, user_id=2)
    assert (await handler.queue.get(reply.status_of)).job.bpm == BPM_RANGE[1]


async def test_a_waltz_sketch_is_answered_in_4_4_and_said_so(handler):
    reply = await say(handler, "!continue bars=4", make_midi([TrackSpec("Melody", MELODY)], time_signature=(3, 4)))
    assert reply.status_of is not None, reply.text
    assert "Note: the sketch is in 3/4, but I write in 4/4 (bars of 4 beats)" in reply.text
    plain = await say(handler, "!continue bars=4", make_midi([TrackSpec("Melody", MELODY)]), user_id=2)
    assert "3/4" not in plain.text and "4/4" not in plain.text


async def test_a_continuation_too_long_in_seconds_is_refused_with_what_fits(handler):
    slow = make_midi([TrackSpec("Melody", MELODY)], bpm=5)
    reply = await say(handler, "!continue bars=32", slow)
    assert reply.status_of is None
    assert reply.text.startswith("32 bars at 20 BPM last 6.4 minutes; the longest continuation is 5 minutes, "
                                 "so ask for at most 25 bars at this tempo")
    assert (await say(handler, "!continue C4 E4 G4 bars=32 bpm=20")).status_of is None
    assert (await say(handler, "!continue C4 E4 G4 bars=25 bpm=20")).status_of is not None


async def test_a_file_over_the_note_limit_is_refused_without_stalling_the_bot(handler):
    notes = [(i // 40, i // 40 + 1, 40 + i % 40) for i in range(MAX_NOTES + 1)]  # 40-note chords: ticks stay small
    data = make_midi([TrackSpec("Melody", notes)])
    assert len(data) < 1024 * 1024  # under the size limit: the note count is what refuses it
    ticks = 0
    done = asyncio.Event()

    async def ticker():  # runs only while the event loop is free
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    reply = await say(handler, "!continue", data)
    elapsed = time.monotonic() - started
    done.set()
    await task
    assert reply.status_of is None
    assert f"the file has {MAX_NOTES + 1} notes; the limit is {MAX_NOTES}" in reply.text
    assert ticks >= 0.3 * elapsed / 0.01  # the loop kept running while the file was parsed


async def test_a_flood_of_tempo_changes_still_reads_on_the_grid(handler):
    changes = [(step, 60 + (step * 7) % 200) for step in range(1, 20_000)]
    data = make_midi([TrackSpec("Melody", MELODY)], bpm=100, tempo_changes=changes)
    reply = await say(handler, "!continue bars=2", data)
    assert reply.status_of is not None, reply.text
    status = await handler.queue.get(reply.status_of)
    assert status.job.primer[:5] == [2 + 24, 0, 0, 0, 2 + 28]  # C4 for 4 steps, then E4: ticks, not seconds


async def test_sketches_are_parsed_at_most_two_at_a_time(handler, monkeypatch):
    active, most = 0, 0
    lock = threading.Lock()
    real = sketches.primer_from_midi

    def counted(data):
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            time.sleep(0.05)
            return real(data)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(sketches, "primer_from_midi", counted)
    data = make_midi([TrackSpec("Melody", MELODY)])
    replies = await asyncio.gather(*(say(handler, "!continue bars=1", data, user_id=u) for u in range(8)))
    assert all(r.status_of for r in replies)
    assert most == sketches.SKETCH_PARSERS == 2
