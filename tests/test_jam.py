"""Jams (bot/commands/jam_service.py, bot/commands/jam.py, bot/storage/jams.py) on the real store and queue.

The jams that play rounds run in the terminal channel (bot/terminal.py, in this process) over a
real LocalQueue whose worker samples the tiny test network without rendering previews
(MELODYBOT_TEST_SKIP_RENDER=1); the votes are cast in the real vote store, as reactions are. The
whole song at the end is rendered for real (FluidSynth, LAME, verovio). Rounds last a second or
two: the test lowers the jam's shortest round (MINUTES_RANGE) for that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import io
import os
import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import QUEUE_WORKER_ENV
from PIL import Image
from test_leadsheet import CHORDS, EVENTS, TUNE
from test_render import STEP_S, decode

from bot.commands import DISCORD, CommandHandler, Request
from bot.commands import jam_service as jams
from bot.commands.jam_service import Ballot, agreed, choose_winner
from bot.commands.songs import append_variation
from bot.jobs import Job, JobState, Result, Variation
from bot.queue.base import StoreQueue
from bot.queue.local import LocalQueue
from bot.render.audio import TAIL_S
from bot.render.leadsheet import engrave
from bot.storage import BotStore
from bot.storage.jams import DONE, GENERATING, STOPPED, VOTING
from bot.storage.jobs import JobStore
from bot.terminal import Terminal
from bot.worker.generator import SLOW_USER, TEST_DELAY_ENV, TEST_SKIP_RENDER_ENV
from model.music.chords import chords_per_step, lead_sheet, parse_lead_sheet
from model.music.events import NO_EVENT, NOTE_OFF, note_on
from model.music.midi_io import MELODY_TRACK, read_midi, write_midi
from model.music.primer import chords_from_markers

ROOT = Path(__file__).resolve().parents[1]
USER, OTHER, CHANNEL = 1001, 1002, 2001
VOTERS = (11, 12, 13)
TIMEOUT_S = 40.0


@pytest.fixture(autouse=True)
def short_rounds(monkeypatch):
    monkeypatch.setattr(jams, "MINUTES_RANGE", (0.001, 60.0))


class LocalBot:
    """One bot process's parts in this event loop: the store, a LocalQueue with its worker, and
    the terminal channel (its handler, update follower and jam service running)."""

    def __init__(self, settings, slow_s: float = 0.0):
        """slow_s: the worker sleeps this long after sampling a job of SLOW_USER's (time to cancel it)."""
        self.settings = settings
        self.stdout = io.StringIO()
        self.worker_env = {**QUEUE_WORKER_ENV, TEST_SKIP_RENDER_ENV: "1", TEST_DELAY_ENV: str(slow_s)}

    async def start(self) -> LocalBot:
        self.store = BotStore(self.settings.database)
        self.queue = LocalQueue(self.settings, worker_env=self.worker_env)
        await self.queue.start()
        self.terminal = Terminal(self.settings, self.queue, self.store, stdin=io.StringIO(), stdout=self.stdout)
        self.terminal.follower.start()
        self.terminal.handler.jams.start()
        return self

    async def close(self) -> None:
        await self.terminal.handler.jams.stop()
        await self.terminal.follower.stop()
        await self.queue.close()
        self.store.close()

    async def say(self, line: str) -> None:
        assert await self.terminal.command(line)

    async def jam_until(self, jam_id: str, done, timeout: float = TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while True:
            jam = await self.store.jams.get(jam_id)
            if done(jam):
                return jam
            if time.monotonic() > deadline:
                raise AssertionError(f"jam {jam_id} is stuck in {jam}; output:\n{self.stdout.getvalue()}")
            await asyncio.sleep(0.05)

    async def output_until(self, pattern: str, timeout: float = TIMEOUT_S) -> re.Match:
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.stdout.getvalue())) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in:\n{self.stdout.getvalue()}")
            await asyncio.sleep(0.05)
        return match


def sheet_steps(sheet: str, steps: int) -> list[str | None]:
    return [None if c is None else c.symbol() for c in chords_per_step(parse_lead_sheet(sheet), steps)]


