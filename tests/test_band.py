"""The band (model/band): every style plays every part, on the chords' tones, out of the melody's
way; drums on channel 10 with fills and crashes; the MIDI a songwriter gets back reads as the same
melody and chords; bad style names get the list. Real texture table, real MIDI files."""

from __future__ import annotations

import io
import random
from pathlib import Path

import mido
import pytest

from bot.commands.options import parse_options
from bot.commands.replies import CommandError
from bot.settings import Settings
from model.band.arrange import arrange, section_starts
from model.band.keys import TEXTURES, load_library
from model.band.styles import CRASH, DEFAULT_STYLE, NO_BAND, STYLES, StyleError, resolve_style
from model.lab.band_eval import Sounding, clash_counts, fit_counts, root_counts
from model.music.chords import chords_per_step, parse_lead_sheet
from model.music.events import STEPS_PER_BAR, events_to_notes
from model.music.midi_io import read_midi, write_arrangement
from model.music.primer import chords_from_markers, parse_notes, primer_from_midi

TUNE = parse_notes("C5 E5 G5 A5 G5:2 E5:2 | F5 A5 C6 A5 G5:4 | E5 G5 C6:2 B5 A5 G5:2 | F5 E5 D5 C5:4")
MELODY = (TUNE * 2)[: 8 * STEPS_PER_BAR]  # 8 bars
PROGRESSIONS = {
    "bars": "C | Am | F | G7 | C | Am | Dm7 G7 | C",
    "slash chords": "C | G/B | Am | C/G | F | C/E | Dm7 G/B | C",
    "no chord": "C | N | F | G | N | Am | F G | C",
    "a chord a beat": "C F G C | Am Dm G7 C | F G Em Am | Dm G C C | C F G C | Am Dm G7 C | F G Em Am | Dm G C C",
}
BAND_STYLES = [s for s in STYLES if s != NO_BAND]


def per_step(sheet: str, steps: int = len(MELODY)):
    return chords_per_step(parse_lead_sheet(sheet), steps)


def sounding(arrangement, *names):
    return [Sounding(n.start, n.end, n.pitch) for p in arrangement.parts if p.name in names for n in p.notes]


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style_plays_every_part(style):
    arrangement = arrange(MELODY, per_step(PROGRESSIONS["bars"]), 110, style, seed=1, primer_steps=32)
    names = [p.name for p in arrangement.parts]
    if style == NO_BAND:
        assert names == ["MELODY", "CHORDS"]
    else:
        assert names == ["MELODY", STYLES[style].keys_name, "BASS", "DRUMS"]
        assert arrangement.part("DRUMS").is_drum and not arrangement.part("BASS").is_drum
    assert all(p.notes for p in arrangement.parts), [(p.name, len(p.notes)) for p in arrangement.parts]
    assert arrangement.style == style and arrangement.steps == len(MELODY)
    for part in arrangement.parts:
        assert all(0 <= n.start < n.end <= len(MELODY) + 4 and 1 <= n.velocity <= 127 for n in part.notes), part.name


def test_the_styles_differ_in_instruments_and_groove():
    bands = {s: arrange(MELODY, per_step(PROGRESSIONS["bars"]), 110, s, seed=1) for s in BAND_STYLES}
    assert len({(STYLES[s].keys_program, STYLES[s].bass_program) for s in BAND_STYLES}) == len(BAND_STYLES)
    grooves = {s: frozenset((round(n.start) % 16, n.pitch) for n in bands[s].part("DRUMS").notes
                            if round(n.start) < 3 * STEPS_PER_BAR) for s in BAND_STYLES}
    assert len(set(grooves.values())) == len(BAND_STYLES)
    density = {s: sum(len(arrange(MELODY, per_step(PROGRESSIONS["bars"]), 110, s, seed=seed).part(
        STYLES[s].keys_name).notes) for seed in range(4)) for s in ("ballad", "pop", "rock")}
    assert density["ballad"] < density["pop"] < density["rock"]


@pytest.mark.parametrize("style", BAND_STYLES)
@pytest.mark.parametrize("progression", list(PROGRESSIONS))
def test_keys_and_bass_fit_the_chords_and_keep_clear_of_the_melody(style, progression):
    chords = per_step(PROGRESSIONS[progression])
    arrangement = arrange(MELODY, chords, 100, style, seed=3, primer_steps=32)
    keys = sounding(arrangement, STYLES[style].keys_name)
    bass = sounding(arrangement, "BASS")
    inside, total = fit_counts(keys + bass, chords)
    assert inside / total >= 0.9  # the bar; the keys alone play only chord tones
    keys_inside, keys_total = fit_counts(keys, chords)
    assert keys_inside == keys_total
    clashes, onsets = clash_counts(events_to_notes(MELODY), keys + bass)
    assert clashes / onsets <= 0.1
    hits, changes = root_counts(bass, chords, 0)
    assert hits == changes  # the root (or the slash bass) at every change
    for note in keys + bass:  # nothing sounds under N
        assert chords[round(note.start)] is not None
    for note in keys:  # the keys stay under the melody
        assert all(m.pitch > note.pitch for m in events_to_notes(MELODY) if m.start < note.end and m.end > note.start)


