"""bot/commands/: parsing, options, every kind of bad input, and the replies, on the real queue.

The queue is the SQLite bookkeeping both backends share (bot/queue/base.py's StoreQueue over
bot/store.py: positions, caps, cancel, results), without a worker, so jobs stay where the commands
put them. The finished jobs that !extend, !again, !votes and the result message need were made once
per module by a real worker (LocalQueue, tiny network, real rendering); a test that asks for
`results` starts from a copy of that database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import QUEUE_WORKER_ENV, collect
from midi_factory import TrackSpec, line, make_midi

from bot.commands import (
    DISCORD,
    TERMINAL,
    CommandError,
    CommandHandler,
    RateLimiter,
    Reply,
    Request,
    UpdateFollower,
    Upload,
    parse_options,
    split_tokens,
)
from bot.jobs import Job, JobState, JobStatus, Result
from bot.queue.base import StoreQueue
from bot.queue.local import LocalQueue
from bot.settings import Settings
from bot.storage import NUMBER_EMOJIS, BotStore
from bot.storage.jobs import JobStore
from model.defaults import DEFAULT_TOP_P
from model.melody.form import bar_sets, jaccard
from model.melody.sampling import prepare_primer
from model.music.primer import NOTATION, parse_notes

USER, OTHER, CHANNEL = 1001, 1002, 2001

# The finished jobs the `results` fixture provides, by name: the commands that made them.
MADE = {
    "flute": "!continue C4 E4 G4 bars=2 temp=0.7 sound=flute n=3",
    "reroll": "!continue C4 E4 G4 seed=5 bars=3 key=off n=2",
    "post": "!continue C4 E4 seed=42 n=4 bpm=96 bars=2",
    "form": "!continue C4 E4 G4 A4 C5 B4 G4 E4 seed=3 bars=4 form=b2a2 n=2",
}


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_weights) -> tuple[Path, dict[str, str]]:
    """The jobs of MADE, sent through a CommandHandler to a real LocalQueue and finished by its
    worker: the database file, and the job ids by name."""
    folder = tmp_path_factory.mktemp("made")
    settings = Settings(data_dir=folder, weights=tiny_weights, device="cpu")

    async def make() -> dict[str, str]:
        votes = BotStore(folder / "votes.sqlite3")
        try:
            async with LocalQueue(settings, worker_env=QUEUE_WORKER_ENV) as queue:
                handler = CommandHandler(settings, queue, votes, platform=DISCORD, rng=random.Random(7))
                ids = {}
                for number, (name, line_) in enumerate(MADE.items()):  # a user may have 3 jobs waiting
                    (reply,) = await handler.handle_line(request(user_id=USER if number < 3 else OTHER), line_)
                    assert reply.status_of is not None, reply.text
                    ids[name] = reply.status_of
                seen = await collect(queue, lambda seen: {s.job.job_id for s in seen if s.state.finished} >= set(
                    ids.values()))  # fmt: skip
                assert {s.job.job_id: s.state for s in seen if s.state.finished} == dict.fromkeys(
                    ids.values(), JobState.DONE)  # fmt: skip
                for job_id in ids.values():
                    await queue.mark_delivered(job_id)
        finally:
            votes.close()
        return ids

    ids = asyncio.run(make())
    return settings.database, ids


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, max_bars=32, default_bars=8, rate_limit_per_minute=100)


@pytest.fixture
async def queue(settings):
    queue = StoreQueue(settings)
    await queue.start()
    yield queue
    await queue.close()


@pytest.fixture
async def results(made, queue, settings) -> dict[str, str]:
    """MADE's finished jobs in this test's queue (the made database replaces its empty one)."""
    database, ids = made
    await queue.close()
    for old in settings.data_dir.glob(settings.database.name + "*"):
        old.unlink()
    for part in database.parent.glob(database.name + "*"):  # the file, and its WAL if one is left
        shutil.copyfile(part, settings.data_dir / (settings.database.name + part.name[len(database.name):]))
    await queue.start()
    return ids


@pytest.fixture
def store(tmp_path):
    store = BotStore(tmp_path / "votes.sqlite3")
    yield store
    store.close()


@pytest.fixture
def handler(settings, queue, store):
    return CommandHandler(settings, queue, store, platform=DISCORD, rng=random.Random(7))


def request(**changes) -> Request:
    values = dict(user_id=USER, channel_id=CHANNEL, user_name="ann")
    values.update(changes)
    return Request(**values)


async def say(handler, line: str, **changes) -> str:
    replies = await handler.handle_line(request(**changes), line)
    assert replies is not None, f"{line!r} is not a command"
    return "\n".join(r.text for r in replies)


async def submit(handler, line: str, **changes) -> tuple[str, Job]:
    """Say a command that queues a job: the reply, and the job as the queue stored it."""
    (reply,) = await handler.handle_line(request(**changes), line)
    assert reply.status_of is not None, reply.text
    status = await handler.queue.get(reply.status_of)
    assert status.state == JobState.QUEUED
    return reply.text, status.job


async def waiting(queue, user_id: int = USER) -> list[Job]:
    """The user's unfinished jobs, in queue order."""
    return [status.job for status in await queue.user_jobs(user_id)]