def melody_notes(midi: bytes) -> list[tuple[int, int, int]]:
    with warnings.catch_warnings():  # verovio writes its tempo on the note track; pretty_midi warns
        warnings.simplefilter("ignore", RuntimeWarning)
        return [(n.start, n.end, n.pitch) for n in read_midi(midi).tracks[0].notes]


# -- the rules, on their own --------------------------------------------------------------------------
def test_the_winner_ties_no_votes_and_early_agreement():
    b = Ballot
    assert choose_winner([b(1, 3, 10.0), b(2, 2, 11.0), b(3, 2, 12.0)], 4) == (2, 2, 3)
    assert choose_winner([b(1, 3, 10.0), b(2, 1, 11.0)], 4) == (3, 1, 2)  # a tie: the earliest vote wins
    assert choose_winner([b(2, 1, 10.0), b(1, 3, 11.0)], 4) == (1, 1, 2)
    assert choose_winner([], 4) == (1, 0, 0)  # no votes: variation 1
    assert choose_winner([b(1, 7, 10.0)], 4) == (1, 0, 0)  # a vote beyond the job's variations does not count
    two = [b(1, 2, 100.0), b(2, 2, 101.0)]
    assert agreed(two, 4, now=111.0, round_s=120) and not agreed(two, 4, now=110.0, round_s=120)
    assert agreed(two, 4, now=102.3, round_s=12) and not agreed(two, 4, now=102.1, round_s=12)  # a tenth of 12 s
    assert not agreed(two[:1], 4, now=500.0, round_s=120)  # one voter is not "everyone agrees"
    assert not agreed([*two, b(3, 1, 90.0)], 4, now=500.0, round_s=120)


def test_the_song_keeps_what_the_worker_cut_from_a_long_primer():
    song = [note_on(60), NO_EVENT, NO_EVENT, NOTE_OFF] * 40  # 160 steps ending in a NOTE_OFF
    prepared = song[32:-1]  # the worker cut two bars and the trailing NOTE_OFF
    continuation = [note_on(67), NO_EVENT, NOTE_OFF, NO_EVENT]
    assert append_variation(song, prepared + continuation, len(prepared)) == song[:-1] + continuation
    assert append_variation(song[:-1], prepared + continuation, len(prepared)) == song[:-1] + continuation


