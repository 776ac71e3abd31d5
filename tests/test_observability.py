"""bot.observability: the real HTTP endpoint on a free port (scraped and parsed like Prometheus
would), health answers, and the logging (job ids, JSON lines, token redaction)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import observability
from bot.jobs import Job, JobState, JobStatus, Result
from bot.observability import Metrics, job_context, queue_probes, setup_logging, start_http, stop_http

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"  # shaped like one, not real


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeQueue:
    def __init__(self, stats: dict | None = None, error: Exception | None = None):
        self._stats, self.error, self.calls = stats, error, 0

    async def stats(self) -> dict:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self._stats


STATS = {
    "backend": "local",
    "jobs": {"queued": 3, "running": 1, "done": 7, "failed": 2},
    "queue_depth": 3,
    "running": 1,
    "workers_alive": 2,
}


async def serve(health_check=None, refresh=None, metrics=None):
    port = free_port()
    runner = await start_http(port, health_check, refresh, host="127.0.0.1", metrics=metrics)
    assert runner is not None
    return runner, f"http://127.0.0.1:{port}"


async def scrape(base: str) -> tuple[str, dict]:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
        content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain") and "version=" in content_type
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


async def get_json(base: str, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(base + path) as response:
        return response.status, await response.json()


async def test_metrics_endpoint_serves_what_was_set():
    metrics = Metrics()
    queue = FakeQueue(STATS)
    runner, base = await serve(*queue_probes(queue, metrics), metrics=metrics)
    try:
        metrics.observe_job({"queued": 0.2, "sample": 0.3, "render": 0.12, "total": 0.7})
        metrics.observe_job({"queued": 0.1, "sample": 2.5, "render": 0.4, "total": 3.1}, JobState.DONE)
        metrics.observe_job(None, JobState.FAILED)
        _, samples = await scrape(base)
    finally:
        await stop_http(runner)

    assert queue.calls == 1  # the gauges were refreshed for the scrape
    assert samples[("melodybot_queue_depth", ())] == 3
    assert samples[("melodybot_workers_alive", ())] == 2
    assert samples[("melodybot_queue_up", ())] == 1
    assert samples[("melodybot_jobs", (("state", "queued"),))] == 3
    assert samples[("melodybot_jobs", (("state", "done"),))] == 7
    assert samples[("melodybot_jobs", (("state", "cancelled"),))] == 0  # every state, even when absent
    assert samples[("melodybot_jobs_finished_total", (("state", "done"),))] == 2
    assert samples[("melodybot_jobs_finished_total", (("state", "failed"),))] == 1
    assert samples[("melodybot_generation_seconds_count", ())] == 2
    assert samples[("melodybot_generation_seconds_sum", ())] == pytest.approx(2.8)
    assert samples[("melodybot_generation_seconds_bucket", (("le", "0.5"),))] == 1
    assert samples[("melodybot_generation_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("melodybot_render_seconds_sum", ())] == pytest.approx(0.52)
    assert samples[("melodybot_queued_seconds_count", ())] == 2
    assert samples[("melodybot_job_seconds_sum", ())] == pytest.approx(3.8)
    assert samples[("melodybot_job_seconds_bucket", (("le", "1.0"),))] == 1
    # A dedicated registry: nothing from prometheus_client's default one (process_, python_gc_...).
    assert not any(name.startswith(("process_", "python_")) for name, _ in samples)


async def test_observe_status_takes_finished_statuses_only():
    metrics = Metrics()
    job = Job(user_id=1, channel_id=2, primer=[60])
    result = Result(job.job_id, 1, [], b"", None, {"sample": 0.25, "render": 0.5, "total": 1.0})
    metrics.observe_status(JobStatus(job, JobState.RUNNING))
    metrics.observe_status(JobStatus(job, JobState.DONE, result=result))
    metrics.observe_status(JobStatus(job, JobState.CANCELLED))
    text = metrics.exposition().decode()
    values = {
        (s.name, tuple(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert values[("melodybot_jobs_finished_total", (("state", "done"),))] == 1
    assert values[("melodybot_jobs_finished_total", (("state", "cancelled"),))] == 1
    assert values[("melodybot_render_seconds_sum", ())] == 0.5
    assert values[("melodybot_job_seconds_count", ())] == 1


async def test_module_level_functions_use_the_shared_registry():
    before = observability.REGISTRY.get_sample_value("melodybot_jobs_finished_total", {"state": "failed"})
    observability.observe_job({"sample": 0.1}, "failed")
    observability.set_queue_stats({"jobs": {"queued": 4}, "queue_depth": 4, "workers_alive": 1})
    assert observability.REGISTRY.get_sample_value("melodybot_jobs_finished_total", {"state": "failed"}) == before + 1
    assert observability.REGISTRY.get_sample_value("melodybot_queue_depth") == 4


async def test_healthz_ok():
    metrics = Metrics()
    runner, base = await serve(*queue_probes(FakeQueue(STATS), metrics), metrics=metrics)
    try:
        status, body = await get_json(base, "/healthz")
    finally:
        await stop_http(runner)
    assert status == 200
    assert body == {"status": "ok", "queue": "reachable", "workers_alive": 2, "queue_depth": 3}


@pytest.mark.parametrize(
    ("queue", "reason"),
    [
        (FakeQueue(dict(STATS, workers_alive=0)), "no workers alive"),
        (FakeQueue(error=ConnectionError("redis down")), "queue unreachable: redis down"),
    ],
)
async def test_healthz_503_with_reason(queue, reason):
    metrics = Metrics()
    runner, base = await serve(*queue_probes(queue, metrics), metrics=metrics)
    try:
        status, body = await get_json(base, "/healthz")
        _, samples = await scrape(base)  # a failing refresh still serves the metrics
    finally:
        await stop_http(runner)
    assert status == 503
    assert body["status"] == "unavailable" and body["reason"] == reason
    if queue.error is not None:
        assert samples[("melodybot_queue_up", ())] == 0
        assert samples[("melodybot_metrics_refresh_errors_total", ())] == 1


async def test_healthz_raising_or_slow_check_is_503(monkeypatch):
    async def broken() -> dict:
        raise RuntimeError("boom")

    async def slow() -> dict:
        await asyncio.sleep(10)
        return {}

    monkeypatch.setattr(observability.http, "HEALTH_TIMEOUT_S", 0.05)
    for check, reason in ((broken, "health check failed: boom"), (slow, "health check timed out")):
        runner, base = await serve(check)
        try:
            status, body = await get_json(base, "/healthz")
        finally:
            await stop_http(runner)
        assert status == 503 and body["reason"].startswith(reason)


async def test_healthz_without_check_and_port_zero_is_off():
    runner, base = await serve()
    try:
        assert await get_json(base, "/healthz") == (200, {"status": "ok"})
    finally:
        await stop_http(runner)
    assert await start_http(0) is None
    await stop_http(None)


def test_healthcheck_command(capsys):
    assert observability.healthcheck(0) == 0
    assert observability.healthcheck(free_port(), timeout=1) == 1
    assert "unreachable" in capsys.readouterr().out


async def test_healthcheck_command_against_the_server():
    runner, base = await serve(queue_probes(FakeQueue(STATS), Metrics())[0])
    port = int(base.rsplit(":", 1)[1])
    try:
        assert await asyncio.to_thread(observability.healthcheck, port) == 0
    finally:
        await stop_http(runner)
    runner, base = await serve(queue_probes(FakeQueue(dict(STATS, workers_alive=0)), Metrics())[0])
    port = int(base.rsplit(":", 1)[1])
    try:
        assert await asyncio.to_thread(observability.healthcheck, port) == 1
    finally:
        await stop_http(runner)


def test_serve_in_thread_for_a_process_without_asyncio():
    import urllib.request

    metrics = Metrics()
    ready = {"status": "loading", "reason": "model not loaded yet"}

    async def health() -> dict:
        return ready

    port = free_port()
    server = observability.serve_in_thread(port, health, host="127.0.0.1", metrics=metrics)
    try:
        assert observability.healthcheck(port) == 1
        ready = {"status": "ok"}
        assert observability.healthcheck(port) == 0
        metrics.observe_job({"sample": 0.4})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert "melodybot_generation_seconds_count 1.0" in response.read().decode()
        with pytest.raises(OSError):  # the port is taken
            observability.serve_in_thread(port, host="127.0.0.1")
    finally:
        server.stop()
    assert observability.healthcheck(port, timeout=1) == 1  # stopped
    assert observability.serve_in_thread(0) is None


# --- logging -----------------------------------------------------------------------------------


@pytest.fixture
def log_stream():
    """setup_logging into a buffer; the root logger's handlers and level are put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    yield stream
    if observability.logs._handler is not None:
        root.removeHandler(observability.logs._handler)
        observability.logs._handler = None
    root.handlers[:], root.level = handlers, level


