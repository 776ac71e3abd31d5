"""Jams: a channel writes a song together, round by round.

`!jam C4 E4 G4 A4 rounds=4 bars=4 minutes=2` queues the first round's job like `!continue`. When
its result is posted, the round's voting opens (the deadline is stored in SQLite, bot/storage/
jams.py); the channel votes as on any result (reactions, or `!vote` in the terminal). The round
closes when its time is up, or early when everyone who voted agrees (AGREE_VOTES votes or more,
all for one variation, unchanged for AGREE_HOLD_S, or a tenth of the round if that is shorter).
The winner has the most votes; a tie goes to the variation whose first vote came earliest; with
no votes, variation 1 wins (and the message says so). The winner is appended to the song, and the
next round's job continues the whole song so far. After the last round (or `!jam stop` after at
least one), the whole song is posted: one MIDI (with its chords, when the rounds had chords), one
MP3 and the engraved lead sheet (PNG, and PDF), rendered by bot/render/song.py in a thread.

Everything a jam needs to go on is in the database, so a restarted bot picks up where it was:
`JamService.tick` (every TICK_S) looks at each unfinished jam and does its next step: submit the
round's job, open the round once its result is posted, close a round that is due, re-run a round
whose job failed or was cancelled (a worker that died has its job re-run by the queue itself; if
that keeps failing, the job fails and the round gets a new one), post the finished song.

`chain_song` rebuilds the song of any chain of `!extend`s (Job.parent links back to the first
job) for `!song <job>`; the songs themselves are put together and rendered in bot/commands/songs.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from bot.commands.options import rotate_sheet
from bot.commands.replies import DISCORD, UPLOAD_LIMIT, Reply, how_to_vote
from bot.commands.songs import (
    append_variation,
    append_words,
    bars_of,
    chord_objects,
    extend_song,
    plural,
    song_reply,
    step_symbols,
)
from bot.jobs import Job, JobState, JobStatus, new_job_id
from bot.queue import JobQueue, QueueError
from bot.render.leadsheet import MAX_BARS
from bot.settings import Settings
from bot.storage import BotStore
from bot.storage.jams import DONE, FINISHING, GENERATING, STOPPED, VOTING, Ballot, Jam, JamExists
from model.music.chords import lead_sheet

log = logging.getLogger(__name__)

ROUNDS_RANGE = (1, 16)  # rounds a jam may have
MINUTES_RANGE = (0.1, 60.0)  # voting minutes per round (fractions allowed: 0.2 is 12 s)
DEFAULT_ROUNDS, DEFAULT_MINUTES, DEFAULT_BARS = 4, 2.0, 4
MAX_SONG_BARS = MAX_BARS  # the whole song must fit one lead sheet
AGREE_VOTES = 2  # the early-agreement rule: at least this many votes, all for one variation...
AGREE_HOLD_S = 10.0  # ...unchanged for this long (a tenth of the round if that is shorter)
TICK_S = 0.5  # how often unfinished jams are looked at
JOB_CHECK_S = 2.0  # how often a round's job is looked up while its result is not posted
UNPOSTED_GRACE_S = 30.0  # a finished job whose result no front-end posted opens its round after this
MAX_RERUNS = 2  # a round whose jobs failed this many more times ends the jam
SUBMIT_RETRY_S = 15.0  # wait before submitting a round again when the queue refused it
RANDOM_SEEDS = 100_000

REASONS = {
    "time": "time is up",
    "agreed": "everyone who voted agreed",
    "stopped": "the jam was stopped",
    "no votes": "nobody voted, so variation 1 goes on",
}


class JamError(ValueError):
    """A jam request that cannot be done; the message is for the user."""


# -- the song: events and chords ---------------------------------------------------------------------
# -- the round's rules -------------------------------------------------------------------------------
def choose_winner(ballots: Sequence[Ballot], variations: int) -> tuple[int, int, int]:
    """(winner, its votes, votes cast): the most votes; a tie goes to the variation whose first
    vote came earliest; no votes: variation 1 with 0."""
    counted = [b for b in ballots if 1 <= b.variation <= variations]
    if not counted:
        return 1, 0, 0
    counts = [0] * variations
    first: dict[int, float] = {}
    for ballot in counted:
        counts[ballot.variation - 1] += 1
        first.setdefault(ballot.variation, ballot.voted_at)
    most = max(counts)
    tied = [n for n in range(1, variations + 1) if counts[n - 1] == most]
    winner = min(tied, key=lambda n: first[n])
    return winner, most, len(counted)


def agreed(ballots: Sequence[Ballot], variations: int, now: float, round_s: float) -> bool:
    """The early-agreement rule: at least AGREE_VOTES votes, all for one variation, the newest at
    least AGREE_HOLD_S old (a tenth of the round if that is shorter)."""
    counted = [b for b in ballots if 1 <= b.variation <= variations]
    if len(counted) < AGREE_VOTES or len({b.variation for b in counted}) != 1:
        return False
    return now - max(b.voted_at for b in counted) >= min(AGREE_HOLD_S, round_s / 10)


def agreement_rule() -> str:
    return (f"a round ends early when at least {AGREE_VOTES} have voted, all for one variation, unchanged for "
            f"{AGREE_HOLD_S:g} s (a tenth of the round if shorter)")


# -- the service -------------------------------------------------------------------------------------
class JamService:
    """Runs the jams of one front-end. The front-end sets `post` (how to send a Reply to a
    channel) and `accept` (which channels are its own), then calls `start()`; `stop()` at exit."""

    def __init__(self, settings: Settings, queue: JobQueue, store: BotStore, *, platform: str = DISCORD,
                 tick_s: float = TICK_S, rng: random.Random | None = None):
        self.settings = settings
        self.queue = queue
        self.store = store
        self.platform = platform
        self.prefix = settings.command_prefix
        self.tick_s = tick_s
        self.rng = rng or random.Random()
        self.post: Callable[[int, Reply], Awaitable] | None = None
        self.accept: Callable[[int], bool] = lambda channel_id: True
        self._task: asyncio.Task | None = None
        self._finishing: dict[str, asyncio.Task] = {}  # jam id -> the task rendering and posting its song
        self._next_check: dict[str, float] = {}  # job id -> when to look it up again
        self._done_since: dict[str, float] = {}  # job id -> when it was first seen done without a posted result
        self._retry_at: dict[str, float] = {}  # jam id -> when to submit its round again
        self._changed = asyncio.Event()

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="jams")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._finishing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._finishing.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking at the jams failed; trying again")
            try:
                await asyncio.wait_for(self._changed.wait(), self.tick_s)
            except TimeoutError:
                pass
            self._changed.clear()

    def wake(self) -> None:
        """Look at the jams now (a vote came in, a jam started)."""
        self._changed.set()

    async def idle(self, channel_id: int) -> None:
        """Wait until the channel has no unfinished jam (the terminal, at the end of its input)."""
        while any(j.channel_id == channel_id for j in await self.store.jams.unfinished()):
            await asyncio.sleep(self.tick_s)
        for task in list(self._finishing.values()):
            await asyncio.gather(task, return_exceptions=True)

    async def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for jam in await self.store.jams.unfinished():
            if not self.accept(jam.channel_id):
                continue
            try:
                await self._advance(jam, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("jam %s: round %d failed to move on; trying again", jam.jam_id, jam.round)

    async def _advance(self, jam: Jam, now: float) -> None:
        if jam.state == GENERATING:
            if jam.job_id is None:
                if now >= self._retry_at.get(jam.jam_id, 0.0):
                    await self._submit_round(jam, now)
                return
            posted = await self.store.messages.result_of_job(jam.job_id) is not None
            if not posted and now < self._next_check.get(jam.job_id, 0.0):
                return
            self._next_check[jam.job_id] = now + JOB_CHECK_S
            status = await self.queue.get(jam.job_id)
            if status is None or status.state in (JobState.FAILED, JobState.CANCELLED):
                await self._rerun(jam, status)
            elif status.state == JobState.DONE:
                if posted or now - self._done_since.setdefault(jam.job_id, now) >= UNPOSTED_GRACE_S:
                    await self._open(jam, status, now)
        elif jam.state == VOTING:
            if now >= jam.deadline:
                await self._close(jam, "time")
                return
            variations = await self._variations(jam.job_id)
            if agreed(await self.store.jams.ballots(jam.job_id), variations, now, jam.minutes * 60):
                await self._close(jam, "agreed")
        elif jam.state == FINISHING and jam.jam_id not in self._finishing:
            task = asyncio.create_task(self._finish(jam), name=f"jam {jam.jam_id}: the song")
            self._finishing[jam.jam_id] = task
            task.add_done_callback(lambda _: self._finishing.pop(jam.jam_id, None))

    async def _say(self, channel_id: int, reply: Reply) -> None:
        if self.post is None:
            log.info("jam message for channel %s (no front-end to post it): %s", channel_id, reply.text)
            return
        try:
            await self.post(channel_id, reply)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("posting a jam message to channel %s failed", channel_id)

    async def _variations(self, job_id: str) -> int:
        shown = await self.store.messages.result_of_job(job_id)
        if shown is not None:
            return shown.variations
        status = await self.queue.get(job_id)
        return len(status.result.variations) if status is not None and status.result is not None else 0

    # -- the steps of a round -------------------------------------------------------------------------
    async def _submit_round(self, jam: Jam, now: float) -> None:
        job = await self._round_job(jam)
        try:
            status = await self.queue.submit(job)
        except QueueError as error:
            told = jam.jam_id in self._retry_at
            self._retry_at[jam.jam_id] = now + SUBMIT_RETRY_S
            log.warning("jam %s: round %d could not be queued (%s); trying again in %.0f s", jam.jam_id, jam.round,
                        error, SUBMIT_RETRY_S)  # fmt: skip
            if not told:  # once per wait
                await self._say(jam.channel_id, Reply(f"Jam {jam.jam_id}, round {jam.round} waits for room in the "
                                                      f"queue ({error}); I'll keep trying."))
            return
        self._retry_at.pop(jam.jam_id, None)
        if not await self.store.jams.set_job(jam, job.job_id):  # stopped meanwhile
            await self._cancel_quietly(job.job_id)
            return
        bars = bars_of(len(jam.song))
        again = f" again ({plural(jam.reruns, 'job')} of it failed)" if jam.reruns else ""
        text = (f"Jam {jam.jam_id}, round {jam.round} of {jam.rounds}{again}: queued as job {job.job_id}, position "
                f"{status.position}; it continues the whole song so far ({plural(bars, 'bar')}) by "
                f"{plural(job.bars, 'bar')}.")
        await self._say(jam.channel_id, Reply(text, status_of=job.job_id))

    async def _round_job(self, jam: Jam) -> Job:
        """The round's job: the first round's settings, a new seed; after round 1 it continues the
        whole song, extending the last winner, over the chords where the last round left them."""
        template = Job.from_dict(jam.template)
        changes = dict(job_id=new_job_id(), created_at=time.time(),
                       seed=self.rng.randrange(RANDOM_SEEDS))
        if jam.rounds_done:
            last = (await self.store.jams.rounds(jam.jam_id))[-1]
            changes.update(primer=list(jam.song), parent=f"{last.job_id}:{last.winner}")
            if getattr(template, "chords", None):
                changes["chords"] = rotate_sheet(template.chords, jam.rounds_done * template.bars)
            objects = chord_objects(jam.chords)  # the song's chords so far sound under its primer
            changes["primer_chords"] = lead_sheet(objects) if objects and template.harmony else None
        parts = jam.template.get("jam_lyrics")
        if parts:  # this round's part of the words
            changes["lyrics"] = parts[jam.rounds_done % len(parts)]
        return dataclasses.replace(template, **changes)

    async def _rerun(self, jam: Jam, status: JobStatus | None) -> None:
        reason = status.error if status is not None and status.error else (
            "it was cancelled" if status is not None else "it is gone")
        if jam.reruns >= MAX_RERUNS:
            if await self.store.jams.end(jam, STOPPED, f"round {jam.round}'s jobs failed"):
                await self._say(jam.channel_id, Reply(
                    f"Jam {jam.jam_id} ends: round {jam.round}'s job failed {plural(jam.reruns + 1, 'time')} "
                    f"(last: {reason}). `{self.prefix}song {jam.jam_id}` gives the song so far."))
            return
        self._next_check.pop(jam.job_id, None)
        self._done_since.pop(jam.job_id, None)
        if await self.store.jams.rerun(jam):
            log.info("jam %s: round %d's job %s %s; running the round again", jam.jam_id, jam.round, jam.job_id,
                     status.state.value if status else "is gone")  # fmt: skip
            await self._say(jam.channel_id, Reply(
                f"Jam {jam.jam_id}, round {jam.round}: job {jam.job_id} did not finish ({reason}); "
                "I'm running the round again."))
            self.wake()

    async def _open(self, jam: Jam, status: JobStatus, now: float) -> None:
        deadline = now + jam.minutes * 60
        if not await self.store.jams.open_round(jam, deadline):
            return
        self._done_since.pop(jam.job_id, None)
        self._next_check.pop(jam.job_id, None)
        count = len(status.result.variations)
        text = (f"Jam {jam.jam_id}, round {jam.round} of {jam.rounds}: vote for the variation of job {jam.job_id} "
                f"that goes on the song. {how_to_vote(jam.job_id, count, self.prefix, self.platform)} "
                f"Voting closes {self._when(deadline, now)}, or early once at least {AGREE_VOTES} of you agree.")
        await self._say(jam.channel_id, Reply(text))

    async def _close(self, jam: Jam, reason: str) -> None:
        status = await self.queue.get(jam.job_id)
        if status is None or status.result is None:  # its result is gone (forgotten): run the round again
            await self._rerun(jam, status)
            return
        result = status.result
        winner, votes, total = choose_winner(await self.store.jams.ballots(jam.job_id), len(result.variations))
        if total == 0:
            reason = "no votes"
        song, chords = extend_song(jam.song, jam.chords, result, winner)
        if not await self.store.jams.close_round(jam, winner, votes, total, reason, song, chords):
            return
        why = f"{plural(votes, 'vote')} of {total}; {REASONS[reason]}" if total else REASONS[reason]
        text = (f"Jam {jam.jam_id}, round {jam.round} of {jam.rounds}: variation {winner} of job {jam.job_id} wins "
                f"({why}). The song is now {plural(bars_of(len(song)), 'bar')}.")
        if jam.round < jam.rounds:
            text += f" Round {jam.round + 1} continues it."
        log.info("jam %s: round %d closed (%s): variation %d, %d of %d votes", jam.jam_id, jam.round, reason, winner,
                 votes, total)  # fmt: skip
        await self._say(jam.channel_id, Reply(text))
        self.wake()

    async def _finish(self, jam: Jam) -> None:
        """Render and post the whole song, once."""
        final = DONE if jam.rounds_done >= jam.rounds else STOPPED
        template = Job.from_dict(jam.template)
        title = f"Jam {jam.jam_id}"
        try:
            reply = await self.song_reply(f"song-{jam.jam_id}", jam.song, jam.chords, template.bpm,
                                          template.instrument, title, style=template.style,
                                          words=await self.jam_words(jam))
        except Exception as error:
            log.exception("jam %s: rendering the song failed", jam.jam_id)
            reply = Reply(f"Sorry, I couldn't render the song of jam {jam.jam_id}: {error}")
        if not await self.store.jams.end(jam, final):
            return
        how = "is over" if final == DONE else f"stopped after {plural(jam.rounds_done, 'round')}"
        reply.text = (f"Jam {jam.jam_id} {how}: {plural(jam.rounds_done, 'round')}, "
                      f"{plural(bars_of(len(jam.song)), 'bar')}. Here is the whole song. " + reply.text)
        await self._say(jam.channel_id, reply)

    async def jam_words(self, jam: Jam) -> list | None:
        """Every closed round's words where they landed in the song (None: no round had words)."""
        song, words = list(Job.from_dict(jam.template).primer), []
        for closed in await self.store.jams.rounds(jam.jam_id):
            status = await self.queue.get(closed.job_id)
            if status is None or status.result is None or not 1 <= closed.winner <= len(status.result.variations):
                return words or None  # forgotten: the words up to there
            variation = status.result.variations[closed.winner - 1]
            words = append_words(words, song, variation, status.result.primer_steps)
            song = append_variation(song, variation.events, status.result.primer_steps)
        return words or None

    async def song_reply(self, name: str, events: list[int], chords: list[str | None] | None, bpm: float,
                         instrument: str, title: str, upload_limit: int = UPLOAD_LIMIT, style: str = "pop",
                         words: list | None = None) -> Reply:
        """The song's files as one reply (bot/commands/songs.py), with this bot's soundfont."""
        return await song_reply(self.settings, name, events, chords, bpm, instrument, title, upload_limit, style,
                                words)

    def _when(self, deadline: float, now: float) -> str:
        if self.platform == DISCORD:
            return f"<t:{int(deadline)}:R>"  # Discord shows it as "in 2 minutes", in each reader's time
        return f"in {_seconds(deadline - now)}"

    async def _cancel_quietly(self, job_id: str) -> None:
        try:
            await self.queue.cancel(job_id)
        except QueueError:  # finished already
            pass

    # -- what the commands ask ------------------------------------------------------------------------
    async def begin(self, first: Job, rounds: int, minutes: float, words: list[str] | None = None) -> Jam:
        """A new jam whose first round is `first` (already queued). JamError if the channel has one.
        `words`: each round's part of the lyrics (model.lyrics.setting.round_lines), kept in the template."""
        template = {**first.to_dict(), **({"jam_lyrics": words} if words else {})}  # Job.from_dict skips it
        jam = Jam(jam_id=new_job_id(), channel_id=first.channel_id, guild_id=first.guild_id,
                  starter_id=first.user_id, starter_name=first.user_name, rounds=rounds, minutes=minutes,
                  template=template, song=list(first.primer), job_id=first.job_id)
        primer_chords = getattr(first, "primer_chords", None)
        if primer_chords:
            jam.chords = step_symbols(primer_chords, len(first.primer))
        try:
            await self.store.jams.create(jam)
        except JamExists:
            raise JamError(self.in_play_text()) from None
        log.info("jam %s started in channel %s by user %s: %d rounds, %g min, first job %s", jam.jam_id,
                 jam.channel_id, jam.starter_id, rounds, minutes, first.job_id)  # fmt: skip
        self.wake()
        return jam

    def in_play_text(self) -> str:
        return (f"This channel already has a jam going; one at a time. `{self.prefix}jam status` shows it, "
                f"`{self.prefix}jam stop` ends it (its starter or a channel admin).")

    async def stop_jam(self, channel_id: int, user_id: int, user_name: str, can_manage: bool) -> str:
        jam = await self.store.jams.playing_in(channel_id)
        if jam is None:
            return "There is no jam going in this channel."
        if user_id != jam.starter_id and not can_manage:
            return (f"Only {jam.starter_name or 'the member who started it'} or a channel admin (Manage Channels) "
                    f"can stop jam {jam.jam_id}.")
        note = f"stopped by {user_name or user_id}"
        state = FINISHING if jam.rounds_done else STOPPED
        if not await self.store.jams.end(jam, state, note):
            return await self.stop_jam(channel_id, user_id, user_name, can_manage)  # it moved on meanwhile: again
        if jam.job_id and jam.state == GENERATING:
            await self._cancel_quietly(jam.job_id)
        log.info("jam %s %s in round %d", jam.jam_id, note, jam.round)
        self.wake()
        if state == FINISHING:
            return (f"Jam {jam.jam_id} stopped after {plural(jam.rounds_done, 'round')}; the song so far "
                    f"({plural(bars_of(len(jam.song)), 'bar')}) follows.")
        return f"Jam {jam.jam_id} stopped before any round closed."

    async def status_text(self, channel_id: int, now: float | None = None) -> str:
        now = time.time() if now is None else now
        jam = await self.store.jams.playing_in(channel_id) or await self.store.jams.latest_in(channel_id)
        if jam is None:
            return (f"No jam in this channel yet. Start one: `{self.prefix}jam C4 E4 G4 A4 rounds={DEFAULT_ROUNDS} "
                    f"bars={DEFAULT_BARS} minutes={DEFAULT_MINUTES:g}`.")
        template = Job.from_dict(jam.template)
        head = (f"Jam {jam.jam_id}, started by {jam.starter_name or jam.starter_id}: {plural(jam.rounds, 'round')} "
                f"of {plural(template.bars, 'bar')}, {jam.minutes:g} min of voting each; the song is "
                f"{plural(bars_of(len(jam.song)), 'bar')}.")
        if jam.state == GENERATING:
            now_text = (f"Round {jam.round}: job {jam.job_id} is being made." if jam.job_id
                        else f"Round {jam.round}: its job is about to be queued.")
        elif jam.state == VOTING:
            ballots = await self.store.jams.ballots(jam.job_id)
            leader, votes, total = choose_winner(ballots, await self._variations(jam.job_id))
            lead = f"variation {leader} leads with {plural(votes, 'vote')} of {total}" if total else "no votes yet"
            now_text = (f"Round {jam.round}: voting on job {jam.job_id} closes {self._when(jam.deadline, now)}; "
                        f"{lead}.")
        elif jam.state == FINISHING:
            now_text = "The song is being rendered."
        else:
            now_text = f"It is over ({jam.note or 'all rounds played'})."
        lines = [head, now_text]
        for closed in await self.store.jams.rounds(jam.jam_id):
            why = REASONS[closed.reason]
            if closed.total:
                why = f"{plural(closed.votes, 'vote')} of {closed.total}; {why}"
            lines.append(f"  round {closed.round}: job {closed.job_id} variation {closed.winner} ({why})")
        return "\n".join(lines)

    async def chain_song(self, job_id: str, variation: int | None) -> tuple[list[int], list[str | None] | None,
                                                                              JobStatus, int]:
        """The song of a chain of !extend ending at `job_id`'s `variation` (default: the jam's
        winner of that round, else the vote leader by the jam's rule, else 1): its events, chord
        symbols, the last job, and the variation taken."""
        last = await self.queue.get(job_id)
        if last is None or last.result is None:
            raise JamError(f"Job {job_id} has no result to make a song of.")
        count = len(last.result.variations)
        if variation is None:
            closed = await self.store.jams.closed_round(job_id)
            if closed is not None:
                variation = closed.winner
            else:
                variation = choose_winner(await self.store.jams.ballots(job_id), count)[0]
        if not 1 <= variation <= count:
            raise JamError(f"Job {job_id} has variations 1 to {count}; there is no {variation}.")
        chain = [(last, variation)]
        seen = {job_id}
        while chain[0][0].job.parent:
            parent_id, _, number = chain[0][0].job.parent.partition(":")
            parent = await self.queue.get(parent_id) if parent_id not in seen else None
            if parent is None or parent.result is None or not number.isdigit():
                break  # forgotten, or a reroll's origin: the song starts at this job's primer
            if not 1 <= int(number) <= len(parent.result.variations):
                break
            seen.add(parent_id)
            chain.insert(0, (parent, int(number)))
        first = chain[0][0].job
        song = list(first.primer)
        chords = step_symbols(getattr(first, "primer_chords", None), len(song))
        for status, number in chain:
            song, chords = extend_song(song, chords, status.result, number)
        return song, chords, last, variation


def _seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