# -- jams that play -----------------------------------------------------------------------------------
async def test_a_jam_of_three_rounds_with_a_tie_an_agreement_and_no_votes(queue_settings):
    bot = await LocalBot(queue_settings(rate_limit_per_minute=1000)).start()
    try:
        await bot.say('!jam C4 E4 G4 A4 rounds=3 bars=1 minutes=0.04 n=3 chords="C | F | G | Am"')
        jam_id = (await bot.output_until(r"Jam (\w+) started by"))[1]
        started = await bot.store.jams.get(jam_id)
        assert (started.rounds, started.minutes, started.state) == (3, 0.04, GENERATING)

        # Round 1: a tie, 1 vote each for 2 and 3; variation 2 was voted first.
        jam = await bot.jam_until(jam_id, lambda j: j.state == VOTING and j.round == 1)
        assert jam.deadline == pytest.approx(time.time() + 2.4, abs=1.0)
        await bot.store.votes.vote(jam.job_id, VOTERS[0], 2)
        await asyncio.sleep(0.02)
        await bot.store.votes.vote(jam.job_id, VOTERS[1], 3)
        # Round 2: both voters agree on 3: it closes before its time is up.
        jam = await bot.jam_until(jam_id, lambda j: j.state == VOTING and j.round == 2)
        for voter in VOTERS[:2]:
            await bot.store.votes.vote(jam.job_id, voter, 3)
        round_2_deadline = jam.deadline
        # Round 3: nobody votes.
        await bot.jam_until(jam_id, lambda j: j.state == VOTING and j.round == 3)
        jam = await bot.jam_until(jam_id, lambda j: j.state == DONE)
        await bot.output_until(r"Jam \w+ is over")
    finally:
        await bot.close()

    store = BotStore(bot.settings.database)
    jobs = JobStore(bot.settings.database)
    try:
        rounds = await store.jams.rounds(jam_id)
        assert [(r.round, r.winner, r.votes, r.total, r.reason) for r in rounds] == [
            (1, 2, 1, 2, "time"), (2, 3, 2, 2, "agreed"), (3, 1, 0, 0, "no votes")]
        assert rounds[1].closed_at < round_2_deadline - 0.5  # agreement closed it early
        results = [jobs.get(r.job_id) for r in rounds]
        assert all(s.state == JobState.DONE for s in results)
        winners = [s.result.variations[r.winner - 1] for s, r in zip(results, rounds)]
        # Each round continues the whole song so far, extending the last winner.
        for before, status, closed in zip(winners, results[1:], rounds):
            assert status.job.primer == before.events
            assert status.job.parent == f"{closed.job_id}:{closed.winner}"
        assert jam.song == winners[-1].events  # a short song: the last winner holds all of it
        # Each round adds its 16 steps after the song so far; a song ending on a NOTE_OFF gives that
        # step to the continuation (the sampler lets the network end the last note).
        ended_off = sum(before.events[-1] == NOTE_OFF for before in winners[:-1])
        assert len(jam.song) == 16 + 3 * 16 - ended_off
        assert all(len(s.result.variations[0].events) - s.result.primer_steps == 16 for s in results)
        # The chords under each round's continuation stay in the song.
        for status, variation in zip(results, winners):
            start = status.result.primer_steps
            assert variation.chords is not None
            assert jam.chords[start:start + 16] == sheet_steps(variation.chords, len(variation.events))[start:]
        # The whole song's files, where the terminal puts them.
        out = bot.settings.data_dir / "out"
        midi = (out / f"song-{jam_id}.mid").read_bytes()
        assert [t.name for t in read_midi(midi).tracks] == [MELODY_TRACK, "KEYS", "BASS", "DRUMS"]  # the band
        assert melody_notes(midi) == melody_notes(write_midi(jam.song))
        segment, _ = decode((out / f"song-{jam_id}.mp3").read_bytes())
        assert segment.duration_seconds == pytest.approx(len(jam.song) * STEP_S + TAIL_S, abs=0.05)
        assert Image.open(out / f"song-{jam_id}-lead-sheet.png").size[0] > 1000
        text = bot.stdout.getvalue()
        for name in (f"song-{jam_id}.mid", f"song-{jam_id}.mp3", f"song-{jam_id}-lead-sheet.png"):
            assert str(out / name) in text  # printed like a job's files
        assert "nobody voted, so variation 1 goes on" in text and "everyone who voted agreed" in text
    finally:
        jobs.close()
        store.close()


async def test_a_restart_in_the_middle_of_a_round_keeps_its_deadline_and_a_cancelled_round_runs_again(
        queue_settings):
    settings = queue_settings(rate_limit_per_minute=1000)
    bot = await LocalBot(settings, slow_s=1.5).start()  # the jam's jobs take 1.5 s: round 2's can be cancelled
    try:
        bot.terminal.request = dataclasses.replace(bot.terminal.request, user_name=SLOW_USER)
        await bot.say("!jam C4 E4 G4 A4 rounds=3 bars=1 minutes=0.1 n=2")
        jam_id = (await bot.output_until(r"Jam (\w+) started by"))[1]
        before = await bot.jam_until(jam_id, lambda j: j.state == VOTING)
        await bot.store.votes.vote(before.job_id, VOTERS[0], 2)
    finally:
        await bot.close()  # the bot stops with the round open
    store = BotStore(settings.database)
    try:
        stored = await store.jams.get(jam_id)
    finally:
        store.close()
    assert (stored.state, stored.round, stored.deadline) == (VOTING, 1, before.deadline)
    assert before.deadline > time.time(), "the round closed too soon for this test"

    bot = await LocalBot(settings, slow_s=1.5).start()
    try:
        jam = await bot.jam_until(jam_id, lambda j: j.round == 2)
        (closed,) = await bot.store.jams.rounds(jam_id)
        assert (closed.winner, closed.reason) == (2, "time")
        assert closed.closed_at >= before.deadline  # on time, not before

        # Round 2's job is cancelled: the round runs again with a new job.
        jam = await bot.jam_until(jam_id, lambda j: j.job_id is not None)
        await bot.say(f"!cancel {jam.job_id}")
        rerun = await bot.jam_until(jam_id, lambda j: j.job_id not in (None, jam.job_id))
        assert (rerun.round, rerun.reruns) == (2, 1)
        await bot.output_until(rf"job {jam.job_id} did not finish \(it was cancelled\); I'm running the round again")
        # The starter stops it: the song so far (one round) is posted.
        await bot.say("!jam stop")
        stopped = await bot.jam_until(jam_id, lambda j: j.state == STOPPED)
        assert stopped.rounds_done == 1 and stopped.note == f"stopped by {bot.terminal.request.user_name}"
        await bot.output_until(r"Jam \w+ stopped after 1 round")
        await bot.output_until(rf"song-{jam_id}\.mid")  # the song is posted after the stop's answer
        assert (settings.data_dir / "out" / f"song-{jam_id}.mid").is_file()
    finally:
        await bot.close()


