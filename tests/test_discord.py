"""The Discord front-end end to end: the real MelodyBot driven through dpytest (with the shims in
tests/dpytest_compat.py), the real embedded queue and worker process (tiny network, real
rendering), slash commands and button clicks through discord.py's own interaction parsing.

One queue and worker serve the whole module (starting a worker costs seconds); each test gets a
fresh bot, a fresh fake Discord and its own working directory (dpytest writes dpytest_N.dat files).
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import re
import sqlite3
import statistics
import time
from pathlib import Path

import discord
import discord.ext.test as dpytest
import dpytest_compat as compat
import mido
import pytest
import pytest_asyncio
from conftest import QUEUE_WORKER_ENV
from midi_factory import TrackSpec, line, make_midi
from PIL import Image

from bot.commands import COMMANDS, RateLimiter
from bot.discord_app import INVITE_PERMISSIONS, MelodyBot
from bot.jobs import Job, JobState, JobStatus
from bot.queue import make_queue
from bot.settings import Settings
from bot.storage import NUMBER_EMOJIS, BotStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

JOB_TIMEOUT_S = 60.0  # a job of the tiny network with 2-4 rendered variations takes a few seconds


@pytest.fixture(scope="module")
def settings(tmp_path_factory, tiny_weights) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("discord-data"),
        weights=tiny_weights,
        device="cpu",
        default_bars=2,
        rate_limit_per_minute=1000,
        max_queued_per_user=8,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def queue(settings):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in QUEUE_WORKER_ENV.items():
            patch.setenv(name, value)
        queue = make_queue(settings)
        await queue.start()
        try:
            yield queue
        finally:
            await queue.close()


async def make_bot(settings, queue, members: int = 3) -> MelodyBot:
    compat.install()
    intents = discord.Intents.default()
    intents.members = intents.message_content = True  # dpytest keeps its fake members in the member cache
    bot = MelodyBot(settings, queue, BotStore(settings.database), sync_commands=False, intents=intents)
    await bot._async_setup_hook()
    dpytest.configure(bot, members=members)
    await bot.setup_hook()  # after configure: dpytest replaces the connection state the items live in
    await dpytest.empty_queue()
    return bot


async def stop_bot(bot: MelodyBot) -> None:
    await bot.follower.stop()
    bot.store.close()
    await dpytest.empty_queue()


@pytest_asyncio.fixture(loop_scope="module")
async def bot(settings, queue, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bot = await make_bot(settings, queue)
    yield bot
    await stop_bot(bot)


# -- helpers ----------------------------------------------------------------------------------------
def sent() -> list[discord.Message]:
    """The bot's messages since the last call."""
    messages = []
    while not dpytest.runner.sent_queue.empty():
        messages.append(dpytest.runner.sent_queue.get_nowait())
    return messages


def job_id_in(text: str | discord.Message) -> str:
    if isinstance(text, discord.Message):
        text = compat.first_text(text)
    match = re.search(r"job ([a-z0-9]{6})", text)
    assert match, text
    return match[1]


async def until(predicate, timeout: float = JOB_TIMEOUT_S, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def result_message(bot: MelodyBot, job_id: str, reactions: int | None = None) -> discord.Message:
    """Wait for the job's result message (and its vote reactions), return it."""

    async def posted():
        shown = await bot.store.messages.result_of_job(job_id)
        if shown is None:
            status = await bot.queue.get(job_id)
            assert status.state != JobState.FAILED, status.error
            return None
        message = bot._connection._get_message(shown.message_id)
        data = compat.message_data(message.channel, message.id)
        count = reactions if reactions is not None else shown.variations
        if sum(1 for r in data.get("reactions", []) if r["me"]) < count:
            return None
        return message

    message = await until(posted, what=f"the result of job {job_id}")
    sent()  # the result message and the edits before it: tests look at what comes next
    return message


def read_attachment(attachment: discord.Attachment) -> bytes:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(attachment.url).path)).read_bytes()


