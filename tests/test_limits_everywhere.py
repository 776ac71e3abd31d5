"""The same input gets the same answer from the bot and from the CLI: both check against the one
home of the shared limits (model/defaults.py). The CLI runs as a user runs it, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from midi_factory import TrackSpec, line, make_midi

from bot.commands import DISCORD, CommandHandler, Request, Upload
from bot.queue.base import StoreQueue
from bot.settings import Settings
from bot.storage import BotStore
from model.defaults import BPM_RANGE, MAX_SKETCH_BYTES, length_problem

ROOT = Path(__file__).resolve().parents[1]
MELODY = line([60, 64, 67, 69], length=4)


def cli(*args: str, weights: Path | None = None) -> subprocess.CompletedProcess:
    extra = ["--weights", str(weights)] if weights else []
    return subprocess.run([sys.executable, "-m", "model.generate", *args, *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.fixture
async def bot(tmp_path):
    settings = Settings(data_dir=tmp_path)
    store = BotStore(settings.database)
    async with StoreQueue(settings) as queue:
        yield CommandHandler(settings, queue, store, platform=DISCORD)
    store.close()


async def say(handler, text: str, data: bytes | None = None) -> str:
    uploads = []
    if data is not None:
        async def read():
            return data

        uploads = [Upload("sketch.mid", len(data), read)]
    (reply,) = await handler.handle_line(Request(user_id=1, channel_id=1, uploads=uploads), text)
    if reply.status_of:  # accepted: out of the way of the user's cap
        await handler.queue.cancel(reply.status_of)
    return reply.text


async def test_a_tempo_out_of_range(bot):
    low, high = BPM_RANGE
    assert f"the tempo can be {low:g} to {high:g} BPM" in await say(bot, "!continue C4 E4 bpm=350")
    done = cli("C4 E4", "--bpm", "350")
    assert done.returncode == 2 and f"--bpm must be between {low:g} and {high:g}, not 350" in done.stderr


async def test_a_continuation_too_long_in_seconds(bot):
    expected = length_problem(32, 20)
    assert expected is not None
    assert expected[0].upper() + expected[1:] in await say(bot, "!continue C4 E4 bars=32 bpm=20")
    done = cli("C4 E4", "--bars", "32", "--bpm", "20")
    assert done.returncode == 2 and expected in done.stderr


async def test_a_sketch_over_the_size_limit(bot, tmp_path):
    big = make_midi([TrackSpec("Melody", MELODY)]) + bytes(MAX_SKETCH_BYTES)
    kib = MAX_SKETCH_BYTES // 1024
    assert f"a sketch can be at most {kib} KiB" in await say(bot, "!continue", big)
    path = tmp_path / "big.mid"
    path.write_bytes(big)
    done = cli("--midi", str(path))
    assert done.returncode == 2 and f"the limit is {kib} KiB" in done.stderr


async def test_a_sketch_slower_than_the_range_is_moved_to_its_end(bot, tmp_path, tiny_weights):
    slow = make_midi([TrackSpec("Melody", MELODY)], bpm=3.6)
    remark = f"the sketch's tempo (3.6 BPM) is outside {BPM_RANGE[0]:g}-{BPM_RANGE[1]:g} BPM, so I used 20 BPM"
    assert remark in await say(bot, "!continue bars=1", slow)
    path = tmp_path / "slow.mid"
    path.write_bytes(slow)
    done = cli("--midi", str(path), "--bars", "1", "--variations", "1", "--out", str(tmp_path / "out"),
               weights=tiny_weights)
    assert done.returncode == 0, done.stderr
    assert remark in done.stderr and "20 bpm" in done.stdout