# -- commands without a worker ------------------------------------------------------------------------
@pytest.fixture
async def handler(tmp_path):
    from bot.settings import Settings

    settings = Settings(data_dir=tmp_path, rate_limit_per_minute=1000)
    store = BotStore(settings.database)
    queue = StoreQueue(settings)  # the queue's bookkeeping without a worker: jobs stay queued
    await queue.start()
    yield CommandHandler(settings, queue, store, platform=DISCORD, rng=random.Random(3))
    await queue.close()
    store.close()


def request(user_id: int = USER, **changes) -> Request:
    return Request(user_id=user_id, channel_id=CHANNEL, user_name={USER: "ann", OTHER: "bob"}.get(user_id, "x"),
                   guild_id=5, **changes)


async def say(handler, line: str, **changes) -> str:
    replies = await handler.handle_line(request(**changes), line)
    return "\n".join(r.text for r in replies)


async def test_one_jam_per_channel_stopped_only_by_its_starter_or_an_admin(handler, monkeypatch):
    monkeypatch.setattr(jams, "MINUTES_RANGE", (0.1, 60.0))  # the real limits here
    for line, error in [("!jam rounds=3", "Give the jam a melody"),
                        ("!jam C4 E4 rounds=0", "a jam has 1 to 16 rounds"),
                        ("!jam C4 E4 rounds=99", "a jam has 1 to 16 rounds"),
                        ("!jam C4 E4 minutes=0.01", "lasts 0.1 to 60 minutes"),
                        ("!jam C4 E4 minutes=soon", "lasts 0.1 to 60 minutes"),
                        ("!jam C4 E4 rounds=16 bars=8", "longer than the 128 bars"),
                        ("!jam C4 E4 tempo=fast", "tempo must be a number")]:
        assert error in await say(handler, line), line
    assert await handler.store.jams.playing_in(CHANNEL) is None

    replies = await handler.handle_line(request(), "!jam C4 E4 G4 rounds=2 minutes=0.5 sound=flute")
    intro, queued = replies
    assert "started by ann: 2 rounds of 4 bars, 0.5 min (30 s) of voting per round" in intro.text
    assert "at least 2 have voted, all for one variation" in intro.text
    job = (await handler.queue.get(queued.status_of)).job
    assert (job.bars, job.instrument, job.user_id) == (4, "flute", USER)
    jam = await handler.store.jams.playing_in(CHANNEL)
    assert (jam.job_id, jam.starter_id, jam.rounds, jam.minutes) == (job.job_id, USER, 2, 0.5)

    assert "already has a jam going" in await say(handler, "!jam C4 E4", user_id=OTHER)
    status = await say(handler, "!jam status", user_id=OTHER)
    assert f"Jam {jam.jam_id}, started by ann: 2 rounds of 4 bars" in status and f"job {job.job_id}" in status

    refused = await say(handler, "!jam stop", user_id=OTHER)
    assert refused == f"Only ann or a channel admin (Manage Channels) can stop jam {jam.jam_id}."
    assert (await handler.store.jams.get(jam.jam_id)).state == GENERATING
    assert (await handler.queue.get(job.job_id)).state == JobState.QUEUED

    stopped = await say(handler, "!jam stop", user_id=OTHER, can_manage_channel=True)
    assert stopped == f"Jam {jam.jam_id} stopped before any round closed."
    assert (await handler.store.jams.get(jam.jam_id)).state == STOPPED
    assert (await handler.queue.get(job.job_id)).state == JobState.CANCELLED
    assert "There is no jam going" in await say(handler, "!jam stop")
    assert "started by bob" in await say(handler, "!jam E4 G4 rounds=1", user_id=OTHER)  # the channel is free again