def vote_payload(message_id: int, channel_id: int, guild_id: int, user_id: int, number: int) -> dict:
    return {"message_id": message_id, "channel_id": channel_id, "guild_id": guild_id, "user_id": user_id,
            "emoji": {"id": None, "name": NUMBER_EMOJIS[number - 1]}}


def moderators(guild: discord.Guild) -> discord.Role:
    """A role that may manage channels (dpytest writes member overwrites in a form discord.py 2 ignores)."""
    return dpytest.backend.make_role("mods", guild, permissions=discord.Permissions(manage_channels=True).value)


async def ask(text: str, member=0) -> str:
    """Send a command, return the bot's answers to it (not results of jobs finishing meanwhile)."""
    sent()
    await dpytest.message(text, member=member)
    return "\n".join(compat.first_text(m) for m in sent() if not m.attachments)


async def tally_text(job_id: str) -> str:
    return await ask(f"!votes {job_id}")


# -- the tests --------------------------------------------------------------------------------------
async def test_invite_permissions():
    assert INVITE_PERMISSIONS.value == 101440
    assert not INVITE_PERMISSIONS.manage_messages and not INVITE_PERMISSIONS.administrator


async def test_continue_posts_one_message_with_every_file(bot):
    channel = dpytest.get_config().channels[0]
    await dpytest.message("!continue C4 E4 G4 A4 seed=42 sound=guitar")
    (ack,) = sent()
    pattern = r"Queued as job [a-z0-9]{6}, position \d+\. From your notes: .*, seed 42\."
    assert re.fullmatch(pattern, compat.first_text(ack))
    job_id = job_id_in(ack)

    message = await result_message(bot, job_id)
    assert f"Job {job_id}: 4 continuations" in message.content
    assert "seed=42" in message.content and "guitar" in message.content and "Key: " in message.content
    names = sorted(a.filename for a in message.attachments)
    assert names == sorted([f"{job_id}-{n}.{ext}" for n in range(1, 5) for ext in ("mid", "mp3")] + [f"{job_id}.png"])
    for attachment in message.attachments:
        data = read_attachment(attachment)
        if attachment.filename.endswith(".mid"):
            midi = mido.MidiFile(file=io.BytesIO(data))
            assert any(m.type == "note_on" for track in midi.tracks for m in track)
        elif attachment.filename.endswith(".mp3"):
            assert data[:3] == b"ID3" or data[0] == 0xFF
        else:
            assert Image.open(io.BytesIO(data)).format == "PNG"
    reactions = compat.message_data(channel, message.id)["reactions"]
    assert [r["emoji"]["name"] for r in reactions] == list(NUMBER_EMOJIS[:4]) and all(r["me"] for r in reactions)
    assert compat.button_ids(message) == [f"melodybot:extend:{job_id}", f"melodybot:again:{job_id}"]
    # The acknowledgement was edited as the job moved on.
    assert compat.content_now(ack) == f"Job {job_id} is done: the results are below."


async def test_attached_sketch_uses_its_tempo(bot, tmp_path):
    sketch = make_midi([TrackSpec("Melody", line([60, 62, 64, 65, 67, 65, 64, 62]))], bpm=96)
    await compat.message_with_files("!continue bars=1 variations=2",
                                    [compat.attachment("chorus.mid", sketch, tmp_path)])
    (ack,) = sent()
    assert "From the sketch chorus.mid (8 notes from Melody)" in compat.first_text(ack)
    message = await result_message(bot, job_id_in(ack))
    assert "at 96 BPM" in message.content
    assert len(message.attachments) == 5  # 2 MIDI + 2 MP3 + 1 picture