def test_every_line_inside_job_context_carries_the_job_id(log_stream):
    setup_logging("DEBUG", json=True, stream=log_stream)
    logger = logging.getLogger("melodybot.test")
    logger.info("before")
    with job_context("ab3k9x"):
        logger.info("queued")
        logging.getLogger("bot.worker").debug("sampling %d variations", 4)
        try:
            raise ValueError("bad primer")
        except ValueError:
            logger.exception("failed")
        with job_context("zz9yy8"):
            logger.warning("nested")
        logger.info("after nested")
    logger.info("outside")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "before", "queued", "sampling 4 variations", "failed", "nested", "after nested", "outside"
    ]  # fmt: skip
    assert [line.get("job_id") for line in lines] == [None, "ab3k9x", "ab3k9x", "ab3k9x", "zz9yy8", "ab3k9x", None]
    assert set(lines[1]) == {"time", "level", "logger", "message", "job_id"}
    assert lines[2]["level"] == "DEBUG" and lines[2]["logger"] == "bot.worker"
    assert "ValueError: bad primer" in lines[3]["exc"]
    assert lines[0]["time"].endswith("Z") and "T" in lines[0]["time"]


async def test_job_context_follows_tasks(log_stream):
    setup_logging("INFO", json=True, stream=log_stream)
    logger = logging.getLogger("melodybot.test")

    async def job(job_id: str) -> None:
        with job_context(job_id):
            await asyncio.sleep(0.01)
            await asyncio.create_task(asyncio.sleep(0))  # a task created inside inherits the context
            logger.info("done")

    await asyncio.gather(job("aaaaaa"), job("bbbbbb"))
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert sorted(line["job_id"] for line in lines) == ["aaaaaa", "bbbbbb"]