async def test_switching_the_channel_off_stops_its_jam(handler):
    await say(handler, "!jam C4 E4 G4 rounds=2")
    jam = await handler.store.jams.playing_in(CHANNEL)
    assert "Only members who can manage" in await say(handler, "!channel off")  # refused: the jam goes on
    assert (await handler.store.jams.get(jam.jam_id)).state == GENERATING
    off = await say(handler, "!channel off", user_id=OTHER, can_manage_channel=True)
    assert "melodybot is off in this channel" in off and f"Jam {jam.jam_id} stopped before any round closed." in off
    stopped = await handler.store.jams.get(jam.jam_id)
    assert (stopped.state, stopped.note) == (STOPPED, "stopped by bob")
    assert (await handler.queue.get(jam.job_id)).state == JobState.CANCELLED


async def test_song_of_an_extend_chain_engraves_the_known_melody(handler):
    """Two finished jobs (stored as a worker stores them): the first continued bar 1 of a known
    tune by bar 2, the second extended that variation by bars 3-4. `!song` puts the chain back
    together: MIDI, MP3, lead sheet; the engraving plays back as the tune."""
    jobs = JobStore(handler.settings.database)
    try:
        first = Job(user_id=USER, channel_id=CHANNEL, primer=EVENTS[:16], bars=1, variations=2, guild_id=5,
                    bpm=100, instrument="guitar")
        other = [note_on(60)] + [NO_EVENT] * 31
        jobs.add(first, 10, 100)
        jobs.finish(first.job_id, JobState.DONE, result=Result(first.job_id, 16, [
            Variation(other, b"", b"", "C | C"), Variation(EVENTS[:32], b"", b"", "F | Bb C7")],
            b"", "F major", {}))
        second = Job(user_id=OTHER, channel_id=CHANNEL, primer=EVENTS[:32], bars=2, variations=1, guild_id=5,
                     bpm=100, instrument="guitar", parent=f"{first.job_id}:2")
        jobs.add(second, 10, 100)
        jobs.finish(second.job_id, JobState.DONE, result=Result(second.job_id, 32, [
            Variation(EVENTS, b"", b"", "Am | Dm | C7 | F")], b"", "F major", {}))  # its primer's chords differ
    finally:
        jobs.close()

    events, chords, last, number = await handler.jams.chain_song(second.job_id, None)
    assert (events, last.job.job_id, number) == (EVENTS, second.job_id, 1)
    assert chords == sheet_steps(CHORDS, 64)  # bars 1-2 from the first job, 3-4 from the second's continuation

    (reply,) = await handler.handle_line(request(), f"!song {second.job_id}")
    files = {f.name: f.data for f in reply.files}
    name = f"song-{second.job_id}"
    assert set(files) == {f"{name}.mid", f"{name}.mp3", f"{name}-lead-sheet.png", f"{name}-lead-sheet.pdf"}
    assert f"up to job {second.job_id} variation 1" in reply.text and "with its chords" in reply.text
    midi = read_midi(files[f"{name}.mid"])
    assert [t.name for t in midi.tracks] == [MELODY_TRACK, "KEYS", "BASS", "DRUMS"] and midi.bpm == 100  # the band
    assert lead_sheet(chords_from_markers(midi.markers, 64)) == lead_sheet(jams.chord_objects(chords))
    assert melody_notes(files[f"{name}.mid"]) == TUNE
    assert files[f"{name}-lead-sheet.png"].startswith(b"\x89PNG")
    assert files[f"{name}-lead-sheet.pdf"].startswith(b"%PDF")
    _, _, engraved_midi = engrave(events, jams.chord_objects(chords), 100, "Song", pdf=False, timeout=20)
    assert melody_notes(engraved_midi) == melody_notes(files[f"{name}.mid"]) == TUNE  # the notation is the tune

    (reply,) = await handler.handle_line(request(), f"!song {first.job_id} 2")  # part of the chain
    assert melody_notes(reply.files[0].data) == [n for n in TUNE if n[1] <= 32]
    assert "has variations 1 to 2; there is no 3" in await say(handler, f"!song {first.job_id} 3")


