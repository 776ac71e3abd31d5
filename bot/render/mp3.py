"""Mono 16-bit PCM -> MP3 in this process with LAME (the `lameenc` package).

The ffmpeg program cost ~0.1 CPU-s to start per process, more than encoding a 16 s melody
(~0.013 s in process); see BENCHMARKS.md. pydub is not used to encode: it runs the same ffmpeg
program. lameenc writes no LAME/Info header, so players do not know the encoder's delay: the
audio starts ENCODER_DELAY_S late and lasts up to one more MP3 frame (~26 ms), inaudible in a
preview.
"""

from __future__ import annotations

import numpy as np

from bot.render.audio import SAMPLE_RATE
from bot.render.errors import RenderError

BITRATE_KBPS = 96  # constant bit rate, mono: 12 KiB per second, far below Discord's 10 MiB
QUALITY = 7  # LAME algorithm quality, 0 (best, slowest) .. 9; 7 is as fast as 9 and sounds better
ENCODER_DELAY_S = 1105 / SAMPLE_RATE  # LAME's 576-sample encoder + 529-sample decoder delay, ~50 ms


def load_lameenc():
    """The lameenc module, or a RenderError saying how to install it."""
    try:
        import lameenc
    except ImportError as error:
        raise RenderError(f"the MP3 encoder is not installed: pip install lameenc ({error})") from error
    return lameenc


def encode(pcm: np.ndarray) -> bytes:
    """Mono int16 PCM at SAMPLE_RATE -> a constant-bit-rate MP3."""
    encoder = load_lameenc().Encoder()
    encoder.set_bit_rate(BITRATE_KBPS)
    encoder.set_in_sample_rate(SAMPLE_RATE)
    encoder.set_channels(1)
    encoder.set_quality(QUALITY)
    try:
        return bytes(encoder.encode(pcm.astype("<i2").tobytes()) + encoder.flush())
    except RuntimeError as error:  # lameenc's only failure
        raise RenderError(f"LAME could not encode the MP3: {error}") from error
