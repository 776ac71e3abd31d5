"""Mono 16-bit PCM -> MP3 with ffmpeg (its libmp3lame encoder).

The ffmpeg program costs ~0.1 s of CPU to start, more than encoding a 16 s melody, so one ffmpeg
process encodes a whole group of melodies (several inputs, several outputs).
"""

from __future__ import annotations

import os

import numpy as np

from bot.render.audio import SAMPLE_RATE
from bot.render.errors import RenderError, run

BITRATE_KBPS = 96  # constant bit rate, mono: 12 KiB per second, far below Discord's 10 MiB
QUALITY = 7  # LAME algorithm quality, 0 (best, slowest) .. 9; 7 is as fast as 9 and sounds better


def encode_with_ffmpeg(ffmpeg: str, pcms: list[np.ndarray], prefix: str, deadline: float) -> list[bytes]:
    """Several mono int16 PCM arrays -> MP3s in one ffmpeg process (one start-up for all), through
    files named `prefix`0.pcm, `prefix`0.mp3 and so on."""
    names = [f"{prefix}{index}" for index in range(len(pcms))]
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    for name, pcm in zip(names, pcms):
        pcm.astype("<i2").tofile(name + ".pcm")
        command += ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", name + ".pcm"]
    for index, name in enumerate(names):
        command += ["-map", f"{index}:a", "-c:a", "libmp3lame", "-b:a", f"{BITRATE_KBPS}k"]
        command += ["-compression_level", str(QUALITY), "-map_metadata", "-1", name + ".mp3"]
    result = run(command, "ffmpeg", deadline)
    missing = [name for name in names if not os.path.exists(name + ".mp3") or os.path.getsize(name + ".mp3") == 0]
    if result.returncode != 0 or missing:
        detail = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
        raise RenderError(f"ffmpeg could not encode the MP3: {detail}")
    mp3s = []
    for name in names:
        with open(name + ".mp3", "rb") as f:
            mp3s.append(f.read())
    return mp3s
