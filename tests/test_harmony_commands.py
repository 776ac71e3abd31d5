"""Chords through the bot: the chords= option (quoted or not, chords=off, bad symbols), !extend
and !again keeping or taking chords, a sketch's own chord track kept; on the real SQLite queue."""

from __future__ import annotations

import random

import pytest
from midi_factory import TrackSpec, line, make_midi

from bot.commands import DISCORD, CommandHandler, Request, Upload
from bot.commands.handler import rotate_sheet
from bot.jobs import Job, JobState, Result, Variation
from bot.queue.base import StoreQueue
from bot.settings import Settings
from bot.storage import BotStore
from bot.storage.jobs import JobStore


@pytest.fixture
async def handler(tmp_path):
    settings = Settings(data_dir=tmp_path)
    store = BotStore(settings.database)
    async with StoreQueue(settings) as queue:
        yield CommandHandler(settings, queue, store, platform=DISCORD, rng=random.Random(3))
    store.close()


async def say(handler, text: str, uploads=(), user_id: int = 1):
    (reply,) = await handler.handle_line(Request(user_id=user_id, channel_id=9, uploads=list(uploads)), text)
    return reply


async def queued(handler, text: str, **kwargs) -> Job:
    reply = await say(handler, text, **kwargs)
    assert reply.status_of is not None, reply.text
    return (await handler.queue.get(reply.status_of)).job


@pytest.mark.parametrize("text", ['!continue C4 E4 G4 chords="C | G | Am F | F"',
                                  "!continue C4 E4 G4 chords=C | G | Am F | F bars=4",
                                  "!continue C4 E4 G4 chords=C|G|Am,F|F"])
async def test_chords_are_read_quoted_or_not(handler, text):
    job = await queued(handler, text)
    assert job.chords == "C | G | Am F | F" and job.harmony and job.primer == [26, 0, 0, 0, 30, 0, 0, 0, 33, 0, 0, 0, 1]


async def test_musicians_spellings_are_normalised_and_off_means_a_bare_melody(handler):
    job = await queued(handler, "!continue C4 chords=Cmaj7 | F#m7b5 B7 | E-7 | C/E")
    assert job.chords == "Cmaj7 | F#m7b5 B7 | Em7 | C/E"
    bare = await queued(handler, "!continue C4 chords=off", user_id=2)
    assert bare.chords is None and bare.harmony is False
    plain = await queued(handler, "!continue C4", user_id=3)
    assert plain.chords is None and plain.harmony is True  # the worker suggests chords


async def test_a_bad_chord_is_named(handler):
    reply = await say(handler, "!continue C4 E4 chords=C | Hx7 | G")
    assert reply.status_of is None
    assert reply.text.startswith('I can\'t read those chords: I can\'t read the chord "Hx7" (bar 2)')


def test_a_sheet_goes_on_where_it_left_off():
    assert rotate_sheet("C | G | Am F | F", 1) == "G | Am F | F | C"
    assert rotate_sheet("C | G | Am F | F", 8) == "C | G | Am F | F"
    assert rotate_sheet(None, 3) is None


async def test_extend_goes_on_with_the_chords_and_again_keeps_them(handler, tmp_path):
    parent = await queued(handler, "!continue C4 E4 G4 bars=1 chords=C | G | Am F | F")
    store = JobStore(tmp_path / "melodybot.sqlite3")  # a worker's side: finish the job
    store.claim("w", 64)
    events = parent.primer + [40, 0, 0, 1] * 4
    result = Result(parent.job_id, len(parent.primer), [Variation(events, b"m", b"", "C | G")] * 4, b"", None, {})
    store.finish(parent.job_id, JobState.DONE, result=result, worker="w")
    store.close()
    extended = await queued(handler, f"!extend {parent.job_id} 2", user_id=2)
    assert extended.chords == "G | Am F | F | C"  # one bar of the sheet was used
    assert extended.primer_chords == "C | G"  # the extended variation keeps the chords it had
    again = await queued(handler, f"!again {parent.job_id}", user_id=3)
    assert again.chords == parent.chords
    changed = await queued(handler, f"!extend {parent.job_id} chords=Dm | G7", user_id=4)
    assert changed.chords == "Dm | G7"
    off = await queued(handler, f"!again {parent.job_id} chords=off", user_id=5)
    assert off.harmony is False


async def test_a_sketch_with_a_chord_track_keeps_its_chords(handler):
    melody = line([72, 76, 79, 76, 74, 77, 81, 77], length=4)
    pads = [(0, 16, 48), (0, 16, 52), (0, 16, 55), (16, 32, 50), (16, 32, 53), (16, 32, 57)]  # C, then Dm
    data = make_midi([TrackSpec("Melody", melody), TrackSpec("Piano", pads)])

    async def read():
        return data

    job = await queued(handler, "!continue bars=2", uploads=[Upload("song.mid", len(data), read)])
    assert job.primer_chords == "C | Dm" and job.chords == "C | Dm"
    reply = await say(handler, "!continue bars=2 chords=off", uploads=[Upload("song.mid", len(data), read)],
                      user_id=2)
    assert "kept the chords" not in reply.text