def break_database(settings: Settings) -> None:
    """A store that fails unexpectedly (as with a damaged file): its jobs table is gone."""
    db = sqlite3.connect(settings.database)
    db.execute("DROP TABLE queue_jobs")
    db.close()


def midi_upload(data: bytes, name: str = "sketch.mid", size: int | None = None, reads: list | None = None) -> Upload:
    async def read():
        if reads is not None:
            reads.append(name)
        return data

    return Upload(name, len(data) if size is None else size, read)


# -- parsing ------------------------------------------------------------------------------------------
def test_options_and_their_aliases(settings):
    parsed = parse_options("C4 E4:2 | G4 bars=12 wild=1.3 bpm=96 instrument=Strings seed=42 n=3 topp=0.9 key=off",
                           settings)
    assert parsed.words == ["C4", "E4:2", "|", "G4"]
    options = parsed.options
    assert (options.bars, options.temperature, options.bpm) == (12, 1.3, 96)
    assert (options.instrument, options.seed) == ("strings", 42)
    assert (options.variations, options.top_p, options.keep_key) == (3, 0.9, False)
    for text, field, value in [("temperature=0.5", "temperature", 0.5), ("wildness=2", "temperature", 2.0),
                               ("temp=1.1", "temperature", 1.1), ("vars=2", "variations", 2),
                               ("variations=1", "variations", 1), ("sound=guitar", "instrument", "guitar"),
                               ("bars = 4", "bars", 4), ("--bars 4", "bars", 4), ("bars:4", "bars", 4),
                               ('sound="electric piano"', "instrument", "electric piano"),
                               ("sound=e-piano", "instrument", "electric piano"), ("key=on", "keep_key", True)]:
        assert getattr(parse_options(text, settings).options, field) == value, text


def test_split_tokens_survives_odd_quotes():
    assert split_tokens("C4 don't E4") == ["C4", "don't", "E4"]
    assert split_tokens("sound=\u201celectric piano\u201d") == ["sound=electric piano"]


@pytest.mark.parametrize(("text", "expected"), [
    ("bars=1000", "1 to 32 bars"),
    ("bars=0", "1 to 32 bars"),
    ("bars=two", "bars must be a whole number"),
    ("temp=-1", "0.05 (safe) to 3 (wild)"),
    ("temp=nan", "finite number"),
    ("wild=99", "0.05 (safe) to 3 (wild)"),
    ("variations=9", "1 to 4 variations"),
    ("n=0", "1 to 4 variations"),
    ("bpm=5", "20 to 300 BPM"),
    ("seed=-1", "0 to 134217727"),
    ("seed=134217728", "0 to 134217727"),
    ("topp=2", "top-p is a share"),
    ("key=maybe", "key=on"),
    ("sound=kazoo", "Choose one of: piano"),
    ("bars=", "needs a value"),
    ("colour=blue", "Options: bars, temp (temperature, wild, wildness), bpm"),
    ("temperatur=1", "Did you mean `temp`?"),
    ("file=x.mid", "Attach the .mid file"),
])
def test_absurd_options_are_explained(settings, text, expected):
    with pytest.raises(CommandError, match=None) as caught:
        parse_options(f"C4 E4 {text}", settings)
    assert expected in str(caught.value)