def test_slash_chords_put_their_bass_under_the_band():
    chords = per_step("C/E | G/B | Am | F/A", 64)
    bass = arrange(MELODY[:64], chords, 100, "pop", seed=0).part("BASS").notes
    firsts = {bar: next(n for n in bass if round(n.start) == bar * STEPS_PER_BAR) for bar in range(4)}
    assert [firsts[bar].pitch % 12 for bar in range(4)] == [4, 11, 9, 9]


def test_pop_density_is_near_real_piano():
    # POP909's PIANO tracks: 13 +- 3 notes a bar (keys and bass together here)
    arrangement = arrange(MELODY, per_step(PROGRESSIONS["bars"]), 100, "pop", seed=2)
    notes = len(arrangement.part("KEYS").notes) + len(arrangement.part("BASS").notes)
    assert 10 <= notes / 8 <= 16


def test_drums_on_channel_10_with_fills_and_crashes():
    arrangement = arrange(MELODY, per_step(PROGRESSIONS["bars"]), 100, "pop", seed=0, primer_steps=32)
    drums = arrangement.part("DRUMS").notes
    crashes = sorted(round(n.start) for n in drums if n.pitch == CRASH)
    assert crashes == section_starts(len(MELODY), 32) == [0, 32]
    toms = {(round(n.start) // STEPS_PER_BAR) for n in drums if n.pitch in (45, 47, 50)}
    assert toms == {3}  # a fill at the end of bar 4, leading into bar 5 (8 bars: not after the last)
    data = write_arrangement(arrangement, 100)
    tracks = mido.MidiFile(file=io.BytesIO(data)).tracks
    channels = {t.name: {m.channel for m in t if m.type == "note_on"} for t in tracks}
    assert channels["DRUMS"] == {9} and 9 not in channels["MELODY"] | channels["KEYS"] | channels["BASS"]


def test_the_same_seed_plays_the_same_band_and_another_seed_another():
    chords = per_step(PROGRESSIONS["bars"])
    one, again, other = (arrange(MELODY, chords, 100, "pop", seed=s) for s in (5, 5, 6))
    assert one == again
    assert one.part("KEYS").notes != other.part("KEYS").notes


def test_no_chords_leaves_the_melody_and_the_drums():
    arrangement = arrange(MELODY, None, 100, "rock", seed=0)
    assert [p.name for p in arrangement.parts] == ["MELODY", "DRUMS"]
    assert [p.name for p in arrange(MELODY, None, 100, NO_BAND).parts] == ["MELODY"]


def test_the_melody_is_humanised_on_the_grid():
    melody = arrange(MELODY, per_step(PROGRESSIONS["bars"]), 100, "pop", seed=0).part("MELODY").notes
    assert [(n.start, n.end, n.pitch) for n in melody] == [(n.start, n.end, n.pitch) for n in events_to_notes(MELODY)]
    downbeats = [n.velocity for n in melody if n.start % STEPS_PER_BAR == 0]
    offbeats = [n.velocity for n in melody if n.start % 4]
    assert len(set(n.velocity for n in melody)) > 4
    assert sum(downbeats) / len(downbeats) > sum(offbeats) / max(1, len(offbeats))


# -- MIDI ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["pop", "bossa", NO_BAND])
def test_a_written_arrangement_reads_back_as_the_same_melody_and_chords(style):
    chords = per_step(PROGRESSIONS["slash chords"].replace("Am", "N"))
    arrangement = arrange(MELODY, chords, 96, style, seed=4, primer_steps=32, melody_program=40)
    data = write_arrangement(arrangement, 96, chords)
    midi = read_midi(data)
    assert [(t.name, t.program, t.is_drum) for t in midi.tracks] == [
        (p.name, p.program, p.is_drum) for p in arrangement.parts]
    assert midi.bpm == 96
    assert midi.markers[:3] == [(0, "C"), (16, "G/B"), (32, "N.C.")]
    primer = primer_from_midi(data)  # as a sketch sent back to the bot
    assert primer.source == "MELODY" and primer.program == 40 and primer.bpm == 96
    assert primer.events[: len(MELODY)] == MELODY  # (then the NOTE_OFF of its last note)
    assert primer.chords[: len(MELODY)] == chords  # from the markers, not guessed from the band


def test_markers_that_are_not_chords_are_passed_over():
    markers = [(0, "Verse"), (0, "Am"), (16, "Chorus"), (16, "F"), (24, "N.C.")]
    chords = chords_from_markers(markers, 32)
    assert [c.symbol() if c else None for c in chords[::8]] == ["Am", "Am", "F", None]
    assert chords_from_markers([(0, "Intro"), (16, "Bridge")], 32) is None


# -- styles by name --------------------------------------------------------------------------------
def test_style_names_and_aliases():
    assert resolve_style(None) == resolve_style("") == DEFAULT_STYLE == "pop"
    assert resolve_style("Latin") == "bossa" and resolve_style("ACOUSTIC") == "folk"
    assert resolve_style("none") == NO_BAND
    with pytest.raises(StyleError, match=r'no style called "rok"\. Did you mean rock\? Styles: pop \(the default\), '
                                         r"ballad, rock, bossa, folk, none"):
        resolve_style("rok")
    with pytest.raises(StyleError):
        arrange(MELODY, None, 100, "polka")


def test_a_bad_style_option_gets_the_list():
    settings = Settings()
    assert parse_options("C4 E4 style=rock", settings).options.style == "rock"
    assert parse_options("C4 E4 --style ballad", settings).options.style == "ballad"
    with pytest.raises(CommandError, match="no style called `polka`. Did you mean folk.*bossa, folk, none"):
        parse_options("C4 E4 style=polka", settings)


def test_the_texture_table_is_small_and_plays_chord_tones_only():
    assert Path(TEXTURES).stat().st_size < 2 * 1024 * 1024
    library = load_library()
    assert load_library() is library  # loaded once per process
    assert len(library.notes) >= 1000 and len(set(library.songs.tolist())) >= 300
    assert all(int(s) % 10 for s in set(library.songs.tolist()))  # training songs only
    slots = {int(x) for notes in random.Random(0).sample(library.notes, 200) for x in notes[:, 2]}
    assert slots <= {0, 1, 2, 3, 4, 5}


def test_the_reply_names_the_style_and_the_help_lists_them():
    from bot.commands.replies import DISCORD, result_reply
    from bot.commands.usage import help_text
    from bot.jobs import Job, JobState, JobStatus, Result, Variation

    job = Job(user_id=1, channel_id=1, primer=[26, 0, 0, 1], style="bossa")
    result = Result(job.job_id, 4, [Variation([26, 0, 0, 1], b"MThd", b"")], b"", None, {})
    text = result_reply(JobStatus(job, JobState.DONE, result=result), "!", DISCORD).text
    assert "style=bossa" in text
    assert Job.from_dict({k: v for k, v in job.to_dict().items() if k != "style"}).style == "pop"  # older rows
    help_line = next(line for line in help_text(Settings(), "!", DISCORD).splitlines() if "style=" in line)
    assert all(name in help_line for name in STYLES)


def test_a_melody_down_in_the_bass_register_gets_its_keys_above_it():
    low = parse_notes("D2 F2 A2 G2 E2 C2 D2 F2 | D2 F2 A2 G2 E2 C2 D2:2")
    keys = arrange(low, per_step("Dm | Bb | F | C", len(low)), 100, "pop", seed=0).part("KEYS").notes
    assert keys and all(k.pitch > m.pitch for k in keys for m in events_to_notes(low)
                        if m.start < k.end and m.end > k.start)


def test_phrases_are_retrieved_by_chord_progression_rhythm_and_density():
    from model.band.keys import change_mask, progression_codes, retrieve

    library = load_library()
    chords = per_step("C | Am | F | G", 64)
    codes = progression_codes(chords, 0)
    assert codes == [0, 0, 21, 21, 5, 5, 7, 7]  # I vi IV V, key-free
    mismatches = []
    for seed in range(20):
        index = retrieve(library, [change_mask(chords, b) for b in range(0, 64, 16)], STYLES["pop"].density, None,
                         random.Random(seed), codes, room=24)
        assert list(library.masks[index]) == [0, 0, 0, 0]  # one chord a bar, as asked
        low, high = STYLES["pop"].density
        assert low - 2 <= library.density[index] <= high + 2
        mismatches.append(int((library.progressions[index] != codes).sum()))
    assert sum(mismatches) / len(mismatches) <= 4 < (library.progressions != codes).sum(1).mean() - 2


def test_rock_guitar_plays_power_chords():
    chords = per_step("C | Am | F | G7", 64)
    guitar = arrange(MELODY[:64], chords, 120, "rock", seed=0).part("GUITAR").notes
    for note in guitar:
        chord = chords[round(note.start)]
        assert (note.pitch - chord.root) % 12 in (0, 7)


def test_held_chords_fallback_plays_chord_tones_under_the_melody_without_rubbing():
    """When no retrieved phrase survives the melody, the keys hold the chords instead of falling silent."""
    from model.band.grid import Grid
    from model.band.keys import held_chords
    from model.band.styles import STYLES
    from model.music.chords import chords_per_step, parse_lead_sheet
    from model.music.events import events_to_notes
    from model.music.primer import parse_notes

    events = parse_notes("C5 E5 G5 A5 C6 B5 A5 G5 F5 E5 D5 C5 D5 E5 F5 G5")
    chords = chords_per_step(parse_lead_sheet("C | F | G | Am"), len(events))
    melody = events_to_notes(events)
    grid = Grid.of(melody, chords)
    under = [128 if p is None else p for p in grid.sounding]
    notes = held_chords(STYLES["pop"], chords, grid, under)
    spans = {int(n.start) for n in notes}
    assert {0, 16, 32, 48} <= spans  # every chord sounds
    for note in notes:
        start = int(note.start)
        assert note.pitch % 12 in chords[start].pitch_classes
        assert note.pitch < min(under[start:int(note.end)])
        assert not grid.rubs(note.pitch, start, int(note.end))
