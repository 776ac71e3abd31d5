"""The whole song of a jam (or of a chain of !extend): MIDI, MP3 (mixed as a preview is:
bot.render.mix) and an engraved lead sheet."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bot.render.arrangement import plain_arrangement
from bot.render.audio import find_soundfont
from bot.render.errors import RenderError
from bot.render.instruments import DEFAULT_INSTRUMENT, INSTRUMENTS, resolve_instrument
from bot.render.leadsheet import engrave_lead_sheet
from bot.render.mix import mix
from bot.render.mp3 import encode as encode_mp3
from model.band.parts import Arrangement
from model.music.midi_io import write_midi

SONG_TIMEOUT_S = 60.0  # seconds for a whole song (a jam's song can be many times a preview's length)


def render_song(
    events: list[int],
    chords: Sequence | None,
    bpm: float,
    instrument: str = DEFAULT_INSTRUMENT,
    *,
    title: str = "Our song",
    soundfont: str | None = None,
    pdf: bool = True,
    timeout: float = SONG_TIMEOUT_S,
    arrangement: Arrangement | None = None,
    midi: bytes | None = None,
    lyrics: Sequence | None = None,
) -> tuple[bytes, bytes, bytes, bytes | None]:
    """The song's events and per-step chords (model.music.chords.Chord or None per step; or None for
    a melody only) -> (MIDI, MP3, lead-sheet PNG, lead-sheet PDF or None when pdf=False). The
    MP3 plays `arrangement` (model.band: the song arranged) when given, else the melody over its
    chords; the MIDI is `midi` (the arranger's) when given, else the melody and its chords. The
    whole song plays at one loudness: no soft primer. The lead sheet is the melody and chords.
    `lyrics`: (step, syllable) pairs, in the MIDI written here as lyric events and under the lead
    sheet's notes."""
    deadline = time.monotonic() + timeout
    if not bpm > 0:
        raise RenderError(f"cannot render at {bpm} bpm")
    if chords is not None and len(chords) != len(events):
        raise RenderError(f"the song has {len(events)} steps but {len(chords)} chords")
    program = INSTRUMENTS[resolve_instrument(instrument)]
    midi = midi if midi is not None else write_midi(events, bpm, program, chords=chords, lyrics=lyrics)
    soundfont = find_soundfont(soundfont)
    played = arrangement if arrangement is not None else plain_arrangement(events, chords, program)
    encoded = encode_mp3(mix(played, bpm, soundfont, deadline))
    png, pdf_bytes = engrave_lead_sheet(events, chords, bpm, title, pdf=pdf, timeout=deadline - time.monotonic(),
                                        lyrics=lyrics)
    return midi, encoded, png, pdf_bytes
