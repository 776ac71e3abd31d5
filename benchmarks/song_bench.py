"""Time a jam's whole song (bot/commands/jam_service.py JamService.song_reply -> bot/render/song.render_song): one
MIDI with chords, one MP3, the lead sheet as PNG and PDF, for songs of several lengths, in the bot
process (no torch), as `!song` and the end of a jam run it.

    nice -n 15 .venv/bin/python benchmarks/song_bench.py [--bars 17 32 64 128] [--runs 3]

The melody is a fixed-seed random walk of eighths and quarters with rests; the chords are
C | G | Am | F repeated. One warm-up render is not counted; p50 and max of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.commands.jam_service import JamService  # noqa: E402
from bot.commands.songs import step_symbols  # noqa: E402
from bot.queue.base import StoreQueue  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.storage import BotStore  # noqa: E402
from model.music.events import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, note_on  # noqa: E402


def melody(bars: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    events, pitch = [], 67
    while len(events) < bars * STEPS_PER_BAR:
        length = rng.choice((2, 2, 4, 4, 6))
        if rng.random() < 0.1:
            events += [NO_EVENT] * length
            continue
        pitch = min(84, max(55, pitch + rng.choice((-4, -2, -1, 0, 1, 2, 3))))
        events += [note_on(pitch)] + [NO_EVENT] * (length - 2) + [NOTE_OFF]
    return events[: bars * STEPS_PER_BAR]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, nargs="+", default=[17, 32, 64, 128])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder))
        store = BotStore(settings.database)
        jams = JamService(settings, StoreQueue(settings), store)
        await jams.song_reply("warm-up", melody(4), None, 120, "piano", "Warm-up")
        print(f"{'bars':>5} {'p50 s':>7} {'max s':>7}  files (KiB)")
        for bars in args.bars:
            events = melody(bars)
            chords = step_symbols("C | G | Am | F", len(events))
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                reply = await jams.song_reply(f"song-{bars}", events, chords, 120, "piano", f"{bars} bars")
                times.append(time.perf_counter() - started)
            sizes = ", ".join(f"{f.name.removeprefix(f'song-{bars}')} {len(f.data) / 1024:.0f}" for f in reply.files)
            print(f"{bars:>5} {statistics.median(times):>7.2f} {max(times):>7.2f}  {sizes}")
        store.close()
    print("torch imported:", "torch" in sys.modules)


if __name__ == "__main__":
    asyncio.run(main())