async def test_forget_me_refuses_during_ones_own_jam(handler):
    await say(handler, "!jam C4 E4 G4 rounds=2")
    assert "is still going; `!jam stop` it first" in await say(handler, "!forget me")
    assert "`!forget me` deletes your votes" in await say(handler, "!forget everything")
    await say(handler, "!jam stop")
    assert (await say(handler, "!forget me")).startswith("Done: I deleted 0 of your votes")


async def test_songs_engrave_from_any_thread():
    """verovio keeps its resource path per thread: each song renders in a thread of its own
    (asyncio.to_thread), and the second thread must find the fonts too."""
    for _ in range(2):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a new thread each time
            png, _, midi = await asyncio.get_running_loop().run_in_executor(
                pool, functools.partial(engrave, EVENTS, None, 120, "Thread", pdf=False, timeout=20))
        assert png.startswith(b"\x89PNG") and melody_notes(midi) == TUNE


async def test_help_states_the_jam_rules_and_that_votes_are_kept(handler):
    main = await say(handler, "!help")
    assert "!help jam" in main and "!forget me deletes yours" in main and "Votes are kept to improve the model" in main
    assert len(main) <= 2000  # one Discord message
    text = await say(handler, "!help jam")
    assert len(text) <= 2000
    for words in ("rounds 1-16", "minutes=0.2 is 12 s", "a tie: the variation voted for first",
                  "no votes: variation 1", "A round ends early when at least 2 have voted, all for one variation",
                  "kept to improve the model", "!forget me", "!jam stop", "!song [job|jam]"):
        assert words in text, words


