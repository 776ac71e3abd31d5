"""Shared fixtures. A tiny untrained network stands in for the shipped weights, which the tests
never need."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time

import pytest
import torch

from bot.settings import Settings
from model.melody.network import MelodyNet, NetworkConfig, save_checkpoint

# CI sets $CI, and libraries behave differently under it (pyfluidsynth prints to stdout, which the
# CLIs' answers are read from): every run of the suite, and every process it starts, sees it as CI does.
os.environ.setdefault("CI", "true")

# Step-by-step sampling of a tiny network is all per-op overhead: extra threads only fight over the
# cores (seven times slower here while a training job runs).
torch.set_num_threads(1)

# One LSTM layer without dropout (PyTorch warns about dropout on a single layer).
TINY = NetworkConfig(embed=8, hidden=16, layers=1, heads=2, window=64, dropout=0.0)


@pytest.fixture(scope="session")
def tiny_config() -> NetworkConfig:
    return TINY


@pytest.fixture(scope="session")
def tiny_model() -> MelodyNet:
    torch.manual_seed(0)
    return MelodyNet(TINY).eval()


@pytest.fixture(scope="session")
def tiny_weights(tiny_model, tmp_path_factory):
    """A checkpoint file of `tiny_model`, for code that loads weights from a path."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, tiny_model)
    return path


# ---- queue and worker fixtures (bot/queue, bot/worker.py, bot/store.py) -------------------------
# Worker processes sample a tiny network too: one thread each (see torch.set_num_threads above).
QUEUE_WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def queue_settings(tmp_path, tiny_weights):
    """Settings for a queue on a fresh database in tmp_path, workers using `tiny_weights` on the CPU."""

    def make(**overrides) -> Settings:
        values = dict(data_dir=tmp_path, weights=tiny_weights, device="cpu", log_level="INFO")
        values.update(overrides)
        return Settings(**values)

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throw-away redis-server (no persistence) on a fixed free port, as a child process that a
    test can stop (SIGTERM) and start again on the same port."""

    def __init__(self, folder, password: str | None = None):
        self.server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.server):  # scripts/setup installs it: a missing one fails, not skips
            pytest.fail("redis-server is not installed (apt-get install redis-server, or run scripts/setup)")
        self.port, self.password, self.folder = free_port(), password, folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throw-away redis-server for the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def collect(queue, until, timeout: float = 60.0) -> list:
    """A queue's updates (JobStatus) until `until(updates so far)` holds."""
    seen: list = []

    async def follow():
        async for status in queue.updates():
            seen.append(status)
            if until(seen):
                return

    await asyncio.wait_for(follow(), timeout)
    return seen
