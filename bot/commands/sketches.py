"""Taking a MIDI sketch as the primer: `pick_sketch` chooses the one .mid/.midi upload and refuses one
too big by its announced size before anything is downloaded; `local_upload` makes an `Upload` of a
file named in the terminal (file=PATH). The handler downloads it and checks the real size again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from bot.commands.replies import CommandError, Upload
from model.defaults import MAX_SKETCH_BYTES
from model.music.primer import Primer, primer_from_midi

SKETCH_PARSERS = 2  # sketches parsed at once, each in a thread; more wait their turn
log = logging.getLogger(__name__)

SKETCH_SUFFIXES = (".mid", ".midi")


def pick_sketch(uploads: list[Upload]) -> Upload:
    """The one MIDI upload, checked by name and announced size before anything is downloaded."""
    sketches = [u for u in uploads if u.filename.lower().endswith(SKETCH_SUFFIXES)]
    if not sketches:
        names = ", ".join(u.filename for u in uploads)
        raise CommandError(f"I can only continue MIDI files (.mid or .midi); {names} is not one. Export your "
                           "sketch as MIDI from your DAW or notation program.")
    if len(sketches) > 1:
        raise CommandError("Attach one MIDI sketch at a time.")
    sketch = sketches[0]
    if sketch.size > MAX_SKETCH_BYTES:
        raise CommandError(too_big(sketch.filename, sketch.size))
    return sketch


def local_upload(path_text: str) -> Upload:
    """A file on this machine given as file=PATH (terminal channel)."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise CommandError(f"There is no file at {path}.")
    size = path.stat().st_size

    async def read() -> bytes:
        return await asyncio.to_thread(path.read_bytes)

    return Upload(str(path), size, read)


def too_big(name: str, size: int) -> str:
    return (f"{os.path.basename(name)} is {size / 1024 / 1024:.1f} MiB; a sketch can be at most "
            f"{MAX_SKETCH_BYTES // 1024} KiB. A melody sketch is usually a few KiB: export only the melody track.")


class SketchReader:
    """Downloads and parses sketches off the event loop (pretty_midi is pure Python: a large or
    tempo-heavy file takes seconds), at most SKETCH_PARSERS at once, so a flood of sketches
    cannot stall the bot or take every core."""

    def __init__(self, parsers: int = SKETCH_PARSERS):
        self._parsers = asyncio.Semaphore(parsers)

    async def read(self, upload: Upload) -> Primer:
        """The sketch's primer; CommandError or model.music.midi_io.MidiError with the reason."""
        try:
            data = await upload.read()
        except CommandError:
            raise
        except Exception:
            log.exception("downloading the sketch %s failed", upload.filename)
            raise CommandError(f"I couldn't download {upload.filename}; please try again.") from None
        if len(data) > MAX_SKETCH_BYTES:
            raise CommandError(too_big(upload.filename, len(data)))
        async with self._parsers:
            return await asyncio.to_thread(primer_from_midi, data)
