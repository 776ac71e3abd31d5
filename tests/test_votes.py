"""bot/storage (votes, messages, channels): one vote per user per job, moved by a later vote,
removed only by the reaction that holds it; the message maps and channel switches; everything
survives reopening the file."""

from __future__ import annotations

import pytest

from bot.storage import KEYCAP, NUMBER_EMOJIS, BotStore, Tally, emoji_number, local_message_id


@pytest.fixture
def store(tmp_path):
    store = BotStore(tmp_path / "bot.sqlite3")
    yield store
    store.close()


async def test_one_vote_per_user_moves_and_is_removed_only_by_its_reaction(store):
    await store.votes.vote("job1", 10, 1)
    await store.votes.vote("job1", 11, 2)
    await store.votes.vote("job1", 12, 2)
    assert (await store.votes.tally("job1", 4)).counts == (1, 2, 0, 0)

    await store.votes.vote("job1", 10, 3)  # a later reaction moves the vote
    assert (await store.votes.tally("job1", 4)).counts == (0, 2, 1, 0)
    assert await store.votes.user_vote("job1", 10) == 3

    assert not await store.votes.unvote("job1", 10, 1)  # the old reaction no longer holds the vote
    assert (await store.votes.tally("job1", 4)).counts == (0, 2, 1, 0)
    assert await store.votes.unvote("job1", 10, 3)
    assert await store.votes.user_vote("job1", 10) is None
    assert (await store.votes.tally("job1", 4)).counts == (0, 2, 0, 0)
    assert (await store.votes.tally("other", 4)).counts == (0, 0, 0, 0)


async def test_tally_ignores_variations_beyond_the_job_and_ties_go_to_the_lowest(store):
    await store.votes.vote("job1", 1, 5)
    await store.votes.vote("job1", 2, 2)
    await store.votes.vote("job1", 3, 3)
    tally = await store.votes.tally("job1", 3)
    assert tally.counts == (0, 1, 1) and tally.total == 2 and tally.leader == 2
    assert Tally("x", (0, 0)).leader is None
    assert Tally("x", (1, 3, 3)).leader == 2


async def test_everything_survives_reopening_the_database(tmp_path):
    path = tmp_path / "bot.sqlite3"
    first = BotStore(path)
    await first.votes.vote("job1", 10, 2)
    await first.messages.remember_result(555, "job1", 77, 4)
    await first.messages.remember_status("job1", 77, 444)
    await first.channels.set_enabled(77, False, user_id=10)
    await first.channels.set_meta("hash", "abc")
    first.close()

    second = BotStore(path)
    try:
        assert (await second.votes.tally("job1", 4)).counts == (0, 1, 0, 0)
        shown = await second.messages.result_message(555)
        assert (shown.job_id, shown.channel_id, shown.variations) == ("job1", 77, 4)
        assert (await second.messages.result_of_job("job1")).message_id == 555
        assert await second.messages.status_message("job1") == (77, 444)
        assert not await second.channels.enabled(77) and await second.channels.enabled(78)
        assert await second.channels.get_meta("hash") == "abc"
        await second.messages.forget_status("job1")
        assert await second.messages.status_message("job1") is None
    finally:
        second.close()


async def test_latest_result_per_channel(store):
    assert await store.messages.latest_result(1) is None
    await store.messages.remember_result(100, "old", 1, 4)
    await store.messages.remember_result(101, "new", 1, 2)
    await store.messages.remember_result(102, "elsewhere", 2, 2)
    assert (await store.messages.latest_result(1)).job_id == "new"
    assert await store.messages.result_message(999) is None


def test_number_emojis():
    assert NUMBER_EMOJIS[:4] == ("1\ufe0f\u20e3", "2\ufe0f\u20e3", "3\ufe0f\u20e3", "4\ufe0f\u20e3")
    assert [emoji_number(e) for e in NUMBER_EMOJIS] == list(range(1, 10))
    assert emoji_number("3\u20e3") == 3  # without the variation selector
    assert emoji_number("\U0001f525") is None and emoji_number("0" + KEYCAP) is None and emoji_number("12") is None


def test_local_message_ids_are_negative_and_stable():
    assert local_message_id("abc123") == local_message_id("abc123") < 0
    assert local_message_id("abc123") != local_message_id("abc124")
    assert local_message_id("x" * 40) >= -(2**63)
