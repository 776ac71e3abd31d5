"""MIDI files <-> notes on the sixteenth-note grid.

Reading quantises through MIDI ticks (not seconds), so tempo changes never move a note off the
grid: step = round(tick / (ticks_per_beat / 4)). Every failure of the MIDI parser is turned into
one `MidiError` with a message a songwriter can act on.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter

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
    markers: list[tuple[int, str]] = field(default_factory=list)  # (grid step, text) of marker and text events
    meter: tuple[int, int] = (4, 4)  # the time signature in force at the first note (or the file's first)


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
    return MidiFile(tracks, _bpm_at_first_note(pm), _markers(data, ticks_per_step), _meter_at_first_note(pm))


def _markers(data: bytes, ticks_per_step: float) -> list[tuple[int, str]]:
    """(step, text) of every marker (FF 06) and text (FF 01) event, where chord symbols live.
    pretty_midi reads no markers, so mido reads the file again, only when it holds such events."""
    if b"\xff\x06" not in data and b"\xff\x01" not in data:
        return []
    import mido  # noqa: PLC0415 - pretty_midi's own parser

    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except Exception:  # pretty_midi read it: markers are an extra
        return []
    found = []
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type in ("marker", "text") and message.text.strip():
                found.append((round(tick / ticks_per_step), message.text.strip()))
    return sorted(found)


def _read_bytes(path: str | os.PathLike, max_bytes: int) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise MidiError(f"the file is {size / 1024:.0f} KiB; the limit is {max_bytes // 1024} KiB")
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise MidiError(f"cannot read {path}: {error.strerror}") from error


def _first_note_s(pm: pretty_midi.PrettyMIDI) -> float:
    starts = [n.start for i in pm.instruments for n in i.notes]
    return min(starts) if starts else 0.0


def _bpm_at_first_note(pm: pretty_midi.PrettyMIDI) -> float:
    times, tempi = pm.get_tempo_changes()
    if len(tempi) == 0:
        return DEFAULT_BPM
    first = _first_note_s(pm)
    bpm = float(tempi[0])
    for time, tempo in zip(times, tempi):
        if time <= first + 1e-9:
            bpm = float(tempo)
    return round(bpm, 3)


def _meter_at_first_note(pm: pretty_midi.PrettyMIDI) -> tuple[int, int]:
    first = _first_note_s(pm)
    changes = sorted(pm.time_signature_changes, key=lambda c: c.time)
    if not changes:
        return 4, 4  # MIDI's default
    meter = changes[0]
    for change in changes:
        if change.time <= first + 1e-9:
            meter = change
    return meter.numerator, meter.denominator


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
    lyrics: Sequence[tuple[int, str]] | None = None,
) -> bytes:
    """Events -> a type-1 MIDI file (bytes) with one named track at a constant tempo. With
    `chords` (one model.music.chords.Chord or None per step, on the events' grid), two tracks:
    MELODY (the events, on `program`) and CHORDS (chord_notes, on `chord_program`, its own channel).
    `lyrics`: (step, syllable) pairs, written as lyric meta events in the melody's track at
    their steps (model.lyrics: one a syllable, at its note, hyphenated as karaoke files are)."""
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
    data = with_markers(buffer.getvalue(), chord_markers(chords) if chords is not None else [])
    return _with_lyrics(data, lyrics, pm.resolution // STEPS_PER_BEAT) if lyrics else data


NO_CHORD_MARKER = "N.C."


def chord_markers(chords: Sequence) -> list[tuple[int, str]]:
    """(step, symbol) at each chord change of per-step chords (N.C. where no chord follows one)."""
    markers = []
    for step, chord in enumerate(chords):
        if step == 0 and chord is None:
            continue
        if step == 0 or (chord is not chords[step - 1] and chord != chords[step - 1]):  # one object: no change
            markers.append((step, chord.symbol() if chord is not None else NO_CHORD_MARKER))
    return markers


def with_markers(data: bytes, markers: Sequence[tuple[int, str]]) -> bytes:
    """A written MIDI file with marker events added to its first track at the given grid steps:
    DAWs show them on the timeline, and read_midi gives them back (pretty_midi writes none)."""
    if not markers:
        return data
    import mido  # noqa: PLC0415 - pretty_midi's own writer

    midi = mido.MidiFile(file=io.BytesIO(data))
    ticks_per_step = midi.ticks_per_beat / STEPS_PER_BEAT
    timed, tick = [], 0
    for message in midi.tracks[0]:
        tick += message.time
        timed.append((tick, 0, message))
    timed += [(round(step * ticks_per_step), 1, mido.MetaMessage("marker", text=text)) for step, text in markers]
    end = max(t for t, _, m in timed)
    timed = [(t, o, m) for t, o, m in timed if m.type != "end_of_track"]
    timed.append((end, 2, mido.MetaMessage("end_of_track")))
    timed.sort(key=lambda item: (item[0], item[1]))
    track, last = mido.MidiTrack(), 0
    for t, _, message in timed:
        track.append(message.copy(time=t - last))
        last = t
    midi.tracks[0] = track
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def _with_lyrics(data: bytes, lyrics: Sequence[tuple[int, str]], ticks_per_step: int) -> bytes:
    """The file with a lyric meta event at each (step, text) in its first note track, before the
    note-on at the same tick (pretty_midi would put them in the tempo track, away from the notes)."""
    import mido

    midi = mido.MidiFile(file=io.BytesIO(data))
    track = midi.tracks[1]
    timed, now = [], 0
    for order, message in enumerate(track):  # at one tick: names and programs, note-offs, the lyric, note-ons
        now += message.time
        sounding = message.type == "note_on" and message.velocity > 0
        timed.append((now, 3 if sounding else 1 if message.type in ("note_on", "note_off") else 0, order, message))
    timed += [(step * ticks_per_step, 2, i, mido.MetaMessage("lyrics", text=text)) for i, (step, text) in
              enumerate(lyrics)]
    timed.sort(key=lambda item: item[:3])
    end_of_track = [item for item in timed if item[3].type == "end_of_track"]
    timed = [item for item in timed if item[3].type != "end_of_track"] + end_of_track
    track.clear()
    previous = 0
    for tick, _, _, message in timed:
        tick = max(tick, previous)
        track.append(message.copy(time=tick - previous))
        previous = tick
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


ARRANGEMENT_TRACKS = ("MELODY", "KEYS", "GUITAR", "CHORDS", "BASS", "DRUMS")


def write_arrangement(arrangement, bpm: float = DEFAULT_BPM, chords: Sequence | None = None,
                      lyrics: Sequence[tuple[int, str]] | None = None) -> bytes:
    """A model.band.parts.Arrangement -> a type-1 MIDI file for a DAW: one named track per part
    (MELODY, KEYS or GUITAR, BASS, DRUMS; the drums on channel 10) on its General MIDI program,
    the tempo and 4/4 in the first track, and with `chords` (one Chord or None per step) a marker
    naming each chord change; with `lyrics` ((step, syllable) pairs) a lyric event at each sung
    note of the MELODY track, as karaoke files have them. The bytes are written here directly:
    pretty_midi's writer (it sorts with a comparison function) took ~20 ms a band, mido's
    messages ~15 ms, this ~0.5 ms (8 bars, 4 parts)."""
    if chords is not None and len(chords) != arrangement.steps:
        raise ValueError(f"{len(chords)} chords for {arrangement.steps} steps; give one chord (or None) per step")
    ticks = ARRANGEMENT_RESOLUTION // STEPS_PER_BEAT  # per step
    tempo = round(60_000_000 / bpm)  # microseconds a beat
    meta = [(0, 0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")), (0, 0, b"\xff\x58\x04\x04\x02\x18\x08")]
    meta += [(round(step * ticks), 1, _meta(0x06, text))
             for step, text in (chord_markers(chords) if chords is not None else [])]
    tracks = [_track(meta)]
    channels = iter([c for c in range(16) if c != DRUM_CHANNEL])
    for part in arrangement.parts:
        channel = DRUM_CHANNEL if part.is_drum else next(channels, 15)
        timed = [(0, 0, _meta(0x03, part.name)), (0, 1, bytes((0xC0 | channel, part.program & 0x7F)))]
        note_on, note_off = 0x90 | channel, 0x80 | channel
        # a note off before a note on at the same tick: repeated notes stay apart. The clamps are
        # written out: builtin max and min cost a third of this loop
        for note in part.notes:
            on = round(note.start * ticks)
            on = on if on > 0 else 0
            off = round(note.end * ticks)
            off = off if off > on else on + 1
            pitch, velocity = int(note.pitch) & 0x7F, int(note.velocity)
            velocity = 1 if velocity < 1 else 127 if velocity > 127 else velocity
            timed.append((on, 3, _EVENT.pack(note_on, pitch, velocity)))
            timed.append((off, 2, _EVENT.pack(note_off, pitch, 0)))
        if lyrics and part.name == "MELODY":  # after a note off, before the note on it names
            timed += [(round(step * ticks), 2, _meta(0x05, text)) for step, text in lyrics]
        tracks.append(_track(timed))
    header = b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
    return header + ARRANGEMENT_RESOLUTION.to_bytes(2, "big") + b"".join(tracks)


ARRANGEMENT_RESOLUTION = 480  # ticks per beat
_EVENT = struct.Struct("BBB")  # a channel message: status, two data bytes
DRUM_CHANNEL = 9  # General MIDI's channel 10, counted from 0


def _varlen(value: int) -> bytes:
    if value < 0x80:  # most delta times: one byte
        return _ONE_BYTE[value]
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _meta(kind: int, text: str) -> bytes:
    data = text.encode("latin-1", "replace")
    return bytes((0xFF, kind)) + _varlen(len(data)) + data


_ONE_BYTE = tuple(bytes((value,)) for value in range(0x80))


def _track(timed: list[tuple[int, int, bytes]]) -> bytes:
    """(tick, order at the same tick, event bytes) -> an MTrk chunk with delta times, ended."""
    timed.sort(key=itemgetter(0, 1))  # stable: events at one tick and order keep theirs
    body, last = bytearray(), 0
    for tick, _, event in timed:
        body += _varlen(tick - last) + event
        last = tick
    body += b"\x00\xff\x2f\x00"
    return b"MTrk" + len(body).to_bytes(4, "big") + bytes(body)
