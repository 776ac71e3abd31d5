"""The terminal channel as a user meets it: `python -m bot` without a token, in a subprocess, fed
through its stdin, with the real embedded queue and worker (tiny network) writing real files."""

from __future__ import annotations

import asyncio
import io
import os
import queue as queue_module
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest
from conftest import QUEUE_WORKER_ENV, free_port
from midi_factory import TrackSpec, line, make_midi
from PIL import Image

from bot.commands import TERMINAL_CHANNEL_ID
from bot.jobs import Job, JobState, JobStatus
from bot.settings import Settings
from bot.storage import BotStore
from bot.terminal import Terminal
from model.defaults import DEFAULT_TOP_P

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60.0


class BotProcess:
    """`python -m bot` with piped stdin/stdout; `expect` waits for a line matching a pattern."""

    def __init__(self, data_dir: Path | None, weights: Path, cwd: Path, **settings: str):
        """data_dir None: the default setting (`data` under the folder it starts in); settings:
        more environment variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MELODYBOT_") and k != "DISCORD_TOKEN"}
        env.update(QUEUE_WORKER_ENV, MELODYBOT_WEIGHTS=str(weights), MELODYBOT_DEVICE="cpu", PYTHONUNBUFFERED="1")
        if data_dir is not None:
            env["MELODYBOT_DATA_DIR"] = str(data_dir)
        env.update(settings)
        self.proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=cwd, env=env, text=True, bufsize=1,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue_module.Queue[str | None] = queue_module.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for text in self.proc.stdout:
            self.lines.put(text.rstrip("\n"))
        self.lines.put(None)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str, timeout: float = TIMEOUT_S) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue_module.Empty:
                raise AssertionError(f"no line matching {pattern!r}; output so far:\n" + "\n".join(self.seen)) from None
            if text is None:
                raise AssertionError(f"the bot exited before printing {pattern!r}:\n" + "\n".join(self.seen)
                                     + "\nstderr:\n" + self.proc.stderr.read())
            self.seen.append(text)
            match = re.search(pattern, text)
            if match:
                return match

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def bot_process(tmp_path, tiny_weights):
    started = []

    def start() -> BotProcess:
        process = BotProcess(tmp_path / "data", tiny_weights, tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def workers_of(data_dir: Path) -> list[int]:
    """Pids of worker processes still running for this data folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "bot.worker" in cmdline and str(data_dir) in cmdline:
                pids.append(int(entry.name))
    return pids


def test_started_from_another_folder_with_default_settings_it_answers(tiny_weights, tmp_path):
    """No MELODYBOT_DATA_DIR, no PYTHONPATH, a folder that is not the project's: the bot and its
    worker agree on <that folder>/data and the job is answered."""
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    bot = BotProcess(None, tiny_weights, elsewhere)
    try:
        bot.expect(r"^bot> melodybot, terminal channel")
        bot.send("!continue C4 E4 G4 A4 bars=1 variations=1")
        job_id = bot.expect(r"^bot> Queued as job ([a-z0-9]{6})")[1]
        bot.expect(rf"^bot> Job {job_id}: 1 continuation")
        assert (elsewhere / "data" / "melodybot.sqlite3").is_file()
        assert (elsewhere / "data" / "out" / job_id).is_dir()
        assert not (ROOT / "data" / "out" / job_id).exists()
        bot.send("!quit")
        assert bot.wait() == 0
    finally:
        if bot.proc.poll() is None:
            bot.proc.kill()


def test_a_bot_killed_as_it_prints_a_result_does_not_print_it_again(bot_process, tmp_path):
    bot = bot_process()
    bot.expect(r"^bot> melodybot, terminal channel")
    bot.send("!continue C4 E4 G4 A4 bars=1 variations=1")
    job_id = bot.expect(r"^bot> Queued as job ([a-z0-9]{6})")[1]
    bot.expect(rf"^bot> Job {job_id}: 1 continuation")
    bot.proc.kill()  # the instant the result is on the screen
    bot.proc.wait()
    again = bot_process()
    again.expect(r"^bot> melodybot, terminal channel")
    again.send("!queue")
    again.expect(r"You have no jobs")
    again.send(f"!votes {job_id}")  # the job is known and finished: the answer was recorded
    again.expect(rf"{job_id}")
    again.send("!quit")
    assert again.wait() == 0
    assert not any(f"Job {job_id}: 1 continuation" in line for line in again.seen)


