"""Votes on a job's variations: one vote per user per job. A later vote (reaction) moves it,
removing the reaction that holds it removes it, removing an older reaction changes nothing."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from bot.storage.sqlite import AsyncSQLite

KEYCAP = "\ufe0f\u20e3"  # emoji presentation selector + combining enclosing keycap
NUMBER_EMOJIS = tuple(f"{n}{KEYCAP}" for n in range(1, 10))  # 1️⃣ .. 9️⃣, index 0 = variation 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    job_id TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    variation INTEGER NOT NULL,          -- 1-based
    voted_at REAL NOT NULL,              -- unix seconds
    PRIMARY KEY (job_id, user_id)
);
"""


def emoji_number(emoji: str) -> int | None:
    """1..9 for a keycap number emoji (with or without the variation selector), else None."""
    emoji = str(emoji)
    if len(emoji) >= 2 and emoji[0] in "123456789" and emoji.endswith("\u20e3") and len(emoji) <= 3:
        return int(emoji[0])
    return None


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
        return self.counts.index(max(self.counts)) + 1


class VoteStore:
    def __init__(self, db: sqlite3.Connection, sqlite: AsyncSQLite):
        self._db, self._sqlite = db, sqlite
        db.executescript(SCHEMA)

    async def vote(self, job_id: str, user_id: int, variation: int) -> None:
        """Cast or move `user_id`'s vote on `job_id` to `variation` (1-based)."""
        await self._sqlite.run(
            self._db.execute,
            "INSERT INTO votes (job_id, user_id, variation, voted_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (job_id, user_id) DO UPDATE SET variation = excluded.variation, voted_at = excluded.voted_at",
            (job_id, user_id, variation, time.time()),
        )

    async def unvote(self, job_id: str, user_id: int, variation: int) -> bool:
        """Remove the vote if it is for `variation`. True if a vote was removed."""
        cursor = await self._sqlite.run(
            self._db.execute,
            "DELETE FROM votes WHERE job_id = ? AND user_id = ? AND variation = ?", (job_id, user_id, variation),
        )
        return cursor.rowcount > 0

    async def user_vote(self, job_id: str, user_id: int) -> int | None:
        row = await self._sqlite.run(self._one, "SELECT variation FROM votes WHERE job_id = ? AND user_id = ?",
                                     (job_id, user_id))  # fmt: skip
        return row[0] if row else None

    async def tally(self, job_id: str, variations: int) -> Tally:
        """Votes per variation 1..`variations` (votes for numbers beyond it are not counted)."""
        rows = await self._sqlite.run(
            self._all, "SELECT variation, COUNT(*) FROM votes WHERE job_id = ? GROUP BY variation", (job_id,)
        )
        counts = [0] * variations
        for variation, count in rows:
            if 1 <= variation <= variations:
                counts[variation - 1] = count
        return Tally(job_id, tuple(counts))

    def _one(self, query: str, args: tuple):
        return self._db.execute(query, args).fetchone()

    def _all(self, query: str, args: tuple):
        return self._db.execute(query, args).fetchall()
