"""The jam commands (bot/commands/jam_service.py runs the jams themselves):

    !jam C4 E4 G4 A4 rounds=4 bars=4 minutes=2 [chords=...] [options]   (or with a .mid sketch)
    !jam stop      the starter or a channel admin ends it (the song so far is posted)
    !jam status    the round in play, its leader and deadline, the rounds closed
    !song [job|jam] [n]   the whole song of a jam, or of a chain of !extend ending at a job
    !forget me     delete your votes, finished jobs and jams

`rounds=` and `minutes=` are the jam's own options; every other word goes to `!continue` as it is,
so notes, sketches and options behave exactly as there. JamCommands is owned by the CommandHandler,
which hands it the services it shares and its own `!continue` and job lookup (no import back).
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Callable

from bot.commands.jam_service import DEFAULT_BARS, MAX_SONG_BARS, JamError, JamService, agreement_rule
from bot.commands.options import LYRICS_OFF, parse_options, split_tokens, without_lyrics
from bot.commands.replies import TERMINAL, CommandError, Reply, Request
from bot.commands.songs import bars_of
from bot.commands.usage import USAGE
from bot.jobs import Job, JobStatus
from bot.queue import JobQueue
from bot.settings import Settings
from bot.storage import BotStore

JAM_OPTIONS = {"rounds": "rounds", "round": "rounds", "minutes": "minutes", "minute": "minutes", "mins": "minutes",
               "min": "minutes"}  # fmt: skip
_JAM_TOKEN = re.compile(r"-{0,2}(?P<name>[A-Za-z]+)[=:](?P<value>.*)", re.S)
STOP_WORDS = ("stop", "end", "finish")


def jam_options(tokens: list[str]) -> tuple[int, float, list[str]]:
    """(rounds, minutes, the other tokens); CommandError naming a value out of range."""
    from bot.commands import jam_service as jams  # the limits read at call time: tests shorten MINUTES_RANGE

    values: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        name = token[2:].lower() if token.startswith("--") else None
        if name in JAM_OPTIONS and i < len(tokens):  # --rounds 4
            values[JAM_OPTIONS[name]] = tokens[i]
            i += 1
            continue
        match = _JAM_TOKEN.fullmatch(token)
        if match and match["name"].lower() in JAM_OPTIONS:
            values[JAM_OPTIONS[match["name"].lower()]] = match["value"].strip()
        else:
            rest.append(token)
    low, high = jams.ROUNDS_RANGE
    rounds = jams.DEFAULT_ROUNDS
    if "rounds" in values:
        text = values["rounds"]
        if not text.isdigit() or not low <= int(text) <= high:
            raise CommandError(f"`rounds={text}`: a jam has {low} to {high} rounds, e.g. rounds=4.")
        rounds = int(text)
    low, high = jams.MINUTES_RANGE
    minutes = jams.DEFAULT_MINUTES
    if "minutes" in values:
        text = values["minutes"]
        try:
            minutes = float(text)
        except ValueError:
            minutes = float("nan")
        if not low <= minutes <= high:  # nan fails too
            raise CommandError(f"`minutes={text}`: each round's voting lasts {low:g} to {high:g} minutes "
                               f"(fractions too: minutes=0.5 is 30 s).")
    return rounds, minutes, rest


class JamCommands:
    """!jam, !song and !forget: thin commands over JamService (rounds, deadlines, the song)."""

    def __init__(self, settings: Settings, queue: JobQueue, store: BotStore, jams: JamService, *, platform: str,
                 continue_command: Callable[[Request, str], Awaitable[list[Reply]]],
                 find_job: Callable[[Request, list[str], str], Awaitable[JobStatus]]):  # fmt: skip
        self.settings, self.queue, self.store, self.jams = settings, queue, store, jams
        self.platform = platform
        self.prefix = settings.command_prefix
        self.continue_command = continue_command  # the handler's !continue: a jam's first round is one
        self.find_job = find_job  # the handler's "the job named, else the newest result here"

    async def jam(self, request: Request, args: str) -> list[Reply]:
        jams, p = self.jams, self.prefix
        tokens = split_tokens(args)
        word = tokens[0].lower() if tokens else ""
        if word in STOP_WORDS and len(tokens) == 1:
            text = await jams.stop_jam(request.channel_id, request.user_id, request.user_name,
                                       request.can_manage_channel)
            return [Reply(text)]
        if word == "status" and len(tokens) == 1:
            return [Reply(await jams.status_text(request.channel_id))]
        rounds, minutes, rest = jam_options(tokens)
        if await self.store.jams.playing_in(request.channel_id) is not None:
            raise CommandError(jams.in_play_text())
        parsed = parse_options(shlex.join(rest), self.settings, allow_files=self.platform == TERMINAL)
        if not parsed.words and not request.uploads and parsed.sketch_path is None:
            raise CommandError(f"Give the jam a melody to start from: type a few notes or attach a .mid sketch. "
                               f"Usage: {USAGE['jam'].format(p=p)}")
        bars = parsed.options.bars or DEFAULT_BARS
        if parsed.options.bars is None:
            rest.append(f"bars={bars}")
        if rounds * bars >= MAX_SONG_BARS:
            raise CommandError(f"{rounds} rounds of {bars} bars make a song longer than the {MAX_SONG_BARS} bars "
                               "a lead sheet holds; choose fewer rounds or bars.")
        line, parts = shlex.join(rest), None
        if parsed.options.lyrics and parsed.options.lyrics != LYRICS_OFF:  # the words shared by the rounds
            from model.lyrics.setting import round_lines

            parts = round_lines(parsed.options.lyrics, rounds)
            kept = jam_options(split_tokens(without_lyrics(args)))[2]
            kept += [] if parsed.options.bars else [f"bars={bars}"]
            line = f"{shlex.join(kept)} lyrics=```{parts[0]}```"  # round 1 sings the first part
        replies = await self.continue_command(request, line)
        queued = next((r for r in replies if r.status_of), None)
        if queued is None:  # refused: the reason is the reply
            return replies
        status = await self.queue.get(queued.status_of)
        first = status.job
        if bars_of(len(first.primer)) + rounds * bars > MAX_SONG_BARS:
            await jams._cancel_quietly(first.job_id)
            raise CommandError(f"Your melody and {rounds} rounds of {bars} bars make a song longer than the "
                               f"{MAX_SONG_BARS} bars a lead sheet holds; choose fewer rounds or bars.")
        if parts:
            await self._check_parts(first, parts)
        try:
            jam = await jams.begin(first, rounds, minutes, parts)
        except JamError as error:
            await jams._cancel_quietly(first.job_id)
            raise CommandError(str(error)) from None
        seconds = f" ({minutes * 60:g} s)" if minutes < 1 else ""
        intro = (f"Jam {jam.jam_id} started by {request.user_name or 'you'}: {rounds} rounds of {bars} bars, "
                 f"{minutes:g} min{seconds} of voting per round; {agreement_rule()}. Each round continues the "
                 f"whole song with the winner appended; the song comes at the end (`{p}jam status`, `{p}jam stop`).")
        return [Reply(intro), queued]


    async def _check_parts(self, first: Job, parts: list[str]) -> None:
        """Every round's words fit its bars (round 1's were checked by !continue), else no jam."""
        from model.lyrics.setting import set_lyrics
        from model.lyrics.syllables import LyricsError

        for number, part in enumerate(parts[1:], 2):
            try:
                await asyncio.to_thread(set_lyrics, part, first.primer, first.bars, 0, 0, first.melisma,
                                        self.settings.max_bars)
            except LyricsError as error:
                await self.jams._cancel_quietly(first.job_id)
                raise CommandError(f"I can't set round {number}'s words ({part}): {error}.") from None

    async def song(self, request: Request, args: str) -> list[Reply]:
        jams = self.jams
        words = split_tokens(args)
        variation = None
        if len(words) == 2 and words[1].lstrip("#v").isdigit():
            variation = int(words.pop().lstrip("#v"))
        if len(words) > 1:
            raise CommandError(f"Usage: {USAGE['song'].format(p=self.prefix)}")
        jam = None
        if words:
            jam = await self.store.jams.get(words[0].strip("`#<>").lower())
        else:  # the jam of the newest result here, else the newest jam, else the newest result's chain
            newest = await self.store.messages.latest_result(request.channel_id)
            if newest is not None:
                jam = await self.store.jams.of_job(newest.job_id)
            else:
                jam = await self.store.jams.latest_in(request.channel_id)
        if jam is not None and jam.guild_id == request.guild_id and variation is None:
            template = Job.from_dict(jam.template)
            reply = await jams.song_reply(f"song-{jam.jam_id}", jam.song, jam.chords, template.bpm, template.instrument,
                                          f"Jam {jam.jam_id}", style=template.style,
                                          words=await jams.jam_words(jam))  # fmt: skip
            reply.text = f"The song of jam {jam.jam_id} ({_rounds(jam)}): " + reply.text
            return [reply]
        status = await self.find_job(request, words, "song")
        try:
            song, chords, last, number = await jams.chain_song(status.job.job_id, variation)
        except JamError as error:
            raise CommandError(str(error)) from None
        if bars_of(len(song)) > MAX_SONG_BARS:
            raise CommandError(f"That song is {bars_of(len(song))} bars long; a lead sheet holds {MAX_SONG_BARS}.")
        job = last.job
        reply = await jams.song_reply(f"song-{job.job_id}", song, chords, job.bpm, job.instrument, f"Song {job.job_id}",
                                      style=job.style)
        reply.text = f"The song up to job {job.job_id} variation {number}: " + reply.text
        return [reply]


    async def forget(self, request: Request, args: str) -> list[Reply]:
        if args.strip().lower() != "me":
            raise CommandError(f"`{self.prefix}forget me` deletes your votes, your finished jobs and your jams from "
                               "my database (and so from the data kept to improve the model).")
        playing = await self.store.jams.playing_in(request.channel_id)
        if playing is not None and playing.starter_id == request.user_id:
            raise CommandError(f"Your jam {playing.jam_id} is still going; `{self.prefix}jam stop` it first.")
        counts = await self.store.jams.forget_user(request.user_id)
        unfinished = await self.queue.user_jobs(request.user_id)
        text = (f"Done: I deleted {counts['votes']} of your votes, {counts['jobs']} finished jobs and "
                f"{counts['jams']} jams.")
        if unfinished:
            text += f" Your {len(unfinished)} unfinished jobs are kept; say `{self.prefix}forget me` again after them."
        return [Reply(text, private=True)]


def _rounds(jam) -> str:
    return f"{jam.rounds_done} of {jam.rounds} rounds"