async def test_a_jam_on_discord_votes_with_reactions_and_posts_the_song(queue_settings, tmp_path, monkeypatch):
    """The Discord front-end (dpytest, as in tests/test_discord.py): reactions on a round's result
    are its votes; the round messages and the song's files are posted in the channel."""
    import discord.ext.test as dpytest
    import dpytest_compat as compat
    from test_discord import job_id_in, make_bot, sent, stop_bot

    from bot.storage import NUMBER_EMOJIS

    monkeypatch.chdir(tmp_path)  # dpytest writes its attachments here
    settings = queue_settings(rate_limit_per_minute=1000)
    queue = LocalQueue(settings, worker_env={**QUEUE_WORKER_ENV, TEST_SKIP_RENDER_ENV: "1"})
    await queue.start()
    bot = await make_bot(settings, queue)
    try:
        alice, bob = dpytest.get_config().members[:2]
        seen: list = []  # everything the bot sent, in order

        async def result_of(job_id: str):
            seen.extend(sent())
            shown = await bot.store.messages.result_of_job(job_id)
            return bot._connection._get_message(shown.message_id) if shown else None

        await dpytest.message("!jam C4 E4 G4 A4 rounds=2 bars=1 minutes=0.05 n=2", member=0)
        intro, ack = sent()
        assert "rounds of 1 bar" in compat.first_text(intro)
        jam = await bot.store.jams.playing_in(ack.channel.id)
        message = await _until(lambda: result_of(job_id_in(ack)), lambda m: m is not None)
        opened = await _until(lambda: bot.store.jams.get(jam.jam_id), lambda j: j.state == VOTING)
        await _until(lambda: result_of(jam.job_id), lambda _: any(
            "round 1 of 2: vote" in compat.first_text(m) for m in seen))
        assert any(f"<t:{int(opened.deadline)}:R>" in compat.first_text(m) for m in seen)  # Discord's own clock
        await dpytest.add_reaction(alice, message, NUMBER_EMOJIS[1])
        await dpytest.add_reaction(bob, message, NUMBER_EMOJIS[1])
        second = await _until(lambda: bot.store.jams.get(jam.jam_id), lambda j: j.round == 2 and j.job_id)
        (closed,) = await bot.store.jams.rounds(jam.jam_id)
        assert (closed.winner, closed.votes, closed.reason) == (2, 2, "agreed")
        await _until(lambda: result_of(second.job_id), lambda m: m is not None)
        await _until(lambda: bot.store.jams.get(jam.jam_id), lambda j: j.state == DONE)
        song = await _until(lambda: _song_message(seen, sent()), lambda m: m is not None)
        names = sorted(a.filename for a in song.attachments)
        assert names == sorted(f"song-{jam.jam_id}{end}" for end in (".mid", ".mp3", "-lead-sheet.png",
                                                                      "-lead-sheet.pdf"))
        assert f"Jam {jam.jam_id} is over: 2 rounds, 3 bars" in song.content
        # The slash commands: /jam status, /song <jam>.
        await compat.interact(bot, compat.slash_payload(bot, "jam", {"notes": "status"}))
        assert any(f"Jam {jam.jam_id}" in compat.first_text(m) and "It is over" in compat.first_text(m)
                   for m in sent())
        await compat.interact(bot, compat.slash_payload(bot, "song", {"job": jam.jam_id}))
        (again,) = [m for m in sent() if m.attachments]
        assert sorted(a.filename for a in again.attachments) == names
    finally:
        await bot.handler.jams.stop()
        await stop_bot(bot)
        await queue.close()


