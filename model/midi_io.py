"""MIDI files <-> notes on the sixteenth-note grid.

Reading quantises through MIDI ticks (not seconds), so tempo changes never move a note off the
grid: step = round(tick / (ticks_per_beat / 4)). Every failure of the MIDI parser is turned into
one `MidiError` with a message a songwriter can act on.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import pretty_midi

from model.defaults import DEFAULT_BPM, MAX_SKETCH_BYTES
from model.events import STEPS_PER_BEAT, Note, events_to_notes

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


def write_midi(
    events: list[int],
    bpm: float = DEFAULT_BPM,
    program: int = 0,
    track_name: str = "Melody",
    velocity: int = 100,
) -> bytes:
    """Events -> a type-1 MIDI file (bytes) with one named track at a constant tempo."""
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=bpm)
    instrument = pretty_midi.Instrument(program=program, name=track_name)
    seconds_per_step = 60.0 / bpm / STEPS_PER_BEAT
    for note in events_to_notes(events, velocity):
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
