"""Votes on a job's variations, and the little state the bot's front-ends keep beside them.

One vote per user per job: a later vote (reaction) moves it, removing the reaction that holds it
removes it, removing an older reaction that no longer holds the vote changes nothing. The result
message -> job map lives here too, because a raw reaction event names only the message; so do the
"status" messages the bot edits as a job runs, and the per-channel on/off switch. Everything is in
the bot's SQLite database (settings.database), in tables of its own, so a restart loses nothing.

sqlite3 calls run in a worker thread (`asyncio.to_thread`): the queue writes to the same file from
other connections, and a wait for its lock must never stall the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KEYCAP = "\ufe0f\u20e3"  # emoji presentation selector + combining enclosing keycap
NUMBER_EMOJIS = tuple(f"{n}{KEYCAP}" for n in range(1, 10))  # 1️⃣ .. 9️⃣, index 0 = variation 1
BUSY_TIMEOUT_S = 10.0  # seconds a statement waits for another connection's write lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    job_id TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    variation INTEGER NOT NULL,          -- 1-based
    voted_at REAL NOT NULL,              -- unix seconds
    PRIMARY KEY (job_id, user_id)
);
CREATE TABLE IF NOT EXISTS result_messages (
    message_id INTEGER PRIMARY KEY,      -- the message that carries a job's variations
    job_id TEXT NOT NULL,
    channel_id INTEGER NOT NULL,
    variations INTEGER NOT NULL,
    posted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS result_messages_by_channel ON result_messages (channel_id, posted_at);
CREATE INDEX IF NOT EXISTS result_messages_by_job ON result_messages (job_id);
CREATE TABLE IF NOT EXISTS status_messages (
    job_id TEXT PRIMARY KEY,             -- the "queued / generating / done" message of a job
    channel_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_settings (
    channel_id INTEGER PRIMARY KEY,
    enabled INTEGER NOT NULL,
    changed_by INTEGER,
    changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bot_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def local_message_id(job_id: str) -> int:
    """A stand-in message id for a result shown outside Discord (the terminal): negative, so it
    never meets a Discord snowflake, and the same for the same job."""
    return -int(hashlib.sha1(job_id.encode()).hexdigest()[:15], 16) - 1


def emoji_number(emoji: str) -> int | None:
    """1..9 for a keycap number emoji (with or without the variation selector), else None."""
    emoji = str(emoji)
    if len(emoji) >= 2 and emoji[0] in "123456789" and emoji.endswith("\u20e3") and len(emoji) <= 3:
        return int(emoji[0])
    return None


@dataclass(frozen=True)
class ResultMessage:
    message_id: int
    job_id: str
    channel_id: int
    variations: int


@dataclass(frozen=True)
class Tally:
    job_id: str
    counts: tuple[int, ...]  # votes per variation, index 0 = variation 1

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def leader(self) -> int | None:
        """The variation (1-based) with the most votes; a tie goes to the lowest number; None
        without votes."""
        if not self.total:
            return None
        best = max(self.counts)
        return self.counts.index(best) + 1


class VoteStore:
    """The bot's own tables in the SQLite database. Async methods for the event loop; the `_`
    methods are the synchronous work, run in a thread under one lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the queue's writers
        except sqlite3.OperationalError:  # another process holds the file in a transaction: keep its mode
            pass
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, function, *args):
        return await asyncio.to_thread(self._locked, function, *args)

    def _locked(self, function, *args):
        with self._lock:
            return function(*args)

    # -- votes -----------------------------------------------------------------------------------
    async def vote(self, job_id: str, user_id: int, variation: int) -> None:
        """Cast or move `user_id`'s vote on `job_id` to `variation` (1-based)."""
        await self._run(self._vote, job_id, user_id, variation)

    def _vote(self, job_id: str, user_id: int, variation: int) -> None:
        self._db.execute(
            "INSERT INTO votes (job_id, user_id, variation, voted_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (job_id, user_id) DO UPDATE SET variation = excluded.variation, voted_at = excluded.voted_at",
            (job_id, user_id, variation, time.time()),
        )

    async def unvote(self, job_id: str, user_id: int, variation: int) -> bool:
        """Remove the vote if it is for `variation` (a removed reaction that no longer holds the
        user's vote changes nothing). True if a vote was removed."""
        return await self._run(self._unvote, job_id, user_id, variation)

    def _unvote(self, job_id: str, user_id: int, variation: int) -> bool:
        cursor = self._db.execute(
            "DELETE FROM votes WHERE job_id = ? AND user_id = ? AND variation = ?", (job_id, user_id, variation)
        )
        return cursor.rowcount > 0

    async def user_vote(self, job_id: str, user_id: int) -> int | None:
        return await self._run(self._user_vote, job_id, user_id)

    def _user_vote(self, job_id: str, user_id: int) -> int | None:
        row = self._db.execute("SELECT variation FROM votes WHERE job_id = ? AND user_id = ?", (job_id, user_id))
        found = row.fetchone()
        return found[0] if found else None

    async def tally(self, job_id: str, variations: int) -> Tally:
        """Votes per variation 1..`variations` (votes for numbers beyond it are not counted)."""
        return await self._run(self._tally, job_id, variations)

    def _tally(self, job_id: str, variations: int) -> Tally:
        counts = [0] * variations
        rows = self._db.execute("SELECT variation, COUNT(*) FROM votes WHERE job_id = ? GROUP BY variation", (job_id,))
        for variation, count in rows:
            if 1 <= variation <= variations:
                counts[variation - 1] = count
        return Tally(job_id, tuple(counts))

    # -- which message shows which job -----------------------------------------------------------
    async def remember_result(self, message_id: int, job_id: str, channel_id: int, variations: int) -> None:
        await self._run(self._remember_result, message_id, job_id, channel_id, variations)

    def _remember_result(self, message_id: int, job_id: str, channel_id: int, variations: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO result_messages (message_id, job_id, channel_id, variations, posted_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (message_id, job_id, channel_id, variations, time.time()),
        )

    async def result_message(self, message_id: int) -> ResultMessage | None:
        return await self._run(self._result_message, message_id)

    def _result_message(self, message_id: int) -> ResultMessage | None:
        row = self._db.execute(
            "SELECT message_id, job_id, channel_id, variations FROM result_messages WHERE message_id = ?", (message_id,)
        ).fetchone()
        return ResultMessage(*row) if row else None

    async def result_of_job(self, job_id: str) -> ResultMessage | None:
        return await self._run(self._result_of_job, job_id)

    def _result_of_job(self, job_id: str) -> ResultMessage | None:
        row = self._db.execute(
            "SELECT message_id, job_id, channel_id, variations FROM result_messages WHERE job_id = ? "
            "ORDER BY posted_at DESC LIMIT 1",
            (job_id,),
        ).fetchone()
        return ResultMessage(*row) if row else None

    async def latest_result(self, channel_id: int) -> ResultMessage | None:
        """The newest result posted in a channel (for `!votes` without a job id)."""
        return await self._run(self._latest_result, channel_id)

    def _latest_result(self, channel_id: int) -> ResultMessage | None:
        row = self._db.execute(
            "SELECT message_id, job_id, channel_id, variations FROM result_messages WHERE channel_id = ? "
            "ORDER BY posted_at DESC, rowid DESC LIMIT 1",
            (channel_id,),
        ).fetchone()
        return ResultMessage(*row) if row else None

    async def remember_status(self, job_id: str, channel_id: int, message_id: int) -> None:
        await self._run(self._remember_status, job_id, channel_id, message_id)

    def _remember_status(self, job_id: str, channel_id: int, message_id: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO status_messages (job_id, channel_id, message_id) VALUES (?, ?, ?)",
            (job_id, channel_id, message_id),
        )

    async def status_message(self, job_id: str) -> tuple[int, int] | None:
        """(channel_id, message_id) of a job's status message."""
        return await self._run(self._status_message, job_id)

    def _status_message(self, job_id: str) -> tuple[int, int] | None:
        row = self._db.execute("SELECT channel_id, message_id FROM status_messages WHERE job_id = ?", (job_id,))
        found = row.fetchone()
        return (found[0], found[1]) if found else None

    async def forget_status(self, job_id: str) -> None:
        await self._run(self._db.execute, "DELETE FROM status_messages WHERE job_id = ?", (job_id,))

    # -- channels --------------------------------------------------------------------------------
    async def channel_enabled(self, channel_id: int) -> bool:
        """Channels are on unless an admin switched them off."""
        return await self._run(self._channel_enabled, channel_id)

    def _channel_enabled(self, channel_id: int) -> bool:
        row = self._db.execute("SELECT enabled FROM channel_settings WHERE channel_id = ?", (channel_id,)).fetchone()
        return bool(row[0]) if row else True

    async def set_channel_enabled(self, channel_id: int, enabled: bool, user_id: int | None = None) -> None:
        await self._run(self._set_channel_enabled, channel_id, enabled, user_id)

    def _set_channel_enabled(self, channel_id: int, enabled: bool, user_id: int | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO channel_settings (channel_id, enabled, changed_by, changed_at) VALUES (?, ?, ?, ?)",
            (channel_id, int(enabled), user_id, time.time()),
        )

    # -- small key/value facts (e.g. the slash commands last synced) -------------------------------
    async def get_meta(self, name: str) -> str | None:
        return await self._run(self._get_meta, name)

    def _get_meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM bot_meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    async def set_meta(self, name: str, value: str) -> None:
        await self._run(self._db.execute, "INSERT OR REPLACE INTO bot_meta (name, value) VALUES (?, ?)", (name, value))