async def _until(get, done, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not done(value := await get()):
        assert time.monotonic() < deadline, f"timed out; last: {value}"
        await asyncio.sleep(0.05)
    return value


async def _song_message(seen: list, new: list):
    seen.extend(new)
    return next((m for m in seen if any(a.filename.startswith("song-") for a in m.attachments)), None)


def test_the_bot_renders_a_song_without_importing_torch(tmp_path):
    """The bot process never imports torch (only workers do): a jam's song, lead sheet included,
    renders in it all the same."""
    script = f"""
import asyncio, sys
from pathlib import Path
from bot.commands import CommandHandler
from bot.queue.base import StoreQueue
from bot.settings import Settings
from bot.storage import BotStore
from test_leadsheet import EVENTS

settings = Settings(data_dir=Path({str(tmp_path)!r}))
handler = CommandHandler(settings, StoreQueue(settings), BotStore(settings.database))
reply = asyncio.run(handler.jams.song_reply("song-x", EVENTS, None, 120, "piano", "Song"))
assert [f.name for f in reply.files][-1] == "song-x-lead-sheet.pdf"
print("torch" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


async def test_a_round_waits_for_room_in_the_queue_and_an_unposted_result_still_opens_it(handler):
    """No front-end posts the first round's result (no message remembered): its round opens after
    UNPOSTED_GRACE_S. The next round's job is refused while the starter has the most jobs waiting:
    the channel is told once, and the round is queued when there is room. Time is the tick's `now`."""
    said = []

    async def post(channel_id, reply):
        said.append(reply.text)

    handler.jams.post = post
    (_, queued) = await handler.handle_line(request(), "!jam C4 E4 G4 rounds=2 bars=1 minutes=1 n=2")
    jam = await handler.store.jams.playing_in(CHANNEL)
    jobs = JobStore(handler.settings.database)
    try:
        jobs.finish(jam.job_id, JobState.DONE, result=Result(jam.job_id, 12, [
            Variation(EVENTS[:28], b"", b"", None), Variation(EVENTS[:24], b"", b"", None)], b"", None, {}))
    finally:
        jobs.close()
    for notes in ("C4", "D4", "E4"):  # the starter's cap (3 unfinished jobs)
        await say(handler, f"!continue {notes}")
    now = time.time()
    await handler.jams.tick(now)
    assert (await handler.store.jams.get(jam.jam_id)).state == GENERATING  # not posted yet: wait
    await handler.jams.tick(now + jams.UNPOSTED_GRACE_S + 0.1)
    opened = await handler.store.jams.get(jam.jam_id)
    assert opened.state == VOTING and opened.deadline == pytest.approx(now + jams.UNPOSTED_GRACE_S + 60.1)
    await handler.jams.tick(opened.deadline)  # time is up: nobody voted
    await handler.jams.tick(opened.deadline + 0.1)  # round 2's job: refused
    await handler.jams.tick(opened.deadline + 0.2)  # not tried again so soon, not told twice
    waiting = await handler.store.jams.get(jam.jam_id)
    assert (waiting.round, waiting.job_id, waiting.song) == (2, None, EVENTS[:28])
    assert sum("round 2 waits for room in the queue" in text for text in said) == 1, said
    await say(handler, "!cancel " + (await handler.queue.user_jobs(USER))[-1].job.job_id)
    await handler.jams.tick(opened.deadline + jams.SUBMIT_RETRY_S + 1)
    queued_2 = await handler.store.jams.get(jam.jam_id)
    job_2 = (await handler.queue.get(queued_2.job_id)).job
    assert job_2.primer == EVENTS[:28] and job_2.parent == f"{jam.job_id}:1"
    assert any(f"round 2 of 2: queued as job {job_2.job_id}" in text for text in said), said


async def test_the_terminal_plays_a_piped_jam_to_its_end(queue_settings):
    """`echo '!jam ...' | python -m bot`: at the end of its input the terminal waits for the jam,
    then leaves the song's files behind."""
    settings = queue_settings(rate_limit_per_minute=1000)
    store = BotStore(settings.database)
    stdout = io.StringIO()
    try:
        async with LocalQueue(settings, worker_env={**QUEUE_WORKER_ENV, TEST_SKIP_RENDER_ENV: "1"}) as queue:
            stdin = io.StringIO("!jam C4 E4 G4 A4 rounds=1 bars=1 minutes=0.02 n=2\n")
            await asyncio.wait_for(Terminal(settings, queue, store, stdin=stdin, stdout=stdout).run(), TIMEOUT_S)
    finally:
        store.close()
    text = stdout.getvalue()
    jam_id = re.search(r"Jam (\w+) started by", text)[1]
    assert "End of input: waiting for the jam to finish" in text and f"Jam {jam_id} is over: 1 round, 2 bars" in text
    assert (settings.data_dir / "out" / f"song-{jam_id}-lead-sheet.png").is_file()
    assert text.rstrip().endswith("bot> Bye.")


async def test_a_jam_from_a_sketch_keeps_its_tempo_and_its_chords(handler):
    from midi_factory import TrackSpec, line, make_midi

    from bot.commands import Upload

    tune = line([72, 74, 76, 77, 79, 77, 76, 74])  # two bars of quarters
    chords = [(0, 16, p) for p in (48, 52, 55)] + [(16, 32, p) for p in (53, 57, 60)]  # C, then F
    sketch = make_midi([TrackSpec("Melody", tune), TrackSpec("Piano", chords)], bpm=96)

    async def read():
        return sketch

    replies = await handler.handle_line(request(uploads=[Upload("idea.mid", len(sketch), read)]),
                                        "!jam rounds=2 minutes=0.5 n=2")
    assert "From the sketch idea.mid" in replies[-1].text, replies[-1].text
    jam = await handler.store.jams.playing_in(CHANNEL)
    job = (await handler.queue.get(jam.job_id)).job
    assert (job.bpm, job.bars, jam.song) == (96, 4, job.primer)
    assert job.primer_chords == "C | F" and len(jam.song) == 33  # two bars and the last note's end
    assert jam.chords == ["C"] * 16 + ["F"] * 16 + ["C"]  # the sketch's own chords (repeated, as the worker lays them)