@pytest.mark.parametrize(("command", "files", "expected"), [
    ("!continue C4 H4 G4", None, '"H4" is not a note'),
    ("!continue C4 E4 bars=1000", None, "1 to 32 bars"),
    ("!continue C4 E4 temp=-1", None, "0.05 (safe) to 3 (wild)"),
    ("!continue C4 E4 variations=9", None, "1 to 4 variations"),
    ("!continue C4 E4 colour=blue", None, "Options: bars, temp"),
    ("!continue C4 E4 sound=kazoo", None, "no instrument called `kazoo`"),
    ("!continue", None, "Give me a melody"),
    ("!continue", [("notes.txt", b"C4 E4 G4", None)], "only continue MIDI files"),
    ("!continue", [("huge.mid", b"MThd", 5 * 1024 * 1024)], "at most 1024 KiB"),
    ("!continue", [("broken.mid", b"MThd\x00\x00\x00\x06garbage", None)], "I can't use that MIDI file"),
])
async def test_bad_input_gets_a_plain_answer(bot, tmp_path, command, files, expected):
    if files:
        await compat.message_with_files(command, [compat.attachment(n, d, tmp_path, size=s) for n, d, s in files])
    else:
        await dpytest.message(command)
    (reply,) = sent()
    assert expected in reply.content
    assert "Traceback" not in reply.content
    assert await bot.queue.user_jobs(dpytest.get_config().members[0].id) == []


async def test_votes_move_and_survive_a_restart(bot, settings, queue, tmp_path):
    config = dpytest.get_config()
    alice, bob, carol = config.members[:3]
    await dpytest.message("!continue C4 D4 E4 variations=3 bars=1")
    job_id = job_id_in(sent()[0])
    message = await result_message(bot, job_id)

    await dpytest.add_reaction(alice, message, NUMBER_EMOJIS[0])
    await dpytest.add_reaction(bob, message, NUMBER_EMOJIS[1])
    await dpytest.add_reaction(carol, message, NUMBER_EMOJIS[1])
    await dpytest.add_reaction(alice, message, "\U0001f525")  # not a number: no vote
    assert (await bot.store.votes.tally(job_id, 3)).counts == (1, 2, 0)
    text = await tally_text(job_id)
    assert "3 votes" in text and re.search(rf"{NUMBER_EMOJIS[1]} .* 2  <- leading", text), text

    await dpytest.add_reaction(alice, message, NUMBER_EMOJIS[2])  # moves alice's vote 1 -> 3
    assert (await bot.store.votes.tally(job_id, 3)).counts == (0, 2, 1)
    await dpytest.remove_reaction(alice, message, NUMBER_EMOJIS[0])  # not her vote any more: no change
    await dpytest.remove_reaction(bob, message, NUMBER_EMOJIS[1])  # takes bob's vote back
    assert (await bot.store.votes.tally(job_id, 3)).counts == (0, 1, 1)

    # A new bot process: no cache, a fresh fake Discord; the same database.
    old = (message.id, message.channel.id, message.guild.id)
    old_data = compat.message_data(message.channel, message.id)
    await stop_bot(bot)
    bot2 = await make_bot(settings, queue)
    # dpytest's second fake Discord has a new guild id (real Discord keeps it): move the job there,
    # since jobs are only visible in the guild they were made in.
    with sqlite3.connect(settings.database) as db:
        db.execute("UPDATE queue_jobs SET job = json_set(job, '$.guild_id', ?) WHERE job_id = ?",
                   (dpytest.get_config().guilds[0].id, job_id))
    try:
        assert (await bot2.store.votes.tally(job_id, 3)).counts == (0, 1, 1)
        bot2._connection.parse_message_reaction_add(vote_payload(*old, user_id=bob.id, number=3))
        bot2._connection.parse_message_reaction_add(vote_payload(*old, user_id=bot2.user.id, number=1))  # ignored
        await dpytest.run_all_events()
        assert (await bot2.store.votes.tally(job_id, 3)).counts == (0, 1, 2)
        shown = await tally_text(job_id)
        assert "<- leading" in shown.split(NUMBER_EMOJIS[2])[1], shown

        # The buttons under the old message still work: extend the leader (variation 3).
        payload = compat.button_payload(bot2, message, f"melodybot:extend:{job_id}", data=old_data)
        await compat.interact(bot2, payload)
        (ack,) = sent()
        child = job_id_in(ack)
        assert child != job_id and f"Extending {job_id} variation 3 (the vote leader)" in compat.first_text(ack)
        status = await bot2.queue.get(child)
        clicker = dpytest.get_config().members[0]  # of the new fake Discord
        assert status.job.parent == f"{job_id}:3" and status.job.user_id == clicker.id
        parent = await bot2.queue.get(job_id)
        assert status.job.primer == parent.result.variations[2].events
        await result_message(bot2, child)
    finally:
        await stop_bot(bot2)