def test_parse_line(handler):
    assert handler.parse_line("!continue C4 E4") == ("continue", "C4 E4")
    assert handler.parse_line("!CONT C4") == ("continue", "C4")
    assert handler.parse_line("!reroll abc123") == ("again", "abc123")
    assert handler.parse_line("continue C4") is None
    assert handler.parse_line("continue C4", require_prefix=False) == ("continue", "C4")
    assert handler.parse_line("!dance") is None
    assert handler.parse_line("!continue\nC4  E4") == ("continue", "C4  E4")
    assert handler.parse_line("!") is None


# -- continue ---------------------------------------------------------------------------------------
async def test_continue_typed_notes_queues_a_job(handler, queue):
    text, job = await submit(handler, "!continue C4 E4 G4 A4 bars=4 temp=1.2 sound=guitar seed=42 n=3")
    assert text.startswith(f"Queued as job {job.job_id}, position 1. From your notes: 3 variations of 4 bars")
    assert await waiting(queue) == [job]
    assert job.primer == parse_notes("C4 E4 G4 A4")
    assert (job.bars, job.temperature, job.instrument, job.seed, job.variations) == (4, 1.2, "guitar", 42, 3)
    assert (job.user_id, job.channel_id, job.user_name, job.bpm, job.top_p, job.keep_key) == (
        USER, CHANNEL, "ann", 120.0, DEFAULT_TOP_P, True)  # the sampler's own default


async def test_continue_defaults(handler, queue):
    _, job = await submit(handler, "!continue C4 E4")
    assert (job.bars, job.variations, job.temperature) == (8, 4, 1.0)
    assert 0 <= job.seed < 100_000


@pytest.mark.parametrize(("line", "expected"), [
    ("!continue C4 H4 G4", 'I can\'t read those notes: "H4" is not a note (token 2). Use note names A-G'),
    ("!continue C9", "out of range"),
    ("!continue r r", "only rests given"),
    ("!continue", "Give me a melody to continue"),
    ("!continue C4 E4 form=B4A4B4A4", "I can't use that form: form \"B4A4B4A4\" needs exactly 16 bars, and the "
                                     "continuation is 8: set bars= to match (bars=16)"),
    ("!continue C4 E4 form=1x", "is not a form: write section letters, e.g. form=BA"),
    ("!continue C4 E4 form=Z99", 'form "Z99" needs 99 bars, and a continuation has at most 32: shorten its sections'),
    ('!continue C4 E4 form=BA lyrics="hello there my friend"', "form= and lyrics= can't go together yet"),
])
async def test_bad_notes_and_forms_say_what_is_allowed(handler, queue, line, expected):
    text = await say(handler, line)
    assert expected in text
    assert await waiting(queue) == []


async def test_attached_sketch_wins_over_typed_notes(handler, queue):
    sketch = make_midi([TrackSpec("Lead", line([64, 65, 67, 69]))], bpm=90)
    text, job = await submit(handler, "!continue C4 D4 bars=2", uploads=[midi_upload(sketch, "idea.MID")])
    assert "From the sketch idea.MID (4 notes from Lead)" in text
    assert "you attached a sketch, so I ignored the typed notes" in text
    assert job.bpm == 90 and job.bars == 2 and job.primer[0] == parse_notes("E4")[0]
    await say(handler, "!continue bpm=100", uploads=[midi_upload(sketch)])
    assert [job.bpm for job in await waiting(queue)] == [90, 100]


@pytest.mark.parametrize(("uploads", "expected"), [
    ([("voice.mp3", b"ID3", None)], "I can only continue MIDI files (.mid or .midi); voice.mp3 is not one"),
    ([("big.mid", b"MThd", 3 * 1024 * 1024)], "big.mid is 3.0 MiB; a sketch can be at most 1024 KiB"),
    ([("a.mid", b"MThd", None), ("b.midi", b"MThd", None)], "Attach one MIDI sketch at a time"),
])
async def test_unusable_uploads_are_refused_before_download(handler, queue, uploads, expected):
    reads = []
    text = await say(handler, "!continue", uploads=[midi_upload(d, n, s, reads) for n, d, s in uploads])
    assert expected in text
    assert reads == [] and await waiting(queue) == []


