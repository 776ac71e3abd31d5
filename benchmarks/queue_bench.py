"""Benchmark of the job queue and its worker (issue #5): batched sampling, the embedded queue end
to end, and the worker's memory. Not a test; prints markdown tables for BENCHMARKS.md.

    nice -n 15 .venv/bin/python benchmarks/queue_bench.py                # all three parts
    nice -n 15 .venv/bin/python benchmarks/queue_bench.py --part sampling --threads 2
    nice -n 15 .venv/bin/python benchmarks/queue_bench.py --part queue --jobs 24 --no-render

1. Sampling: `continue_melodies` on the default network (the shipped weights if present, else an
   untrained NetworkConfig(hidden=192)) with 1, 8, 64 and 256 variations in one batched pass, in
   variations per second; batch 1 is the one-at-a-time baseline.
2. The embedded queue (LocalQueue and its worker process, the same weights): a single job on an
   idle queue, several times (latency as a user sees it), then a burst of jobs from 8 users
   submitted at once (jobs/s, p50/p95 latency from submit() to the DONE update).
3. The worker's resident memory (VmRSS from /proc, with its render process) once warm, and after
   the burst (VmHWM: peak).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e_bench import _tree as process_tree  # noqa: E402  (this folder: a pid and its descendants)

from bot.jobs import Job, JobState  # noqa: E402
from bot.queue.local import LocalQueue  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.worker.generator import TEST_SKIP_RENDER_ENV  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "model" / "weights" / "melody.pt"
PRIMER = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0] * 2  # two bars: C4 E4 G4 ...
ANSWER_DEADLINE_S = 120.0  # a job not answered by then is reported, and the benchmark stops


def weights_file(folder: Path) -> tuple[Path, str]:
    if SHIPPED.is_file():
        return SHIPPED, "shipped weights (model/weights/melody.pt)"
    from model.melody.network import MelodyNet, NetworkConfig, save_checkpoint

    path = folder / "untrained.pt"
    save_checkpoint(path, MelodyNet(NetworkConfig(hidden=192)))
    return path, "untrained NetworkConfig(hidden=192)"


def sampling(weights: Path, sizes: list[int], bars: int, threads: int, repeats: int) -> list[tuple[int, float, float]]:
    import torch

    from model.melody.sampling import MAX_VARIATIONS, SamplingOptions, continue_melodies, load_model

    torch.set_num_threads(threads)
    model = load_model(str(weights), "cpu")
    continue_melodies(model, [PRIMER], [SamplingOptions(bars=1, variations=1)])
    rows = []
    for size in sizes:
        requests = math.ceil(size / MAX_VARIATIONS)  # one request holds at most 16 variations
        options = [SamplingOptions(bars=bars, variations=size // requests + (i < size % requests), seed=i)
                   for i in range(requests)]  # fmt: skip
        times = []
        for _ in range(repeats if size <= 64 else 1):
            started = time.perf_counter()
            continue_melodies(model, [PRIMER] * requests, options)
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        rows.append((size, seconds, size / seconds))
        print(f"  batch {size}: {seconds:.2f} s", file=sys.stderr, flush=True)
    return rows


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of the worker and its render process (bot/worker/render_process.py: it
    holds the rendered notes), summed: a peak is each process's own, so their sum is an upper bound."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for process in process_tree(pid):
        try:
            lines = Path(f"/proc/{process}/status").read_text().splitlines()
        except OSError:  # ended meanwhile
            continue
        for line in lines:
            name, _, rest = line.partition(":")
            if name in values:
                values[name] += int(rest.split()[0])
    return values


async def queue_run(weights: Path, jobs: int, bars: int, variations: int, render: bool, threads: int, idle: int):
    folder = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    settings = Settings(
        data_dir=folder, weights=weights, device="cpu", worker_threads=threads, job_timeout_s=600,
        max_queue=10_000, max_queued_per_user=10_000, max_bars=32, max_variations=4,
    )  # fmt: skip
    env = {} if render else {TEST_SKIP_RENDER_ENV: "1"}  # --no-render: the test knob, clearly not production
    waiters: dict[str, asyncio.Future] = {}
    answers: Counter = Counter()  # finished updates per job: each must be 1
    out: dict = {}
    started = time.monotonic()
    async with LocalQueue(settings, worker_env=env) as queue:

        async def follow():
            async for status in queue.updates():
                if status.state.finished:
                    answers[status.job.job_id] += 1
                    waiter = waiters[status.job.job_id]
                    if not waiter.done():  # a second answer is counted, and reported below
                        waiter.set_result((time.monotonic(), status))
                    await queue.mark_delivered(status.job.job_id)

        follower = asyncio.create_task(follow())
        while not queue.worker_ready:
            await asyncio.sleep(0.05)
        out["startup_s"] = time.monotonic() - started
        out["warm"] = memory_kib(queue.worker_pid)

        async def one(user: int, seed: int) -> float:
            job = Job(user_id=user, channel_id=user, primer=PRIMER, bars=bars, variations=variations, seed=seed)
            waiters[job.job_id] = asyncio.get_running_loop().create_future()
            submitted = time.monotonic()
            await queue.submit(job)
            try:
                done_at, status = await asyncio.wait_for(waiters[job.job_id], ANSWER_DEADLINE_S)
            except TimeoutError:
                late = await queue.get(job.job_id)
                raise SystemExit(f"job {job.job_id} was not answered in {ANSWER_DEADLINE_S:.0f} s "
                                 f"(state: {late.state.value if late else 'unknown'})") from None
            assert status.state == JobState.DONE, status.error
            timings.append(status.result.timings)
            return done_at - submitted

        timings: list[dict] = []
        out["idle"] = [await one(0, seed) for seed in range(idle)]
        timings.clear()
        burst_started = time.monotonic()
        out["burst"] = await asyncio.gather(*(one(1 + n % 8, n) for n in range(jobs)))
        out["burst_s"] = time.monotonic() - burst_started
        out["burst_stages"] = {stage: statistics.mean(t[stage] for t in timings)
                               for stage in ("queued", "sample", "render")}
        out["after"] = memory_kib(queue.worker_pid)
        await asyncio.sleep(0.5)  # a second answer would come by now
        follower.cancel()
    out["answered_twice"] = sorted(job_id for job_id, count in answers.items() if count > 1)
    return out


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    import torch

    return (f"{os.cpu_count()} CPUs ({model}), no GPU, Python {platform.python_version()}, torch {torch.__version__}, "
            f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "sampling", "queue"], default="all")
    parser.add_argument("--sizes", default="1,8,64,256", help="batch sizes (variations in one pass)")
    parser.add_argument("--sample-bars", type=int, default=8, help="bars sampled per variation, part 1")
    parser.add_argument("--repeats", type=int, default=3, help="runs per batch size up to 64 (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the worker's default: 1)")
    parser.add_argument("--jobs", type=int, default=32, help="jobs in the burst, part 2")
    parser.add_argument("--idle", type=int, default=5, help="single jobs on an idle queue, part 2")
    parser.add_argument("--bars", type=int, default=8, help="bars per job, part 2")
    parser.add_argument("--variations", type=int, default=4, help="variations per job, part 2")
    parser.add_argument("--no-render", action="store_true", help="part 2 without audio (test knob)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as folder:
        weights, described = weights_file(Path(folder))
        print(f"Machine: {machine()}\nModel: {described}; torch threads: {args.threads}\n")
        if args.part in ("all", "sampling"):
            sizes = [int(s) for s in args.sizes.split(",")]
            rows = sampling(weights, sizes, args.sample_bars, args.threads, args.repeats)
            base = rows[0][2] if rows[0][0] == 1 else None
            print(f"Sampling {args.sample_bars} bars per variation, one batched pass (median of {args.repeats}):\n")
            print("| batch (variations) | seconds per pass | variations/s | vs one at a time |")
            print("|---:|---:|---:|---:|")
            for size, seconds, rate in rows:
                print(f"| {size} | {seconds:.2f} | {rate:.1f} | {rate / base:.1f}x |" if base else
                      f"| {size} | {seconds:.2f} | {rate:.1f} | |")  # fmt: skip
            print()
        if args.part in ("all", "queue"):
            out = asyncio.run(queue_run(weights, args.jobs, args.bars, args.variations, not args.no_render,
                                        args.threads, args.idle))  # fmt: skip
            what = f"{args.bars} bars x {args.variations} variations" + (", no audio" if args.no_render else "")
            print(f"Embedded queue, jobs of {what} (worker start to ready: {out['startup_s']:.1f} s):\n")
            print("| run | jobs | jobs/s | p50 latency s | p95 latency s |")
            print("|---|---:|---:|---:|---:|")
            idle = out["idle"]
            print(f"| one job at a time, idle queue | {len(idle)} | {len(idle) / sum(idle):.2f} | "
                  f"{statistics.median(idle):.2f} | {percentile(idle, 95):.2f} |")  # fmt: skip
            burst = out["burst"]
            print(f"| burst from 8 users at once | {len(burst)} | {len(burst) / out['burst_s']:.2f} | "
                  f"{statistics.median(burst):.2f} | {percentile(burst, 95):.2f} |")  # fmt: skip
            twice = out["answered_twice"]
            print(f"\nEvery job answered once: {'yes' if not twice else 'NO, twice: ' + ', '.join(twice)}")
            stages = out["burst_stages"]
            print(f"\nBurst, mean per job: queued {stages['queued']:.2f} s, its batch's sampling "
                  f"{stages['sample']:.2f} s, rendering {stages['render']:.2f} s")
            print(f"\nWorker memory: VmRSS {out['warm']['VmRSS'] / 1024:.0f} MiB warm, "
                  f"{out['after']['VmRSS'] / 1024:.0f} MiB after the burst, peak (VmHWM) "
                  f"{out['after']['VmHWM'] / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
