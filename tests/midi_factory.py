"""Real MIDI files for tests, built with mido so every byte is under the test's control.

Times are given in grid steps (sixteenth notes); `make_midi` turns them into ticks exactly, so a
file read back through `model.music.midi_io.read_midi` lands on the same steps.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import mido

DRUM_CHANNEL = 9


@dataclass
class TrackSpec:
    name: str
    notes: list[tuple[float, float, int]] = field(default_factory=list)  # (start step, end step, pitch)
    program: int = 0
    drum: bool = False
    velocity: int = 90


def line(pitches: list[int | None], length: int = 4, start: int = 0) -> list[tuple[float, float, int]]:
    """Consecutive notes of `length` steps each; a pitch of None is a rest."""
    notes, t = [], start
    for pitch in pitches:
        if pitch is not None:
            notes.append((t, t + length, pitch))
        t += length
    return notes


def make_midi(
    tracks: list[TrackSpec],
    bpm: float = 120.0,
    tempo_changes: list[tuple[int, float]] = (),  # (step, bpm) after the first tempo
    time_signature: tuple[int, int] = (4, 4),
    midi_type: int = 1,
    ticks_per_beat: int = 480,
) -> bytes:
    """A type 0 or type 1 file; fractions of a step land on the nearest tick. Type 1: a conductor
    track (tempo, time signature) then one track per spec. Type 0: everything merged into one
    track, channels kept apart."""
    ticks_per_step = ticks_per_beat // 4
    conductor = [
        (0, mido.MetaMessage("time_signature", numerator=time_signature[0], denominator=time_signature[1])),
        (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))),
    ]
    conductor += [(round(step * ticks_per_step), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(b)))
                  for step, b in tempo_changes]
    timed_tracks = []
    for i, spec in enumerate(tracks):
        channel = DRUM_CHANNEL if spec.drum else [c for c in range(16) if c != DRUM_CHANNEL][i % 15]
        events = [(0, mido.MetaMessage("track_name", name=spec.name))]
        if not spec.drum:
            events.append((0, mido.Message("program_change", program=spec.program, channel=channel)))
        for start, end, pitch in spec.notes:
            # note_off sorts before note_on at the same tick (key 0 < 1): repeated pitches stay apart
            events.append((round(end * ticks_per_step), mido.Message("note_off", note=pitch, channel=channel)))
            events.append((round(start * ticks_per_step), mido.Message("note_on", note=pitch, velocity=spec.velocity,
                                                                channel=channel)))
        timed_tracks.append(events)

    midi = mido.MidiFile(type=midi_type, ticks_per_beat=ticks_per_beat)
    if midi_type == 0:
        merged = conductor + [e for events in timed_tracks for e in events]
        midi.tracks.append(_to_track(merged))
    else:
        midi.tracks.append(_to_track(conductor))
        midi.tracks.extend(_to_track(events) for events in timed_tracks)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def _to_track(events: list[tuple[int, mido.Message]]) -> mido.MidiTrack:
    """Absolute-tick events -> a track with delta times (stable sort keeps meta events first)."""
    order = sorted(range(len(events)), key=lambda i: (events[i][0], _rank(events[i][1]), i))
    track, now = mido.MidiTrack(), 0
    for i in order:
        tick, message = events[i]
        track.append(message.copy(time=tick - now))
        now = tick
    return track


def _rank(message: mido.Message) -> int:
    if message.is_meta or message.type == "program_change":
        return -1
    return 0 if message.type == "note_off" else 1


def write_song_folder(root: Path, songs: dict[str, bytes]) -> Path:
    """A POP909-style folder: root/NNN/NNN.mid for each song id."""
    for song_id, data in songs.items():
        (root / song_id).mkdir(parents=True, exist_ok=True)
        (root / song_id / f"{song_id}.mid").write_bytes(data)
    return root
