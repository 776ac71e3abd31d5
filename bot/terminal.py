"""The local terminal channel: the bot's commands without Discord (`python -m bot` with no token).

    you> !continue C4 E4 G4 A4 bars=4
    bot> Queued as job k3m9xq, position 1. From your notes: 4 variations of 4 bars, seed 4211.
    bot> Generating job k3m9xq... (4 variations of 4 bars)
    bot> Job k3m9xq: 4 continuations for ann. ...
    bot> files: data/out/k3m9xq/k3m9xq-1.mid ...

The same CommandHandler, queue and worker as on Discord; replies are printed, files are written
to settings.data_dir/out/<job id>/ and their paths printed. A sketch is `!continue file=PATH`
(or `--midi PATH`); a vote is typed, `!vote <job> <n>`, where Discord uses reactions. The `!` is
optional. `!quit`, Ctrl-C or Ctrl-D leave; at end of input (a script piped in) the terminal first
waits for the jobs it started, so `echo '!continue C4 E4 G4' | python -m bot` leaves files behind.

stdin is read by a daemon thread, so the event loop keeps delivering job updates while it waits
for a line, and a blocked read never delays the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from bot.commands import (
    TERMINAL,
    TERMINAL_CHANNEL_ID,
    TERMINAL_USER_ID,
    CommandHandler,
    Reply,
    Request,
    UpdateFollower,
)
from bot.jobs import JobState, JobStatus
from bot.queue import JobQueue
from bot.settings import Settings
from bot.storage import BotStore, local_message_id

log = logging.getLogger(__name__)

PROMPT = "you> "
SPEAKER = "bot> "
QUIT_WORDS = ("quit", "exit", "q", "bye")
UNLIMITED = 2**62  # no upload limit on a local disk


class Terminal:
    def __init__(self, settings: Settings, queue: JobQueue, store: BotStore, *,
                 stdin: TextIO | None = None, stdout: TextIO | None = None, observe=None):
        self.settings = settings
        self.queue = queue
        self.store = store
        self.stdin = stdin if stdin is not None else sys.stdin
        self.stdout = stdout if stdout is not None else sys.stdout
        self.handler = CommandHandler(settings, queue, store, platform=TERMINAL)
        self.out_dir = settings.data_dir / "out"
        self.follower = UpdateFollower(queue, self.deliver, accept=lambda s: s.job.channel_id == TERMINAL_CHANNEL_ID,
                                       observe=observe, on_failure=self._delivery_failed)
        self.handler.jams.post = self._post_jam  # jams: round results and the song (bot/commands/jam_service.py)
        self.handler.jams.accept = lambda channel_id: channel_id == TERMINAL_CHANNEL_ID
        self.request = Request(
            user_id=TERMINAL_USER_ID,
            channel_id=TERMINAL_CHANNEL_ID,
            user_name=_user_name(),
            can_manage_channel=True,
            in_guild=True,
            rate_limited=False,  # the owner at their own keyboard
        )
        self.interactive = _isatty(self.stdin)
        self._waiting: set[str] = set()  # jobs started in this session, not yet answered
        self._answered = asyncio.Event()
        self._prompting = False  # the prompt is on screen, waiting for a line

    # -- output ---------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        lines = text.replace("`", "").splitlines() or [""]  # Discord's code marks mean nothing here
        indent = " " * len(SPEAKER)
        body = "\n".join([SPEAKER + lines[0], *(indent + line for line in lines[1:])])
        body += "\n"
        if self.interactive and self._prompting:  # an update arrived while the prompt waits: redraw it
            body = "\r" + body + PROMPT
        self.stdout.write(body)
        self.stdout.flush()

    async def show(self, reply: Reply) -> None:
        self.say(await self._prepare(reply))

    async def _prepare(self, reply: Reply) -> str:
        """The reply's text, with its files written and their paths listed."""
        text = reply.text
        if reply.files:
            job_id = reply.result_of or reply.status_of or "files"
            paths = await asyncio.to_thread(self._write_files, job_id, reply)
            text += "\nFiles:\n" + "\n".join(f"  {path}" for path in paths)
        if reply.buttons:
            text += "\n" + "  ".join(f"[{b.label}: {self.settings.command_prefix}{b.action} {b.job_id}]"
                                      for b in reply.buttons)
        return text

    def _write_files(self, job_id: str, reply: Reply) -> list[Path]:
        folder = self.out_dir / job_id
        if reply.files and all(out.name.startswith("song-") for out in reply.files):  # a whole song: data/out/song-*
            folder = self.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for out in reply.files:
            path = folder / Path(out.name).name
            path.write_bytes(out.data)
            paths.append(path)
        return paths

    # -- job updates ----------------------------------------------------------------------------
    async def deliver(self, status: JobStatus) -> None:
        job = status.job
        if status.state == JobState.DONE and status.result is not None:
            reply = self.handler.result_reply(status, upload_limit=UNLIMITED)
            text = await self._prepare(reply)  # the files first: writing them again is harmless
            await self.store.messages.remember_result(local_message_id(job.job_id), job.job_id, job.channel_id,
                                             len(status.result.variations))
        else:
            text = self.handler.status_text(status)
        if status.state.finished:
            # Marked before it is printed: a screen cannot take a line back, so a bot killed in
            # between must not print it again after its restart (the files are on disk either way).
            await self.queue.mark_delivered(job.job_id)
        self.say(text)
        if status.state.finished:
            self._waiting.discard(job.job_id)
            self._answered.set()

    def _delivery_failed(self, status: JobStatus, error: BaseException) -> None:
        self.say(f"Sorry, I couldn't save the result of job {status.job.job_id}: {error}")
        self._waiting.discard(status.job.job_id)
        self._answered.set()

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        stop = asyncio.Event()
        threading.Thread(target=self._read_lines, args=(loop, lines), name="stdin", daemon=True).start()
        signals = _install_signals(loop, stop)
        self.follower.start()
        self.handler.jams.start()
        p = self.settings.command_prefix
        self.say(f"melodybot, terminal channel. Try {p}continue C4 E4 G4 A4 or {p}help; {p}quit leaves. "
                 f"Files go to {self.out_dir}/<job>/.")
        try:
            while True:
                self._prompt()
                line = await _first(lines.get(), stop.wait())
                self._prompting = False
                if stop.is_set():
                    if self.interactive:
                        self.stdout.write("\n")  # off the line the prompt (and ^C) left
                    break
                if line is None:  # end of input: finish what was started, unless stopped meanwhile
                    await _first(self._wait_for_jobs_and_jams(), stop.wait())
                    break
                if not await self.command(line):
                    break
        finally:
            await self.handler.jams.stop()
            await self.follower.stop()
            for number in signals:
                loop.remove_signal_handler(number)
        unfinished = await self.queue.user_jobs(TERMINAL_USER_ID)
        if unfinished:
            self.say(f"Bye. {len(unfinished)} unfinished job(s) stay queued and are answered next time.")
        else:
            self.say("Bye.")

    def _prompt(self) -> None:
        if self.interactive:
            self.stdout.write(PROMPT)
            self.stdout.flush()
            self._prompting = True

    async def command(self, line: str) -> bool:
        """Run one typed line; False to leave."""
        line = line.strip()
        if not line:
            return True
        word = line.removeprefix(self.settings.command_prefix).split(maxsplit=1)[0].lower() if line else ""
        if word in QUIT_WORDS:
            return False
        replies = await self.handler.handle_line(self.request, line, require_prefix=False)
        if replies is None:
            self.say(f"I don't know {line.split()[0]!r}. Type {self.settings.command_prefix}help.")
            return True
        for reply in replies:
            if reply.status_of:
                self._waiting.add(reply.status_of)
            await self.show(reply)
        return True

    async def _wait_for_jobs(self) -> None:
        if self._waiting:
            self.say(f"End of input: waiting for {len(self._waiting)} job(s) to finish (Ctrl-C stops now).")
        while self._waiting:
            self._answered.clear()
            await self._answered.wait()

    # -- jams (bot/commands/jam_service.py) --------------------------------------------------------------------------
    async def _post_jam(self, channel_id: int, reply: Reply) -> None:
        if reply.status_of:
            self._waiting.add(reply.status_of)
        await self.show(reply)

    async def _wait_for_jobs_and_jams(self) -> None:
        """End of input: a jam started from a script plays to its end, then its jobs finish."""
        await self._wait_for_jobs()
        if await self.store.jams.playing_in(TERMINAL_CHANNEL_ID) is not None:
            self.say("End of input: waiting for the jam to finish (Ctrl-C stops now).")
        await self.handler.jams.idle(TERMINAL_CHANNEL_ID)
        await self._wait_for_jobs()

    def _read_lines(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue) -> None:
        """Thread: blocking reads, each line handed to the loop; None at end of input."""
        try:
            while True:
                line = self.stdin.readline()
                loop.call_soon_threadsafe(lines.put_nowait, line if line else None)
                if not line:
                    return
        except (RuntimeError, ValueError, OSError):  # the loop closed, or stdin did
            return


async def _first(*aws):
    """Await whichever finishes first, cancel the others; the first one's result."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in tasks:
        if task in done:
            return task.result()


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[int]:
    installed = []
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(number, stop.set)
            installed.append(number)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            pass
    return installed


def _isatty(stream) -> bool:
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return stream.isatty()
    return False


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (containers)
        return "you"


async def run_terminal(settings: Settings, queue: JobQueue, store: BotStore, observe=None) -> None:
    await Terminal(settings, queue, store, observe=observe).run()