async def test_damaged_or_empty_sketches(handler, queue):
    text = await say(handler, "!continue", uploads=[midi_upload(b"MThd\x00\x00\x00\x06xx", "broken.mid")])
    assert text.startswith("I can't use that MIDI file: ") and "truncated" in text
    text = await say(handler, "!continue", uploads=[midi_upload(b"RIFF....", "fake.mid")])
    assert "not a MIDI file" in text
    drums = make_midi([TrackSpec("Drums", line([36, 38]), drum=True)])
    assert "only drum tracks" in await say(handler, "!continue", uploads=[midi_upload(drums)])
    lying = midi_upload(b"x" * (2 * 1024 * 1024), "small.mid", size=10)  # announced small, arrives big
    assert "a sketch can be at most 1024 KiB" in await say(handler, "!continue", uploads=[lying])
    assert await waiting(queue) == []


async def test_download_failure_is_a_plain_answer(handler, queue, caplog):
    async def broken():
        raise ConnectionResetError("peer reset")

    text = await say(handler, "!continue", uploads=[Upload("s.mid", 100, broken)])
    assert text == "I couldn't download s.mid; please try again."
    assert "peer reset" in caplog.text


async def test_terminal_takes_a_sketch_by_path(settings, queue, store, tmp_path):
    handler = CommandHandler(settings, queue, store, platform=TERMINAL)
    path = tmp_path / "hook.mid"
    path.write_bytes(make_midi([TrackSpec("Melody", line([60, 64, 67]))], bpm=100))
    for line_ in (f"!continue file={path} bars=2", f"!continue --midi {path}", f"!continue midi:{path}"):
        assert "From the sketch" in await say(handler, line_)
    assert [job.bpm for job in await waiting(queue)] == [100, 100, 100]
    assert f"There is no file at {tmp_path / 'nope.mid'}" in await say(handler, f"!continue file={tmp_path}/nope.mid")


async def test_a_form_longer_than_this_bot_allows_says_its_limit(settings, queue, store):
    handler = CommandHandler(dataclasses.replace(settings, max_bars=16), queue, store, platform=DISCORD)
    text = await say(handler, "!continue C4 E4 form=A10B10")
    assert 'form "A10B10" needs 20 bars, and a continuation has at most 16: shorten its sections' in text
    assert await waiting(queue) == []


# -- queue errors -----------------------------------------------------------------------------------
async def test_queue_refusals_are_explained(settings, store, caplog):
    small = dataclasses.replace(settings, max_queue=3)
    async with StoreQueue(small) as queue:
        handler = CommandHandler(small, queue, store, platform=DISCORD)
        for _ in range(3):
            await submit(handler, "!continue C4 E4")
        assert await say(handler, "!continue C4 E4") == \
            "You already have 3 jobs waiting; wait for one to finish or !cancel one."
        # 3 unfinished jobs in all, and no history yet: the store guesses 30 s a job.
        assert await say(handler, "!continue C4 E4", user_id=OTHER) == \
            "The queue is full right now; try again in about 30 s."
        assert "Which job?" in await say(handler, "!cancel")  # three of them
        break_database(small)
        with caplog.at_level(logging.ERROR):
            text = await say(handler, "!continue C4 E4", user_id=OTHER)
    assert "can't be reached right now (its worker may be down)" in text and "Traceback" not in text
    assert "submitting failed" in caplog.text and "no such table: queue_jobs" in caplog.text


async def test_an_unexpected_error_is_logged_not_shown(handler, settings, caplog):
    break_database(settings)
    text = await say(handler, "!votes abc123")
    assert text.startswith("Sorry, something went wrong on my side") and "no such table" not in text
    assert "no such table: queue_jobs" in caplog.text


# -- extend, again, votes (on MADE's results) ---------------------------------------------------------
async def test_extend_defaults_to_the_vote_leader_else_the_first(handler, queue, store, results):
    done = await queue.get(results["flute"])
    parent = done.job
    text, first = await submit(handler, f"!extend {parent.job_id}")
    assert f"Extending {parent.job_id} variation 1 (no votes yet, so the first)" in text
    assert first.primer == done.result.variations[0].events
    await store.votes.vote(parent.job_id, 7, 3)
    await store.votes.vote(parent.job_id, 8, 3)
    await store.votes.vote(parent.job_id, 9, 2)
    text, child = await submit(handler, f"!extend {parent.job_id} bars=4 temp=1.5")
    assert "variation 3 (the vote leader)" in text
    assert child.primer == done.result.variations[2].events != first.primer
    assert child.parent == f"{parent.job_id}:3"
    assert (child.bars, child.temperature, child.instrument, child.variations) == (4, 1.5, "flute", 3)
    assert child.seed != parent.seed


