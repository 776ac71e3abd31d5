"""Jams: a channel writing a song together, round by round (bot/commands/jam_service.py runs them).

- `jams`: one row per jam: its settings (the first job, kept as the template of every round's
  job), the song so far (events, and chord symbols per step), the round in play, that round's job,
  and its stored deadline (unix seconds), so a restarted bot closes the round on time.
- `jam_rounds`: one row per closed round: the job, the winning variation, its votes, why it won.

Every state change is one guarded UPDATE (the jam must still be in the round and state the caller
saw), so a round is closed once however often the ticking loop looks at it. The votes themselves
are VoteStore's table (bot/storage/votes.py); `ballots` reads them with their times, for the
jam's tie rule and the early-agreement rule. `forget_user` (for `!forget me`) deletes a user's
votes, finished jobs and finished jams across the tables of this database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field

from bot.storage.sqlite import AsyncSQLite

GENERATING, VOTING, FINISHING, DONE, STOPPED = "generating", "voting", "finishing", "done", "stopped"
PLAYING = (GENERATING, VOTING)  # a channel has at most one jam in these states
UNFINISHED = (GENERATING, VOTING, FINISHING)  # the ticking loop's work (FINISHING: the song is still to post)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jams (
    jam_id TEXT PRIMARY KEY,
    channel_id INTEGER NOT NULL,
    guild_id INTEGER,
    starter_id INTEGER NOT NULL,
    starter_name TEXT NOT NULL,
    rounds INTEGER NOT NULL,             -- how many rounds the jam has
    minutes REAL NOT NULL,               -- voting time per round
    template TEXT NOT NULL,              -- the first round's Job.to_dict() as JSON
    song TEXT NOT NULL,                  -- the song so far: JSON list of events
    chords TEXT,                         -- JSON list of chord symbols (or null) per step; NULL: no chords
    round INTEGER NOT NULL,              -- the round in play, 1-based (rounds + 1 after the last)
    job_id TEXT,                         -- that round's job; NULL: still to submit
    deadline REAL,                       -- unix seconds the round's voting closes; NULL while generating
    reruns INTEGER NOT NULL DEFAULT 0,   -- jobs of this round that failed and were replaced
    state TEXT NOT NULL,
    note TEXT,                           -- why it ended (stopped by whom, failed jobs)
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS jams_one_per_channel ON jams (channel_id) WHERE state IN ('generating', 'voting');
CREATE INDEX IF NOT EXISTS jams_by_state ON jams (state);
CREATE TABLE IF NOT EXISTS jam_rounds (
    jam_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    winner INTEGER NOT NULL,             -- 1-based variation appended to the song
    votes INTEGER NOT NULL,              -- votes for the winner
    total INTEGER NOT NULL,              -- votes cast in the round
    reason TEXT NOT NULL,                -- "time", "agreed" or "no votes"
    closed_at REAL NOT NULL,
    PRIMARY KEY (jam_id, round)
);
CREATE INDEX IF NOT EXISTS jam_rounds_by_job ON jam_rounds (job_id);
"""

_COLUMNS = ("jam_id, channel_id, guild_id, starter_id, starter_name, rounds, minutes, template, song, chords, round, "
            "job_id, deadline, reruns, state, note, created_at, finished_at")


@dataclass
class Jam:
    jam_id: str
    channel_id: int
    guild_id: int | None
    starter_id: int
    starter_name: str
    rounds: int
    minutes: float
    template: dict  # Job.to_dict() of the first round's job
    song: list[int] = field(default_factory=list)
    chords: list[str | None] | None = None
    round: int = 1
    job_id: str | None = None
    deadline: float | None = None
    reruns: int = 0
    state: str = GENERATING
    note: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def rounds_done(self) -> int:
        return self.round - 1  # closing a round always moves `round` on, also past the last


@dataclass(frozen=True)
class Round:
    jam_id: str
    round: int
    job_id: str
    winner: int
    votes: int
    total: int
    reason: str
    closed_at: float


@dataclass(frozen=True)
class Ballot:
    user_id: int
    variation: int
    voted_at: float


class JamExists(Exception):
    """The channel already has a jam in play."""


