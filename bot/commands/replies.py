"""Plain data in and out of the commands, and what a job's messages say. A front-end builds a
`Request` (with any `Upload`s) from a message, slash command, button or typed line, and turns each
`Reply` (text, `OutFile`s, reactions, `Button`s) back into messages; a `CommandError` carries a
mistake's explanation for the user. `status_text` and `result_reply` word a job's progress and its
finished variations the same way for Discord and the terminal, apart from how to vote. Nothing here
imports discord or the rest of this package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.jobs import JobState, JobStatus
from bot.storage import NUMBER_EMOJIS

DISCORD, TERMINAL = "discord", "terminal"
UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes per message, Discord's default for bots
TERMINAL_USER_ID = 1  # the terminal's one user, and its channel: Discord ids are never this small
TERMINAL_CHANNEL_ID = 1


class CommandError(Exception):
    """A request the bot cannot do; the message is for the user."""


# -- plain data in and out -------------------------------------------------------------------------
@dataclass
class Upload:
    """A file the user attached (or named, in the terminal); `read` fetches its bytes."""

    filename: str
    size: int  # bytes, as announced before the download
    read: Callable[[], Awaitable[bytes]]


@dataclass
class Request:
    """Who asks, where, with what."""

    user_id: int
    channel_id: int
    user_name: str = ""
    uploads: list[Upload] = field(default_factory=list)
    can_manage_channel: bool = False  # Discord: Manage Channels here (for !channel on/off)
    in_guild: bool = True  # False in direct messages
    guild_id: int | None = None  # the Discord server; jobs are visible only where they were made
    interactive: bool = False  # a slash command or button: refusals go privately to the user
    rate_limited: bool = True


@dataclass
class OutFile:
    name: str
    data: bytes


@dataclass
class Button:
    label: str
    action: str  # "extend" or "again"
    job_id: str

    @property
    def custom_id(self) -> str:
        return f"melodybot:{self.action}:{self.job_id}"


@dataclass
class Reply:
    text: str
    files: list[OutFile] = field(default_factory=list)
    reactions: list[str] = field(default_factory=list)  # to add to the sent message, in order
    buttons: list[Button] = field(default_factory=list)
    status_of: str | None = None  # this message shows the job's progress: edit it as the job moves
    result_of: str | None = None  # this message carries the job's variations: reactions on it are votes
    private: bool = False  # only for the asker where the front-end can (slash commands, buttons)


# -- what a job's messages say ---------------------------------------------------------------------
def status_text(status: JobStatus) -> str:
    job = status.job
    if status.state == JobState.QUEUED:
        where = f", position {status.position}" if status.position else ""
        return f"Queued as job {job.job_id}{where}."
    if status.state == JobState.RUNNING:
        return f"Generating job {job.job_id}... ({plural(job.variations, 'variation')} of {bars_text(job.bars)})"
    if status.state == JobState.DONE:
        return f"Job {job.job_id} is done: the results are below."
    if status.state == JobState.FAILED:
        return f"Job {job.job_id} failed: {status.error or 'the worker gave no reason'}"
    return f"Job {job.job_id} was cancelled."


def how_to_vote(job_id: str, count: int, prefix: str, platform: str) -> str:
    if platform == TERMINAL:
        return f"Vote with `{prefix}vote {job_id} <{'1' if count == 1 else f'1-{count}'}>`."
    emojis = NUMBER_EMOJIS[0] if count == 1 else f"{NUMBER_EMOJIS[0]}-{NUMBER_EMOJIS[count - 1]}"
    return f"Vote with {emojis} under the result."


def result_reply(status: JobStatus, prefix: str, platform: str, upload_limit: int = UPLOAD_LIMIT) -> Reply:
    """The one message with a finished job's variations: MIDI + MP3 per variation, the combined
    piano roll (every variation, numbered), settings, seed, key; number reactions to vote; buttons
    to extend the leader or roll again."""
    job, result = status.job, status.result
    count = len(result.variations)
    midis = [OutFile(f"{job.job_id}-{n}.mid", v.midi) for n, v in enumerate(result.variations, 1) if v.midi]
    mp3s = [OutFile(f"{job.job_id}-{n}.mp3", v.mp3) for n, v in enumerate(result.variations, 1) if v.mp3]
    pngs = [OutFile(f"{job.job_id}.png", result.combined_png)] if result.combined_png else []
    files, remarks = midis + mp3s + pngs, []
    if sum(len(f.data) for f in files) > upload_limit:
        files = midis + pngs
        remarks.append("The MP3 previews are left out: together they are over this channel's upload limit.")
    if sum(len(f.data) for f in files) > upload_limit:
        files = midis
    who = f" for {job.user_name}" if job.user_name else ""
    origin = ""
    if job.parent:
        parent_id, _, number = job.parent.partition(":")
        origin = f", extending {parent_id} variation {number}" if number else f", from {parent_id}"
    lines = [
        f"Job {job.job_id}: {plural(count, 'continuation')}{who}{origin}.",
        " | ".join([
            f"Key: {result.key}" if result.key else "Key: none found",
            f"{bars_text(job.bars)} at {job.bpm:g} BPM",
            job.instrument,
            f"style={job.style}",
            f"temp={job.temperature:g}",
            f"topp={job.top_p:g}",
            f"key={'on' if job.keep_key else 'off'}",
            f"seed={job.seed}",
            *([f"form={job.form}"] if job.form else []),
        ]),
        *chord_lines(job, result),
        f"{how_to_vote(job.job_id, count, prefix, platform)} `{prefix}extend {job.job_id}` continues the leader, "
        f"`{prefix}again {job.job_id}` rerolls.",
        *remarks,
    ]
    return Reply(
        "\n".join(lines),
        files=files,
        reactions=list(NUMBER_EMOJIS[:count]) if platform == DISCORD else [],
        buttons=[Button("Extend the leader", "extend", job.job_id), Button("Again", "again", job.job_id)],
        result_of=job.job_id,
    )


def chord_lines(job, result) -> list[str]:
    """The progression(s) under the variations: one line when they share it."""
    sheets = [v.chords for v in result.variations]
    if not any(sheets):
        return []
    # Under the primer: a sketch's own chords, else suggested; under the continuation: chords=, else suggested.
    if bool(job.primer_chords) == bool(job.chords):
        source = "yours" if job.chords else "suggested"
    elif job.chords:
        source = "suggested under your notes, then yours"
    else:
        source = "your sketch's under your notes, then suggested"
    if len(set(sheets)) == 1:
        return [f"Chords ({source}): {sheets[0]}"]
    return [f"Chords {n} ({source}): {sheet or 'none'}" for n, sheet in enumerate(sheets, 1)]


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def bars_text(count: int) -> str:
    return plural(count, "bar")
