"""benchmarks/gpu_bench.py at tiny size on the CPU, so the script the GPU day runs cannot rot: it
samples, starts a real redis-server and Celery worker, and every job of its burst is answered once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_at_tiny_size_on_the_cpu(tmp_path, tiny_weights):
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "benchmarks/gpu_bench.py", "--tiny", "--device", "cpu",
                           "--weights", str(tiny_weights), "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [row["batch"] for row in report["sampling"]] == [1, 4]
    assert all(row["variations_per_s"] > 0 for row in report["sampling"])
    assert report["burst"]["jobs"] == report["burst"]["answered_once"] == 6
    assert report["burst"]["p95_s"] >= report["burst"]["p50_s"] > 0
    assert set(report["goals"]) == {"variations_per_s_at_least_1000", "burst_under_10_s"}