class JamStore:
    def __init__(self, db: sqlite3.Connection, sqlite: AsyncSQLite):
        self._db, self._sqlite = db, sqlite
        db.executescript(SCHEMA)  # the votes table is VoteStore's, made before this one (BotStore)

    # -- reading ------------------------------------------------------------------------------------
    async def get(self, jam_id: str) -> Jam | None:
        rows = await self._sqlite.run(self._jams, "jam_id = ?", (jam_id,))
        return rows[0] if rows else None

    async def playing_in(self, channel_id: int) -> Jam | None:
        rows = await self._sqlite.run(self._jams, "channel_id = ? AND state IN (?, ?)", (channel_id, *PLAYING))
        return rows[0] if rows else None

    async def latest_in(self, channel_id: int) -> Jam | None:
        rows = await self._sqlite.run(self._jams, "channel_id = ? ORDER BY created_at DESC LIMIT 1", (channel_id,))
        return rows[0] if rows else None

    async def unfinished(self) -> list[Jam]:
        return await self._sqlite.run(self._jams, "state IN (?, ?, ?) ORDER BY created_at", UNFINISHED)

    async def of_job(self, job_id: str) -> Jam | None:
        """The jam a round's job belongs to (the round in play, or a closed one)."""
        rows = await self._sqlite.run(
            self._jams, "job_id = ? OR jam_id IN (SELECT jam_id FROM jam_rounds WHERE job_id = ?)", (job_id, job_id)
        )
        return rows[0] if rows else None

    async def rounds(self, jam_id: str) -> list[Round]:
        rows = await self._sqlite.run(self._all, "SELECT * FROM jam_rounds WHERE jam_id = ? ORDER BY round", (jam_id,))
        return [Round(*row) for row in rows]

    async def closed_round(self, job_id: str) -> Round | None:
        rows = await self._sqlite.run(self._all, "SELECT * FROM jam_rounds WHERE job_id = ?", (job_id,))
        return Round(*rows[0]) if rows else None

    async def ballots(self, job_id: str) -> list[Ballot]:
        """The votes on a job, oldest first."""
        rows = await self._sqlite.run(
            self._all, "SELECT user_id, variation, voted_at FROM votes WHERE job_id = ? ORDER BY voted_at, rowid",
            (job_id,),
        )
        return [Ballot(*row) for row in rows]

    # -- changes ------------------------------------------------------------------------------------
    async def create(self, jam: Jam) -> None:
        """Store a new jam; JamExists if its channel has one in play."""
        try:
            await self._sqlite.run(self._insert, jam)
        except sqlite3.IntegrityError:
            raise JamExists(jam.channel_id) from None

    async def set_job(self, jam: Jam, job_id: str) -> bool:
        """The round's (new) job was submitted."""
        return await self._update("job_id = ?", (job_id,), jam, GENERATING, job=None)

    async def open_round(self, jam: Jam, deadline: float) -> bool:
        """The round's result is out: voting closes at `deadline`."""
        return await self._update("state = ?, deadline = ?", (VOTING, deadline), jam, GENERATING, job=jam.job_id)

    async def rerun(self, jam: Jam) -> bool:
        """The round's job failed: a new one is to be submitted."""
        return await self._update("job_id = NULL, reruns = reruns + 1", (), jam, GENERATING, job=jam.job_id)

    async def close_round(self, jam: Jam, winner: int, votes: int, total: int, reason: str, song: list[int],
                          chords: list[str | None] | None) -> bool:
        """Append the winner: the song grows, the next round starts (or, after the last, the
        song is to be posted). False if someone closed it first."""
        return await self._sqlite.run(self._close, jam, winner, votes, total, reason, song, chords)

    async def end(self, jam: Jam, state: str, note: str | None = None) -> bool:
        """FINISHING (the song is still to post), DONE or STOPPED, from the state `jam` is in."""
        return await self._update("state = ?, note = coalesce(?, note), finished_at = ?", (state, note, time.time()),
                                  jam, jam.state, job=jam.job_id)  # fmt: skip

    async def forget_user(self, user_id: int) -> dict[str, int]:
        """Delete the user's votes, finished jobs (with their results and result messages) and
        finished jams. Unfinished jobs and a jam in play are kept (the caller says so)."""
        return await self._sqlite.run(self._forget, user_id)

    # -- on the database thread ---------------------------------------------------------------------
    def _all(self, query: str, args: tuple):
        return self._db.execute(query, args).fetchall()

    def _jams(self, where: str, args: tuple) -> list[Jam]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jams WHERE {where}", args).fetchall()
        jams = []
        for row in rows:
            values = list(row)
            values[7] = json.loads(values[7])
            values[8] = json.loads(values[8])
            values[9] = json.loads(values[9]) if values[9] is not None else None
            jams.append(Jam(*values))
        return jams

    def _insert(self, jam: Jam) -> None:
        self._db.execute(
            f"INSERT INTO jams ({_COLUMNS}) VALUES ({', '.join('?' * 18)})",
            (jam.jam_id, jam.channel_id, jam.guild_id, jam.starter_id, jam.starter_name, jam.rounds, jam.minutes,
             json.dumps(jam.template), json.dumps(jam.song), _json_or_null(jam.chords), jam.round, jam.job_id,
             jam.deadline, jam.reruns, jam.state, jam.note, jam.created_at, jam.finished_at),
        )

    async def _update(self, assignments: str, values: tuple, jam: Jam, state: str, *, job: str | None) -> bool:
        """UPDATE the jam if it is still in `jam.round`, in `state`, with the job `job`."""
        query = (f"UPDATE jams SET {assignments} WHERE jam_id = ? AND round = ? AND state = ? "
                 "AND job_id IS ?")  # fmt: skip
        cursor = await self._sqlite.run(self._db.execute, query, (*values, jam.jam_id, jam.round, state, job))
        return cursor.rowcount > 0

    def _close(self, jam: Jam, winner: int, votes: int, total: int, reason: str, song: list[int],
               chords: list[str | None] | None) -> bool:
        last = jam.round >= jam.rounds
        self._db.execute("BEGIN IMMEDIATE")
        try:
            changed = self._db.execute(
                "UPDATE jams SET song = ?, chords = ?, round = ?, job_id = NULL, deadline = NULL, reruns = 0, "
                "state = ?, finished_at = ? WHERE jam_id = ? AND round = ? AND state = ? AND job_id IS ?",
                (json.dumps(song), _json_or_null(chords), jam.round + 1,
                 FINISHING if last else GENERATING, time.time() if last else None, jam.jam_id, jam.round, VOTING,
                 jam.job_id),
            ).rowcount
            if changed:
                self._db.execute("INSERT INTO jam_rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (jam.jam_id, jam.round, jam.job_id, winner, votes, total, reason, time.time()))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return bool(changed)

    def _forget(self, user_id: int) -> dict[str, int]:
        db = self._db
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = {"votes": 0, "jobs": 0, "jams": 0}
        db.execute("BEGIN IMMEDIATE")
        try:
            counts["votes"] = db.execute("DELETE FROM votes WHERE user_id = ?", (user_id,)).rowcount
            if "queue_jobs" in tables:  # the queue's table (bot/storage/jobs.py), in this same file
                jobs = [job_id for (job_id,) in db.execute(
                    "SELECT job_id FROM queue_jobs WHERE user_id = ? AND state IN ('done', 'failed', 'cancelled')",
                    (user_id,))]  # fmt: skip
                for job_id in jobs:
                    db.execute("DELETE FROM votes WHERE job_id = ?", (job_id,))
                    if "result_messages" in tables:
                        db.execute("DELETE FROM result_messages WHERE job_id = ?", (job_id,))
                    db.execute("DELETE FROM queue_jobs WHERE job_id = ?", (job_id,))
                counts["jobs"] = len(jobs)
            jams = [jam_id for (jam_id,) in db.execute(
                "SELECT jam_id FROM jams WHERE starter_id = ? AND state IN (?, ?)", (user_id, DONE, STOPPED))]
            for jam_id in jams:
                db.execute("DELETE FROM jam_rounds WHERE jam_id = ?", (jam_id,))
                db.execute("DELETE FROM jams WHERE jam_id = ?", (jam_id,))
            counts["jams"] = len(jams)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return counts


def _json_or_null(value) -> str | None:
    return None if value is None else json.dumps(value)
