"""Lyrics through the bot: the lyrics=/melisma= options (quotes, apostrophes, bad input), the reply
showing the split, !again and !extend with words, and a worker that sets them (real rendering:
lyric events in the MIDI, syllables on the piano roll and the lead sheet)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import mido
import pytest
from test_commands import handler, queue, request, say, settings, store, submit  # noqa: F401 - fixtures

from bot.commands import CommandError, parse_options
from bot.commands.options import LYRICS_OFF
from bot.jobs import Job, JobState, Result
from bot.render.leadsheet import engrave_lead_sheet, melody_mei
from bot.settings import Settings
from bot.worker.generator import Generator
from model.music.events import events_to_notes

WORDS = "walking down the empty street / every window dark"
SPLIT = "WALK-ing DOWN the EMP-ty STREET / EV-e-ry WIN-dow DARK"


# -- the options --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, words, lyrics", [
    ('C4 E4 lyrics="don\'t stop / believing" bars=4', ["C4", "E4"], "don't stop / believing"),
    ("C4 lyrics=walking down the street / the end temp=1.1", ["C4"], "walking down the street / the end"),
    ("C4 lyrics='don't you cry' seed=3", ["C4"], "don't you cry"),
    ("C4 words: \u201chello world\u201d", ["C4"], "hello world"),
    ("C4 lyrics=```line one\nline two``` n=2", ["C4"], "line one\nline two"),
    ("C4 lyrics=off", ["C4"], LYRICS_OFF),
])
def test_lyrics_options_keep_apostrophes_slashes_and_new_lines(settings, text, words, lyrics):  # noqa: F811
    parsed = parse_options(text, settings)
    assert parsed.words == words and parsed.options.lyrics == lyrics


def test_melisma_option(settings):  # noqa: F811
    assert parse_options("C4 melisma=on", settings).options.melisma is True
    with pytest.raises(CommandError, match="melisma=on"):
        parse_options("C4 melisma=maybe", settings)


@pytest.mark.parametrize("text, expected", [
    ('C4 lyrics="walking down the street bars=3', "quotes around your lyrics don't close"),
    ("C4 lyrics=こんにちは", "Latin letters"),
    ('C4 lyrics="I \u2764\ufe0f you"', "emoji"),
    ("C4 lyrics=" + "la " * 700, "at most 2,000"),
    ('C4 lyrics=" / / "', "no words"),
    ('C4 lyrics=""', "needs words"),
])
def test_bad_lyrics_options_are_explained(settings, text, expected):  # noqa: F811
    with pytest.raises(CommandError, match=expected):
        parse_options(text, settings)


# -- the commands -----------------------------------------------------------------------------------
async def test_continue_with_words_chooses_the_bars_and_shows_the_split(handler, queue):  # noqa: F811
    text, job = await submit(handler, f'!continue C4 E4 G4 A4 lyrics="{WORDS}"')
    assert job.lyrics == WORDS and job.bars == 4 and not job.melisma
    assert SPLIT in text and "4 bars" in text
    _, given = await submit(handler, f'!continue C4 E4 G4 A4 lyrics="{WORDS}" bars=6 melisma=on')
    assert (given.bars, given.melisma) == (6, True)


async def test_words_that_do_not_fit_or_cannot_be_sung_get_a_reason(handler, queue):  # noqa: F811
    assert "need at least 2 bars (bars=2)" in await say(handler, f'!continue C4 E4 lyrics="{WORDS}" bars=1')
    assert "no vowels" in await say(handler, '!continue C4 E4 lyrics="pfft pfft"')
    assert "**bold**" not in await say(handler, '!continue C4 E4 lyrics="**bold** words"')
    assert await queue.user_jobs(1001) != []  # the markdown one was queued; nothing crashed


async def test_unknown_words_are_guessed_and_named(handler, queue):  # noqa: F811
    text, job = await submit(handler, '!continue C4 E4 lyrics="the zorblax is here"')
    assert "guessed: zorblax" in text and job.lyrics


async def test_again_keeps_or_replaces_or_drops_the_words(handler, queue):  # noqa: F811
    _, first = await submit(handler, f'!continue C4 E4 G4 A4 lyrics="{WORDS}" bars=6')
    text, kept = await submit(handler, f"!again {first.job_id}", user_id=7)  # one user may queue only 3
    assert kept.lyrics == WORDS and kept.bars == 6 and SPLIT in text
    _, replaced = await submit(handler, f'!again {first.job_id} lyrics="hold me"', user_id=7)
    assert replaced.lyrics == "hold me" and replaced.bars == 2  # new words, bars of their own
    _, dropped = await submit(handler, f"!again {first.job_id} lyrics=off", user_id=8)
    assert dropped.lyrics is None


async def finished(queue, job: Job) -> Job:  # noqa: F811 - the fixture named queue
    """The job finished as a worker would leave it: its variations the primer and 4 more bars."""
    from bot.jobs import Variation

    events = list(job.primer[:-1]) + [26, 0, 0, 0] * 16
    result = Result(job.job_id, len(job.primer) - 1, [Variation(events, b"", b"", None, [[16, " la"]])] * 2,
                    b"", "C major", {})
    assert queue._store.finish(job.job_id, JobState.DONE, result=result)
    return job


async def test_extend_sings_new_words_or_none(handler, queue):  # noqa: F811
    _, parent = await submit(handler, f'!continue C4 E4 G4 A4 lyrics="{WORDS}" n=2')
    await finished(queue, parent)
    text, extended = await submit(handler, f'!extend {parent.job_id} 2 lyrics="hold me closer / tiny dancer"')
    assert extended.lyrics == "hold me closer / tiny dancer" and extended.bars == 4
    assert "HOLD me CLOS-er / TI-ny DAN-cer" in text
    _, plain = await submit(handler, f"!extend {parent.job_id} 2 bars=2")
    assert plain.lyrics is None and plain.bars == 2  # the words of before are not sung again


# -- the worker sets them -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generator(tiny_weights) -> Generator:
    generator = Generator(Settings(weights=tiny_weights, device="cpu"))
    generator.load()
    yield generator
    generator.close()


def lyric_events(midi: bytes) -> list[tuple[int, str]]:
    file = mido.MidiFile(file=io.BytesIO(midi))
    found = []
    for track in file.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "lyrics":
                found.append((tick // (file.ticks_per_beat // 4), message.text))
    return found


def test_a_worker_sets_the_words_and_every_preview_carries_them(generator):
    primer = [26, 0, 0, 0, 28, 0, 0, 0, 30, 0, 0, 0, 31, 0, 0, 0, 1]  # C4 E4 G4 A4 and its NOTE_OFF
    jobs = [Job(user_id=1, channel_id=1, primer=primer, bars=4, variations=2, seed=5, lyrics=WORDS),
            Job(user_id=1, channel_id=1, primer=primer, bars=1, variations=1, lyrics=WORDS)]
    outcomes = {o.job.job_id: o for o in generator.run(jobs)}
    done, failed = (outcomes[j.job_id] for j in jobs)
    assert failed.state == JobState.FAILED and "need at least 2 bars" in failed.error
    assert done.state == JobState.DONE
    result = Result.from_dict(done.result.to_dict())  # as it travels
    for variation in result.variations:
        assert len(variation.lyrics) == 13
        onsets = {n.start for n in events_to_notes(variation.events)}
        assert {step for step, _ in variation.lyrics} <= onsets
        assert [(step, text) for step, text in variation.lyrics] == lyric_events(variation.midi)
        assert "".join(text for _, text in variation.lyrics) == " walk-ing down the emp-ty street ev-e-ry win-dow dark"
    assert result.variations[0].lyrics != result.variations[1].lyrics  # each variation its own rhythm


def test_the_lead_sheet_prints_the_syllables_under_their_notes():
    events = [26, 0, 0, 0, 28, 0, 0, 0, 30, 0, 0, 0, 31, 0, 0, 0, 1]
    words = [(0, " walk-"), (4, "ing"), (8, " down"), (12, " street")]
    mei = ET.fromstring(melody_mei(events, None, 120, "t", 0, words))
    ns = "{http://www.music-encoding.org/ns/mei}"
    syls = [(s.text, s.get("wordpos"), s.get("con")) for s in mei.iter(f"{ns}syl")]
    assert syls == [("walk", "i", "d"), ("ing", "t", None), ("down", None, None), ("street", None, None)]
    png, _ = engrave_lead_sheet(events, None, 120, "t", pdf=False, lyrics=words)
    plain, _ = engrave_lead_sheet(events, None, 120, "t", pdf=False)
    assert png.startswith(b"\x89PNG") and png != plain


def test_the_song_keeps_each_rounds_words_where_they_land():
    from bot.commands.songs import append_variation, append_words
    from bot.jobs import Variation

    song = [26, 0, 0, 0, 28, 0, 0, 0, 1]  # the primer, its NOTE_OFF included
    first = Variation(song[:-1] + [30, 0, 31, 0], b"", b"", None, [[8, " walk-"], [10, "ing"]])
    words = append_words([], song, first, primer_steps=8)
    song = append_variation(song, first.events, 8)
    assert words == [[8, " walk-"], [10, "ing"]]
    # the next round's primer is the song's last 12 steps (a long song loses bars at the front)
    second = Variation(song[-12:] + [33, 0], b"", b"", None, [[12, " home"]])
    words = append_words(words, song, second, primer_steps=12)
    song = append_variation(song, second.events, 12)
    assert words == [[8, " walk-"], [10, "ing"], [12, " home"]]
    assert all(song[step] >= 2 for step, _ in words)  # every syllable on a note's onset
    silent = Variation(song + [0, 0], b"", b"", None, None)  # a round without words keeps the song's
    assert append_words(words, song, silent, primer_steps=len(song)) == words


def test_the_piano_roll_labels_notes_with_their_syllables():
    from bot.render import pianoroll

    events = [26, 0, 0, 0, 28, 0, 0, 0, 30, 0, 0, 0, 31, 0, 0, 0, 1]
    layout = pianoroll.shared_layout([events])
    plain = pianoroll.draw_panel(events, 0, layout, "1")
    labelled = pianoroll.draw_panel(events, 0, layout, "1", labels=[(0, " walk-"), (4, "ing"), (99, " gone")])
    assert plain.size == labelled.size and plain.tobytes() != labelled.tobytes()
    assert pianoroll.draw_panel(events, 0, layout, "1", labels=[]).tobytes() == plain.tobytes()


def test_syllables_on_sixteenths_are_labelled_without_running_into_each_other():
    from PIL import Image, ImageDraw

    from bot.render import pianoroll

    # a line of 16 syllables on sixteenths, all on one pitch (one row): the labels would overlap
    events = [26, 0] * 16 + [1]
    layout = pianoroll.shared_layout([events])
    syllables = "walk- ing down the emp- ty street and ev- e- ry win- dow dark to- night".split()
    words = [(2 * n, text) for n, text in enumerate(syllables)]
    draw = ImageDraw.Draw(Image.new("RGB", (pianoroll.WIDTH, pianoroll.PANEL_HEIGHT)))
    font = pianoroll._font(pianoroll.FONT_PX - 5)
    wanted = [((40 + 6 * step, 100), text) for step, text in words]  # a step is ~6 px in a 9-bar panel
    boxes = [draw.textbbox(place, text, font, "lt") for place, text in pianoroll.label_places(draw, wanted, font, 300)]
    assert len(boxes) == 16
    overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                   if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
    assert not overlapping
    assert len({box[1] for box in boxes}) >= 3  # they went one or two lines lower, or more
    assert [x for (x, _), _ in pianoroll.label_places(draw, wanted, font, 300)] == [x for (x, _), _ in wanted]
    # no room below: a label stays where it was wanted rather than leave the grid
    assert all(top == 100 for (_, top), _ in pianoroll.label_places(draw, wanted, font, 105))
    # and the picture is drawn with them
    assert pianoroll.draw_panel(events, 0, layout, "1", labels=words).size == (pianoroll.WIDTH, pianoroll.PANEL_HEIGHT)


def test_a_jams_words_are_shared_by_its_rounds():
    from model.lyrics.setting import round_lines

    assert round_lines("a / b / c / d", 2) == ["a / b", "c / d"]
    assert round_lines("a / b / c / d / e", 2) == ["a / b / c", "d / e"]
    assert round_lines("la la / da da", 4) == ["la la", "da da"]  # fewer lines than rounds: a refrain


async def test_a_jam_sings_each_rounds_part_of_the_words(handler):  # noqa: F811
    replies = await handler.handle_line(request(), f'!jam C4 E4 G4 A4 rounds=2 lyrics="{WORDS} / hold me / closer"')
    intro, queued = replies
    first = (await handler.queue.get(queued.status_of)).job
    assert first.lyrics == WORDS and first.bars == 4 and SPLIT in queued.text
    jam = await handler.store.jams.playing_in(first.channel_id)
    assert jam.template["jam_lyrics"] == [WORDS, "hold me / closer"]
    assert (await handler.jams._round_job(jam)).lyrics == WORDS  # round 1 (later rounds: the next part)
    await handler.jams.stop_jam(jam.channel_id, first.user_id, first.user_name, can_manage=True)
    text = await say(handler, f'!jam C4 E4 G4 A4 rounds=2 bars=2 lyrics="love / {" ".join(["beautiful"] * 12)}"')
    assert "round 2's words" in text and "need at least" in text
    assert await handler.store.jams.playing_in(first.channel_id) is None
