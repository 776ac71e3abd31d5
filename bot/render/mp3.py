"""A stereo mix (or mono PCM) -> MP3 in this process with LAME (the `lameenc` package), gapless.

The ffmpeg program cost ~0.1 CPU-s to start per process, more than encoding a 16 s melody
(~0.015 s in process); see BENCHMARKS.md. Stereo costs LAME about 2.4x mono (~0.07 CPU-s for a
17 s preview; BENCHMARKS.md, issue 22). pydub is not used to encode: it runs the same ffmpeg
program.

lameenc returns the audio frames only. LAME (and ffmpeg's libmp3lame) put an "Info" frame in front
that tells players the encoder's delay and padding, so that they play exactly the samples given:
without it a preview would start 50 ms late and run up to a frame long. info_frame() writes that
frame as LAME's VbrTag.c does (Xing layout, LAME extension, CRC-16 of the frame up to its end).
"""

from __future__ import annotations

import struct

import numpy as np

from bot.render.audio import SAMPLE_RATE
from bot.render.errors import RenderError

# Constant bit rate. Stereo (joint) at 22.05 kHz: 14 KB a second, so the four previews of a default
# answer (8 bars and the primer) fit one Discord message even at 20 bpm (BENCHMARKS.md, issue 22).
BITRATE_KBPS = 112
# LAME as lameenc builds it scales what it encodes by 0.95 (-0.447 dB, at every frequency, mono or
# stereo; measured by decoding with ffmpeg): undone before encoding, so that a preview mixed to
# -14 LUFS is heard at -14 LUFS.
LAME_GAIN = 0.95
QUALITY = 7  # LAME algorithm quality, 0 (best, slowest) .. 9; 7 is as fast as 9 and sounds better
ENCODER_DELAY = 576  # samples LAME 3.100 puts before the audio (decoders add 529 of their own)
SAMPLES_PER_FRAME = 576  # MPEG-2 Layer III (sample rates below 32 kHz)
SIDE_INFO_BYTES = {1: 9, 2: 17}  # MPEG-2, by channels: where the Info tag starts after the 4-byte header
assert SAMPLE_RATE < 32000, "the frame layout above is MPEG-2's"


def load_lameenc():
    """The lameenc module, or a RenderError saying how to install it."""
    try:
        import lameenc
    except ImportError as error:
        raise RenderError(f"the MP3 encoder is not installed: pip install lameenc ({error})") from error
    return lameenc


def pcm16(audio: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Float samples in [-1, 1] ((frames,) or (frames, channels)), or int16, times `gain` -> int16,
    rounded (a sample over full scale is clipped, not wrapped)."""
    scale = gain * (1.0 if audio.dtype == np.int16 else 32767.0)
    return np.round(np.clip(audio * np.float32(scale), -32767, 32767)).astype("<i2")


def encode(audio: np.ndarray) -> bytes:
    """Mono (frames,) or stereo (frames, 2) audio at SAMPLE_RATE, int16 or float -> a
    constant-bit-rate MP3 that decodes to exactly `audio`'s length (an Info frame with the encoder
    delay and padding comes first)."""
    pcm = pcm16(audio, 1 / LAME_GAIN)
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    if channels not in SIDE_INFO_BYTES:
        raise RenderError(f"cannot encode {channels} channels; give mono or stereo audio")
    encoder = load_lameenc().Encoder()
    encoder.set_bit_rate(BITRATE_KBPS)
    encoder.set_in_sample_rate(SAMPLE_RATE)
    encoder.set_channels(channels)
    encoder.set_quality(QUALITY)
    try:
        frames = bytes(encoder.encode(np.ascontiguousarray(pcm).tobytes()) + encoder.flush())
    except RuntimeError as error:  # lameenc's only failure
        raise RenderError(f"LAME could not encode the MP3: {error}") from error
    return info_frame(frames, len(pcm), channels) + frames


def info_frame(frames: bytes, samples: int, channels: int = 1) -> bytes:
    """The LAME "Info" frame for a CBR stream of `frames` (lameenc's output) holding `samples`."""
    if len(frames) < 4 or frames[0] != 0xFF or frames[1] & 0xE0 != 0xE0:
        raise RenderError("LAME returned no MP3 frames")
    header = bytearray(frames[:4])
    header[1] |= 0x01  # no CRC
    header[2] &= 0xFD  # no padding byte: the Info frame has the plain length
    size = 72 * BITRATE_KBPS * 1000 // SAMPLE_RATE  # bytes of an unpadded MPEG-2 Layer III frame
    count = _count_frames(frames, size)
    padding = count * SAMPLES_PER_FRAME - ENCODER_DELAY - samples
    if not 0 <= padding < 4096:
        raise RenderError(f"LAME returned {count} frames for {samples} samples")
    total = size + len(frames)
    tag = b"Info" + struct.pack(">III", 0x0F, count, total)  # flags: frames, bytes, seek table, quality
    tag += bytes(min(255, index * 256 // 100) for index in range(100))  # seek table: CBR is linear
    tag += struct.pack(">I", 100 - QUALITY * 10)  # LAME's "VBR scale" for this quality
    lame = b"LAME3.100" + bytes([0x01, 0])  # tag revision 0, method 1 (CBR); lowpass unknown
    lame += bytes(4 + 2 + 2 + 1) + bytes([min(BITRATE_KBPS, 255)])  # no peak or ReplayGain; ATH; bitrate
    lame += (ENCODER_DELAY << 12 | padding).to_bytes(3, "big")
    lame += bytes(1 + 1 + 2) + struct.pack(">I", total) + bytes(2)  # misc, gain, preset; length; music CRC
    frame = bytes(header) + bytes(SIDE_INFO_BYTES[channels]) + tag + lame
    frame += struct.pack(">H", _crc16(frame))  # the tag's CRC: of everything before it in the frame
    return frame + bytes(size - len(frame))


def _count_frames(frames: bytes, size: int) -> int:
    count = position = 0
    while position + 4 <= len(frames):
        if frames[position] != 0xFF:
            raise RenderError("LAME returned a damaged MP3 stream")
        position += size + (frames[position + 2] >> 1 & 1)  # the padding bit adds a byte
        count += 1
    return count


def _crc16(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005, reflected, start 0), as LAME computes its tag's CRC."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