def test_a_redis_password_never_reaches_the_screen_or_the_log(tiny_weights, tmp_path):
    """Redis unreachable at start, with a password in the URL: the bot starts, accepts the job,
    says why it waits, and the password appears nowhere."""
    secret = "hunter2-very-secret"
    url = f"redis://:{secret}@127.0.0.1:{free_port()}/0"
    bot = BotProcess(tmp_path / "data", tiny_weights, tmp_path, MELODYBOT_REDIS_URL=url)
    try:
        bot.expect(r"^bot> melodybot, terminal channel")
        bot.send("!continue C4 E4 G4 A4 bars=1")
        bot.expect(r"Queued as job [a-z0-9]{6}.*The generators are unreachable right now; your job is kept")
        bot.send("!quit")
        assert bot.wait() == 0
    finally:
        if bot.proc.poll() is None:
            bot.proc.kill()
    screen = "\n".join(bot.seen) + bot.proc.stderr.read()
    log_text = (tmp_path / "data" / "melodybot.log").read_text()
    assert secret not in screen and secret not in log_text
    assert "redis://:***@127.0.0.1" in log_text
    assert "Traceback" not in screen


def test_a_typed_melody_becomes_files_on_disk(bot_process, tmp_path):
    bot = bot_process()
    bot.expect(r"^bot> melodybot, terminal channel")
    bot.send("!continue C4 E4 G4 A4 bars=2 variations=2 seed=7 sound=strings")
    job_id = bot.expect(r"^bot> Queued as job ([a-z0-9]{6}), position 1\. From your notes: 2 variations of 2 bars, "
                        r"seed 7\.")[1]
    bot.expect(rf"Generating job {job_id}")
    bot.expect(rf"^bot> Job {job_id}: 2 continuations")
    bot.expect(rf"Key: .* \| 2 bars at 120 BPM \| strings \| style=pop \| temp=1 \| topp={DEFAULT_TOP_P:g} \| key=on "
               r"\| seed=7")
    bot.expect(r"Files:")
    paths = [Path(bot.expect(r"^\s+(/.*)$")[1]) for _ in range(5)]  # 2 MIDI, 2 MP3, the picture of both
    folder = tmp_path / "data" / "out" / job_id
    assert {p.name for p in paths} == {f"{job_id}-1.mid", f"{job_id}-2.mid", f"{job_id}-1.mp3", f"{job_id}-2.mp3",
                                       f"{job_id}.png"}
    for path in paths:
        assert path.parent == folder and path.stat().st_size > 0
        data = path.read_bytes()
        if path.suffix == ".mid":
            midi = mido.MidiFile(file=io.BytesIO(data))
            assert sum(1 for track in midi.tracks for m in track if m.type == "note_on" and m.velocity) >= 4
            assert any(m.type == "program_change" and m.program == 48 for t in midi.tracks for m in t)  # strings
        elif path.suffix == ".mp3":
            assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
        else:
            with Image.open(path) as image:
                assert image.format == "PNG" and image.width > 100
    bot.expect(r"\[Extend the leader: !extend .*\]  \[Again: !again ")

    bot.send(f"!vote {job_id} 2")
    bot.expect(rf"^bot> Your vote for job {job_id} is on variation 2\.")
    bot.send("votes")  # the ! is optional here; no job id: the newest result
    bot.expect(rf"^bot> Votes for job {job_id}: 1 vote\.")
    bot.expect(r"2\ufe0f\u20e3 # 1  <- leading")
    bot.send("!continue C4 H4")
    bot.expect(r'^bot> I can\'t read those notes: "H4" is not a note \(token 2\)')
    bot.send("!dance")
    bot.expect(r"^bot> I don't know '!dance'\. Type !help\.")
    bot.send("!quit")
    bot.expect(r"^bot> Bye\.$")
    assert bot.wait() == 0
    assert workers_of(tmp_path / "data") == []


