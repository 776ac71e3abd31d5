"""Taking a MIDI sketch as the primer: `pick_sketch` chooses the one .mid/.midi upload and refuses one
too big by its announced size before anything is downloaded; `local_upload` makes an `Upload` of a
file named in the terminal (file=PATH). The handler downloads it and checks the real size again.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bot.commands.replies import CommandError, Upload

MAX_SKETCH_BYTES = 1024 * 1024  # an attached sketch over this is refused before it is downloaded
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
        raise CommandError(_too_big(sketch.filename, sketch.size))
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


def _too_big(name: str, size: int) -> str:
    return (f"{os.path.basename(name)} is {size / 1024 / 1024:.1f} MiB; a sketch can be at most "
            f"{MAX_SKETCH_BYTES // 1024} KiB. A melody sketch is usually a few KiB: export only the melody track.")
