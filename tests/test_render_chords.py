"""Harmony in the previews, for real: a CHORDS track in the MIDI that reads back, chords heard under
the melody (quieter, loudness still normalised), chord symbols in the piano roll."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from test_render import BPM, REST_BAR, STEP_S, TAIL_S, dbfs, decode, legato, lufs, panel_of, part

from bot.render import RenderError, pianoroll, render_variations
from model.music.chords import chords_per_step, parse_chord, parse_lead_sheet
from model.music.events import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, event_pitch, events_to_notes, is_note_on, note_on
from model.music.midi_io import CHORD_PROGRAM, CHORD_TRACK, CHORD_VELOCITY, MELODY_TRACK, read_midi, write_midi


def per_step(text: str, steps: int | None = None) -> list:
    """Lead-sheet text -> one model.music.chords.Chord (or None) per step, the bars repeated to `steps`."""
    bars = parse_lead_sheet(text)
    return chords_per_step(bars, steps if steps is not None else len(bars) * STEPS_PER_BAR)


MELODY = legato([72, 76, 79, 76]) + legato([74, 77, 81, 77]) + legato([76, 79, 84, 79], 3) + [NO_EVENT] * 4
PROGRESSION = "C | Dm7 G7 | C/E Am"  # three bars: one chord, two chords, a slash chord and another


def test_midi_with_chords_has_a_melody_and_a_chords_track_that_read_back():
    chords = per_step(PROGRESSION)
    song = read_midi(write_midi(MELODY, BPM, program=0, chords=chords))
    melody, accompaniment = song.tracks
    assert (melody.name, accompaniment.name) == (MELODY_TRACK, CHORD_TRACK)
    assert (melody.program, accompaniment.program) == (0, CHORD_PROGRAM)
    assert melody.notes == read_midi(write_midi(MELODY, BPM)).tracks[0].notes  # the melody as without chords
    assert {note.velocity for note in accompaniment.notes} == {CHORD_VELOCITY}
    assert CHORD_VELOCITY < 100 and max(n.pitch for n in accompaniment.notes) < min(n.pitch for n in melody.notes)

    # One voicing per chord, from its first step to the next chord: its pitch classes are the chord's.
    spans: dict[tuple[int, int], set[int]] = {}
    for note in accompaniment.notes:
        spans.setdefault((note.start, note.end), set()).add(note.pitch % 12)
    expected = [(0, 16, "C"), (16, 24, "Dm7"), (24, 32, "G7"), (32, 40, "C/E"), (40, 48, "Am")]
    assert sorted(spans) == [(start, end) for start, end, _ in expected]
    for start, end, symbol in expected:
        played = parse_chord(symbol)
        assert spans[(start, end)] == set(played.pitch_classes), symbol
        lowest = min(n.pitch for n in accompaniment.notes if n.start == start)
        assert lowest % 12 == (played.bass if played.bass is not None else played.root), symbol  # C/E: E below


def test_a_chord_held_over_bars_is_struck_again_at_each_bar_and_no_chord_is_silent():
    melody = legato([72] * 16)  # 4 bars
    chords = per_step("C | C | N | C")
    notes = read_midi(write_midi(melody, BPM, chords=chords)).tracks[1].notes
    assert sorted({(n.start, n.end) for n in notes}) == [(0, 16), (16, 32), (48, 64)]
    with pytest.raises(ValueError, match="3 chords for 64 steps"):
        write_midi(melody, BPM, chords=chords[:3])


def test_chords_are_heard_under_the_melody_quieter_with_the_loudness_normalised():
    # Bar 2 of the melody is a rest: there only the chords sound.
    melody = legato([72, 76, 79, 84]) + [NOTE_OFF] + REST_BAR[1:] + legato([84, 79, 76, 72])
    with_chords, without = (
        render_variations([melody], 0, BPM, chords=chords)[0][0] for chords in ([per_step("C", len(melody))], None)
    )
    (segment, samples), (_, plain) = decode(with_chords.mp3), decode(without.mp3)
    rest = (STEPS_PER_BAR * STEP_S + 0.3, 2 * STEPS_PER_BAR * STEP_S - 0.05)  # after the melody's release
    # without chords the rest bar is silent (but for the room's reverb of the melody dying away)...
    assert dbfs(part(plain, *rest)) < dbfs(part(plain, 0.1, 1.9)) - 35
    assert dbfs(part(samples, *rest)) > -45  # ...with them the chord sounds there...
    assert dbfs(part(samples, *rest)) < dbfs(part(samples, 0.1, 1.9)) - 6  # ...well below melody + chords
    assert lufs(samples) == pytest.approx(lufs(plain), abs=1.0) and segment.max_dBFS <= -1.0  # as loud
    assert with_chords.duration_s == pytest.approx(without.duration_s)
    assert [t.name for t in read_midi(with_chords.midi).tracks] == [MELODY_TRACK, CHORD_TRACK]


def test_piano_roll_names_the_chords_above_the_bars():
    chords = per_step(PROGRESSION)
    previews, combined, _ = render_variations([MELODY, MELODY], 0, BPM, chords=[chords, None])
    named, plain = panel_of(combined, 0, 2), panel_of(combined, 1, 2)
    assert named.shape == plain.shape == (pianoroll.PANEL_HEIGHT, pianoroll.WIDTH, 3)
    def greenish(pixels):  # CHORD_TEXT and its anti-aliased blends with the background
        red, green, blue = (pixels[..., channel].astype(int) for channel in range(3))
        return (green - red > 25) & (green - blue > 15)

    assert pianoroll.CHORD_TEXT[1] - pianoroll.CHORD_TEXT[0] > 25
    green = greenish(named)
    assert not np.any(greenish(plain))  # no chords, no symbols
    lane = slice(pianoroll.HEADER, pianoroll.HEADER + pianoroll.CHORD_LANE)
    rows, columns = np.nonzero(green)
    assert rows.min() >= lane.start and rows.max() < lane.stop  # in the lane above the grid
    # A symbol starts just right of each chord change: C at step 0, Dm7 16, G7 24, C/E 32, Am 40.
    steps = pianoroll.shared_layout([MELODY, MELODY])[2]
    step_px = (pianoroll.WIDTH - pianoroll.MARGIN - pianoroll.GUTTER) / steps
    used = set(columns.tolist())
    starts = [c for c in sorted(used) if not {c - 1, c - 2, c - 3} & used]  # a symbol's first column
    changes = [pianoroll.GUTTER + step * step_px for step in (0, 16, 24, 32, 40)]
    assert len(starts) >= 5
    for x in changes:
        assert any(0 <= start - x <= 8 for start in starts), x
    assert Image.open(io.BytesIO(combined)).size[1] == 2 * pianoroll.PANEL_HEIGHT + pianoroll.SEPARATOR


def test_variations_over_the_same_chords_share_them_and_bad_chord_lists_are_refused():
    melodies = [legato([60 + i, 64, 67, 72]) * 2 for i in range(3)]
    chords = per_step("C | F", len(melodies[0]))
    previews, _, timings = render_variations(melodies, 16, BPM, chords=[chords] * 3)
    for preview, melody in zip(previews, melodies):
        assert read_midi(preview.midi).tracks[1].notes == read_midi(previews[0].midi).tracks[1].notes
        assert preview.duration_s == pytest.approx(events_to_notes(melody)[-1].end * STEP_S + TAIL_S)
    with pytest.raises(RenderError, match="2 chord lists for 3 melodies"):
        render_variations(melodies, 16, BPM, chords=[chords] * 2)
    with pytest.raises(RenderError, match="variation 2 has 32 steps but 31 chords"):
        render_variations(melodies, 16, BPM, chords=[chords, chords[:31], None])
    assert note_on(60) in melodies[0]


def test_the_primer_gap_is_silent_under_chords_too():
    melody = legato([72, 76, 79, 84]) + legato([84, 79, 76, 72])  # primer: bar 1
    chords = per_step("C | F", len(melody))
    gapped = render_variations([melody], 16, BPM, primer_gap=True, chords=[chords])[0][0]
    _, samples = decode(gapped.mp3)
    gap_end = 16 * STEP_S + 0.5  # the primer ends at 2.0 s, the continuation starts a beat later
    assert dbfs(part(samples, gap_end - 0.12, gap_end - 0.02)) < dbfs(part(samples, gap_end, gap_end + 1.5)) - 25
    assert gapped.duration_s == pytest.approx(len(melody) * STEP_S + 0.5 + TAIL_S)


def fluidsynth_playing_together(soundfont: str, played, bpm: float) -> np.ndarray:
    """The reference: one FluidSynth synthesizer playing every note of `played` in time order, as
    the renderer did before it rendered notes apart (mono float, same settings and length)."""
    from bot.render.audio import CHORD_CHANNEL, MELODY_CHANNEL, POLYPHONY, SAMPLE_RATE, SYNTH_GAIN, load_fluidsynth
    from bot.render.audio import TAIL_S as SYNTHESIZE_TAIL_S

    fluidsynth = load_fluidsynth()
    options = {"synth.chorus.active": 0, "synth.reverb.active": 0, "synth.polyphony": POLYPHONY}
    synth = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=SAMPLE_RATE, channels=16, **options)
    font = synth.sfload(soundfont)
    synth.program_select(MELODY_CHANNEL, font, 0, 0)
    synth.program_select(CHORD_CHANNEL, font, 0, CHORD_PROGRAM)
    frames_per_step = SAMPLE_RATE * 60 / bpm / 4
    events = sorted([(start, 1, channel, pitch, velocity) for start, _, channel, pitch, velocity in played.notes]
                    + [(end, 0, channel, pitch, 0) for _, end, channel, pitch, _ in played.notes])  # fmt: skip
    length = round(played.end * frames_per_step + SYNTHESIZE_TAIL_S * SAMPLE_RATE)
    chunks, done = [], 0
    for step, _, channel, pitch, velocity in [*events, (None, 0, 0, 0, 0)]:
        until = length if step is None else min(length, round(step * frames_per_step))
        if until > done:
            chunks.append(synth.get_samples(until - done).reshape(-1, 2).mean(axis=1) / 32768)
            done = until
        if step is not None:
            synth.noteon(channel, pitch, velocity) if velocity else synth.noteoff(channel, pitch)
    synth.delete()
    return np.concatenate(chunks)[:length]


def envelope_db(samples: np.ndarray, window: int = 441) -> np.ndarray:
    """Loudness per 20 ms window (dB, floored at -80)."""
    frames = samples[: len(samples) // window * window].reshape(-1, window)
    return 20 * np.log10(np.maximum(np.sqrt((frames**2).mean(axis=1)), 1e-4))


def test_notes_rendered_apart_and_added_sound_as_fluidsynth_playing_them_together():
    from bot.render.audio import accompaniment, find_soundfont, performance, synthesize, with_chords

    soundfont = find_soundfont(None)
    played = with_chords(performance(MELODY, 4, True, True), accompaniment(per_step(PROGRESSION, len(MELODY)), 4, True))
    added = synthesize(soundfont, played, 0, BPM, time.monotonic() + 60)
    together = fluidsynth_playing_together(soundfont, played, BPM)
    assert len(added) == len(together) and np.abs(together).max() > 0.01
    # FluidSynth starts a note at its next 64-frame block when played together, on its frame when
    # apart: the waveforms differ by up to 2.9 ms, the sound does not. Loudness, 20 ms at a time:
    loud, heard = envelope_db(together), envelope_db(added)
    assert np.corrcoef(loud, heard)[0, 1] > 0.98
    audible = loud > loud.max() - 40
    assert np.abs(loud - heard)[audible].mean() < 1.0 and np.abs(loud - heard)[audible].max() < 6.0
    assert dbfs(added) == pytest.approx(dbfs(together), abs=0.3)  # the same energy overall
    # and without the notes of one bar, it would not be: the comparison can fail
    cut = with_chords(performance(MELODY[:16] + [NO_EVENT] * 16 + MELODY[32:], 4, True, True),
                      accompaniment(per_step(PROGRESSION, len(MELODY)), 4, True))  # fmt: skip
    assert np.abs(envelope_db(synthesize(soundfont, cut, 0, BPM, time.monotonic() + 60)) - loud)[audible].max() > 6.0


def test_a_note_heard_before_is_not_rendered_again_and_the_cache_keeps_to_its_limit():
    from bot.render import audio

    soundfont = audio.find_soundfont(None)
    chords = per_step(PROGRESSION, len(MELODY))
    first = audio.with_chords(audio.performance(MELODY, 4, False, True), audio.accompaniment(chords, 4, False))
    transposed = [note_on(event_pitch(e) - 2) if is_note_on(e) else e for e in MELODY]
    second = audio.with_chords(audio.performance(transposed, 4, False, True), audio.accompaniment(chords, 4, False))
    audio.synthesize(soundfont, first, 0, BPM, time.monotonic() + 60)
    before = len(audio.NOTES.notes)
    again = audio.synthesize(soundfont, first, 0, BPM, time.monotonic() + 60)
    assert len(audio.NOTES.notes) == before  # every note was heard before
    audio.synthesize(soundfont, second, 0, BPM, time.monotonic() + 60)
    new_notes = len(audio.NOTES.notes) - before
    melody_pitches = {(pitch, velocity, end - start) for start, end, channel, pitch, velocity in second.notes
                      if channel == audio.MELODY_CHANNEL}  # fmt: skip
    assert 0 < new_notes <= len(melody_pitches)  # the chords under it were heard before
    assert np.array_equal(again, audio.synthesize(soundfont, first, 0, BPM, time.monotonic() + 60))
    small = audio.NoteCache(limit_mb=1)
    for index in range(5):
        small.put(("note", index), np.zeros(2**18, dtype=np.float32))  # kept in 16 bits: 0.5 MiB each
    assert small.size <= 2**20 and list(small.notes) == [("note", 3), ("note", 4)]  # the oldest dropped
    small.get(("note", 3))
    small.put(("note", 5), np.zeros(2**18, dtype=np.float32))
    assert list(small.notes) == [("note", 3), ("note", 5)]  # the one just used is kept
