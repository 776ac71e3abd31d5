"""What the bot asks of a worker, and what comes back: plain data, no I/O, no torch, no discord.

message -> primer -> Job -> queue -> worker -> Result -> reply. Both queue backends (the embedded
SQLite one and the Redis one) carry exactly these types (as dicts through `to_dict`/`from_dict`; the
database keeps a Result's files apart from its JSON: `stored`/`from_stored`).
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import time
from dataclasses import asdict, dataclass, field, fields

from model.defaults import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

GENERIC_ERROR = "The generator hit an error (job {job_id}); try again."  # details are in the worker's log


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


def new_job_id() -> str:
    """Short, unambiguous, easy to type: 6 characters of lowercase letters and digits."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(6))


@dataclass
class Job:
    user_id: int  # who asked
    channel_id: int  # where to answer
    primer: list[int]  # melody events on the sixteenth grid (model.music.events)
    bpm: float = 120.0  # the primer's tempo, kept in the results
    bars: int = 8  # continuation length
    variations: int = 4
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    seed: int = 0
    instrument: str = "piano"  # a name from bot.render's instrument table
    style: str = "pop"  # the band that plays it (model.band.styles; "none": the melody over block chords)
    keep_key: bool = True
    chords: str | None = None  # the continuation's lead sheet ("C | G | Am F"); None: the worker suggests chords
    harmony: bool = True  # False (chords=off): a bare melody, as before harmony
    primer_chords: str | None = None  # a sketch's own chords under the primer, as a lead sheet
    lyrics: str | None = None  # words to set to the continuation ("line / line"); None: no words
    melisma: bool = False  # a syllable may take two slurred notes
    form: str | None = None  # the continuation's sections as asked for ("BA": new, then the sketch); None: drawn
    user_name: str = ""  # for display only
    guild_id: int | None = None  # the Discord server it was made in; None: a DM or the terminal
    parent: str | None = None  # "jobid:variation" this job extends, if any
    job_id: str = field(default_factory=new_job_id)
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        known = {f.name for f in fields(cls)}  # rows written by older versions may hold retired fields
        return cls(**{name: value for name, value in data.items() if name in known})


@dataclass
class Variation:
    events: list[int]  # primer + continuation
    midi: bytes
    mp3: bytes
    chords: str | None = None  # the progression under primer + continuation, as a lead sheet
    lyrics: list | None = None  # [step, syllable] of each sung syllable (primer + continuation steps)


@dataclass
class Result:
    job_id: str
    primer_steps: int  # how many of each variation's events are the primer
    variations: list[Variation]
    combined_png: bytes  # all variations in one picture, for one message
    key: str | None  # the primer's key as the sampler saw it, e.g. "C major"
    timings: dict[str, float]  # seconds per stage: queued, sample, render, total

    def to_dict(self) -> dict:
        """JSON-safe: bytes as base64 text (the Redis backend's events)."""
        data = asdict(self)
        for variation in data["variations"]:
            for name in ("midi", "mp3"):
                variation[name] = base64.b64encode(variation[name]).decode()
        data["combined_png"] = base64.b64encode(self.combined_png).decode()
        return data

    def stored(self) -> tuple[str, bytes]:
        """For the database: the result as JSON without its files (each file's size in their
        place), and the files end to end, for a BLOB. In base64 inside the JSON they cost ~10 ms a
        default answer each way, on its way to the user (CPython's base64 runs at ~200 MB/s)."""
        files = [data for v in self.variations for data in (v.midi, v.mp3)] + [self.combined_png]
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("variations", "combined_png")}
        data["variations"] = [{f.name: getattr(v, f.name) for f in fields(v) if f.name not in ("midi", "mp3")}
                              for v in self.variations]
        data["file_sizes"] = [len(part) for part in files]
        return json.dumps(data), b"".join(files)

    @classmethod
    def from_stored(cls, text: str, files: bytes | None) -> Result:
        """stored()'s two parts back (files None: pruned, every file empty); also a result stored
        before the files had a column of their own (to_dict's JSON, files in base64)."""
        data = json.loads(text)
        sizes = data.pop("file_sizes", None)
        if sizes is None:
            return cls.from_dict(data)
        data.pop("pruned", None)
        parts, at = [], 0
        for size in sizes:
            parts.append(files[at : at + size] if files is not None else b"")
            at += size
        data["variations"] = [Variation(**v, midi=parts[2 * i], mp3=parts[2 * i + 1])
                              for i, v in enumerate(data["variations"])]
        data["combined_png"] = parts[-1]
        return cls(**data)

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        data = dict(data)
        data.pop("pruned", None)  # previews deleted after the retention time (bot/storage/jobs.py)
        data["variations"] = [
            Variation(v["events"], *(base64.b64decode(v[name]) for name in ("midi", "mp3")), v.get("chords"),
                      v.get("lyrics"))  # (a "png" of jobs stored before 2026-12-04 is left out: always empty)
            for v in data["variations"]
        ]
        data["combined_png"] = base64.b64decode(data["combined_png"])
        return cls(**data)


@dataclass
class JobStatus:
    job: Job
    state: JobState
    position: int | None = None  # 1 = next to run; only while queued
    error: str | None = None  # user-facing reason, only when failed
    result: Result | None = None  # only when done
    replayed: bool = False  # emitted again after a restart (or a failed delivery): it may have been shown already
