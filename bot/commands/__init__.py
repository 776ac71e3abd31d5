"""The bot's commands, for every front-end: parse a command line, call the queue and the vote store,
answer with plain data (`Reply`: text, files, reactions, buttons). No discord import: the Discord
front-end (bot/discord_app.py) and the terminal channel (bot/terminal.py) turn replies into
messages or printed lines and files.

Commands (prefix from settings, `!` by default):
    !continue <notes> [options]    or with a .mid/.midi sketch attached (terminal: file=PATH or --midi PATH)
    !extend [job] [n] [options]    continue variation n (default: the vote leader, else 1)
    !again [job] [options]         same primer and settings, a new seed
    !votes [job]   !vote <job> <n> (terminal; on Discord the number reactions vote)
    !queue   !cancel [job]   !channel on|off   !help

Options are name=value (also name:value and --name value): see OPTIONS. When a sketch is attached
and notes are typed too, the sketch wins and the reply says the typed notes were ignored (the text
beside an upload is often a remark, not a melody).

Every user mistake raises `CommandError` (or a model/queue error with a user-facing message); the
handler turns it into a plain reply. Anything else is logged with its job id and answered with a
short apology, never a stack trace.

The modules, in the order a command flows through them: replies.py (Request, Upload, Reply and the
other plain data; CommandError; how a job's status and result are worded), ratelimit.py
(RateLimiter), options.py (the OPTIONS table, parse_options, ranges and defaults), sketches.py
(choosing and reading a MIDI sketch), usage.py (COMMANDS, USAGE, the help text), handler.py
(CommandHandler: the commands), follow.py (UpdateFollower: delivering queue updates). This file only
re-exports the names the front-ends and tests import.
"""

from bot.commands.follow import UpdateFollower
from bot.commands.handler import CommandHandler
from bot.commands.options import parse_options, split_tokens
from bot.commands.ratelimit import RateLimiter
from bot.commands.replies import (
    DISCORD,
    TERMINAL,
    TERMINAL_CHANNEL_ID,
    TERMINAL_USER_ID,
    CommandError,
    Reply,
    Request,
    Upload,
)
from bot.commands.usage import COMMANDS, USAGE

__all__ = [
    "COMMANDS",
    "DISCORD",
    "TERMINAL",
    "TERMINAL_CHANNEL_ID",
    "TERMINAL_USER_ID",
    "USAGE",
    "CommandError",
    "CommandHandler",
    "RateLimiter",
    "Reply",
    "Request",
    "UpdateFollower",
    "Upload",
    "parse_options",
    "split_tokens",
]