async def test_extend_and_again(bot):
    await dpytest.message("!continue E4 G4 C5 bars=1 variations=2 temp=0.8 sound=flute")
    job_id = job_id_in(sent()[0])
    await result_message(bot, job_id)
    parent = await bot.queue.get(job_id)

    await dpytest.message(f"!extend {job_id} 2 bars=2")
    (ack,) = sent()
    assert f"Extending {job_id} variation 2:" in compat.first_text(ack)
    child = (await bot.queue.get(job_id_in(ack))).job
    assert child.primer == parent.result.variations[1].events and child.parent == f"{job_id}:2"
    assert (child.bars, child.temperature, child.instrument, child.variations) == (2, 0.8, "flute", 2)

    await dpytest.message(f"!again {job_id}")
    again = (await bot.queue.get(job_id_in(sent()[0]))).job
    assert again.primer == parent.job.primer and again.seed != parent.job.seed
    assert (again.bars, again.temperature, again.instrument) == (1, 0.8, "flute")

    assert "has variations 1 to 2" in await ask(f"!extend {job_id} 7")
    assert "There is no job zzzzzz" in await ask("!extend zzzzzz")
    for job in (child, again):
        await result_message(bot, job.job_id)


async def test_slash_continue_with_notes_and_with_a_sketch(bot, tmp_path):
    payload = compat.slash_payload(bot, "continue", {"notes": "C4 E4 G4 A4 variations=1 bars=1"})
    await compat.interact(bot, payload)
    (ack,) = sent()
    assert compat.first_text(ack).startswith("Queued as job")
    await result_message(bot, job_id_in(ack))

    sketch = make_midi([TrackSpec("lead", line([67, 65, 64, 62]))], bpm=140)
    payload = compat.slash_payload(bot, "continue", {"notes": "variations=1 bars=1"},
                                   attachments={"sketch": compat.attachment("hook.mid", sketch, tmp_path)})
    await compat.interact(bot, payload)
    (ack,) = sent()
    assert "From the sketch hook.mid" in compat.first_text(ack)
    message = await result_message(bot, job_id_in(ack))
    assert "at 140 BPM" in message.content
    # The status message sent through the interaction was edited as the job moved on.
    assert compat.content_now(ack).endswith("is done: the results are below.")

    wav = compat.attachment("a.wav", b"RIFF", tmp_path)
    payload = compat.slash_payload(bot, "continue", attachments={"sketch": wav})
    await compat.interact(bot, payload)
    assert "only continue MIDI files" in sent()[0].content


async def test_channel_switch_needs_manage_channels(bot):
    config = dpytest.get_config()
    channel, member = config.channels[0], config.members[1]
    assert "Only members who can manage this channel" in await ask("!channel off", member=member)

    await dpytest.add_role(member, moderators(channel.guild))
    assert "off in this channel" in await ask("!channel off", member=member)
    assert await ask("!help") == ""  # switched off: no answer at all
    assert await ask("!continue C4 E4") == ""
    await compat.interact(bot, compat.slash_payload(bot, "help"))
    (private,) = sent()
    assert "switched off" in private.content and private.id in compat.EPHEMERAL

    # Survives a restart: the switch is in the database.
    assert not await BotStore(bot.settings.database).channels.enabled(channel.id)
    assert "melodybot is on" in await ask("!channel on", member=member)
    assert "melodybot continues your melody" in await ask("!help")


async def test_rate_limit_answers_once_then_stays_quiet(bot):
    bot.handler.limiter = RateLimiter(2)
    for _ in range(4):
        await dpytest.message("!queue")
    replies = [m.content for m in sent()]
    assert len(replies) == 3 and replies[2].startswith("Slow down: 2 commands a minute")


