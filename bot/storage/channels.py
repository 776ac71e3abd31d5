"""Per-channel switches (admins turn the bot off and on in a channel) and a few facts about the
bot itself (e.g. which slash commands were last synced)."""

from __future__ import annotations

import sqlite3
import time

from bot.storage.sqlite import AsyncSQLite

SCHEMA = """
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


class ChannelStore:
    def __init__(self, db: sqlite3.Connection, sqlite: AsyncSQLite):
        self._db, self._sqlite = db, sqlite
        db.executescript(SCHEMA)

    async def enabled(self, channel_id: int) -> bool:
        """Channels are on unless an admin switched them off."""
        row = await self._sqlite.run(self._one, "SELECT enabled FROM channel_settings WHERE channel_id = ?",
                                     channel_id)  # fmt: skip
        return bool(row[0]) if row else True

    async def set_enabled(self, channel_id: int, enabled: bool, user_id: int | None = None) -> None:
        await self._sqlite.run(
            self._db.execute,
            "INSERT OR REPLACE INTO channel_settings (channel_id, enabled, changed_by, changed_at) VALUES (?, ?, ?, ?)",
            (channel_id, int(enabled), user_id, time.time()),
        )

    async def get_meta(self, name: str) -> str | None:
        row = await self._sqlite.run(self._one, "SELECT value FROM bot_meta WHERE name = ?", name)
        return row[0] if row else None

    async def set_meta(self, name: str, value: str) -> None:
        await self._sqlite.run(self._db.execute, "INSERT OR REPLACE INTO bot_meta (name, value) VALUES (?, ?)",
                               (name, value))  # fmt: skip

    def _one(self, query: str, key):
        return self._db.execute(query, (key,)).fetchone()