async def test_extend_a_chosen_variation_and_the_newest_result(handler, store, results):
    parent_id = results["flute"]
    _, child = await submit(handler, f"!extend {parent_id.upper()} 2")
    assert child.parent == f"{parent_id}:2"
    assert "Which job?" in await say(handler, "!extend 2")  # nothing posted in this channel yet
    await store.messages.remember_result(99, parent_id, CHANNEL, 3)
    _, child = await submit(handler, "!extend 3")
    assert child.parent == f"{parent_id}:3"


@pytest.mark.parametrize(("args", "expected"), [
    ("{job} 5", "has variations 1 to 3; there is no 5"),
    ("zzzzzz", "There is no job zzzzzz"),
    ("{job} C4 E4", "I don't understand `C4 E4`"),
    ("{job} bars=99", "1 to 32 bars"),
])
async def test_extend_mistakes(handler, queue, results, args, expected):
    assert expected in await say(handler, "!extend " + args.format(job=results["flute"]))
    assert await waiting(queue) == []


async def test_extend_needs_a_finished_job(handler, queue):
    _, job = await submit(handler, "!continue C4 E4")
    assert f"Job {job.job_id} has no result to extend: it is queued, position 1." == \
        await say(handler, f"!extend {job.job_id}")


async def test_again_rerolls_with_a_new_seed(handler, queue, results):
    parent = (await queue.get(results["reroll"])).job
    text, again = await submit(handler, f"!again {parent.job_id}")
    assert f"Rerolling {parent.job_id} with a new seed" in text
    assert again.primer == parent.primer and again.seed != 5
    assert (again.bars, again.keep_key, again.temperature, again.variations) == (3, False, 1.0, 2)
    _, tweaked = await submit(handler, f"!again {parent.job_id} temp=2 seed=9")
    assert (tweaked.temperature, tweaked.seed, tweaked.bars) == (2.0, 9, 3)


async def test_votes_tally_marks_the_leader(handler, queue, store, results):
    job = (await queue.get(results["flute"])).job
    assert "Vote with 1\ufe0f\u20e3-3\ufe0f\u20e3 under the result." in await say(handler, f"!votes {job.job_id}")
    await store.votes.vote(job.job_id, 7, 2)
    await store.votes.vote(job.job_id, 8, 2)
    await store.votes.vote(job.job_id, 9, 1)
    text = await say(handler, f"!votes {job.job_id}")
    assert text.splitlines() == [
        f"Votes for job {job.job_id}: 3 votes.",
        f"{NUMBER_EMOJIS[0]} # 1",
        f"{NUMBER_EMOJIS[1]} ## 2  <- leading",
        f"{NUMBER_EMOJIS[2]} - 0",
        f"`!extend {job.job_id}` continues the leader.",
    ]


async def test_typed_votes_are_for_the_terminal(handler, settings, queue, store, results):
    job = (await queue.get(results["flute"])).job
    assert "vote with the number reactions" in await say(handler, f"!vote {job.job_id} 2")
    terminal = CommandHandler(settings, queue, store, platform=TERMINAL)
    assert await say(terminal, f"!vote {job.job_id} 2") == f"Your vote for job {job.job_id} is on variation 2."
    await say(terminal, f"!vote {job.job_id} 3")  # moves it
    assert (await store.votes.tally(job.job_id, 3)).counts == (0, 0, 1)
    assert "there is no 4" in await say(terminal, f"!vote {job.job_id} 4")
    assert "Usage: !vote <job> <variation>" in await say(terminal, "!vote")
    assert "<- leading" in (await say(terminal, "!votes")).splitlines()[3]  # no id: the newest result here