def renice(pid: int, niceness: int) -> None:
    """Every thread of a process (Linux nices threads one by one; new ones inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


async def test_help_answers_within_100_ms_while_four_jobs_run(bot):
    # This measures the bot's event loop, not the kernel's scheduler: on this 2-core machine the
    # worker's FluidSynth and ffmpeg processes (and a training job) would otherwise compete with
    # the bot for the cores. In production the worker runs on other cores or machines.
    async def worker_pid():
        return bot.queue.worker_pid

    renice(await until(worker_pid, what="the worker process"), 19)
    # `python -m bot` freezes what start-up loaded (gc.freeze), so the collector's full passes stay
    # short; do the same here, where pytest and torch put ~220k objects in the process.
    gc.freeze()
    try:
        await time_help_while_jobs_run(bot)
    finally:
        gc.unfreeze()


async def time_help_while_jobs_run(bot):
    for notes in ("C4 E4 G4", "D4 F4 A4", "E4 G4 B4", "F4 A4 C5"):
        await dpytest.message(f"!continue {notes} bars=4")
    jobs = [job_id_in(m) for m in sent()]
    assert len(jobs) == 4

    async def running():
        states = [(await bot.queue.get(j)).state for j in jobs]
        return JobState.RUNNING in states

    await until(running, what="a job to start")
    # Time !help from now until every result is posted: generation in the worker process and the
    # bot's own part (decoding results, uploading files, adding reactions) both overlap.
    latencies = []
    while not all([await bot.store.messages.result_of_job(j) for j in jobs]) and len(latencies) < 600:
        started = time.perf_counter()
        await dpytest.message("!help")
        latencies.append(time.perf_counter() - started)
        assert any(compat.first_text(m).startswith("```") for m in sent()), "no help reply"
        await asyncio.sleep(0.02)
    assert len(latencies) >= 5, "the jobs finished before the bot could be timed"
    worst, median = max(latencies) * 1000, statistics.median(latencies) * 1000
    print(f"help latency over {len(latencies)}: median {median:.1f} ms, worst {worst:.1f} ms")
    assert worst < 100, f"help took {worst:.0f} ms (median {median:.0f} ms over {len(latencies)})"
    for job_id in jobs:
        await result_message(bot, job_id)


async def test_a_failed_job_is_reported_in_plain_words(bot):
    """What the queue reports when a worker died or a job failed: the status message says it, and
    a new message tells the channel (an edit alone is easy to miss)."""
    channel = dpytest.get_config().channels[0]
    job = Job(user_id=1, channel_id=channel.id, primer=[2], job_id="fail42")
    ack = await channel.send("Queued as job fail42, position 1.")
    await bot._remember_status(job.job_id, channel.id, ack.id, ack.content)
    sent()
    await bot.deliver(JobStatus(job, JobState.FAILED, error="the worker stopped unexpectedly; please try again."))
    expected = "Job fail42 failed: the worker stopped unexpectedly; please try again."
    assert compat.content_now(ack) == expected
    assert [compat.first_text(m) for m in sent()] == [expected]
    assert await bot.store.messages.status_message(job.job_id) is None


async def test_a_result_that_cannot_be_posted_is_explained(bot, monkeypatch):
    await dpytest.message("!continue C4 E4 G4 bars=1 variations=1")
    job_id = job_id_in(sent()[0])

    tries = []

    async def refuse(status):
        tries.append(status.replayed)
        raise discord.HTTPException(compat.back.FakeRequest(500, "Server Error"), "upload failed")

    monkeypatch.setattr(bot, "_post_result", refuse)
    monkeypatch.setattr(bot.follower, "DELIVERY_RETRIES_S", (0.01, 0.01, 0.01))  # 2, 10 and 30 s in the bot

    async def told():
        return [m for m in sent() if "couldn't post the result of job" in compat.first_text(m)]

    (message,) = await until(told, what="the apology")
    assert f"try `!again {job_id}`" in compat.first_text(message) and "HTTPException" in compat.first_text(message)
    assert tries == [False, True, True, True]  # tried again three times before the apology


async def test_slash_channel_and_help(bot):
    config = dpytest.get_config()
    member = config.members[2]
    assert await ask("!channel") == "melodybot is on in this channel."
    await dpytest.add_role(member, moderators(config.guilds[0]))
    await compat.interact(bot, compat.slash_payload(bot, "channel", {"state": "off"}, member=member))
    assert "off in this channel" in compat.first_text(sent()[0])
    await compat.interact(bot, compat.slash_payload(bot, "channel", {"state": "on"}, member=member))
    assert "on in this channel" in compat.first_text(sent()[0])
    await compat.interact(bot, compat.slash_payload(bot, "help"))
    assert "melodybot continues your melody" in compat.first_text(sent()[0])


async def test_slash_commands_are_uploaded_only_when_they_change(bot, monkeypatch):
    calls = []

    async def sync(*args, **kwargs):
        calls.append(1)
        return bot.tree.get_commands()

    monkeypatch.setattr(bot.tree, "sync", sync)
    await bot._sync_app_commands()
    await bot._sync_app_commands()
    assert len(calls) == 1
    assert {c.name for c in bot.tree.get_commands()} == {"continue", "extend", "again", "votes", "queue", "cancel",
                                                         "channel", "help", "jam", "song"}


async def test_discord_knows_every_command_name_of_the_handler(bot):
    assert {name for command in bot.commands for name in (command.name, *command.aliases)} == set(COMMANDS)


async def test_a_result_replayed_after_a_restart_is_not_posted_twice(bot):
    """The bot killed between posting a result and recording it as delivered emits it again at
    the next start (JobStatus.replayed): the message already in the channel is found, not re-sent."""
    await dpytest.message("!continue C4 E4 G4 variations=1 bars=1")
    job_id = job_id_in(sent()[0])
    message = await result_message(bot, job_id, reactions=1)
    status = await bot.queue.get(job_id)
    status.replayed = True
    await bot.deliver(status)  # found through the result_messages table
    assert [m for m in sent() if compat.first_text(m).startswith(f"Job {job_id}: ")] == []
    with sqlite3.connect(bot.settings.database) as db:  # killed before even that row was written
        db.execute("DELETE FROM result_messages WHERE job_id = ?", (job_id,))
    await bot.deliver(status)  # found in the channel's history
    assert [m for m in sent() if compat.first_text(m).startswith(f"Job {job_id}: ")] == []
    assert (await bot.store.messages.result_of_job(job_id)).message_id == message.id
    status.replayed = False  # a first delivery does post
    await bot.deliver(status)
    assert [m.id for m in sent() if compat.first_text(m).startswith(f"Job {job_id}: ")] != []


async def test_a_quick_vote_and_take_back_are_applied_in_order(bot):
    """Both gateway events are parsed before either is handled (each runs in its own task): the
    remove must not be applied before the add, or a vote would stay that the user took back."""
    member = dpytest.get_config().members[0]
    await dpytest.message("!continue C4 E4 G4 variations=2 bars=1")
    job_id = job_id_in(sent()[0])
    message = await result_message(bot, job_id, reactions=2)
    where = (message.id, message.channel.id, message.guild.id)
    for _ in range(5):
        bot._connection.parse_message_reaction_add(vote_payload(*where, user_id=member.id, number=2))
        bot._connection.parse_message_reaction_remove(vote_payload(*where, user_id=member.id, number=2))
    await dpytest.run_all_events()
    await until(lambda: asyncio.sleep(0.05, result=not bot._vote_locks), what="the reactions to be applied")
    assert (await bot.store.votes.tally(job_id, 2)).counts == (0, 0)
    bot._connection.parse_message_reaction_add(vote_payload(*where, user_id=member.id, number=1))
    await dpytest.run_all_events()
    await until(lambda: asyncio.sleep(0.05, result=not bot._vote_locks), what="the vote to be applied")
    assert (await bot.store.votes.tally(job_id, 2)).counts == (1, 0)
