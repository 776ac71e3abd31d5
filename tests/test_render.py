"""Previews rendered for real: libfluidsynth, the TimGM6mb soundfont, pedalboard and LAME, no mocks.

MP3s are decoded back with pydub (ffmpeg) and measured: length, loudness (pyloudnorm), peak,
silence where there should be silence. Melodies are made here from C major scales at 120 bpm (a
beat is 0.5 s). The band's mix: tests/test_mix.py.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image
from pydub import AudioSegment

from bot.render import INSTRUMENTS, RenderError, check_setup, mp3, pianoroll, render_variations, resolve_instrument
from bot.render.audio import NOTES, PRIMER_VELOCITY, SAMPLE_RATE, performance, synthesize
from bot.render.mix import TAIL_S
from model.music.events import NO_EVENT, NOTE_OFF, events_to_notes, note_on
from model.music.midi_io import read_midi

BPM = 120
STEP_S = 60 / BPM / 4  # a sixteenth note: 0.125 s
C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def legato(pitches: list[int], steps: int = 4) -> list[int]:
    """Quarter notes, each held until the next starts (the last until the end)."""
    return [event for pitch in pitches for event in [note_on(pitch)] + [NO_EVENT] * (steps - 1)]


SCALE = legato(C_MAJOR)  # 2 bars: the first bar is the primer
PRIMER_STEPS = 16
REST_BAR = [NO_EVENT] * 16
CONTINUATIONS = [
    legato([67, 69, 71, 72]),
    legato([72, 71, 69, 67]),
    legato([60, 64, 67, 72]),
    [note_on(67), NO_EVENT, NOTE_OFF, NO_EVENT] * 4,  # staccato, ends in a rest
]
# A bar of rest first: anything heard there would be another melody's sound leaking in.
BATCH = [REST_BAR + legato(C_MAJOR[:4]) + continuation for continuation in CONTINUATIONS]


def render_variation(events: list[int], primer_steps: int, bpm: float, instrument: str = "piano", **options):
    previews, _, _ = render_variations([events], primer_steps, bpm, instrument, **options)
    return previews[0]


def panel_of(combined_png: bytes, index: int, count: int):
    """Variation `index`'s piano roll as (height, width, 3) pixels, cut from the stacked picture of
    `count` variations that render_variations returns (bot.render.pianoroll.stack: panels alike
    in height, SEPARATOR px apart)."""
    pixels = np.asarray(Image.open(io.BytesIO(combined_png)).convert("RGB"))
    height = (pixels.shape[0] - (count - 1) * pianoroll.SEPARATOR) // count
    top = index * (height + pianoroll.SEPARATOR)
    return pixels[top : top + height]


def decode(data: bytes) -> tuple[AudioSegment, np.ndarray]:
    """The MP3 decoded: the segment, and its samples as (frames, channels) float64 (int16 scale)."""
    segment = AudioSegment.from_file(io.BytesIO(data), format="mp3")
    samples = np.array(segment.get_array_of_samples(), dtype=np.float64)
    return segment, samples.reshape(-1, segment.channels)


def lufs(samples: np.ndarray) -> float:
    """Integrated loudness (ITU-R BS.1770-4) of decoded samples, by pyloudnorm."""
    import pyloudnorm

    return pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(samples / 32768)


def dbfs(samples: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(samples**2))) if len(samples) else 0.0
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def part(samples: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    return samples[round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]


@pytest.fixture(scope="module")
def preview():
    return render_variation(SCALE, PRIMER_STEPS, BPM)


@pytest.fixture(scope="module")
def batch():
    return render_variations(BATCH, 32, BPM, "Strings")


def test_mp3_is_stereo_small_and_as_long_as_the_melody_plus_a_short_tail(preview):
    segment, samples = decode(preview.mp3)
    expected = len(SCALE) * STEP_S + TAIL_S  # 5 s
    assert (segment.channels, segment.frame_rate) == (2, SAMPLE_RATE)
    assert segment.duration_seconds == pytest.approx(expected, abs=0.03)
    assert preview.duration_s == pytest.approx(expected, abs=0.001)
    assert len(preview.mp3) < 100_000  # 112 kbit/s: ~70 KB for 5 s
    assert not np.array_equal(samples[:, 0], samples[:, 1])  # the room's reverb is stereo


def test_mp3_is_at_minus_14_lufs_peaks_under_minus_1_dbfs_and_never_clips(preview):
    segment, samples = decode(preview.mp3)
    assert lufs(samples) == pytest.approx(-14.0, abs=1.0)  # decoded, as a listener hears it
    assert segment.max_dBFS <= -1.0  # the MP3 moves peaks a little: the mix leaves room for it
    assert np.abs(samples).max() < 32767  # no clipped samples


def test_mp3_decodes_to_exactly_the_samples_given_without_the_encoders_delay():
    for length in (300, SAMPLE_RATE + 123):  # shorter than one MP3 frame; a second and a bit
        for channels in (1, 2):
            pcm = np.zeros(length if channels == 1 else (length, 2), dtype=np.int16)
            pcm[200] = 30000  # a click: where it comes out shows any delay
            _, samples = decode(mp3.encode(pcm))
            assert samples.shape == (length, channels)  # the Info frame's padding is trimmed...
            assert np.argmax(np.abs(samples[:, 0])) == 200  # ...and its delay skipped (LAME's 1105 samples)


def test_tail_fades_out_to_silence(preview):
    _, samples = decode(preview.mp3)
    assert dbfs(samples[-220:]) < dbfs(samples) - 30  # the last 10 ms


def test_midi_is_the_plain_melody_on_the_instrument(preview, batch):
    song = read_midi(preview.midi)
    assert song.bpm == BPM
    [track] = song.tracks
    assert track.program == INSTRUMENTS["piano"]
    assert [note.pitch for note in track.notes] == C_MAJOR
    assert {note.velocity for note in track.notes} == {100}  # the soft primer is for listening only
    assert read_midi(batch[0][0].midi).tracks[0].program == INSTRUMENTS["strings"]


def test_primer_is_played_softer_than_the_continuation():
    soft, loud = (render_variation(SCALE, PRIMER_STEPS, BPM, soft_primer=flag) for flag in (True, False))
    # Primer 0-2 s, continuation 2-4 s: how much quieter the primer is, soft minus loud.
    levels = []
    for rendered in (soft, loud):
        _, samples = decode(rendered.mp3)
        levels.append(dbfs(part(samples, 0.1, 1.9)) - dbfs(part(samples, 2.1, 3.9)))
    assert levels[0] < levels[1] - 2.0  # (the bus compressor evens it out a little)
    assert PRIMER_VELOCITY < 100


def test_primer_gap_adds_one_silent_beat(preview):
    gapped = render_variation(SCALE, PRIMER_STEPS, BPM, primer_gap=True)
    segment, samples = decode(gapped.mp3)
    beat = 60 / BPM
    assert segment.duration_seconds == pytest.approx(decode(preview.mp3)[0].duration_seconds + beat, abs=0.03)
    # The primer ends at 2.0 s and the continuation starts at 2.5 s: the release and the room's
    # reverb die away between.
    assert dbfs(part(samples, 2.3, 2.48)) < dbfs(part(samples, 2.5, 4.5)) - 20


def test_piano_roll_png_marks_primer_and_continuation():
    _, combined, _ = render_variations([SCALE], PRIMER_STEPS, BPM)  # one variation: the picture is its panel
    image = Image.open(io.BytesIO(combined)).convert("RGB")
    assert image.size == (pianoroll.WIDTH, pianoroll.PANEL_HEIGHT)
    pixels = np.asarray(image)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # grid, shading, notes, anti-aliased text

    grid = pixels[pianoroll.HEADER : pianoroll.PANEL_HEIGHT - pianoroll.FOOTER]  # not the legend

    def columns(colour):
        return np.nonzero(np.all(grid == colour, axis=2))[1]

    primer, continuation = columns(pianoroll.PRIMER_NOTE), columns(pianoroll.CONTINUATION_NOTE)
    assert len(primer) > 100 and len(continuation) > 100  # note pixels of both colours
    assert primer.max() < continuation.min()  # primer notes left of continuation notes
    shade = columns(pianoroll.PRIMER_SHADE)
    assert shade.min() <= pianoroll.GUTTER + 3 and shade.max() < continuation.min()  # shaded from the start
    gutter = pixels[:, : pianoroll.GUTTER - 2]
    assert np.any(np.all(gutter == pianoroll.TEXT, axis=2))  # note names ("C4", "C5") drawn


def test_render_variations_returns_all_previews_and_one_stacked_picture(batch):
    previews, combined, timings = batch
    assert len(previews) == len(BATCH)
    image = Image.open(io.BytesIO(combined))
    assert image.size == (pianoroll.WIDTH, 4 * pianoroll.PANEL_HEIGHT + 3 * pianoroll.SEPARATOR)
    assert set(timings) == {"midi_write", "png", "audio_wait", "total", "synth", "mix", "mp3_encode"}
    this_thread = ("midi_write", "png", "audio_wait")  # the others are summed over the threads
    assert timings["total"] >= sum(timings[stage] for stage in this_thread) * 0.99
    assert all(timings[stage] > 0 for stage in ("synth", "mix", "mp3_encode"))
    for preview, melody in zip(previews, BATCH):
        segment, samples = decode(preview.mp3)
        last_note_end = events_to_notes(melody)[-1].end  # the staccato one ends in a rest
        assert segment.duration_seconds == pytest.approx(last_note_end * STEP_S + TAIL_S, abs=0.03)
        assert lufs(samples) == pytest.approx(-14.0, abs=1.0) and segment.max_dBFS <= -1.0
        # Synthesizers are reused: the rest bar must stay silent (nothing left from the melody before).
        assert np.abs(part(samples, 0.0, 1.9)).max() < 30  # below -60 dBFS


def test_instrument_names_resolve_case_insensitively_with_aliases():
    assert resolve_instrument(None) == "piano"
    assert resolve_instrument("Piano") == "piano"
    assert resolve_instrument("  Synth-Lead ") == "synth"
    assert resolve_instrument("SAXOPHONE") == "sax"
    assert resolve_instrument("electric_piano") == "electric piano"
    assert set(INSTRUMENTS) >= {"piano", "guitar", "strings", "synth", "flute"}
    assert all(0 <= program < 128 for program in INSTRUMENTS.values())


def test_unknown_instrument_is_refused_with_the_choices():
    with pytest.raises(RenderError, match="unknown instrument 'kazoo'; choose one of: piano, .*strings"):
        render_variation(SCALE, PRIMER_STEPS, BPM, "kazoo")


def test_missing_soundfont_says_where_it_looked_and_how_to_install(tmp_path, monkeypatch):
    missing = str(tmp_path / "missing.sf2")
    message = f"soundfont not found at {missing}: apt-get install timgm6mb-soundfont or set MELODYBOT_SOUNDFONT"
    with pytest.raises(RenderError, match=message):
        render_variation(SCALE, PRIMER_STEPS, BPM, soundfont=missing)
    monkeypatch.setenv("MELODYBOT_SOUNDFONT", missing)
    with pytest.raises(RenderError, match=message):
        render_variation(SCALE, PRIMER_STEPS, BPM)
    with pytest.raises(RenderError, match=message):
        check_setup()


def test_broken_soundfonts_are_reported(tmp_path):
    not_sf2 = tmp_path / "notes.sf2"
    not_sf2.write_text("not a soundfont")
    with pytest.raises(RenderError, match="is not a SoundFont 2"):
        render_variation(SCALE, PRIMER_STEPS, BPM, soundfont=str(not_sf2))
    # Right header, damaged body: libfluidsynth refuses to load it.
    damaged = tmp_path / "damaged.sf2"
    damaged.write_bytes(b"RIFF" + struct.pack("<I", 1000) + b"sfbk" + bytes(1000))
    message = f"FluidSynth could not load the soundfont {damaged}: the file is damaged"
    with pytest.raises(RenderError, match=message):
        render_variation(SCALE, PRIMER_STEPS, BPM, soundfont=str(damaged))
    with pytest.raises(RenderError, match=message):
        check_setup(str(damaged))  # the bot's start-up check loads it for real


def test_missing_libraries_say_how_to_install(monkeypatch):
    assert check_setup().endswith(".sf2")
    # as if libmp3lame were not installed: the library is not found
    monkeypatch.setattr(mp3.ctypes.util, "find_library", lambda name: "libmp3lame-not-installed.so")
    mp3.load_lame.cache_clear()
    try:
        with pytest.raises(RenderError, match="the MP3 encoder is not installed: apt-get install libmp3lame0"):
            render_variation(SCALE, PRIMER_STEPS, BPM)
        with pytest.raises(RenderError, match="apt-get install libmp3lame0"):
            check_setup()
    finally:
        mp3.load_lame.cache_clear()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "fluidsynth", None)
    with pytest.raises(RenderError, match="FluidSynth is not installed: apt-get install libfluidsynth3"):
        check_setup()
    monkeypatch.delitem(sys.modules, "fluidsynth")
    monkeypatch.setitem(sys.modules, "verovio", None)  # lead sheets are part of the product too
    with pytest.raises(RenderError, match="the lead-sheet engraver is not installed: pip install verovio"):
        check_setup()


def test_a_melody_without_notes_renders_short_silence():
    silent = render_variation(REST_BAR, 0, BPM)
    segment, samples = decode(silent.mp3)
    assert segment.duration_seconds == pytest.approx(TAIL_S, abs=0.03)
    assert not samples.any()


def test_reused_synthesizers_leave_nothing_behind_alone_or_in_parallel():
    soundfont, deadline = check_setup(), time.monotonic() + 20
    played = [performance(melody, 32, False, True) for melody in BATCH]
    first = synthesize(soundfont, played[0], INSTRUMENTS["piano"], BPM, deadline)
    synthesize(soundfont, played[1], INSTRUMENTS["strings"], BPM, deadline)  # long string notes, then...
    again = synthesize(soundfont, played[0], INSTRUMENTS["piano"], BPM, deadline)
    rest = round(16 * STEP_S * SAMPLE_RATE)  # the melody starts with a bar of rest
    assert not again[:rest].any()  # nothing of the strings is left
    # The same notes, the same sound (libfluidsynth computes a sample's noise floor when it first
    # plays it, which moves a release's end by a little: hence a tolerance, -60 dB of the peak).
    assert len(again) == len(first) and np.abs(again - first).max() < 1e-3 * np.abs(first).max()
    results: dict[int, list[np.ndarray]] = {}

    def render(index: int) -> None:
        results[index] = [synthesize(soundfont, p, INSTRUMENTS["piano"], BPM, deadline) for p in played[:2]]

    threads = [threading.Thread(target=render, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(2):
        assert np.abs(results[index][0] - first).max() < 1e-3 * np.abs(first).max()


def test_rendering_stops_at_the_timeout_and_leaves_nothing_behind():
    soundfont = check_setup()
    played = performance(BATCH[0], 32, False, True)
    NOTES.clear()
    before = synthesize(soundfont, played, INSTRUMENTS["piano"], BPM, time.monotonic() + 20)
    long_melodies = [[note_on(48), *[NO_EVENT] * 1000, NOTE_OFF] * 2]  # two 62 s notes: seconds of work
    started = time.monotonic()
    with pytest.raises(RenderError, match="took longer than the rendering timeout"):
        render_variations(long_melodies, 0, BPM, timeout=0.1, instrument="strings")
    assert time.monotonic() - started < 0.5  # stopped, not finished
    NOTES.clear()  # each note rendered again, on the synthesizers stopped mid-note
    after = synthesize(soundfont, played, INSTRUMENTS["piano"], BPM, time.monotonic() + 20)
    rest = round(16 * STEP_S * SAMPLE_RATE)  # the melody starts with a bar of rest
    # (-40 dB: a synthesizer's first play of a sample ends its release a little differently; what
    # was left ringing without the clean-up is 80% of the peak)
    assert not after[:rest].any() and np.abs(after - before).max() < 1e-2 * np.abs(before).max()