# -- queue, cancel, channel, help -----------------------------------------------------------------------
async def test_queue_and_cancel(handler, queue):
    assert "You have no jobs" in await say(handler, "!queue")
    _, ahead = await submit(handler, "!continue G4 A4", user_id=OTHER)
    _, first = await submit(handler, "!continue C4 E4 bars=2")
    _, second = await submit(handler, "!continue D4 F4 n=1")
    first, second = first.job_id, second.job_id
    text = await say(handler, "!queue")
    assert f"{first}: queued, position 2 (4 variations of 2 bars)" in text
    assert f"{second}: queued, position 3 (1 variation of 8 bars)" in text and ahead.job_id not in text
    assert "Which job?" in await say(handler, "!cancel")  # two jobs: say which
    assert "is not yours to cancel" in await say(handler, f"!cancel {first}", user_id=OTHER)
    assert await say(handler, f"!cancel {first}") == f"Job {first} was cancelled."
    assert f"{second}: queued, position 2 (1 variation" in await say(handler, "!queue")  # it moved up
    assert await say(handler, f"!cancel {first}") == f"Job {first} has already finished (cancelled)."
    assert await say(handler, f"!cancel {ahead.job_id}") == f"Job {ahead.job_id} is not yours to cancel."
    assert await say(handler, "!cancel") == f"Job {second} was cancelled."  # the only one left
    assert "you have none running" in await say(handler, "!cancel")
    assert await say(handler, "!cancel zzzzzz") == "There is no job zzzzzz."
    assert [job.job_id for job in await waiting(queue, OTHER)] == [ahead.job_id]
    assert (await queue.get(ahead.job_id)).position == 1


async def test_channel_switch(handler, store):
    assert "Only members who can manage" in await say(handler, "!channel off")
    assert "off in this channel" in await say(handler, "!channel off", can_manage_channel=True)
    assert not await store.channels.enabled(CHANNEL)
    assert await handler.handle_line(request(), "!help") == []  # prefix commands: silence
    (refusal,) = await handler.handle_line(request(interactive=True), "!help")
    assert refusal.private and "switched off in this channel" in refusal.text
    assert "melodybot is off in this channel" in await say(handler, "!channel")
    assert "Usage: !channel on|off" in await say(handler, "!channel maybe", can_manage_channel=True)
    assert "not in direct messages" in await say(handler, "!channel on", in_guild=False)
    assert "is on in this channel" in await say(handler, "!channel on", can_manage_channel=True)
    assert "melodybot continues" in await say(handler, "!help")


async def test_rate_limit(handler):
    now = [0.0]
    handler.limiter = RateLimiter(3, clock=lambda: now[0])
    answers = [await handler.handle_line(request(), "!queue") for _ in range(5)]
    assert [len(a) for a in answers] == [1, 1, 1, 1, 0]  # the 4th is told to slow down, the 5th ignored
    assert answers[3][0].text == "Slow down: 3 commands a minute at most. Try again in 60 s."
    assert len(await handler.handle_line(request(user_id=OTHER), "!queue")) == 1  # per user
    (interactive,) = await handler.handle_line(request(interactive=True), "!queue")
    assert interactive.private  # a slash command always gets its answer
    now[0] = 60.5
    assert "You have no jobs" in (await handler.handle_line(request(), "!queue"))[0].text


async def test_help_has_examples_and_the_notation(handler, settings, queue, store):
    text = await say(handler, "!help")
    assert "!continue C4 E4 G4 A4" in text and NOTATION in text and "bars=8" in text and "sound=piano" in text
    assert len(text) <= 2000  # one Discord message
    terminal = await say(CommandHandler(settings, queue, store, platform=TERMINAL), "!help")
    assert "file=sketch.mid" in terminal and "!vote <job> <n>" in terminal and "!quit" in terminal


# -- what a job's messages say ------------------------------------------------------------------------
async def test_result_reply_carries_every_file_and_the_settings(handler, queue, results):
    status = await queue.get(results["post"])
    job = status.job
    reply = handler.result_reply(status)
    midis, mp3s, (png,) = reply.files[:4], reply.files[4:8], reply.files[8:]  # the worker's real files
    assert all(f.data.startswith(b"MThd") for f in midis) and png.data.startswith(b"\x89PNG")
    assert all(f.data.startswith((b"ID3", b"\xff")) and len(f.data) > 1000 for f in mp3s)
    names = [f.name for f in reply.files]
    assert names == [f"{job.job_id}-{n}.mid" for n in range(1, 5)] + [f"{job.job_id}-{n}.mp3" for n in range(1, 5)] \
        + [f"{job.job_id}.png"]
    assert reply.reactions == list(NUMBER_EMOJIS[:4]) and reply.result_of == job.job_id
    assert [b.custom_id for b in reply.buttons] == [f"melodybot:extend:{job.job_id}", f"melodybot:again:{job.job_id}"]
    first = reply.text.splitlines()[:2]
    assert re.fullmatch(r"[A-G][#b]? (major|minor)", status.result.key)  # the primer is in a key
    assert first == [f"Job {job.job_id}: 4 continuations for ann.",
                     f"Key: {status.result.key} | 2 bars at 96 BPM | piano | style=pop | temp=1 "
                     f"| topp={DEFAULT_TOP_P:g} | key=on | seed=42"]
    small = handler.result_reply(status, upload_limit=40)
    assert all(not f.name.endswith(".mp3") for f in small.files) and "MP3 previews are left out" in small.text


