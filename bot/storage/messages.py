"""Which Discord message shows which job: the result message (a raw reaction event names only the
message) and the "queued / generating / done" status message the bot edits as a job runs."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass

from bot.storage.sqlite import AsyncSQLite

SCHEMA = """
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
"""
_RESULT_COLUMNS = "message_id, job_id, channel_id, variations"


def local_message_id(job_id: str) -> int:
    """A stand-in message id for a result shown outside Discord (the terminal): negative, so it
    never meets a Discord snowflake, and the same for the same job."""
    return -int(hashlib.sha1(job_id.encode()).hexdigest()[:15], 16) - 1


@dataclass(frozen=True)
class ResultMessage:
    message_id: int
    job_id: str
    channel_id: int
    variations: int


class MessageStore:
    def __init__(self, db: sqlite3.Connection, sqlite: AsyncSQLite):
        self._db, self._sqlite = db, sqlite
        db.executescript(SCHEMA)

    async def remember_result(self, message_id: int, job_id: str, channel_id: int, variations: int) -> None:
        await self._sqlite.run(
            self._db.execute,
            f"INSERT OR REPLACE INTO result_messages ({_RESULT_COLUMNS}, posted_at) VALUES (?, ?, ?, ?, ?)",
            (message_id, job_id, channel_id, variations, time.time()),
        )

    async def result_message(self, message_id: int) -> ResultMessage | None:
        return await self._result(f"SELECT {_RESULT_COLUMNS} FROM result_messages WHERE message_id = ?", message_id)

    async def result_of_job(self, job_id: str) -> ResultMessage | None:
        return await self._result(
            f"SELECT {_RESULT_COLUMNS} FROM result_messages WHERE job_id = ? ORDER BY posted_at DESC LIMIT 1", job_id
        )

    async def latest_result(self, channel_id: int) -> ResultMessage | None:
        """The newest result posted in a channel (for `!votes` without a job id)."""
        return await self._result(
            f"SELECT {_RESULT_COLUMNS} FROM result_messages WHERE channel_id = ? "
            "ORDER BY posted_at DESC, rowid DESC LIMIT 1",
            channel_id,
        )

    async def remember_status(self, job_id: str, channel_id: int, message_id: int) -> None:
        await self._sqlite.run(
            self._db.execute,
            "INSERT OR REPLACE INTO status_messages (job_id, channel_id, message_id) VALUES (?, ?, ?)",
            (job_id, channel_id, message_id),
        )

    async def status_message(self, job_id: str) -> tuple[int, int] | None:
        """(channel_id, message_id) of a job's status message."""
        row = await self._sqlite.run(self._one, "SELECT channel_id, message_id FROM status_messages WHERE job_id = ?",
                                     job_id)  # fmt: skip
        return (row[0], row[1]) if row else None

    async def forget_status(self, job_id: str) -> None:
        await self._sqlite.run(self._db.execute, "DELETE FROM status_messages WHERE job_id = ?", (job_id,))

    async def _result(self, query: str, key) -> ResultMessage | None:
        row = await self._sqlite.run(self._one, query, key)
        return ResultMessage(*row) if row else None

    def _one(self, query: str, key):
        return self._db.execute(query, (key,)).fetchone()
