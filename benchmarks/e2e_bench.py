"""End-to-end latency through the terminal channel: `python -m bot` with its local worker, as a user
of the embedded default sees it.

    nice -n 15 .venv/bin/python benchmarks/e2e_bench.py [--runs 30] [--weights PATH] [--write results.md]

Starts `python -m bot` as a subprocess (no Discord token, MELODYBOT_DATA_DIR = a temporary folder,
run in that folder so no .env applies), then measures:
- cold start: process start to the first answer (files on disk) of the first `!continue C4 E4 G4 A4`;
- typed notes: `!continue C4 E4 G4 A4 bars=8 variations=4`, --runs times one after another with a
  warm worker, from writing the line to stdin until the reply listing the files (the terminal
  writes the files first, then prints their paths; the paths are checked on disk);
- a MIDI sketch: the same with `!continue file=PATH.mid` (2 bars made with pretty_midi);
- with lyrics: LYRICS_COMMAND, four lines set to the typed notes (8 bars, issue #24).
--warmup N first sends N requests of each case to each bot, not counted: the renderer keeps the
notes it synthesised (bot/render/audio.py NoteCache), so a bot that has answered a while renders
faster than one just started; without it the first requests count their new notes too.
p50/p95/max per case, a table on stdout, and with --write the same table in a Markdown file.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from model.defaults import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
NOTES_COMMAND = "!continue C4 E4 G4 A4 bars=8 variations=4"
SKETCH_COMMAND = "!continue file={path} bars=8 variations=4"
# issue #24: four lines of words, two bars each (the bars chosen for them: 8), set to the typed notes
LYRICS_COMMAND = ('!continue C4 E4 G4 A4 lyrics="Walking down the empty street / every window dark / I kept your '
                  'letters in a box / beneath the kitchen stairs" variations=4')
FIRST_COMMAND = "!continue C4 E4 G4 A4"  # the cold start: what a new user types first
BASELINE_CASE = "typed notes, baseline"
GOAL_P50_S, GOAL_P95_S = 0.5, 0.8  # issue #13, typed notes: p50 <= 0.5 s, p95 <= 0.8 s on this 2-core machine
REQUEST_TIMEOUT_S = 180.0
START_TIMEOUT_S = 300.0

QUEUED = re.compile(r"Queued as job (\w+)")
FAILED = re.compile(r"Job (\w+) (failed|was cancelled)")
# The worker's stage timings (Result.timings) as the bot's /metrics sees them: name -> column.
STAGE_METRICS = {
    "melodybot_queued_seconds": "queued",
    "melodybot_generation_seconds": "sample",
    "melodybot_render_seconds": "render",
    "melodybot_job_seconds": "job total",
}
FILE_LINE = re.compile(r"^\s+(\S.*\.(?:mid|midi|mp3|png))\s*$")


@dataclass
class Answer:
    job_id: str
    seconds: float  # from the line written to the reply listing the files
    at: float  # perf_counter() when that reply arrived
    files: list[Path] = field(default_factory=list)


class Bot:
    """`python -m bot` in the terminal channel, its stdout read line by line by a thread."""

    def __init__(self, data_dir: Path, checkout: Path, weights: Path | None, log_level: str,
                 threads: int | None = None):
        """checkout: the checkout of the project whose bot runs (its code first on PYTHONPATH, its
        own shipped weights): this one, or another (e.g. today's main) for a ratio."""
        self.cwd = data_dir
        self.http_port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "MELODYBOT_DISCORD_TOKEN")}
        env.update(
            MELODYBOT_DATA_DIR=str(data_dir),
            MELODYBOT_LOG_LEVEL=log_level,
            PYTHONUNBUFFERED="1",
            MELODYBOT_HTTP_PORT=str(self.http_port),
        )  # /metrics: the worker's own stage timings
        env.pop("MELODYBOT_REDIS_URL", None)  # the embedded default
        if weights is not None:
            env["MELODYBOT_WEIGHTS"] = str(weights)
        env["PYTHONPATH"] = str(checkout)
        if threads is not None:  # torch's CPU threads in the worker (0: one per core)
            env["MELODYBOT_WORKER_THREADS"] = str(threads)
        self.lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.transcript: list[str] = []
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot"],
            cwd=data_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))
        self.lines.put((time.perf_counter(), None))

    def send(self, line: str) -> float:
        sent = time.perf_counter()
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return sent

    def _next(self, deadline: float) -> tuple[float, str]:
        try:
            at, line = self.lines.get(timeout=max(0.0, deadline - time.perf_counter()))
        except queue.Empty:
            raise TimeoutError("no answer in time; the bot said:\n" + self.tail()) from None
        if line is None:
            raise RuntimeError(f"the bot exited ({self.process.wait()}); it said:\n" + self.tail())
        self.transcript.append(line)
        return at, line

    def answer(self, sent: float, timeout: float = REQUEST_TIMEOUT_S) -> Answer:
        """Wait for the job the last command queued and its files; seconds from `sent` to the
        reply that lists the files (written to disk before it is printed)."""
        deadline = time.perf_counter() + timeout
        job_id = None
        while True:  # other lines (the banner, "Generating...", warnings) pass; a refusal ends in a timeout
            at, line = self._next(deadline)
            if job_id is None and (match := QUEUED.search(line)):
                job_id = match.group(1)
            elif job_id and (match := FAILED.search(line)) and match.group(1) == job_id:
                raise RuntimeError(f"job {job_id}: {line.strip()}")
            elif job_id and line.strip() == "Files:":
                answer = Answer(job_id, at - sent, at)
                break
        while True:  # the paths follow in the same write; then the buttons line
            try:
                _, line = self._next(time.perf_counter() + 2.0)
            except TimeoutError:
                break
            match = FILE_LINE.match(line)
            if not match:
                break
            answer.files.append(Path(match.group(1)))
        missing = [p for p in answer.files if not (self.cwd / p).is_file()]  # a relative path: the bot's cwd
        if not answer.files or missing:
            raise RuntimeError(f"job {job_id}: files missing on disk: {missing or 'none listed'}")
        return answer

    def stages(self) -> dict[str, tuple[float, float]]:
        """(sum, count) of the job stage histograms on the bot's /metrics (bot/observability.py)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        totals: dict[str, list[float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name in STAGE_METRICS:
                for sample in family.samples:
                    if sample.name.endswith(("_sum", "_count")):
                        totals.setdefault(family.name, [0.0, 0.0])[sample.name.endswith("_count")] = sample.value
        return {name: (values[0], values[1]) for name, values in totals.items()}

    def cpu_seconds(self) -> float:
        """CPU time so far of the bot, its worker, and the FluidSynth and ffmpeg runs they waited for
        (Linux /proc; 0 elsewhere): the work of a request, whatever else the machine runs."""
        return sum(_proc_cpu(pid) for pid in _tree(self.process.pid))

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.transcript[-lines:])

    def quit(self) -> int:
        try:
            self.send("!quit")
            self.process.stdin.close()
            return self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.terminate()
            return self.process.wait(timeout=30)


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def _threads(threads: int | None) -> str:
    if threads is None:
        from bot.settings import Settings

        threads, source = Settings().worker_threads, "the default"
    else:
        source = "set"
    return f"{threads or 'one per core'} ({source})"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_means(before: dict, after: dict) -> dict[str, float]:
    """Mean seconds per job of each stage between two scrapes."""
    means = {}
    for name in STAGE_METRICS:
        (sum0, count0), (sum1, count1) = before.get(name, (0.0, 0.0)), after.get(name, (0.0, 0.0))
        if count1 > count0:
            means[name] = (sum1 - sum0) / (count1 - count0)
    return means


def make_sketch(path: Path) -> None:
    """Two bars at 120 BPM: a C major phrase of quarters and eighths, as a songwriter's sketch."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0)
    t = 0.0
    for pitch, beats in ((60, 1), (64, 0.5), (65, 0.5), (67, 1), (69, 1), (67, 0.5), (65, 0.5), (64, 1), (62, 1)):
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=t, end=t + beats * 0.5 * 0.95))
        t += beats * 0.5
    midi.instruments.append(piano)
    midi.write(str(path))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, Python {platform.python_version()}"


