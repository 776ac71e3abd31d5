"""A stereo mix (or mono PCM) -> MP3 in this process with libmp3lame (LAME 3.100), gapless.

LAME is called through ctypes from the system library (apt-get install libmp3lame0), not through
the lameenc package: lameenc always encodes two channels as joint stereo, which cost 0.077 CPU-s
for a 19 s preview; plain stereo (each channel coded alone: a band mix panned wide gains little
from mid/side) costs 0.056 (-27%, BENCHMARKS.md, issue 22), and the library writes its own "Info"
frame. The ffmpeg program cost ~0.1 CPU-s to start per process, more than encoding a preview;
pydub is not used to encode: it runs the same program.

The Info frame (LAME's tag, first in the file) tells players the encoder's delay and padding, so
that they play exactly the samples given: without it a preview would start 50 ms late and run up
to a frame long. LAME writes a placeholder of the right size first and fills it in at the end
(lame_get_lametag_frame).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

import numpy as np

from bot.render.audio import SAMPLE_RATE
from bot.render.errors import RenderError

# Constant bit rate at 22.05 kHz: 14 KB a second, so the four previews of a default answer (8 bars
# and the primer) fit one Discord message even at 20 bpm (BENCHMARKS.md, issue 22).
BITRATE_KBPS = 112
# LAME scales what it encodes by 0.95 (-0.447 dB, at every frequency, mono or stereo; measured by
# decoding with ffmpeg): undone before encoding, so that a preview mixed to -14 LUFS is heard at -14.
LAME_GAIN = 0.95
QUALITY = 7  # LAME algorithm quality, 0 (best, slowest) .. 9; 7 is as fast as 9 and sounds better
MODES = {1: 3, 2: 0}  # channels -> LAME's MPEG_mode: MONO (3), STEREO (0)
INSTALL = "apt-get install libmp3lame0"


@cache
def load_lame() -> ctypes.CDLL:
    """libmp3lame with the functions used here declared, or a RenderError saying how to install it."""
    name = ctypes.util.find_library("mp3lame") or "libmp3lame.so.0"
    try:
        lame = ctypes.CDLL(name)
    except OSError as error:
        raise RenderError(f"the MP3 encoder is not installed: {INSTALL} ({error})") from error
    handle, integer, pointer = ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
    lame.lame_init.restype = handle
    for setter in ("num_channels", "in_samplerate", "out_samplerate", "brate", "mode", "quality", "bWriteVbrTag"):
        getattr(lame, f"lame_set_{setter}").argtypes = [handle, integer]
    lame.lame_init_params.argtypes = [handle]
    lame.lame_encode_buffer.argtypes = [handle, pointer, pointer, integer, pointer, integer]
    lame.lame_encode_buffer_interleaved.argtypes = [handle, pointer, integer, pointer, integer]
    lame.lame_encode_flush.argtypes = [handle, pointer, integer]
    lame.lame_get_lametag_frame.argtypes = [handle, pointer, ctypes.c_size_t]
    lame.lame_get_lametag_frame.restype = ctypes.c_size_t
    lame.lame_close.argtypes = [handle]
    return lame


def pcm16(audio: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Float samples in [-1, 1] ((frames,) or (frames, channels)), or int16, times `gain` -> int16,
    rounded (a sample over full scale is clipped, not wrapped)."""
    scale = gain * (1.0 if audio.dtype == np.int16 else 32767.0)
    return np.round(np.clip(audio * np.float32(scale), -32767, 32767)).astype(np.int16)


def encode(audio: np.ndarray) -> bytes:
    """Mono (frames,) or stereo (frames, 2) audio at SAMPLE_RATE, int16 or float -> a
    constant-bit-rate MP3 that decodes to exactly `audio`'s length (LAME's Info frame first)."""
    pcm = np.ascontiguousarray(pcm16(audio, 1 / LAME_GAIN))
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    if channels not in MODES:
        raise RenderError(f"cannot encode {channels} channels; give mono or stereo audio")
    lame = load_lame()
    encoder = lame.lame_init()
    if not encoder:
        raise RenderError("LAME could not start an encoder (out of memory?)")
    try:
        for setter, value in (("num_channels", channels), ("in_samplerate", SAMPLE_RATE),
                              ("out_samplerate", SAMPLE_RATE), ("brate", BITRATE_KBPS),
                              ("mode", MODES[channels]), ("quality", QUALITY), ("bWriteVbrTag", 1)):
            getattr(lame, f"lame_set_{setter}")(encoder, value)
        if lame.lame_init_params(encoder) < 0:
            raise RenderError(f"LAME refused to encode {channels} channels at {SAMPLE_RATE} Hz, {BITRATE_KBPS} kbit/s")
        frames = len(pcm)
        out = ctypes.create_string_buffer(frames * 5 // 4 + 7200)  # LAME's own worst case
        if channels == 2:
            written = lame.lame_encode_buffer_interleaved(encoder, pcm.ctypes.data, frames, out, len(out))
        else:
            written = lame.lame_encode_buffer(encoder, pcm.ctypes.data, pcm.ctypes.data, frames, out, len(out))
        if written < 0:
            raise RenderError(f"LAME could not encode the MP3 (error {written})")
        flushed = lame.lame_encode_flush(encoder, ctypes.byref(out, written), len(out) - written)
        if flushed < 0:
            raise RenderError(f"LAME could not finish the MP3 (error {flushed})")
        data = bytearray(out.raw[: written + flushed])
        tag = ctypes.create_string_buffer(2880)  # an MPEG frame is at most 1,441 bytes
        size = lame.lame_get_lametag_frame(encoder, tag, len(tag))
        if not 0 < size <= min(len(tag), len(data)):
            raise RenderError("LAME returned no Info frame")
        data[:size] = tag.raw[:size]  # over the placeholder LAME wrote first
        return bytes(data)
    finally:
        lame.lame_close(encoder)
