"""The bot's SQLite database (settings.database): one file, several stores, one way in.

- `jobs.py`: JobStore, every accepted job and its result (the queue's bookkeeping; the embedded
  worker process opens it too).
- `votes.py`: VoteStore, who voted for which variation.
- `messages.py`: MessageStore, which Discord message shows which job.
- `channels.py`: ChannelStore, per-channel on/off switches and the bot's own facts.
- `jams.py`: JamStore, the jams (a channel's song, round by round) and their closed rounds.
- `sqlite.py`: `connect()` and AsyncSQLite, the one thread through which the event loop reaches
  a connection.

    store = BotStore(settings.database)      # the front-ends' stores, on one connection
    await store.votes.vote(job_id, user_id, 2)
    await store.messages.latest_result(channel_id)
    store.close()
"""

from __future__ import annotations

from pathlib import Path

from bot.storage.channels import ChannelStore
from bot.storage.jams import JamStore
from bot.storage.messages import MessageStore, ResultMessage, local_message_id
from bot.storage.sqlite import AsyncSQLite, connect
from bot.storage.votes import KEYCAP, NUMBER_EMOJIS, Tally, VoteStore, emoji_number


class BotStore:
    """The front-ends' stores (votes, messages, channels) on one connection and one thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = connect(self.path)
        self._sqlite = AsyncSQLite("melodybot-bot-db")
        self.votes = VoteStore(self._db, self._sqlite)
        self.messages = MessageStore(self._db, self._sqlite)
        self.channels = ChannelStore(self._db, self._sqlite)
        self.jams = JamStore(self._db, self._sqlite)  # after votes: it reads their table

    def close(self) -> None:
        self._sqlite.close()  # waits for the calls in flight
        self._db.close()


__all__ = ["KEYCAP", "NUMBER_EMOJIS", "BotStore", "ResultMessage", "Tally", "emoji_number", "local_message_id"]