async def test_a_form_is_made_and_shown(handler, queue, results):
    status = await queue.get(results["form"])
    sketch = bar_sets(prepare_primer(parse_notes("C4 E4 G4 A4 C5 B4 G4 E4")))
    for variation in status.result.variations:  # the worker followed it: bars 3-4 bring the sketch back
        bars = bar_sets(variation.events)
        assert [jaccard(bars[4 + k], sketch[k]) >= 0.75 for k in range(2)] == [True, True]
    assert "| seed=3 | form=B2A2" in handler.result_reply(status).text
    text, again = await submit(handler, f"!again {status.job.job_id}")  # kept by a reroll, unless turned off
    assert again.form == "B2A2" and "the form: bars 1-2 B (new), bars 3-4 A (your sketch's opening)" in text
    _, plain = await submit(handler, f"!again {status.job.job_id} form=off")
    assert plain.form is None


async def test_a_form_splits_the_bars_it_is_given(handler, queue):
    text, job = await submit(handler, "!continue C4 E4 bars=16 form=ABAC")
    assert job.form == "ABAC"
    assert ("the form: bars 1-4 A (your sketch's opening), bars 5-8 B (new), bars 9-12 A (your sketch's opening), "
            "bars 13-16 C (new)") in text


def test_status_texts(handler):
    job = Job(user_id=1, channel_id=2, primer=[2], bars=4, variations=2, job_id="abc123")
    assert handler.status_text(JobStatus(job, JobState.QUEUED, position=3)) == "Queued as job abc123, position 3."
    assert handler.status_text(JobStatus(job, JobState.RUNNING)) == "Generating job abc123... (2 variations of 4 bars)"
    assert handler.status_text(JobStatus(job, JobState.FAILED, error="the worker died")) == \
        "Job abc123 failed: the worker died"
    assert handler.status_text(JobStatus(job, JobState.CANCELLED)) == "Job abc123 was cancelled."


async def test_update_follower_keeps_each_jobs_order_and_survives_failures(queue, settings, caplog):
    seen = []

    async def deliver(status):
        if status.job.job_id == "bad":
            raise RuntimeError("cannot post")
        await asyncio.sleep(0.01 if status.state == JobState.RUNNING else 0)
        seen.append((status.job.job_id, status.state))

    follower = UpdateFollower(queue, deliver)
    follower.start()
    for job_id in ("good", "bad"):
        await queue.submit(Job(USER, CHANNEL, [2], job_id=job_id))
    worker = JobStore(settings.database)  # a worker's side of the database: it takes both, finishes one
    try:
        assert [job.job_id for job in worker.claim("w1", max_rows=8)] == ["good", "bad"]
        assert worker.finish("good", JobState.DONE, result=Result("good", 1, [], b"", None, {}), worker="w1")
    finally:
        worker.close()
    for _ in range(200):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert seen == [("good", JobState.RUNNING), ("good", JobState.DONE)]
    assert "job bad: delivering running failed" in caplog.text
    await queue.close()
    await follower.stop()


def test_reply_defaults():
    reply = Reply("hi")
    assert (reply.files, reply.reactions, reply.buttons, reply.private) == ([], [], [], False)


async def test_a_job_is_visible_only_in_the_server_it_was_made_in(handler, results):
    job_id = results["flute"]  # made outside any server (guild None), like the terminal channel
    for command in ("votes", "extend", "again"):
        text = await say(handler, f"!{command} {job_id}", guild_id=77, user_id=OTHER)
        assert text.startswith(f"There is no job {job_id}."), text
    assert not (await say(handler, f"!votes {job_id}")).startswith("There is no job")  # where it was made
    reply, job = await submit(handler, "!continue C4 E4 G4", guild_id=77)
    assert job.guild_id == 77
    assert (await say(handler, f"!again {job.job_id}", guild_id=78, user_id=OTHER)).startswith(
        f"There is no job {job.job_id}.")
