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
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import logging
import math
import os
import random
import re
import shlex
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.jobs import Job, JobState, JobStatus
from bot.queue import JobQueue, QueueError, QueueFull
from bot.render import INSTRUMENTS, RenderError, resolve_instrument
from bot.settings import Settings
from bot.votes import NUMBER_EMOJIS, VoteStore, local_message_id
from model.midi_io import MidiError
from model.primer import NOTATION, PrimerError, parse_notes, primer_from_midi

log = logging.getLogger("melodybot.commands")

DISCORD, TERMINAL = "discord", "terminal"
MAX_SKETCH_BYTES = 1024 * 1024  # an attached sketch over this is refused before it is downloaded
SKETCH_SUFFIXES = (".mid", ".midi")
MAX_VARIATIONS = 4  # 4 MIDI + 4 MP3 + 1 PNG = 9 of Discord's 10 attachments per message
UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes per message, Discord's default for bots
TEMPERATURE_RANGE = (0.05, 3.0)  # inclusive; model.sampling's range (not imported: it pulls in torch)
TOP_P_RANGE = (0.05, 1.0)  # inclusive, as in model.sampling
BPM_RANGE = (20.0, 300.0)  # inclusive
MAX_SEED = 2**31 - 1  # inclusive, as in model.sampling
RANDOM_SEEDS = 100_000  # a fresh seed is below this: short enough to read out and retype
DEFAULT_BPM = 120.0
DEFAULT_TOP_P = 0.95
JOB_ID = re.compile(r"[a-z0-9]{4,16}")
TRUE_WORDS = ("on", "yes", "true", "1", "keep", "in")
FALSE_WORDS = ("off", "no", "false", "0", "free", "out", "any")
PRIVATE_COMMANDS = ("channel",)  # answered even in a switched-off channel
TERMINAL_USER_ID = 1  # the terminal's one user, and its channel: Discord ids are never this small
TERMINAL_CHANNEL_ID = 1


class CommandError(Exception):
    """A request the bot cannot do; the message is for the user."""


# -- plain data in and out -------------------------------------------------------------------------
@dataclass
class Upload:
    """A file the user attached (or named, in the terminal); `read` fetches its bytes."""

    filename: str
    size: int  # bytes, as announced before the download
    read: Callable[[], Awaitable[bytes]]


@dataclass
class Request:
    """Who asks, where, with what."""

    user_id: int
    channel_id: int
    user_name: str = ""
    uploads: list[Upload] = field(default_factory=list)
    can_manage_channel: bool = False  # Discord: Manage Channels here (for !channel on/off)
    in_guild: bool = True  # False in direct messages
    interactive: bool = False  # a slash command or button: refusals go privately to the user
    rate_limited: bool = True


@dataclass
class OutFile:
    name: str
    data: bytes


@dataclass
class Button:
    label: str
    action: str  # "extend" or "again"
    job_id: str

    @property
    def custom_id(self) -> str:
        return f"melodybot:{self.action}:{self.job_id}"


@dataclass
class Reply:
    text: str
    files: list[OutFile] = field(default_factory=list)
    reactions: list[str] = field(default_factory=list)  # to add to the sent message, in order
    buttons: list[Button] = field(default_factory=list)
    status_of: str | None = None  # this message shows the job's progress: edit it as the job moves
    result_of: str | None = None  # this message carries the job's variations: reactions on it are votes
    private: bool = False  # only for the asker where the front-end can (slash commands, buttons)


# -- options -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    name: str  # as the user writes it
    field: str  # in Options
    aliases: tuple[str, ...]
    example: str


OPTIONS = (
    Option("bars", "bars", (), "bars=8"),
    Option("temp", "temperature", ("temperature", "wild", "wildness"), "temp=1.1"),
    Option("bpm", "bpm", ("tempo",), "bpm=96"),
    Option("sound", "instrument", ("instrument",), "sound=guitar"),
    Option("seed", "seed", (), "seed=42"),
    Option("variations", "variations", ("n", "vars", "variation"), "variations=3"),
    Option("topp", "top_p", ("top_p", "top-p", "nucleus"), "topp=0.9"),
    Option("key", "keep_key", ("scale",), "key=off"),
)
_OPTION_FIELDS = {alias: option.field for option in OPTIONS for alias in (option.name, *option.aliases)}
_OPTION_TOKEN = re.compile(r"-{0,2}(?P<name>[A-Za-z][A-Za-z_-]*)(?P<sep>[=:])(?P<value>.*)", re.S)
_SKETCH_OPTIONS = ("file", "midi", "sketch")  # terminal only: a local MIDI file as the primer


@dataclass(frozen=True)
class Options:
    """What the user set; None = not given (the default or the parent job's value applies)."""

    bars: int | None = None
    temperature: float | None = None
    bpm: float | None = None
    instrument: str | None = None
    seed: int | None = None
    variations: int | None = None
    top_p: float | None = None
    keep_key: bool | None = None


