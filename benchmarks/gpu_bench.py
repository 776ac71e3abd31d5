"""The GPU worker, measured: one script that a single `device` call runs (well under 10 minutes).

    python benchmarks/gpu_bench.py                       # on the GPU machine: cuda when available
    python benchmarks/gpu_bench.py --tiny --device cpu   # what the test suite runs, so it cannot rot

1. Sampling throughput: variations of 8 bars per second for batches of 1 to 1024 rows in one
   pass of `continue_melodies` (the shipped weights, candidates 1, so a row is a variation), and
   the time of the first pass (warm-up) apart.
2. A burst through a real Celery worker on this machine: a redis-server started here, one
   `python -m bot.worker --redis` process (on the same device, concurrency 64), 200 jobs of
   4 x 8 bars submitted at once through the bot's CeleryQueue; p50/p95 seconds per job from
   submit to the answer, the time for the whole burst, and every job answered exactly once.
   Rendering is skipped (MELODYBOT_TEST_SKIP_RENDER): the GPU is the point; previews run on CPU
   cores beside it and are measured in render_bench.py.
Prints one JSON object at the end (and Markdown tables before it). Goals (issue #13): at least
1,000 variations of 8 bars per second, the 200-job burst finished in under 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.jobs import Job  # noqa: E402
from bot.queue import make_queue  # noqa: E402
from bot.queue.local import worker_environment  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.worker.generator import TEST_SKIP_RENDER_ENV  # noqa: E402
from model.defaults import DEFAULT_WEIGHTS  # noqa: E402

PRIMER = [26, 0, 0, 0, 30, 0, 0, 0, 33, 0, 0, 0, 35, 0, 0, 1] * 2  # two bars
BATCHES = (1, 4, 16, 64, 256, 1024)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def sampling(weights: Path, device: str, batches: tuple[int, ...], bars: int) -> list[dict]:
    import torch

    from model.melody.sampling import SamplingOptions, continue_melodies, load_model

    model = load_model(str(weights), device)
    rows = []
    for size in batches:
        options = SamplingOptions(bars=bars, variations=1, candidates=1)
        requests = [[PRIMER] * size, [options] * size]
        started = time.perf_counter()
        continue_melodies(model, *requests)  # warm-up: kernels, allocator
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        first = time.perf_counter() - started
        started = time.perf_counter()
        result = continue_melodies(model, *requests)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        assert len(result) == size and all(len(r[0]) == bars * 16 for r in result)
        rows.append({"batch": size, "seconds": seconds, "first_pass_s": first, "variations_per_s": size / seconds})
        print(f"| {size} | {seconds:.3f} | {size / seconds:.0f} | {first:.3f} |", flush=True)
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def burst(weights: Path, device: str, jobs: int, bars: int, folder: Path) -> dict:
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", "127.0.0.1",
                              "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    settings = Settings(data_dir=folder, weights=weights, device=device, redis_url=f"redis://127.0.0.1:{port}/0",
                        batch_limit=1024, max_queue=max(100, jobs), max_queued_per_user=jobs, job_timeout_s=300)
    env = worker_environment(settings, {TEST_SKIP_RENDER_ENV: "1"})
    log = folder / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "bot.worker", "--redis", settings.redis_url,
                               "--concurrency", "64"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if " ready." in log.read_text():
                break
            if worker.poll() is not None:
                raise RuntimeError("the worker exited:\n" + log.read_text()[-3000:])
            await asyncio.sleep(0.2)
        async with make_queue(settings) as queue:
            submitted = {}
            started = time.perf_counter()
            for n in range(jobs):
                job = Job(user_id=n % 8, channel_id=1, primer=PRIMER, bars=bars, variations=4, seed=n)
                status = await queue.submit(job)
                submitted[status.job.job_id] = time.perf_counter()
            answered: Counter = Counter()
            latencies = []
            async for status in queue.updates():
                if status.state.finished:
                    answered[status.job.job_id] += 1
                    latencies.append(time.perf_counter() - submitted[status.job.job_id])
                    await queue.mark_delivered(status.job.job_id)
                    if len(answered) == jobs:
                        break
            total = time.perf_counter() - started
        once = sum(count == 1 for count in answered.values())
        return {"jobs": jobs, "answered_once": once, "seconds": total, "p50_s": percentile(latencies, 50),
                "p95_s": percentile(latencies, 95), "jobs_per_s": jobs / total}
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis.terminate()
        redis.wait(10)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--tiny", action="store_true", help="batches 1 and 4, a 6-job burst of 1 bar (the test)")
    parser.add_argument("--sampling-only", action="store_true", help="no burst (the same passes on a CPU, to compare)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    batches, bars, jobs = ((1, 4), 1, 6) if args.tiny else (BATCHES, 8, 200)
    print(f"device {device}, weights {args.weights}\n\n| batch (rows) | seconds | variations/s | first pass (s) |")
    print("|---:|---:|---:|---:|")
    report = {"device": device, "bars": bars, "sampling": sampling(args.weights, device, batches, bars)}
    best = max(r["variations_per_s"] for r in report["sampling"])
    report["goals"] = {"variations_per_s_at_least_1000": best >= 1000}
    if not args.sampling_only:
        with tempfile.TemporaryDirectory(prefix="melodybot-gpu-") as folder:
            report["burst"] = b = asyncio.run(burst(args.weights, device, jobs, bars, Path(folder)))
        print(f"\nburst: {b['jobs']} jobs, {b['answered_once']} answered once, {b['seconds']:.1f} s in all, "
              f"p50 {b['p50_s']:.2f} s, p95 {b['p95_s']:.2f} s per job")
        report["goals"]["burst_under_10_s"] = b["seconds"] < 10
    print(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
    os._exit(0)  # the worker's and Celery's threads: nothing left to wait for
