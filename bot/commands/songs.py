"""A song made of answers: variations appended one after another (their events, chord symbols
and sung words, each moved to where it lands), and the whole song rendered as one reply (the band
in its style, MIDI with markers and lyrics, MP3, lead sheet). Jams (jam_service.py) and `!song`
chains of `!extend` (JamService.chain_song) both build their songs here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from bot.commands.replies import UPLOAD_LIMIT, OutFile, Reply
from bot.jobs import Result
from bot.settings import Settings
from model.music.chords import Chord, chords_per_step, parse_chord
from model.music.events import NOTE_OFF, STEPS_PER_BAR

log = logging.getLogger(__name__)


def append_variation(song: list[int], events: list[int], primer_steps: int) -> list[int]:
    """The whole song after a job continued it. The job's variation is its primer as the worker
    sampled it (the song's end: long songs lose bars at the front, a trailing NOTE_OFF is dropped)
    followed by the continuation, so the song keeps what came before that primer."""
    tail = 1 if len(song) > 1 and song[-1] == NOTE_OFF else 0
    front = max(0, len(song) - tail - primer_steps)
    return list(song[:front]) + list(events)


def append_words(words: list, song: list[int], variation, primer_steps: int) -> list:
    """The song's sung syllables ([step, text]) after append_variation: the song's own, then the
    variation's (Variation.lyrics: on its continuation), moved to where the variation lands."""
    tail = 1 if len(song) > 1 and song[-1] == NOTE_OFF else 0
    front = max(0, len(song) - tail - primer_steps)
    return list(words) + [[front + step, text] for step, text in variation.lyrics or []]


def step_symbols(sheet: str | None, steps: int) -> list[str | None] | None:
    """A lead sheet laid on `steps` steps as chord symbols (None: no chord), or None for no sheet.
    No length limit: a variation's sheet covers its whole primer (up to 64 bars) and more."""
    if not sheet:
        return None
    bars = [[parse_chord(symbol) for symbol in part.split()] for part in sheet.split("|")]
    return [None if c is None else c.symbol() for c in chords_per_step(bars, steps)]


def append_chords(chords: list[str | None] | None, song: list[int], events: list[int], primer_steps: int,
                  sheet: str | None) -> list[str | None] | None:
    """The song's chord symbols per step after append_variation: the song's own chords so far,
    then the continuation's from the variation's `sheet` (which covers its events); None while
    neither has chords."""
    new = step_symbols(sheet, len(events))
    if chords is None and new is None:
        return None
    tail = 1 if len(song) > 1 and song[-1] == NOTE_OFF else 0
    front = max(0, len(song) - tail - primer_steps)
    if new is None:
        new = [None] * len(events)
    if chords is None:  # the first chords: the variation's own, under its primer too
        return [None] * front + new
    before = list(chords[: front + primer_steps])
    return before + [None] * (front + primer_steps - len(before)) + new[primer_steps:]


def chord_objects(symbols: Sequence[str | None] | None) -> list[Chord | None] | None:
    if symbols is None or not any(symbols):
        return None
    parsed: dict[str, Chord | None] = {}
    return [None if s is None else parsed.setdefault(s, parse_chord(s)) for s in symbols]


def bars_of(steps: int) -> int:
    return -(-steps // STEPS_PER_BAR)


def extend_song(song: list[int], chords: list[str | None] | None, result: Result, number: int):
    """(song, chord symbols) after variation `number` of `result` is appended."""
    variation = result.variations[number - 1]
    new_chords = append_chords(chords, song, variation.events, result.primer_steps, getattr(variation, "chords", None))
    return append_variation(song, variation.events, result.primer_steps), new_chords


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


async def song_reply(settings: Settings, name: str, events: list[int], chords: list[str | None] | None, bpm: float,
                     instrument: str, title: str, upload_limit: int = UPLOAD_LIMIT, style: str = "pop",
                     words: list | None = None) -> Reply:
    """The song's files (MIDI, MP3, lead sheet PNG and PDF) as one reply, rendered in a thread:
    the band in `style` plays it (the MIDI holds its parts and the chord markers); `words`: the
    syllables sung, printed under their notes."""
    from bot.render import INSTRUMENTS, render_song, resolve_instrument
    from model.band.arrange import arrange
    from model.music.midi_io import write_arrangement

    soundfont = str(settings.soundfont) if settings.soundfont else None
    started = time.perf_counter()
    objects = chord_objects(chords)
    program = INSTRUMENTS[resolve_instrument(instrument)]

    def render() -> tuple[bytes, bytes, bytes, bytes | None]:  # in a thread: a long song takes a while
        arrangement = arrange(events, objects, bpm, style, melody_program=program)
        midi = write_arrangement(arrangement, bpm, objects, lyrics=words)
        _, mp3, png, pdf = render_song(events, objects, bpm, instrument, title=title, soundfont=soundfont,
                                       arrangement=arrangement, midi=midi, lyrics=words)
        return midi, mp3, png, pdf

    midi, mp3, png, pdf = await asyncio.to_thread(render)
    log.info("%s rendered in %.2f s (%d bars)", name, time.perf_counter() - started, bars_of(len(events)))
    files = [OutFile(f"{name}.mid", midi), OutFile(f"{name}.mp3", mp3), OutFile(f"{name}-lead-sheet.png", png)]
    if pdf:
        files.append(OutFile(f"{name}-lead-sheet.pdf", pdf))
    for drop in (f"{name}-lead-sheet.pdf", f"{name}.mp3"):  # what goes first when the channel takes less
        if sum(len(f.data) for f in files) > upload_limit:
            files = [f for f in files if f.name != drop]
    with_chords = " with its chords" if chord_objects(chords) else ""
    return Reply(f"MIDI{with_chords}, MP3 and the lead sheet of {plural(bars_of(len(events)), 'bar')} at "
                 f"{bpm:g} BPM.", files=files)