@dataclass
class Parsed:
    words: list[str]  # the tokens that are not options (notes, job ids, numbers)
    options: Options
    sketch_path: str | None = None


def known_options() -> str:
    return ", ".join(
        option.name + (f" ({', '.join(option.aliases)})" if option.aliases else "") for option in OPTIONS
    )


def split_tokens(text: str) -> list[str]:
    """Words of a command line; quotes group words (sound="electric piano"), `name = value` is
    one option. Falls back to plain splitting when quotes do not pair up."""
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    text = re.sub(r"\s*=\s*", "=", text)
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def parse_options(text: str, settings: Settings, *, allow_files: bool = False) -> Parsed:
    """Separate options from other words and check every option's value."""
    tokens = split_tokens(text)
    words: list[str] = []
    values: dict[str, Any] = {}
    sketch_path = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        match = _OPTION_TOKEN.fullmatch(token)
        if token.startswith("--") and match is None and len(token) > 2:  # --name value
            name = token[2:]
            if i >= len(tokens):
                raise CommandError(f"`{token}` needs a value after it, e.g. {_example(name)}")
            match = _OPTION_TOKEN.fullmatch(f"{name}={tokens[i]}")
            i += 1
        if match is None:
            words.append(token)
            continue
        name, value = match["name"].lower(), match["value"].strip()
        if match["sep"] == ":" and name not in _OPTION_FIELDS and name not in _SKETCH_OPTIONS:
            words.append(token)  # a note with a length, e.g. C4:2
            continue
        if name in _SKETCH_OPTIONS:
            if not allow_files:
                raise CommandError("Attach the .mid file to your message instead of naming a file.")
            sketch_path = value
            continue
        canonical = _OPTION_FIELDS.get(name)
        if canonical is None:
            raise CommandError(_unknown_option(name))
        if value == "":
            raise CommandError(f"`{name}=` needs a value, e.g. {_example(canonical)}")
        values[canonical] = _option_value(canonical, name, value, settings)
    return Parsed(words, Options(**values), sketch_path)


def _example(name: str) -> str:
    field_name = _OPTION_FIELDS.get(name.lower(), name)
    return next((option.example for option in OPTIONS if option.field == field_name), f"{name}=...")