def test_piped_input_waits_for_its_jobs_and_a_sketch_by_path(bot_process, tmp_path):
    sketch = tmp_path / "hook.mid"
    sketch.write_bytes(make_midi([TrackSpec("Melody", line([67, 69, 71, 72]))], bpm=100))
    bot = bot_process()
    bot.proc.stdin.write(f"!continue file={sketch} bars=1 variations=1\n")
    bot.proc.stdin.close()  # end of input right away: the bot finishes the job first
    job_id = bot.expect(r"Queued as job ([a-z0-9]{6}).*From the sketch .*hook\.mid")[1]
    bot.expect(r"End of input: waiting for 1 job")
    bot.expect(rf"^bot> Job {job_id}: 1 continuation .*")
    bot.expect(r"at 100 BPM")
    bot.expect(r"^bot> Bye\.$")
    assert bot.wait() == 0
    assert (tmp_path / "data" / "out" / job_id / f"{job_id}-1.mid").is_file()


def test_ctrl_c_stops_cleanly_and_the_job_stays_queued(bot_process, tmp_path):
    bot = bot_process()
    bot.expect(r"^bot> melodybot, terminal channel")
    bot.send("!continue C4 D4 E4 bars=32")
    bot.expect(r"Queued as job")
    bot.proc.send_signal(signal.SIGINT)
    bot.expect(r"^bot> Bye\. 1 unfinished job\(s\) stay queued and are answered next time\.")
    assert bot.wait() == 0
    assert workers_of(tmp_path / "data") == []


def test_bad_settings_are_named(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELODYBOT_") and k != "DISCORD_TOKEN"}
    env.update(MELODYBOT_MAX_BARS="lots", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("melodybot: bad setting: MELODYBOT_MAX_BARS") and "'lots'" in done.stderr
    assert "Traceback" not in done.stderr


# -- the Terminal class in-process, with a stand-in queue ---------------------------------------------
class ScriptedQueue:
    """Just enough of a JobQueue for the terminal's own behaviour."""

    def __init__(self):
        self.updates_queue = None
        self.delivered = []

    async def submit(self, job):
        return JobStatus(job, JobState.QUEUED, position=1)

    async def user_jobs(self, user_id):
        return []

    async def mark_delivered(self, job_id):
        self.delivered.append(job_id)

    async def updates(self):
        self.updates_queue = asyncio.Queue()
        while (status := await self.updates_queue.get()) is not None:
            yield status


async def test_terminal_prints_updates_that_arrive_while_it_waits_for_input(tmp_path):
    read_end, write_end = os.pipe()
    stdin, stdout = os.fdopen(read_end), io.StringIO()
    settings = Settings(data_dir=tmp_path)
    store = BotStore(settings.database)
    queue = ScriptedQueue()
    terminal = Terminal(settings, queue, store, stdin=stdin, stdout=stdout)
    task = asyncio.create_task(terminal.run())
    try:
        while queue.updates_queue is None:
            await asyncio.sleep(0.01)
        job = Job(user_id=1, channel_id=TERMINAL_CHANNEL_ID, primer=[2], job_id="abc123")
        queue.updates_queue.put_nowait(JobStatus(job, JobState.RUNNING))
        queue.updates_queue.put_nowait(JobStatus(job, JobState.FAILED, error="the worker died"))
        other = Job(user_id=5, channel_id=999, primer=[2], job_id="discrd")  # a Discord job: not ours
        queue.updates_queue.put_nowait(JobStatus(other, JobState.FAILED, error="x"))
        for _ in range(200):
            if "failed" in stdout.getvalue():
                break
            await asyncio.sleep(0.01)
        os.write(write_end, b"!quit\n")
        await asyncio.wait_for(task, 10)
    finally:
        os.close(write_end)
        store.close()
    text = stdout.getvalue()
    assert "bot> Generating job abc123..." in text and "bot> Job abc123 failed: the worker died" in text
    assert "discrd" not in text and queue.delivered == ["abc123"]
    assert text.rstrip().endswith("bot> Bye.")