async def test_the_bot_path_with_chords_on_the_real_queue_worker_and_renderer(tmp_path, tiny_weights):
    """Through a real LocalQueue worker (tiny network, real rendering): each variation's MIDI is the
    band's (MELODY, KEYS, BASS, DRUMS), its keys and bass on the given chords' tones, the chords
    listed in the reply; chords=off gives the melody and the drums, no harmony."""
    import io

    import pretty_midi
    from conftest import QUEUE_WORKER_ENV, collect

    from bot.queue.local import LocalQueue

    settings = Settings(data_dir=tmp_path, weights=tiny_weights, device="cpu")
    store = BotStore(settings.database)
    try:
        async with LocalQueue(settings, worker_env=QUEUE_WORKER_ENV) as queue:
            handler = CommandHandler(settings, queue, store, platform=DISCORD, rng=random.Random(5))
            given = (await say(handler, "!continue C4 E4 G4 A4 bars=2 variations=2 chords=F | G")).status_of
            bare = (await say(handler, "!continue C4 E4 G4 A4 bars=2 variations=1 chords=off", user_id=2)).status_of
            seen = await collect(queue, lambda seen: {s.job.job_id for s in seen if s.state.finished} >= {given, bare})
            done = {s.job.job_id: s for s in seen if s.state == JobState.DONE}
            assert set(done) == {given, bare}
            for variation in done[given].result.variations:
                midi = pretty_midi.PrettyMIDI(io.BytesIO(variation.midi))
                assert [i.name for i in midi.instruments] == ["MELODY", "KEYS", "BASS", "DRUMS"]
                assert variation.chords.endswith("F | G")  # the continuation's two bars, after the primer's
                chord_pcs = {n.pitch % 12 for i in midi.instruments[1:3] for n in i.notes if n.start >= 2.0 - 1e-6}
                assert chord_pcs <= {5, 9, 0, 7, 11, 2}  # F major and G major triads only, under the continuation
                assert variation.mp3
            reply = handler.result_reply(done[given])
            assert all(v.chords in reply.text for v in done[given].result.variations)
            assert "(suggested under your notes, then yours)" in reply.text
            (variation,) = done[bare].result.variations
            assert variation.chords is None
            tracks = pretty_midi.PrettyMIDI(io.BytesIO(variation.midi)).instruments
            assert [i.name for i in tracks] == ["MELODY", "DRUMS"]
            assert "Chords" not in handler.result_reply(done[bare]).text
    finally:
        store.close()


@pytest.mark.parametrize(
    ("sheet", "sketch_chords", "label"),
    [(None, None, "suggested"), ("F | G", None, "suggested under your notes, then yours"),
     (None, "C", "your sketch's under your notes, then suggested"), ("F | G", "C", "yours")],
)
def test_the_reply_says_whose_chords_it_lists(sheet, sketch_chords, label):
    from bot.commands.replies import chord_lines

    job = Job(user_id=1, channel_id=1, primer=[26, 0, 0, 1], chords=sheet, primer_chords=sketch_chords)
    variations = [Variation([26], b"", b"", "C | F | G"), Variation([26], b"", b"", "C | Am | G")]
    lines = chord_lines(job, Result(job.job_id, 4, variations, b"", None, {}))
    assert lines == [f"Chords 1 ({label}): C | F | G", f"Chords 2 ({label}): C | Am | G"]


async def test_a_file_the_bot_wrote_sent_back_continues_with_its_melody_chords_and_style(handler):
    """The round trip: the band's MIDI (MELODY, KEYS, BASS, DRUMS, chord markers) as a sketch."""
    from model.band.arrange import arrange
    from model.music.chords import chords_per_step, lead_sheet, parse_lead_sheet
    from model.music.events import events_to_notes
    from model.music.midi_io import write_arrangement
    from model.music.primer import parse_notes

    melody = parse_notes("E5 G5 C6 B5 A5:2 G5:2 | F5 A5 C6 A5 G5:4 | E5 G5 B5 D6 C6:4")
    chords = chords_per_step(parse_lead_sheet("C | F G7/B | Am7 | Dm7 G"), len(melody))
    data = write_arrangement(arrange(melody, chords, 104, "rock", seed=1), 104, chords)

    async def read():
        return data

    job = await queued(handler, "!continue bars=2 style=folk", uploads=[Upload("band.mid", len(data), read)])
    assert events_to_notes(job.primer) == events_to_notes(melody)  # the melody, not the keys or the bass
    assert job.primer_chords == lead_sheet(chords)  # from the markers, not guessed from the band's notes
    assert job.primer_chords.startswith("C | F G7/B | Am7 | Dm7 G | C")
    assert job.chords == job.primer_chords and job.bpm == 104 and job.style == "folk"