def test_text_format_shows_the_job_id(log_stream):
    setup_logging("INFO", json=False, stream=log_stream)
    with job_context("ab3k9x"):
        logging.getLogger("bot.worker").info("rendering")
    logging.getLogger("bot.worker").info("idle")
    first, second = log_stream.getvalue().splitlines()
    assert first.endswith("INFO bot.worker [job ab3k9x] rendering")
    assert second.endswith("INFO bot.worker idle")


@pytest.mark.parametrize("json_lines", [True, False])
def test_the_token_is_redacted(log_stream, json_lines):
    secret = "not-shaped-like-a-token-but-configured"
    setup_logging("INFO", json=json_lines, secrets=[secret, None], stream=log_stream)
    logger = logging.getLogger("discord.client")
    logger.info("logging in using static token %s", TOKEN)
    logger.info(f"token={secret}")
    logger.warning("config", extra={"token": TOKEN})
    try:
        raise RuntimeError(f"401 Unauthorized for {TOKEN}")
    except RuntimeError:
        logger.exception("login failed")
    logger.info("job ab3k9x: 4 variations in 0.8 s; a.b.c stays")
    output = log_stream.getvalue()
    assert TOKEN not in output and secret not in output
    assert TOKEN.split(".")[2] not in output  # no part of it either
    assert output.count("[REDACTED]") == (4 if json_lines else 3)  # text lines show no extras
    assert "job ab3k9x: 4 variations in 0.8 s; a.b.c stays" in output
    if json_lines:
        assert all(json.loads(line) for line in output.splitlines() if line.startswith("{"))


def test_setup_logging_again_replaces_its_handler(log_stream):
    root = logging.getLogger()
    count = len(root.handlers)
    first = setup_logging("INFO", stream=log_stream)
    second = setup_logging("WARNING", stream=log_stream)
    assert len(root.handlers) == count + 1 and first not in root.handlers and second in root.handlers
    assert root.level == logging.WARNING
