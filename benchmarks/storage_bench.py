"""Database size per job, before and after the preview retention prunes it.

    nice -n 5 .venv/bin/python benchmarks/storage_bench.py [--jobs 5]

Runs real jobs (shipped weights, real rendering) through the Generator, stores their results in a
fresh SQLite database with JobStore, and reports the file's growth per job for 8 and 32 bars,
then again after prune_previews (the events kept, MIDI/MP3/PNG deleted) and a VACUUM.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bot.jobs import Job, JobState
from bot.settings import Settings
from bot.storage.jobs import JobStore
from bot.worker.generator import Generator

PRIMER = [26, 0, 0, 0, 30, 0, 0, 0, 33, 0, 0, 0, 35, 0, 0, 1]  # C4 E4 G4 A4


def size(path: Path) -> int:
    store = JobStore(path)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    generator = Generator(Settings(device="cpu"))
    generator.load()
    print("| bars | variations | KiB per job, with previews | KiB per job, after pruning (VACUUM) |")
    print("| --- | --- | --- | --- |")
    for bars in (8, 32):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "melodybot.sqlite3"
            store = JobStore(path)
            empty = size(path)
            jobs = [Job(user_id=1, channel_id=1, primer=PRIMER, bars=bars, variations=4, seed=n)
                    for n in range(args.jobs)]
            for job in jobs:
                store.add(job, 100, 100)
            store.claim("bench", 10_000)
            for outcome in generator.run(jobs):
                assert outcome.state == JobState.DONE, outcome.error
                store.finish(outcome.job.job_id, JobState.DONE, result=outcome.result, worker="bench")
            store.close()
            full = size(path)
            store = JobStore(path)
            store.prune_previews(time.time() + 1)
            store.db.execute("VACUUM")
            store.close()
            pruned = size(path)
            per_job = [(full - empty) / args.jobs / 1024, (pruned - empty) / args.jobs / 1024]
            print(f"| {bars} | 4 | {per_job[0]:.0f} | {per_job[1]:.1f} |")


if __name__ == "__main__":
    main()
