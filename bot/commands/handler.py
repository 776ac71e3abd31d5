"""`CommandHandler`: the commands themselves, the service both front-ends talk to. It gates a
command (channel switched off, rate limit), parses its options, builds a `Job` from typed notes, a
MIDI sketch or a parent job, submits it to the queue, and answers votes, queue, cancel, channel and
help, always with plain `Reply`s. Every user mistake raises `CommandError` (or a model/queue error
with a user-facing message), which `execute` turns into a reply; anything else is logged and
answered with a short apology.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import replace

from bot.commands import replies, usage
from bot.commands.jam import JamCommands
from bot.commands.jam_service import JamService
from bot.commands.options import (
    FORM_OFF,
    LYRICS_OFF,
    RANDOM_SEEDS,
    Options,
    harmony,
    known_options,
    max_variations,
    parse_options,
    rotate_sheet,
    split_tokens,
)
from bot.commands.ratelimit import RateLimiter
from bot.commands.replies import (
    DISCORD,
    TERMINAL,
    UPLOAD_LIMIT,
    CommandError,
    Reply,
    Request,
    bars_text,
    plural,
)
from bot.commands.sketches import SketchReader, local_upload, pick_sketch
from bot.commands.usage import COMMANDS, USAGE
from bot.jobs import Job, JobState, JobStatus
from bot.queue import JobQueue, QueueError, QueueFull
from bot.settings import Settings
from bot.storage import NUMBER_EMOJIS, BotStore, local_message_id
from model.band.styles import DEFAULT_STYLE
from model.defaults import DEFAULT_BPM, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, length_problem
from model.music.chords import lead_sheet
from model.music.midi_io import MidiError
from model.music.primer import PrimerError, parse_notes

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[a-z0-9]{4,16}")
PRIVATE_COMMANDS = ("channel",)  # answered even in a switched-off channel


class CommandHandler:
    """The service the front-ends talk to. One per process; `platform` picks the few wordings that
    differ (how to vote, how to give a sketch)."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        store: BotStore,
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
        self.sketches = SketchReader()

        self.jams = JamService(settings, queue, store, platform=platform)  # the front-end starts it
        self.jam_commands = JamCommands(settings, queue, store, self.jams, platform=platform,
                                        continue_command=self.cmd_continue, find_job=self._job)

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
        if command not in PRIVATE_COMMANDS and not await self.store.channels.enabled(request.channel_id):
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
        sketch_chords = None
        if uploads:
            upload = pick_sketch(uploads)
            primer = await self.sketches.read(upload)
            events, bpm = primer.events, primer.bpm
            if primer.tempo_remark and not parsed.options.bpm:
                remarks.append(primer.tempo_remark)
            if primer.meter_remark:
                remarks.append(primer.meter_remark)
            source = f"the sketch {upload.filename} ({primer.notes} notes from {primer.source})"
            if primer.trimmed_bars:
                remarks.append(f"the sketch is long, so I left out its first {bars_text(primer.trimmed_bars)}")
            if notes_text:
                remarks.append("you attached a sketch, so I ignored the typed notes")
            if primer.chords is not None:  # its last steps may be past the accompaniment's end
                sounding = list(primer.chords)
                while sounding[-1] is None:
                    sounding.pop()
                sketch_chords = lead_sheet(sounding)
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
            temperature=options.temperature if options.temperature is not None else DEFAULT_TEMPERATURE,
            top_p=options.top_p if options.top_p is not None else DEFAULT_TOP_P,
            seed=options.seed if options.seed is not None else self._new_seed(),
            instrument=options.instrument or "piano",
            style=options.style or DEFAULT_STYLE,
            keep_key=options.keep_key if options.keep_key is not None else True,
            form=None if options.form == FORM_OFF else options.form,
            user_name=request.user_name,
            guild_id=request.guild_id,
        )
        job.chords, job.harmony = harmony(options.chords)
        if sketch_chords is not None and job.harmony:
            job.primer_chords = sketch_chords
            if options.chords is None:  # the continuation goes on over the sketch's own progression
                job.chords = sketch_chords
                remarks.append(f"I kept the chords of your sketch: {sketch_chords}")
        await self._set_words(job, options.lyrics, options, remarks)
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
            leader = (await self.store.votes.tally(parent.job.job_id, count)).leader
            number = leader or 1
            chosen_by = " (the vote leader)" if leader else " (no votes yet, so the first)"
        _no_more_words(words, "extend", self.prefix)
        variation = result.variations[number - 1]
        job = self._child(request, parent.job, parsed.options, variation.events, sheet_bars_done=parent.job.bars)
        job.parent = f"{parent.job.job_id}:{number}"
        if job.harmony:  # the chords the extended variation already had stay under it
            job.primer_chords = variation.chords
        remarks: list[str] = []
        await self._set_words(job, parsed.options.lyrics, parsed.options, remarks)  # new words, or none
        return await self._submit(job, f"extending {parent.job.job_id} variation {number}{chosen_by}", remarks)

    async def cmd_again(self, request: Request, args: str) -> list[Reply]:
        parsed = parse_options(args, self.settings)
        words = list(parsed.words)
        parent = await self._job(request, words, "again")  # any state: a failed job can be retried too
        _no_more_words(words, "again", self.prefix)
        job = self._child(request, parent.job, parsed.options, parent.job.primer)
        job.parent = parent.job.parent  # a reroll continues the same thing its original did
        remarks: list[str] = []
        words = parsed.options.lyrics if parsed.options.lyrics is not None else parent.job.lyrics  # kept or replaced
        kept = parsed.options.lyrics is None and parent.job.lyrics
        options = replace(parsed.options, bars=parent.job.bars) if kept and not parsed.options.bars else (
            parsed.options)  # the same words keep their bars; new words get bars of their own
        await self._set_words(job, words, options, remarks, parent.job.melisma)
        return await self._submit(job, f"rerolling {parent.job.job_id} with a new seed", remarks)

    async def _set_words(self, job: Job, words: str | None, options: Options, remarks: list[str],
                         melisma: bool = False) -> None:
        """Put the words (if any) on the job: their bars (bars= or enough for them) checked and the
        split shown. The dictionary loads and runs in a thread, off the event loop."""
        if not words or words == LYRICS_OFF:
            return
        from model.lyrics.setting import set_lyrics
        from model.lyrics.syllables import LyricsError

        job.melisma = options.melisma if options.melisma is not None else melisma
        try:
            setting = await asyncio.to_thread(set_lyrics, words, job.primer, options.bars, 0, job.seed, job.melisma,
                                              self.settings.max_bars)  # 0 plans: the bars are checked, the worker plans
        except LyricsError as error:
            raise CommandError(f"I can't set those words: {error}.") from None
        job.lyrics, job.bars = words, setting.bars
        guessed = setting.lyrics.guessed()
        remarks.append(f"the words ({bars_text(job.bars)}): {setting.lyrics.display()}"
                       + (f" (not in my dictionary, so guessed: {', '.join(guessed)})" if guessed else ""))

    def _child(self, request: Request, parent: Job, options: Options, primer: list[int],
               sheet_bars_done: int = 0) -> Job:
        """A new job with the parent's settings, overridden by the options, and a new seed. An
        extension goes on with the parent's chords where its continuation left them
        (`sheet_bars_done` bars into the sheet)."""
        child = Job(
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
            style=options.style or parent.style,
            keep_key=options.keep_key if options.keep_key is not None else parent.keep_key,
            form=None if options.form == FORM_OFF else options.form or parent.form,
            user_name=request.user_name,
            guild_id=request.guild_id,
        )
        if options.chords is not None:
            child.chords, child.harmony = harmony(options.chords)
        else:
            child.chords, child.harmony = rotate_sheet(parent.chords, sheet_bars_done), parent.harmony
            child.primer_chords = parent.primer_chords if not sheet_bars_done else None
        return child

    def _new_seed(self, avoid: int | None = None) -> int:
        while True:
            seed = self.rng.randrange(RANDOM_SEEDS)
            if seed != avoid:
                return seed

    async def _submit(self, job: Job, what: str, remarks: list[str]) -> list[Reply]:
        problem = length_problem(job.bars, job.bpm)
        if problem:
            raise CommandError(problem[0].upper() + problem[1:] + ".")
        if job.form:
            remarks.append(_form_remark(job, self.settings.max_bars))
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
        detail = f"{what}: {plural(job.variations, 'variation')} of {bars_text(job.bars)}, seed {job.seed}."
        text += " " + detail[0].upper() + detail[1:]
        for remark in remarks:
            text += f" Note: {remark}."
        problem = self.queue.health_problem()
        if problem:
            text += f" {problem}"
        return [Reply(text, status_of=job.job_id)]

    async def _job(self, request: Request, words: list[str], command: str) -> JobStatus:
        """The job named by the first word, else the newest result in this channel."""
        if words and JOB_ID.fullmatch(_job_id(words[0])) and _variation_number(words[0]) is None:
            job_id = _job_id(words.pop(0))
        else:
            latest = await self.store.messages.latest_result(request.channel_id)
            if latest is None:
                raise CommandError(f"Which job? Usage: {USAGE[command].format(p=self.prefix)}")
            job_id = latest.job_id
        status = await self.queue.get(job_id)
        if status is None or status.job.guild_id != request.guild_id:  # another server's job: not ours to show
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
        tally = await self.store.votes.tally(job_id, count)
        lines = [f"Votes for job {job_id}: {plural(tally.total, 'vote')}."]
        for number, votes in enumerate(tally.counts, 1):
            mark = "  <- leading" if number == tally.leader else ""
            lines.append(f"{NUMBER_EMOJIS[number - 1]} {'#' * votes or '-'} {votes}{mark}")
        if tally.leader is None:
            lines.append(replies.how_to_vote(job_id, count, self.prefix, self.platform))
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
        await self.store.votes.vote(status.job.job_id, request.user_id, number)
        if await self.store.messages.result_of_job(status.job.job_id) is None:  # so `!votes` alone finds it
            await self.store.messages.remember_result(local_message_id(status.job.job_id), status.job.job_id,
                                             request.channel_id, count)
        return [Reply(f"Your vote for job {status.job.job_id} is on variation {number}.")]

    # -- queue, cancel, channel, help -----------------------------------------------------------
    async def cmd_queue(self, request: Request, args: str) -> list[Reply]:
        jobs = await self.queue.user_jobs(request.user_id)
        if not jobs:
            return [Reply(f"You have no jobs waiting or running. Start one with `{self.prefix}continue C4 E4 G4 A4`.")]
        lines = [f"Your jobs ({len(jobs)}):"]
        for status in jobs:
            job = status.job
            lines.append(f"{job.job_id}: {_state_words(status)} ({plural(job.variations, 'variation')} of "
                         f"{bars_text(job.bars)})")
        lines.append(f"`{self.prefix}cancel <job>` cancels one.")
        problem = self.queue.health_problem()
        if problem:
            lines.append(problem)
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
            enabled = await self.store.channels.enabled(request.channel_id)
            return [Reply(f"melodybot is {'on' if enabled else 'off'} in this channel.", private=not enabled)]
        if word not in ("on", "off"):
            raise CommandError(f"Usage: {USAGE['channel'].format(p=self.prefix)}")
        if not request.can_manage_channel:
            return [Reply("Only members who can manage this channel can switch me on or off here.", private=True)]
        await self.store.channels.set_enabled(request.channel_id, word == "on", request.user_id)
        log.info("channel %s switched %s by user %s", request.channel_id, word, request.user_id)
        if word == "on":
            return [Reply(f"melodybot is on in this channel. Try `{self.prefix}continue C4 E4 G4 A4`.")]
        off = Reply(f"melodybot is off in this channel; I'll ignore commands here until someone with Manage "
                    f"Channels types `{self.prefix}channel on`.")
        # A jam would go on posting rounds into a channel that asked for quiet: it stops (its song so far follows).
        if await self.store.jams.playing_in(request.channel_id) is None:
            return [off]
        stopped = await self.jams.stop_jam(request.channel_id, request.user_id, request.user_name, can_manage=True)
        return [off, Reply(stopped)]

    async def cmd_help(self, request: Request, args: str) -> list[Reply]:
        if args.strip().lower().removeprefix(self.prefix) in ("jam", "song", "forget"):
            return [Reply(usage.jam_help(self.prefix, self.platform))]
        return [Reply(self.help_text())]

    # -- jam, song, forget (bot/commands/jam.py) ------------------------------------------------
    async def cmd_jam(self, request: Request, args: str) -> list[Reply]:
        return await self.jam_commands.jam(request, args)

    async def cmd_song(self, request: Request, args: str) -> list[Reply]:
        return await self.jam_commands.song(request, args)

    async def cmd_forget(self, request: Request, args: str) -> list[Reply]:
        return await self.jam_commands.forget(request, args)

    def help_text(self) -> str:
        return usage.help_text(self.settings, self.prefix, self.platform)

    # -- what a job's messages say (worded in bot/commands/replies.py) ----------------------------
    def status_text(self, status: JobStatus) -> str:
        return replies.status_text(status)

    def result_reply(self, status: JobStatus, upload_limit: int = UPLOAD_LIMIT) -> Reply:
        """The one message with a finished job's variations (see `replies.result_reply`)."""
        return replies.result_reply(status, self.prefix, self.platform, upload_limit)


# -- helpers -----------------------------------------------------------------------------------------
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


def _form_remark(job: Job, most_bars: int) -> str:
    """What the job's form asks for, bar by bar, or a CommandError saying why it cannot be made."""
    from model.melody.form import SKETCH_LETTER, parse_form  # no torch there

    if job.lyrics:
        raise CommandError("form= and lyrics= can't go together yet: the words decide where the notes go. "
                           "Leave one out.")
    try:
        sections = parse_form(job.form, job.bars, most_bars)
    except ValueError as error:
        raise CommandError(f"I can't use that form: {error}.") from None
    parts, bar, seen = [], 1, set()
    for letter, length in sections:
        span = f"bar {bar}" if length == 1 else f"bars {bar}-{bar + length - 1}"
        what = "your sketch's opening" if letter == SKETCH_LETTER else "again" if letter in seen else "new"
        parts.append(f"{span} {letter} ({what})")
        seen.add(letter)
        bar += length
    return "the form: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{round(seconds / 60)} min"