def table(rows: list[tuple[str, list[float], dict[str, float]]]) -> str:
    stages = list(STAGE_METRICS.values())
    lines = [
        "| case | runs | p50 (s) | p95 (s) | max (s) | mean (s) | "
        + " | ".join(f"{s} (s)" for s in stages)
        + " | CPU per request (s) |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * (len(stages) + 1),
    ]
    for name, values, means in rows:
        stage_cells = " | ".join(f"{means[m]:.3f}" if m in means else "-" for m in [*STAGE_METRICS, "cpu"])
        lines.append(
            f"| {name} | {len(values)} | {percentile(values, 50):.3f} | {percentile(values, 95):.3f} | "
            f"{max(values):.3f} | {statistics.fmean(values):.3f} | {stage_cells} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="sequential requests per warm case")
    parser.add_argument("--weights", type=Path, help=f"a checkpoint (default: the shipped {DEFAULT_WEIGHTS})")
    parser.add_argument("--write", type=Path, help="also write the results as Markdown to this file")
    parser.add_argument("--log-level", default="INFO", help="the bot's MELODYBOT_LOG_LEVEL (its log file)")
    parser.add_argument("--threads", type=int, help="MELODYBOT_WORKER_THREADS (default: the setting's default)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="requests of each case sent (and not counted) before measuring, to each bot: the "
                             "renderer's note cache filled as a bot that has answered a while has it")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="seconds to wait before each timed request, so that it starts on an idle machine "
                             "(what the bot and the baseline did after their last answer is over)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (outputs, log) and print it")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. `git worktree add /tmp/old <rev>`): "
                        "its bot answers the typed-notes case after each timed request of every case, for ratios")
    args = parser.parse_args(argv)
    weights = args.weights.resolve() if args.weights else None
    if weights is None and not DEFAULT_WEIGHTS.is_file():
        parser.error(f"no shipped weights at {DEFAULT_WEIGHTS}: pass --weights a checkpoint")

    data_dir = Path(tempfile.mkdtemp(prefix="melodybot-e2e-"))
    sketch = data_dir / "sketch.mid"
    make_sketch(sketch)
    # this checkout's code first on PYTHONPATH: without it the bot is whatever the venv has installed
    # (an editable install of another checkout), not the tree the script was run from
    bot = Bot(data_dir, ROOT, weights, args.log_level, args.threads)
    baseline = None
    if args.baseline:
        (data_dir / "baseline").mkdir()
        baseline = Bot(data_dir / "baseline", args.baseline.resolve(), None, args.log_level, args.threads)
        baseline.answer(baseline.send(FIRST_COMMAND), timeout=START_TIMEOUT_S)
    try:
        cold = bot.answer(bot.send(FIRST_COMMAND), timeout=START_TIMEOUT_S)
        cold_s = cold.at - bot.started
        print(f"cold start: {cold_s:.2f} s to the first answer ({len(cold.files)} files)", flush=True)
        cold_stages = stage_means({}, bot.stages())
        for _ in range(args.warmup):
            for command in (NOTES_COMMAND, SKETCH_COMMAND.format(path=sketch), LYRICS_COMMAND):
                bot.answer(bot.send(command))
                if baseline is not None and command == NOTES_COMMAND:
                    baseline.answer(baseline.send(command))
        results: dict[str, list[float]] = {"typed notes": [], "MIDI sketch": [], "typed notes with lyrics": []}
        means: dict[str, dict[str, float]] = {}
        beside: dict[str, list[float]] = {}  # per case, the baseline's typed notes sent in turns with it
        for name, command in (("typed notes", NOTES_COMMAND), ("MIDI sketch", SKETCH_COMMAND.format(path=sketch)),
                              ("typed notes with lyrics", LYRICS_COMMAND)):
            before, cpu_before = bot.stages(), bot.cpu_seconds()
            base_before, base_cpu = (baseline.stages(), baseline.cpu_seconds()) if baseline else ({}, 0.0)
            for run in range(args.runs):
                time.sleep(args.gap)
                answer = bot.answer(bot.send(command))
                results[name].append(answer.seconds)
                print(f"{name} {run + 1:2d}/{args.runs}: {answer.seconds:.3f} s ({answer.job_id})", flush=True)
                if baseline is not None:  # request for request, same moment: typed notes to the baseline
                    time.sleep(args.gap)
                    old = baseline.answer(baseline.send(NOTES_COMMAND))
                    beside.setdefault(name, []).append(old.seconds)
                    if name == "typed notes":
                        results.setdefault(BASELINE_CASE, []).append(old.seconds)
                    print(f"{BASELINE_CASE} {run + 1:2d}/{args.runs}: {old.seconds:.3f} s", flush=True)
            means[name] = stage_means(before, bot.stages())
            means[name]["cpu"] = (bot.cpu_seconds() - cpu_before) / args.runs
            if baseline is not None and name == "typed notes":
                means[BASELINE_CASE] = stage_means(base_before, baseline.stages())
                means[BASELINE_CASE]["cpu"] = (baseline.cpu_seconds() - base_cpu) / args.runs
    except (RuntimeError, TimeoutError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        bot.quit()
        return 1
    code = bot.quit()
    if baseline is not None:
        baseline.quit()
    if args.keep:
        print(f"data folder kept: {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)

    rows = [(name, values, means[name]) for name, values in results.items()]
    typed = results["typed notes"]
    met = percentile(typed, 50) <= GOAL_P50_S and percentile(typed, 95) <= GOAL_P95_S
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    cold_detail = ", ".join(f"{STAGE_METRICS[m]} {v:.2f} s" for m, v in cold_stages.items())
    report = "\n".join([
        "# End-to-end latency: terminal channel, embedded queue, one local worker",
        "",
        f"Machine: {machine()}. Worker torch threads (MELODYBOT_WORKER_THREADS): {_threads(args.threads)}.",
        f"Weights: {_shown(weights or DEFAULT_WEIGHTS)}. Load average (1, 5, 15 min) at the end: {load}, "
        "from everything this machine ran meanwhile (the benchmark itself keeps about one core busy).",
        f"Cold start (process start to the first answer of `{FIRST_COMMAND}`, files on disk): **{cold_s:.2f} s**",
        f"(that job in the worker: {cold_detail}).",
        "",
        *([f"Before measuring, {args.warmup} requests of each case went to each bot (not counted): the",
           "renderer's note cache as a bot that has answered a while has it.", ""] if args.warmup else []),
        f"Warm worker, {args.runs} sequential requests per case, 4 variations x 8 bars each, from the line",
        "written to stdin to the reply listing the files (MIDI, MP3 and PNG, written before the reply).",
        "The stage columns are the worker's own means per job (Result.timings, via the bot's /metrics): time",
        "waiting in the queue, sampling, rendering, and the job's total; the rest of the end-to-end time is",
        "the bot (command parsing, SQLite, the worker wake-up, writing the files). CPU per request: CPU",
        "seconds of the bot, its worker and their FluidSynth/ffmpeg children per request (all cores),",
        "which does not depend on what else the machine runs.",
        "",
        table(rows),
        "",
        *([f"Typed notes against the baseline ({args.baseline}), request for request: p50 ratio "
           f"{percentile(results['typed notes'], 50) / percentile(results[BASELINE_CASE], 50):.2f}, p95 ratio "
           f"{percentile(results['typed notes'], 95) / percentile(results[BASELINE_CASE], 95):.2f}.", ""]
          if baseline is not None else []),
        *(["Each case's p50 against the baseline's typed notes sent in turns with it (a ratio: the machine's "
           "speed of the moment cancels): "
           + ", ".join(f"{name} {percentile(results[name], 50):.3f} / {percentile(beside[name], 50):.3f} s = "
                       f"{percentile(results[name], 50) / percentile(beside[name], 50):.2f}" for name in beside) + ".",
           ""] if baseline is not None else []),
        f"Goal, typed notes p50 <= {GOAL_P50_S:g} s and p95 <= {GOAL_P95_S:g} s: {'met' if met else 'NOT met'}.",
        "",
        f"`nice -n 15 .venv/bin/python benchmarks/e2e_bench.py --runs {args.runs}"
        f"{f' --warmup {args.warmup}' if args.warmup else ''}"
        f"{'' if args.threads is None else f' --threads {args.threads}'}` (bot exit code {code}).",
    ])  # fmt: skip
    print()
    print(report)
    if args.write:
        args.write.write_text(report + "\n")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
