"""The whole song of a jam (or of a chain of !extend): MIDI, MP3 and an engraved lead sheet."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bot.render.audio import accompaniment, find_soundfont, finish, performance, synthesize, with_chords
from bot.render.errors import RenderError
from bot.render.instruments import DEFAULT_INSTRUMENT, INSTRUMENTS, resolve_instrument
from bot.render.leadsheet import engrave_lead_sheet
from bot.render.mp3 import encode as encode_mp3
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
) -> tuple[bytes, bytes, bytes, bytes | None]:
    """The song's events and per-step chords (model.music.chords.Chord or None per step; or None for
    a melody only) -> (MIDI, MP3, lead-sheet PNG, lead-sheet PDF or None when pdf=False). The
    whole song plays at one loudness: no soft primer."""
    deadline = time.monotonic() + timeout
    if not bpm > 0:
        raise RenderError(f"cannot render at {bpm} bpm")
    if chords is not None and len(chords) != len(events):
        raise RenderError(f"the song has {len(events)} steps but {len(chords)} chords")
    program = INSTRUMENTS[resolve_instrument(instrument)]
    midi = write_midi(events, bpm, program, chords=chords)
    soundfont = find_soundfont(soundfont)
    played = with_chords(performance(events, 0, False, False),
                         accompaniment(chords, 0, False) if chords is not None else None)  # fmt: skip
    audio = finish(synthesize(soundfont, played, program, bpm, deadline), bool(played.end))
    encoded = encode_mp3(audio)
    png, pdf_bytes = engrave_lead_sheet(events, chords, bpm, title, pdf=pdf, timeout=deadline - time.monotonic())
    return midi, encoded, png, pdf_bytes