def _unknown_option(name: str) -> str:
    close = difflib.get_close_matches(name, list(_OPTION_FIELDS), n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f" Did you mean `{next(o.name for o in OPTIONS if o.field == _OPTION_FIELDS[close[0]])}`?"
    return f"I don't know the option `{name}`.{hint} Options: {known_options()}."


def _option_value(canonical: str, name: str, text: str, settings: Settings):
    """Convert and range-check one option; CommandError says what is allowed."""
    if canonical == "bars":
        value = _number(name, text, int)
        if not 1 <= value <= settings.max_bars:
            raise CommandError(f"`{name}={text}` is out of range: the continuation can be 1 to {settings.max_bars} "
                               f"bars long.")
        return value
    if canonical == "temperature":
        value = _number(name, text, float)
        low, high = TEMPERATURE_RANGE
        if not low <= value <= high:
            raise CommandError(f"`{name}={text}` is out of range: choose {low} (safe) to {high:g} (wild); "
                               f"1 is the model's own.")
        return value
    if canonical == "bpm":
        value = _number(name, text, float)
        if not BPM_RANGE[0] <= value <= BPM_RANGE[1]:
            raise CommandError(f"`{name}={text}` is out of range: the tempo can be {BPM_RANGE[0]:g} to "
                               f"{BPM_RANGE[1]:g} BPM.")
        return value
    if canonical == "instrument":
        try:
            return resolve_instrument(text)
        except RenderError:
            raise CommandError(f"I have no instrument called `{text}`. Choose one of: {', '.join(INSTRUMENTS)} "
                               f"(write two words with a dash, e.g. sound=electric-piano).") from None
    if canonical == "seed":
        value = _number(name, text, int)
        if not 0 <= value <= MAX_SEED:
            raise CommandError(f"`{name}={text}` is out of range: a seed is a whole number from 0 to {MAX_SEED}.")
        return value
    if canonical == "variations":
        value = _number(name, text, int)
        most = max_variations(settings)
        if not 1 <= value <= most:
            raise CommandError(f"`{name}={text}` is out of range: I can make 1 to {most} variations at a time.")
        return value
    if canonical == "top_p":
        value = _number(name, text, float)
        if not TOP_P_RANGE[0] <= value <= TOP_P_RANGE[1]:
            raise CommandError(f"`{name}={text}` is out of range: top-p is a share from {TOP_P_RANGE[0]} to "
                               f"{TOP_P_RANGE[1]:g}, e.g. topp=0.9.")
        return value
    if canonical == "keep_key":
        word = text.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise CommandError(f"`{name}={text}`: say key=on (keep to the melody's key) or key=off (any note).")
    raise AssertionError(canonical)


def _number(name: str, text: str, kind: type):
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise CommandError(f"`{name}={text}`: {name} must be {what}, e.g. {_example(name)}.") from None
    if kind is float and not math.isfinite(value):
        raise CommandError(f"`{name}={text}`: {name} must be a finite number, e.g. {_example(name)}.")
    return value



def max_variations(settings: Settings) -> int:
    return max(1, min(MAX_VARIATIONS, settings.max_variations))


# -- rate limit --------------------------------------------------------------------------------------
class RateLimiter:
    """At most `per_minute` commands per user in any 60 s. The first refused command in a burst
    is answered; the rest are dropped silently, so a spammer cannot make the bot spam."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._hits: dict[int, deque[float]] = {}
        self._warned_until: dict[int, float] = {}

    def check(self, user_id: int) -> tuple[bool, float, bool]:
        """(allowed, seconds until the next command is allowed, whether to tell the user)."""
        now = self.clock()
        hits = self._hits.setdefault(user_id, deque())
        while hits and hits[0] <= now - self.WINDOW_S:
            hits.popleft()
        if len(hits) < self.per_minute:
            hits.append(now)
            return True, 0.0, False
        retry = hits[0] + self.WINDOW_S - now
        warn = self._warned_until.get(user_id, 0.0) <= now
        if warn:
            self._warned_until[user_id] = now + retry
        return False, retry, warn


# -- the commands ------------------------------------------------------------------------------------
COMMANDS = {  # name or alias -> command; bot/discord_app.py registers the same names and aliases
    "continue": "continue", "cont": "continue",
    "extend": "extend",
    "again": "again", "reroll": "again",
    "votes": "votes",
    "vote": "vote",
    "queue": "queue", "jobs": "queue",
    "cancel": "cancel",
    "channel": "channel",
    "help": "help",
}  # fmt: skip

USAGE = {
    "continue": "{p}continue C4 E4 G4 A4 [bars=8 temp=1.1 ...]  (or attach a .mid sketch)",
    "extend": "{p}extend [job] [variation] [bars=8 ...]",
    "again": "{p}again [job] [options]",
    "votes": "{p}votes [job]",
    "vote": "{p}vote <job> <variation>",
    "queue": "{p}queue",
    "cancel": "{p}cancel [job]",
    "channel": "{p}channel on|off",
    "help": "{p}help",
}


class CommandHandler:
    """The service the front-ends talk to. One per process; `platform` picks the few wordings that
    differ (how to vote, how to give a sketch)."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        store: VoteStore,
        *,
        platform: str = DISCORD,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.settings = settings
        self.queue = queue
        self.store = store
        self.platform = platform
        self.prefix = settings.command_prefix
        self.limiter = RateLimiter(settings.rate_limit_per_minute, clock)
        self.rng = rng or random.Random()

    # -- entry points ---------------------------------------------------------------------------
    def parse_line(self, line: str, require_prefix: bool = True) -> tuple[str, str] | None:
        """("continue", "C4 E4") for "!continue C4 E4"; None if the line is no command of ours."""
        line = line.strip()
        if line.startswith(self.prefix):
            line = line[len(self.prefix):]
        elif require_prefix:
            return None
        name, *args = line.split(maxsplit=1) or [""]
        command = COMMANDS.get(name.lower())
        return (command, args[0].strip() if args else "") if command else None

    async def handle_line(self, request: Request, line: str, require_prefix: bool = True) -> list[Reply] | None:
        parsed = self.parse_line(line, require_prefix)
        if parsed is None:
            return None
        return await self.run(request, *parsed)

    async def run(self, request: Request, command: str, args: str = "") -> list[Reply]:
        refused = await self.gate(request, command)
        if refused is not None:
            return refused
        return await self.execute(request, command, args)

    async def gate(self, request: Request, command: str) -> list[Reply] | None:
        """None if the command may run; else the replies to send instead (maybe none at all)."""
        if command not in PRIVATE_COMMANDS and not await self.store.channel_enabled(request.channel_id):
            if request.interactive:
                return [Reply("melodybot is switched off in this channel (an admin can turn it on with "
                              f"`{self.prefix}channel on`).", private=True)]
            return []  # prefix commands in a switched-off channel get no answer at all
        if request.rate_limited:
            allowed, retry, warn = self.limiter.check(request.user_id)
            if not allowed:
                if not warn and not request.interactive:
                    return []
                return [Reply(f"Slow down: {self.limiter.per_minute} commands a minute at most. "
                              f"Try again in {math.ceil(retry)} s.", private=True)]
        return None

    async def execute(self, request: Request, command: str, args: str = "") -> list[Reply]:
        method = getattr(self, f"cmd_{command}")
        try:
            return await method(request, args)
        except (CommandError, PrimerError, MidiError, QueueError) as error:
            return [Reply(self._error_text(error))]
        except Exception:
            log.exception("%s %r from user %s in channel %s failed", command, args, request.user_id, request.channel_id)
            return [Reply("Sorry, something went wrong on my side; the details are in the bot's log. "
                          "Please try again in a minute.")]

    def _error_text(self, error: Exception) -> str:
        if isinstance(error, MidiError):
            return f"I can't use that MIDI file: {error}."
        if isinstance(error, PrimerError):
            text = str(error)
            return f"I can't read those notes: {text[0].lower() + text[1:]}" + ("" if text.endswith(".") else ".")
        return str(error)

    # -- continue / extend / again ---------------------------------------------------------------
    async def cmd_continue(self, request: Request, args: str) -> list[Reply]:
        parsed = parse_options(args, self.settings, allow_files=self.platform == TERMINAL)
        uploads = list(request.uploads)
        if parsed.sketch_path is not None:
            uploads.append(local_upload(parsed.sketch_path))
        notes_text = " ".join(parsed.words)
        remarks = []
        if uploads:
            upload = pick_sketch(uploads)
            data = await self._download(upload)
            primer = await asyncio.to_thread(primer_from_midi, data)
            events, bpm = primer.events, primer.bpm
            source = f"the sketch {upload.filename} ({primer.notes} notes from {primer.source})"
            if primer.trimmed_bars:
                remarks.append(f"the sketch is long, so I left out its first {_bars(primer.trimmed_bars)}")
            if notes_text:
                remarks.append("you attached a sketch, so I ignored the typed notes")
        elif notes_text:
            events, bpm = parse_notes(notes_text), DEFAULT_BPM
            source = "your notes"
        else:
            raise CommandError("Give me a melody to continue: type a few notes, e.g. "
                               f"`{self.prefix}continue C4 E4 G4 A4`, or attach a .mid sketch. "
                               f"`{self.prefix}help` explains the notation.")
        options = parsed.options
        job = Job(
            user_id=request.user_id,
            channel_id=request.channel_id,
            primer=events,
            bpm=options.bpm or bpm,
            bars=options.bars or self.settings.default_bars,
            variations=options.variations or max_variations(self.settings),
            temperature=options.temperature if options.temperature is not None else 1.0,
            top_p=options.top_p if options.top_p is not None else DEFAULT_TOP_P,
            seed=options.seed if options.seed is not None else self._new_seed(),
            instrument=options.instrument or "piano",
            keep_key=options.keep_key if options.keep_key is not None else True,
            user_name=request.user_name,
        )
        return await self._submit(job, f"from {source}", remarks)

    async def cmd_extend(self, request: Request, args: str) -> list[Reply]:
        parsed = parse_options(args, self.settings)
        words = list(parsed.words)
        parent = await self._finished_job(request, words, "extend")
        result = parent.result
        count = len(result.variations)
        if words and _variation_number(words[0]) is not None:
            number = _variation_number(words.pop(0))
            if not 1 <= number <= count:
                raise CommandError(f"Job {parent.job.job_id} has variations 1 to {count}; there is no {number}.")
            chosen_by = ""
        else:
            leader = (await self.store.tally(parent.job.job_id, count)).leader
            number = leader or 1
            chosen_by = " (the vote leader)" if leader else " (no votes yet, so the first)"
        _no_more_words(words, "extend", self.prefix)
        job = self._child(request, parent.job, parsed.options, result.variations[number - 1].events)
        job.parent = f"{parent.job.job_id}:{number}"
        return await self._submit(job, f"extending {parent.job.job_id} variation {number}{chosen_by}", [])

    async def cmd_again(self, request: Request, args: str) -> list[Reply]:
        parsed = parse_options(args, self.settings)
        words = list(parsed.words)
        parent = await self._job(request, words, "again")  # any state: a failed job can be retried too
        _no_more_words(words, "again", self.prefix)
        job = self._child(request, parent.job, parsed.options, parent.job.primer)
        job.parent = parent.job.parent  # a reroll continues the same thing its original did
        return await self._submit(job, f"rerolling {parent.job.job_id} with a new seed", [])

    def _child(self, request: Request, parent: Job, options: Options, primer: list[int]) -> Job:
        """A new job with the parent's settings, overridden by the options, and a new seed."""
        return Job(
            user_id=request.user_id,
            channel_id=request.channel_id,
            primer=list(primer),
            bpm=options.bpm or parent.bpm,
            bars=options.bars or parent.bars,
            variations=options.variations or min(parent.variations, max_variations(self.settings)),
            temperature=options.temperature if options.temperature is not None else parent.temperature,
            top_p=options.top_p if options.top_p is not None else parent.top_p,
            seed=options.seed if options.seed is not None else self._new_seed(avoid=parent.seed),
            instrument=options.instrument or parent.instrument,
            keep_key=options.keep_key if options.keep_key is not None else parent.keep_key,
            user_name=request.user_name,
        )

    def _new_seed(self, avoid: int | None = None) -> int:
        while True:
            seed = self.rng.randrange(RANDOM_SEEDS)
            if seed != avoid:
                return seed

    async def _submit(self, job: Job, what: str, remarks: list[str]) -> list[Reply]:
        try:
            status = await self.queue.submit(job)
        except QueueFull as error:
            raise CommandError(f"The queue is full right now; try again in about {_duration(error.retry_after_s)}.") \
                from None
        except QueueError:
            raise
        except Exception:
            log.exception("job %s: submitting failed", job.job_id)
            raise CommandError("The music generator can't be reached right now (its worker may be down). "
                               "Please try again in a minute.") from None
        log.info("job %s queued for user %s in channel %s (%s): %d bars, %d variations, temp %.2f, top-p %.2f, "
                 "seed %d, %s, key %s, %d primer steps", job.job_id, job.user_id, job.channel_id, what, job.bars,
                 job.variations, job.temperature, job.top_p, job.seed, job.instrument,
                 "on" if job.keep_key else "off", len(job.primer))
        text = self.status_text(status)
        detail = f"{what}: {_plural(job.variations, 'variation')} of {_bars(job.bars)}, seed {job.seed}."
        text += " " + detail[0].upper() + detail[1:]
        for remark in remarks:
            text += f" Note: {remark}."
        return [Reply(text, status_of=job.job_id)]

    async def _download(self, upload: Upload) -> bytes:
        try:
            data = await upload.read()
        except CommandError:
            raise
        except Exception:
            log.exception("downloading the sketch %s failed", upload.filename)
            raise CommandError(f"I couldn't download {upload.filename}; please try again.") from None
        if len(data) > MAX_SKETCH_BYTES:
            raise CommandError(_too_big(upload.filename, len(data)))
        return data

    async def _job(self, request: Request, words: list[str], command: str) -> JobStatus:
        """The job named by the first word, else the newest result in this channel."""
        if words and JOB_ID.fullmatch(_job_id(words[0])) and _variation_number(words[0]) is None:
            job_id = _job_id(words.pop(0))
        else:
            latest = await self.store.latest_result(request.channel_id)
            if latest is None:
                raise CommandError(f"Which job? Usage: {USAGE[command].format(p=self.prefix)}")
            job_id = latest.job_id
        status = await self.queue.get(job_id)
        if status is None:
            raise CommandError(f"There is no job {job_id}. `{self.prefix}queue` lists your jobs.")
        return status

    async def _finished_job(self, request: Request, words: list[str], command: str) -> JobStatus:
        status = await self._job(request, words, command)
        if status.state != JobState.DONE or status.result is None:
            raise CommandError(f"Job {status.job.job_id} has no result to {command}: it is {_state_words(status)}.")
        return status

    # -- votes ----------------------------------------------------------------------------------
    async def cmd_votes(self, request: Request, args: str) -> list[Reply]:
        words = split_tokens(args)
        status = await self._finished_job(request, words, "votes")
        _no_more_words(words, "votes", self.prefix)
        job_id, count = status.job.job_id, len(status.result.variations)
        tally = await self.store.tally(job_id, count)
        lines = [f"Votes for job {job_id}: {_plural(tally.total, 'vote')}."]
        for number, votes in enumerate(tally.counts, 1):
            mark = "  <- leading" if number == tally.leader else ""
            lines.append(f"{NUMBER_EMOJIS[number - 1]} {'#' * votes or '-'} {votes}{mark}")
        if tally.leader is None:
            lines.append(self._how_to_vote(job_id, count))
        else:
            lines.append(f"`{self.prefix}extend {job_id}` continues the leader.")
        return [Reply("\n".join(lines))]

    async def cmd_vote(self, request: Request, args: str) -> list[Reply]:
        if self.platform == DISCORD:
            raise CommandError("On Discord, vote with the number reactions under the result.")
        words = split_tokens(args)
        if not words or _variation_number(words[-1]) is None:
            raise CommandError(f"Usage: {USAGE['vote'].format(p=self.prefix)}, e.g. `{self.prefix}vote abc123 2`.")
        number = _variation_number(words.pop())
        status = await self._finished_job(request, words, "vote")
        _no_more_words(words, "vote", self.prefix)
        count = len(status.result.variations)
        if not 1 <= number <= count:
            raise CommandError(f"Job {status.job.job_id} has variations 1 to {count}; there is no {number}.")
        await self.store.vote(status.job.job_id, request.user_id, number)
        if await self.store.result_of_job(status.job.job_id) is None:  # so `!votes` alone finds it
            await self.store.remember_result(local_message_id(status.job.job_id), status.job.job_id,
                                             request.channel_id, count)
        return [Reply(f"Your vote for job {status.job.job_id} is on variation {number}.")]

    def _how_to_vote(self, job_id: str, count: int) -> str:
        if self.platform == TERMINAL:
            return f"Vote with `{self.prefix}vote {job_id} <{'1' if count == 1 else f'1-{count}'}>`."
        emojis = NUMBER_EMOJIS[0] if count == 1 else f"{NUMBER_EMOJIS[0]}-{NUMBER_EMOJIS[count - 1]}"
        return f"Vote with {emojis} under the result."

    # -- queue, cancel, channel, help -----------------------------------------------------------
    async def cmd_queue(self, request: Request, args: str) -> list[Reply]:
        jobs = await self.queue.user_jobs(request.user_id)
        if not jobs:
            return [Reply(f"You have no jobs waiting or running. Start one with `{self.prefix}continue C4 E4 G4 A4`.")]
        lines = [f"Your jobs ({len(jobs)}):"]
        for status in jobs:
            job = status.job
            lines.append(f"{job.job_id}: {_state_words(status)} ({_plural(job.variations, 'variation')} of "
                         f"{_bars(job.bars)})")
        lines.append(f"`{self.prefix}cancel <job>` cancels one.")
        return [Reply("\n".join(lines))]

    async def cmd_cancel(self, request: Request, args: str) -> list[Reply]:
        words = split_tokens(args)
        if not words:
            jobs = await self.queue.user_jobs(request.user_id)
            if len(jobs) != 1:
                raise CommandError(f"Which job? Usage: {USAGE['cancel'].format(p=self.prefix)}"
                                   + (f"; `{self.prefix}queue` lists yours." if jobs else "; you have none running."))
            words = [jobs[0].job.job_id]
        job_id = _job_id(words[0])
        if len(words) > 1 or not JOB_ID.fullmatch(job_id):
            raise CommandError(f"Usage: {USAGE['cancel'].format(p=self.prefix)}")
        status = await self.queue.cancel(job_id, request.user_id)
        log.info("job %s cancelled by user %s", job_id, request.user_id)
        return [Reply(self.status_text(status))]

    async def cmd_channel(self, request: Request, args: str) -> list[Reply]:
        word = args.strip().lower()
        if not request.in_guild:
            raise CommandError("Switching me on or off works in server channels, not in direct messages.")
        if word == "":
            enabled = await self.store.channel_enabled(request.channel_id)
            return [Reply(f"melodybot is {'on' if enabled else 'off'} in this channel.", private=not enabled)]
        if word not in ("on", "off"):
            raise CommandError(f"Usage: {USAGE['channel'].format(p=self.prefix)}")
        if not request.can_manage_channel:
            return [Reply("Only members who can manage this channel can switch me on or off here.", private=True)]
        await self.store.set_channel_enabled(request.channel_id, word == "on", request.user_id)
        log.info("channel %s switched %s by user %s", request.channel_id, word, request.user_id)
        if word == "on":
            return [Reply(f"melodybot is on in this channel. Try `{self.prefix}continue C4 E4 G4 A4`.")]
        return [Reply(f"melodybot is off in this channel; I'll ignore commands here until someone with Manage "
                      f"Channels types `{self.prefix}channel on`.")]

    async def cmd_help(self, request: Request, args: str) -> list[Reply]:
        return [Reply(self.help_text())]

    def help_text(self) -> str:
        p = self.prefix
        most = max_variations(self.settings)
        if self.platform == TERMINAL:
            sketch = f"  {p}continue file=sketch.mid bars=4     (or --midi sketch.mid): continue a MIDI sketch"
            vote = f"  {p}vote <job> <n>   vote for a variation;  {p}votes <job>   the tally"
            end = f"  {p}quit   leave (Ctrl-D and Ctrl-C too)"
        else:
            sketch = f"  {p}continue bars=4   with a .mid file attached: continue your sketch (also /continue)"
            vote = f"  Vote with the number reactions under a result;  {p}votes <job>   the tally"
            end = f"  {p}channel off | on   (members with Manage Channels) silence me here or bring me back"
        lines = [
            "melodybot continues your melody. Type a few notes or give a MIDI sketch:",
            f"  {p}continue C4 E4 G4 A4",
            f"  {p}continue C4 E G A:2 | G:0.5 F:0.5 E D C:2 bars=16 temp=1.2 sound=guitar",
            sketch,
            "Options (name=value):",
            f"  bars={self.settings.default_bars}      continuation length, 1-{self.settings.max_bars} bars",
            f"  temp=1.0    wildness, {TEMPERATURE_RANGE[0]} safe to {TEMPERATURE_RANGE[1]:g} wild "
            "(also wild=, wildness=, temperature=)",
            "  bpm=120     tempo (default: the sketch's, else 120)",
            f"  sound=piano {', '.join(INSTRUMENTS)} (also instrument=)",
            "  seed=42     the same seed, melody and options give the same result",
            f"  variations={most}  how many continuations, 1-{most} (also n=, vars=)",
            "  topp=0.95   0.05-1: lower keeps to the likeliest notes",
            "  key=on      on keeps to your melody's key; off lets it wander",
            "Then:",
            vote,
            f"  {p}extend <job> [n] [bars=..]   continue variation n (default: the vote leader)",
            f"  {p}again <job> [options]        the same melody and settings, a new seed",
            f"  {p}queue   your jobs;  {p}cancel <job>   cancel one",
            end,
            "Note notation:",
        ]
        notation = NOTATION if self.platform == TERMINAL else f"```\n{NOTATION}\n```"
        body = "\n".join(lines)
        return f"```\n{body}\n```\n{notation}" if self.platform == DISCORD else f"{body}\n{notation}"

    # -- what a job's messages say ---------------------------------------------------------------
    def status_text(self, status: JobStatus) -> str:
        job = status.job
        if status.state == JobState.QUEUED:
            where = f", position {status.position}" if status.position else ""
            return f"Queued as job {job.job_id}{where}."
        if status.state == JobState.RUNNING:
            return f"Generating job {job.job_id}... ({_plural(job.variations, 'variation')} of {_bars(job.bars)})"
        if status.state == JobState.DONE:
            return f"Job {job.job_id} is done: the results are below."
        if status.state == JobState.FAILED:
            return f"Job {job.job_id} failed: {status.error or 'the worker gave no reason'}"
        return f"Job {job.job_id} was cancelled."

    def result_reply(self, status: JobStatus, upload_limit: int = UPLOAD_LIMIT, every_png: bool = False) -> Reply:
        """The one message with a finished job's variations: MIDI + MP3 per variation, the combined
        piano roll (every_png: each variation's picture too), settings, seed, key; number
        reactions to vote; buttons to extend the leader or roll again."""
        job, result = status.job, status.result
        count = len(result.variations)
        midis = [OutFile(f"{job.job_id}-{n}.mid", v.midi) for n, v in enumerate(result.variations, 1)]
        mp3s = [OutFile(f"{job.job_id}-{n}.mp3", v.mp3) for n, v in enumerate(result.variations, 1) if v.mp3]
        pngs = [OutFile(f"{job.job_id}.png", result.combined_png)] if result.combined_png else []
        if every_png:
            pngs += [OutFile(f"{job.job_id}-{n}.png", v.png) for n, v in enumerate(result.variations, 1) if v.png]
        files, remarks = midis + mp3s + pngs, []
        if sum(len(f.data) for f in files) > upload_limit:
            files = midis + pngs
            remarks.append("The MP3 previews are left out: together they are over this channel's upload limit.")
        if sum(len(f.data) for f in files) > upload_limit:
            files = midis
        who = f" for {job.user_name}" if job.user_name else ""
        origin = ""
        if job.parent:
            parent_id, _, number = job.parent.partition(":")
            origin = f", extending {parent_id} variation {number}" if number else f", from {parent_id}"
        lines = [
            f"Job {job.job_id}: {_plural(count, 'continuation')}{who}{origin}.",
            " | ".join([
                f"Key: {result.key}" if result.key else "Key: none found",
                f"{_bars(job.bars)} at {job.bpm:g} BPM",
                job.instrument,
                f"temp={job.temperature:g}",
                f"topp={job.top_p:g}",
                f"key={'on' if job.keep_key else 'off'}",
                f"seed={job.seed}",
            ]),
            f"{self._how_to_vote(job.job_id, count)} `{self.prefix}extend {job.job_id}` continues the leader, "
            f"`{self.prefix}again {job.job_id}` rerolls.",
            *remarks,
        ]
        return Reply(
            "\n".join(lines),
            files=files,
            reactions=list(NUMBER_EMOJIS[:count]) if self.platform == DISCORD else [],
            buttons=[Button("Extend the leader", "extend", job.job_id), Button("Again", "again", job.job_id)],
            result_of=job.job_id,
        )


# -- helpers -----------------------------------------------------------------------------------------
def pick_sketch(uploads: list[Upload]) -> Upload:
    """The one MIDI upload, checked by name and announced size before anything is downloaded."""
    sketches = [u for u in uploads if u.filename.lower().endswith(SKETCH_SUFFIXES)]
    if not sketches:
        names = ", ".join(u.filename for u in uploads)
        raise CommandError(f"I can only continue MIDI files (.mid or .midi); {names} is not one. Export your "
                           "sketch as MIDI from your DAW or notation program.")
    if len(sketches) > 1:
        raise CommandError("Attach one MIDI sketch at a time.")
    sketch = sketches[0]
    if sketch.size > MAX_SKETCH_BYTES:
        raise CommandError(_too_big(sketch.filename, sketch.size))
    return sketch


def local_upload(path_text: str) -> Upload:
    """A file on this machine given as file=PATH (terminal channel)."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise CommandError(f"There is no file at {path}.")
    size = path.stat().st_size

    async def read() -> bytes:
        return await asyncio.to_thread(path.read_bytes)

    return Upload(str(path), size, read)


def _too_big(name: str, size: int) -> str:
    return (f"{os.path.basename(name)} is {size / 1024 / 1024:.1f} MiB; a sketch can be at most "
            f"{MAX_SKETCH_BYTES // 1024} KiB. A melody sketch is usually a few KiB: export only the melody track.")


def _job_id(word: str) -> str:
    return word.strip("`#<>").lower()


def _variation_number(word: str) -> int | None:
    word = word.lower().lstrip("#v")
    return int(word) if word.isdigit() and len(word) <= 2 else None


def _no_more_words(words: list[str], command: str, prefix: str) -> None:
    if words:
        raise CommandError(f"I don't understand `{' '.join(words)}`. Usage: {USAGE[command].format(p=prefix)} "
                           f"(options: {known_options()})")


def _state_words(status: JobStatus) -> str:
    if status.state == JobState.QUEUED:
        return f"queued, position {status.position}" if status.position else "queued"
    return {JobState.RUNNING: "generating now", JobState.DONE: "done", JobState.FAILED: "failed",
            JobState.CANCELLED: "cancelled"}[status.state]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _bars(count: int) -> str:
    return _plural(count, "bar")


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{round(seconds / 60)} min"


# -- following the queue, for both front-ends ----------------------------------------------------------
def start_task(coro: Awaitable, tasks: set[asyncio.Task], name: str,
               on_failure: Callable[[BaseException], Awaitable[None] | None] | None = None) -> asyncio.Task:
    """Run `coro` as a task kept in `tasks`; a failure is logged and handed to `on_failure` (to tell
    the user), the Red-DiscordBot habit for long work."""
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    tasks.add(task)

    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        log.error("%s failed", name, exc_info=error)
        if on_failure is not None:
            followup = on_failure(error)
            if asyncio.iscoroutine(followup):
                inner = asyncio.ensure_future(followup)
                tasks.add(inner)
                inner.add_done_callback(_log_quietly(tasks, f"{name}: telling the user"))

    task.add_done_callback(done)
    return task


def _log_quietly(tasks: set[asyncio.Task], name: str):
    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", name, exc_info=task.exception())

    return done


class UpdateFollower:
    """Reads `queue.updates()` and hands each status to `deliver` in its own task, in order per job
    (a job's RUNNING edit never lands after its result), different jobs in parallel."""

    RETRY_S = 2.0  # wait before following again when the update stream breaks

    def __init__(self, queue: JobQueue, deliver: Callable[[JobStatus], Awaitable[None]],
                 accept: Callable[[JobStatus], bool] = lambda status: True,
                 observe: Callable[[JobStatus], None] | None = None,
                 on_failure: Callable[[JobStatus, BaseException], Awaitable[None] | None] | None = None):
        """accept: which updates are this front-end's to deliver; observe: sees every accepted
        update first (metrics); on_failure: tells the user when a delivery failed (it is logged)."""
        self.queue = queue
        self.deliver = deliver
        self.accept = accept
        self.observe = observe
        self.on_failure = on_failure
        self.tasks: set[asyncio.Task] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._main: asyncio.Task | None = None

    def start(self) -> None:
        self._main = start_task(self._follow(), self.tasks, "following the job queue")

    async def stop(self) -> None:
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            try:
                async for status in self.queue.updates():
                    if self.accept(status):
                        job_id = status.job.job_id
                        if self.observe is not None:
                            try:
                                self.observe(status)
                            except Exception:
                                log.exception("job %s: observing the update failed", job_id)
                        tell = None
                        if self.on_failure is not None:
                            tell = functools.partial(self.on_failure, status)
                        start_task(self._deliver(status), self.tasks, f"job {job_id}: delivering {status.state.value}",
                                   tell)
                return  # the queue closed
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the job queue failed; retrying in %.0f s", self.RETRY_S)
                await asyncio.sleep(self.RETRY_S)

    async def _deliver(self, status: JobStatus) -> None:
        job_id = status.job.job_id
        lock = self._locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            await self.deliver(status)
        if status.state.finished and not lock.locked():
            self._locks.pop(job_id, None)

