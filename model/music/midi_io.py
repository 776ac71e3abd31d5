"""MIDI files <-> notes on the sixteenth-note grid.

Reading quantises through MIDI ticks (not seconds), so tempo changes never move a note off the
grid: step = round(tick / (ticks_per_beat / 4)). Every failure of the MIDI parser is turned into
one `MidiError` with a message a songwriter can act on.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

# pretty_midi imports pyfluidsynth, which prints where it found libfluidsynth to stdout whenever $CI
# is set; the CLIs' stdout is their answer (file paths, counts), so that line is kept off it.
with contextlib.redirect_stdout(io.StringIO()):
    import pretty_midi

from model.defaults import DEFAULT_BPM, MAX_SKETCH_BYTES
from model.music.events import STEPS_PER_BAR, STEPS_PER_BEAT, Note, events_to_notes

MAX_NOTES = 100_000  # notes in all tracks together; more is refused as hostile


class MidiError(ValueError):
    """A MIDI file that cannot be used, with a message that says why in plain words."""


@dataclass
class Track:
    name: str
    program: int
    is_drum: bool
    notes: list[Note] = field(default_factory=list)  # grid steps from the start of the file


@dataclass
class MidiFile:
    tracks: list[Track]
    bpm: float  # the tempo in force at the first note (or the file's first tempo)


def read_midi(source: str | os.PathLike | bytes, max_bytes: int = MAX_SKETCH_BYTES) -> MidiFile:
    """Parse a MIDI file (path or bytes) into grid-quantised tracks."""
    data = source if isinstance(source, bytes) else _read_bytes(source, max_bytes)
    if len(data) == 0:
        raise MidiError("the file is empty")
    if len(data) > max_bytes:
        raise MidiError(f"the file is {len(data) / 1024:.0f} KiB; the limit is {max_bytes // 1024} KiB")
    if not data.startswith(b"MThd"):
        raise MidiError("this is not a MIDI file (it does not start with the MIDI header 'MThd')")
    try:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except EOFError as error:  # mido's EOFError has no message
        raise MidiError("the MIDI file is truncated (it ends in the middle of its data)") from error
    except Exception as error:  # the parser raises many types for corrupt files
        detail = f" ({error})" if str(error) else ""
        raise MidiError(f"the MIDI file is damaged or truncated{detail}") from error

    ticks_per_step = pm.resolution / STEPS_PER_BEAT
    note_count = sum(len(instrument.notes) for instrument in pm.instruments)
    if note_count > MAX_NOTES:
        raise MidiError(f"the file has {note_count} notes; the limit is {MAX_NOTES}")

    tracks = []
    for instrument in pm.instruments:
        notes = []
        for note in instrument.notes:
            start = round(pm.time_to_tick(note.start) / ticks_per_step)
            end = round(pm.time_to_tick(note.end) / ticks_per_step)
            notes.append(Note(start, end, note.pitch, note.velocity))
        notes.sort(key=lambda n: (n.start, -n.pitch))
        tracks.append(Track(instrument.name.strip(), int(instrument.program), bool(instrument.is_drum), notes))
    return MidiFile(tracks, _bpm_at_first_note(pm))


def _read_bytes(path: str | os.PathLike, max_bytes: int) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise MidiError(f"the file is {size / 1024:.0f} KiB; the limit is {max_bytes // 1024} KiB")
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise MidiError(f"cannot read {path}: {error.strerror}") from error


def _bpm_at_first_note(pm: pretty_midi.PrettyMIDI) -> float:
    times, tempi = pm.get_tempo_changes()
    if len(tempi) == 0:
        return DEFAULT_BPM
    starts = [n.start for i in pm.instruments for n in i.notes]
    first = min(starts) if starts else 0.0
    bpm = float(tempi[0])
    for time, tempo in zip(times, tempi):
        if time <= first + 1e-9:
            bpm = float(tempo)
    return round(bpm, 3)


# The CHORDS track of a file written with chords: simply comped voicings, struck at every chord
# change and bar line, on their own channel, well below the melody's loudness.
CHORD_PROGRAM = 5  # General MIDI Electric Piano 2 (0-based): soft, apart from the piano default, one voice a note
CHORD_VELOCITY = 56  # the melody plays at 100
CHORD_BASS_LOW = 40  # E2: the chord's bass (root or slash bass) lies in E2..Eb3, inclusive
CHORD_UPPER_LOW = 53  # F3: the chord tones lie in F3..E4, inclusive, below most melodies
MELODY_TRACK, CHORD_TRACK = "MELODY", "CHORDS"  # track names of a file with chords (POP909's)


def chord_voicing(chord) -> list[int]:
    """MIDI pitches for a model.music.chords.Chord: its bass, then its pitch classes in close position."""
    bass = chord.bass if chord.bass is not None else chord.root
    upper = sorted(CHORD_UPPER_LOW + (pc - CHORD_UPPER_LOW) % 12 for pc in chord.pitch_classes)
    return [CHORD_BASS_LOW + (bass - CHORD_BASS_LOW) % 12, *upper]


def chord_notes(chords: Sequence, velocity: int = CHORD_VELOCITY) -> list[Note]:
    """Per-step chords (Chord or None for no chord) -> the notes of their voicings on the grid:
    each span of one chord held, struck again at each bar line so that a long chord keeps sounding."""
    notes: list[Note] = []
    start = 0
    for step in range(1, len(chords) + 1):
        if step < len(chords) and chords[step] == chords[start] and step % STEPS_PER_BAR:
            continue
        if chords[start] is not None:
            notes += [Note(start, step, pitch, velocity) for pitch in chord_voicing(chords[start])]
        start = step
    return notes


def write_midi(
    events: list[int],
    bpm: float = DEFAULT_BPM,
    program: int = 0,
    track_name: str = "Melody",
    velocity: int = 100,
    chords: Sequence | None = None,
    chord_program: int = CHORD_PROGRAM,
) -> bytes:
    """Events -> a type-1 MIDI file (bytes) with one named track at a constant tempo. With
    `chords` (one model.music.chords.Chord or None per step, on the events' grid), two tracks:
    MELODY (the events, on `program`) and CHORDS (chord_notes, on `chord_program`, its own channel)."""
    if chords is not None and len(chords) != len(events):
        raise ValueError(f"{len(chords)} chords for {len(events)} steps; give one chord (or None) per step")
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=bpm)
    seconds_per_step = 60.0 / bpm / STEPS_PER_BEAT
    parts = [(program, track_name if chords is None else MELODY_TRACK, events_to_notes(events, velocity))]
    if chords is not None:
        parts.append((chord_program, CHORD_TRACK, chord_notes(chords)))
    for part_program, name, notes in parts:  # pretty_midi gives each instrument its own channel
        instrument = pretty_midi.Instrument(program=part_program, name=name)
        for note in notes:
            instrument.notes.append(
                pretty_midi.Note(
                    velocity=note.velocity,
                    pitch=note.pitch,
                    start=note.start * seconds_per_step,
                    end=note.end * seconds_per_step,
                )
            )
        pm.instruments.append(instrument)
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()
