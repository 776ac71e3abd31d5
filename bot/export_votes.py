"""Votes as data for a later preference-tuning step: one JSON line per finished (done) job.

    python -m bot.export_votes OUT.jsonl [--database PATH]

The database is the bot's (settings.database: MELODYBOT_DATA_DIR/melodybot.sqlite3) unless
--database names one; it is opened read-only, so a running bot is not disturbed. Each row:

    job_id, created_at, finished_at, parent ("jobid:variation" it extended, or null),
    jam ({"jam_id", "round"} when the job was a jam's round, else null),
    primer (the events the request gave), options (bars, variations, temperature, top_p, seed,
    bpm, instrument, keep_key, chords, harmony), key (as the sampler saw it),
    primer_steps (how many of each variation's events are the primer as sampled),
    variations ([{"number", "events", "chords"}]: the primer as sampled + the continuation),
    votes ([{"variation", "at"}], oldest first; no user ids), counts (votes per variation),
    winner (the jam round's winner; else the vote leader, a tie going to the earliest vote; null
    without votes), winner_by ("jam", "votes" or null), extended (variations later !extended).

Users who said `!forget me` are not in it: their votes and jobs were deleted from the database.
Events are model.music.events codes on the sixteenth-note grid.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from bot.commands.jam_service import choose_winner
from bot.storage.jams import Ballot

OPTION_FIELDS = ("bars", "variations", "temperature", "top_p", "seed", "bpm", "instrument", "keep_key", "chords",
                 "harmony")  # fmt: skip


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def rows(database: str | Path) -> Iterator[dict]:
    """The export's rows, oldest finished job first."""
    db = sqlite3.connect(f"file:{Path(database).absolute()}?mode=ro", uri=True)
    try:
        tables = _tables(db)
        if "queue_jobs" not in tables:
            return
        ballots: dict[str, list[Ballot]] = defaultdict(list)
        if "votes" in tables:
            for job_id, user_id, variation, at in db.execute(
                    "SELECT job_id, user_id, variation, voted_at FROM votes ORDER BY voted_at, rowid"):
                ballots[job_id].append(Ballot(user_id, variation, at))
        rounds: dict[str, tuple[str, int, int]] = {}
        if "jam_rounds" in tables:
            for job_id, jam_id, number, winner in db.execute("SELECT job_id, jam_id, round, winner FROM jam_rounds"):
                rounds[job_id] = (jam_id, number, winner)
        extended: dict[str, set[int]] = defaultdict(set)
        for (parent,) in db.execute(
                "SELECT json_extract(job, '$.parent') FROM queue_jobs WHERE json_extract(job, '$.parent') IS NOT NULL"):
            parent_id, _, number = parent.partition(":")
            if number.isdigit():
                extended[parent_id].add(int(number))
        query = ("SELECT job_id, job, result, created_at, finished_at FROM queue_jobs WHERE state = 'done' "
                 "AND result IS NOT NULL ORDER BY finished_at, seq")
        for job_id, job_text, result_text, created_at, finished_at in db.execute(query):
            yield _row(job_id, json.loads(job_text), json.loads(result_text), created_at, finished_at,
                       ballots.get(job_id, []), rounds.get(job_id), sorted(extended.get(job_id, ())))
    finally:
        db.close()


def _row(job_id: str, job: dict, result: dict, created_at: float, finished_at: float, ballots: list[Ballot],
         jam_round: tuple[str, int, int] | None, extended: list[int]) -> dict:
    variations = result["variations"]
    count = len(variations)
    counts = [0] * count
    for ballot in ballots:
        if 1 <= ballot.variation <= count:
            counts[ballot.variation - 1] += 1
    if jam_round is not None:
        winner, winner_by = jam_round[2], "jam"
    elif sum(counts):
        winner, winner_by = choose_winner(ballots, count)[0], "votes"
    else:
        winner, winner_by = None, None
    return {
        "job_id": job_id,
        "created_at": created_at,
        "finished_at": finished_at,
        "parent": job.get("parent"),
        "jam": {"jam_id": jam_round[0], "round": jam_round[1]} if jam_round is not None else None,
        "primer": job["primer"],
        "options": {name: job.get(name) for name in OPTION_FIELDS},
        "key": result.get("key"),
        "primer_steps": result["primer_steps"],
        "variations": [{"number": n, "events": v["events"], "chords": v.get("chords")}
                       for n, v in enumerate(variations, 1)],
        "votes": [{"variation": b.variation, "at": b.voted_at} for b in ballots],
        "counts": counts,
        "winner": winner,
        "winner_by": winner_by,
        "extended": extended,
    }


def export(database: str | Path, out: str | Path) -> int:
    """Write the rows to `out` (JSON Lines); how many."""
    count = 0
    with open(out, "w", encoding="utf-8") as file:
        for row in rows(database):
            file.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.export_votes", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the JSON Lines file to write")
    parser.add_argument("--database", help="the bot's SQLite file (default: from the settings, MELODYBOT_DATA_DIR)")
    args = parser.parse_args(argv)
    if args.database is None:
        from bot.settings import Settings, SettingsError

        try:
            database = Settings.load().database
        except SettingsError as error:
            print(f"export_votes: {error}", file=sys.stderr)
            return 2
    else:
        database = Path(args.database)
    if not Path(database).is_file():
        print(f"export_votes: no database at {database}", file=sys.stderr)
        return 2
    count = export(database, args.out)
    print(f"{count} finished jobs written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
