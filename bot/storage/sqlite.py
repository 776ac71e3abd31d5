"""How the bot reaches its SQLite database: one way for every store.

`connect(path)` opens a connection with the settings every store needs (WAL, so readers never wait
for writers; full sync, so an accepted job survives a power cut; a busy timeout for the other
processes' writes; autocommit, transactions being explicit `BEGIN ... COMMIT` blocks).

SQLite calls block, so from the event loop they go through an `AsyncSQLite`: one thread that owns
the connection and runs the calls one after another; the loop only awaits them.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUSY_TIMEOUT_S = 10.0  # seconds a statement waits for another connection's write lock
WAL_CHECKPOINT_PAGES = 1000  # a commit that leaves the WAL this long copies it into the database (SQLite's default)


def connect(path: str | Path) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # another process holds the file in a transaction: keep its mode
        pass
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    return db


class AsyncSQLite:
    """Runs blocking database calls on one dedicated thread, for the event loop."""

    def __init__(self, name: str = "melodybot-sqlite"):
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, function, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
