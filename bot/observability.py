"""Metrics, health and logs for the bot and its workers.

Metrics (Prometheus, one dedicated registry `REGISTRY`; nothing from the default registry):

    observe_status(status)                 # bot: every finished JobStatus from queue.updates()
    observe_job(result.timings, "done")    # or directly, with a Result's timings
    set_queue_stats(await queue.stats())   # gauges: queue depth, jobs by state, workers alive

HTTP (`/healthz`, `/metrics`), one endpoint per process, bot and each worker:

    runner = await start_http(settings.http_port, *queue_probes(queue))   # None when the port is 0
    ...
    await stop_http(runner)
    server = serve_in_thread(port, health_check)  # the same from a process without asyncio; .stop()

Logs: `setup_logging(settings.log_level, json=True, secrets=[settings.discord_token])` once at
start; `with job_context(job.job_id): ...` makes every line logged inside carry the job's id (also
across awaits and in tasks created inside, as it is a contextvar). The Discord token, and anything
shaped like one, is masked in every line.

`python -m bot.observability healthcheck` asks this container's /healthz (the Dockerfile's
HEALTHCHECK); it passes when MELODYBOT_HTTP_PORT is 0, as there is nothing to ask.
"""

from __future__ import annotations

import asyncio
import contextvars
import json as jsonlib
import logging
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.jobs import JobState, JobStatus

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[Mapping[str, Any]]]
Refresh = Callable[[], Awaitable[None]]

HEALTH_TIMEOUT_S = 5.0  # a health check or metrics refresh taking longer counts as failed

# Seconds. Sampling 4 x 8 bars takes ~0.1-1 s on a CPU; a job's total includes its queue wait.
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
TOTAL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


# --- metrics -----------------------------------------------------------------------------------


class Metrics:
    """Every melodybot metric, on one registry (a fresh one per instance: tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("melodybot_queue_depth", "Jobs waiting in the queue", registry=r)
        self.jobs = Gauge("melodybot_jobs", "Jobs in the store by state (from the queue)", ["state"], registry=r)
        self.workers_alive = Gauge("melodybot_workers_alive", "Worker processes alive", registry=r)
        self.queue_up = Gauge("melodybot_queue_up", "1 when the last queue stats request succeeded", registry=r)
        self.jobs_finished = Counter(
            "melodybot_jobs_finished", "Jobs finished by this process's count, by final state", ["state"], registry=r
        )
        self.generation_seconds = Histogram(
            "melodybot_generation_seconds", "Model sampling time per job", buckets=STAGE_BUCKETS, registry=r
        )
        self.render_seconds = Histogram(
            "melodybot_render_seconds", "Rendering time per job (MIDI, MP3, PNG)", buckets=STAGE_BUCKETS, registry=r
        )
        self.queued_seconds = Histogram(
            "melodybot_queued_seconds", "Time a job waited in the queue", buckets=TOTAL_BUCKETS, registry=r
        )
        self.job_seconds = Histogram(
            "melodybot_job_seconds", "Job latency from submission to result", buckets=TOTAL_BUCKETS, registry=r
        )
        self.refresh_errors = Counter(
            "melodybot_metrics_refresh_errors", "Failed refreshes of the gauges before a scrape", registry=r
        )
        for state in JobState:
            self.jobs.labels(state.value)
            if state.finished:
                self.jobs_finished.labels(state.value)

    def observe_job(self, timings: Mapping[str, float] | None, state: str = JobState.DONE) -> None:
        """One finished job: counted by state; its stage timings (a Result's `timings`: seconds
        per stage "queued", "sample", "render", "total"; any may be missing) into the histograms."""
        self.jobs_finished.labels(str(state)).inc()
        timings = timings or {}
        for stage, histogram in (
            ("sample", self.generation_seconds),
            ("render", self.render_seconds),
            ("queued", self.queued_seconds),
            ("total", self.job_seconds),
        ):
            value = timings.get(stage)
            if value is not None and value >= 0:
                histogram.observe(value)

    def observe_status(self, status: JobStatus) -> None:
        """A status from queue.updates(): finished ones are observed, the others ignored."""
        if not status.state.finished:
            return
        timings = status.result.timings if status.result is not None else None
        self.observe_job(timings, status.state)

    def set_queue_stats(self, stats: Mapping[str, Any]) -> None:
        """The gauges from JobQueue.stats(): {"jobs": {state: count}, "queue_depth", "workers_alive", ...}."""
        jobs = dict(stats.get("jobs") or {})
        for state in JobState:
            jobs.setdefault(state.value, 0)
        for state, count in jobs.items():
            self.jobs.labels(str(state)).set(count)
        if stats.get("queue_depth") is not None:
            self.queue_depth.set(stats["queue_depth"])
        if stats.get("workers_alive") is not None:
            self.workers_alive.set(stats["workers_alive"])
        self.queue_up.set(1)

    def queue_down(self) -> None:
        self.queue_up.set(0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS = Metrics()
REGISTRY = METRICS.registry


def observe_job(timings: Mapping[str, float] | None, state: str = JobState.DONE) -> None:
    METRICS.observe_job(timings, state)


def observe_status(status: JobStatus) -> None:
    METRICS.observe_status(status)


def set_queue_stats(stats: Mapping[str, Any]) -> None:
    METRICS.set_queue_stats(stats)


def queue_probes(queue, metrics: Metrics | None = None) -> tuple[HealthCheck, Refresh]:
    """(health_check, refresh) for start_http from a JobQueue: healthy when its stats() answers and
    at least one worker is alive; refresh sets the gauges from the same stats()."""
    metrics = metrics or METRICS

    async def health_check() -> dict:
        try:
            stats = await queue.stats()
        except Exception as error:  # any failure means: queue unreachable
            metrics.queue_down()
            return {"status": "unavailable", "reason": f"queue unreachable: {error}"}
        metrics.set_queue_stats(stats)
        alive = stats.get("workers_alive", 0)
        body = {"status": "ok", "queue": "reachable", "workers_alive": alive, "queue_depth": stats.get("queue_depth")}
        if not alive:
            body.update(status="unavailable", reason="no workers alive")
        return body

    async def refresh() -> None:
        try:
            stats = await queue.stats()
        except Exception:
            metrics.queue_down()
            raise
        metrics.set_queue_stats(stats)

    return health_check, refresh


# --- HTTP: /healthz and /metrics ---------------------------------------------------------------


def make_app(
    health_check: HealthCheck | None = None, refresh: Refresh | None = None, metrics: Metrics | None = None
) -> web.Application:
    """/healthz: 200 {"status": "ok", ...} or 503 {"status": ..., "reason": ...}. A health_check
    reports trouble by returning a status other than "ok" (with a "reason"), or by raising.
    /metrics: the registry in Prometheus text format, after `refresh()` (a failing refresh is
    logged and counted; the last values are served)."""
    metrics = metrics or METRICS

    async def healthz(request: web.Request) -> web.Response:
        if health_check is None:
            return web.json_response({"status": "ok"})
        try:
            body = dict(await asyncio.wait_for(health_check(), HEALTH_TIMEOUT_S))
        except TimeoutError:
            body = {"status": "unavailable", "reason": f"health check timed out after {HEALTH_TIMEOUT_S:g} s"}
        except Exception as error:
            body = {"status": "unavailable", "reason": f"health check failed: {error}"}
        body.setdefault("status", "ok")
        if body["status"] != "ok":
            body.setdefault("reason", "unhealthy")
            return web.json_response(body, status=503)
        return web.json_response(body)

    async def metrics_handler(request: web.Request) -> web.Response:
        if refresh is not None:
            try:
                await asyncio.wait_for(refresh(), HEALTH_TIMEOUT_S)
            except Exception as error:
                metrics.refresh_errors.inc()
                log.warning("metrics refresh failed: %s", error or type(error).__name__)
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    return app


async def start_http(
    port: int,
    health_check: HealthCheck | None = None,
    refresh: Refresh | None = None,
    *,
    host: str = "0.0.0.0",
    metrics: Metrics | None = None,
) -> web.AppRunner | None:
    """Serve /healthz and /metrics on host:port until stop_http(runner); None (nothing served) when
    port is 0, the setting for off. Raises OSError when the port is taken."""
    if not port:
        return None
    runner = web.AppRunner(make_app(health_check, refresh, metrics), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("serving /healthz and /metrics on %s:%d", host, port)
    return runner


async def stop_http(runner: web.AppRunner | None) -> None:
    if runner is not None:
        await runner.cleanup()


class ThreadedHttp:
    """start_http on an event loop of its own in a daemon thread, for processes without asyncio
    (the worker). The callables are still async; they run on that thread's loop."""

    def __init__(self, port: int, health_check: HealthCheck | None, refresh: Refresh | None, host: str,
                 metrics: Metrics | None):  # fmt: skip
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        started: Future = Future()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._runner = self._loop.run_until_complete(
                    start_http(port, health_check, refresh, host=host, metrics=metrics)
                )
            except BaseException as error:
                started.set_exception(error)
                return
            started.set_result(None)
            self._loop.run_forever()
            self._loop.run_until_complete(stop_http(self._runner))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="http", daemon=True)
        self._thread.start()
        started.result()  # raises OSError when the port is taken

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)


def serve_in_thread(
    port: int,
    health_check: HealthCheck | None = None,
    refresh: Refresh | None = None,
    *,
    host: str = "0.0.0.0",
    metrics: Metrics | None = None,
) -> ThreadedHttp | None:
    """/healthz and /metrics from a background thread; None when port is 0. `.stop()` to end."""
    if not port:
        return None
    return ThreadedHttp(port, health_check, refresh, host, metrics)


# --- logging -----------------------------------------------------------------------------------

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("melodybot_job_id", default=None)


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Every log line inside (this task, and tasks it creates) carries `job_id`."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def current_job_id() -> str | None:
    return _job_id.get()


class JobContextFilter(logging.Filter):
    """Sets record.job_id: an explicit `extra={"job_id": ...}`, else the job_context's, else None."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        return True


# A bot token: base64 of the bot's user id, a dot, 6 characters (timestamp), a dot, 27+ (HMAC).
DISCORD_TOKEN_PATTERN = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}")
MASK = "[REDACTED]"


class RedactFilter(logging.Filter):
    """Masks the given secrets, and anything shaped like a Discord token, in the message, its
    arguments, the traceback and string extras. Put it on the handler (handler filters see every
    record that reaches the handler; logger filters only that logger's own)."""

    _formatter = logging.Formatter()

    def __init__(self, secrets: Iterable[str | None] = ()):
        super().__init__()
        self.secrets: set[str] = set()
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        if secret and len(secret) >= 8:  # a short "secret" would mask ordinary words
            self.secrets.add(secret)

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return DISCORD_TOKEN_PATTERN.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what was given
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, self.redact(value))
        return True


# A LogRecord's own attributes; the others on a record came from `extra=`.
_RECORD_ATTRIBUTES = {*vars(logging.LogRecord("", 0, "", 0, "", None, None))} | {"message", "asctime", "job_id", "job"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, job_id when set,
    exc (the traceback) when there is one, and any JSON-able `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = job_id
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return jsonlib.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`2025-01-01 12:00:00,000 INFO bot.worker [job ab3k9x] message` (the job part only when set)."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(job)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job = f" [job {job_id}]" if job_id else ""
        return super().format(record)


class ScreenFormatter(logging.Formatter):
    """For the terminal channel's screen: `melodybot: warning: message`, one line, never a
    traceback (the log file has it)."""

    def __init__(self, log_file):
        super().__init__()
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        text = f"melodybot: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info or record.exc_text:
            text += f" (details in {self.log_file})"
        return text


_handler: logging.Handler | None = None


def setup_logging(
    level: str | int = "INFO", json: bool = False, secrets: Iterable[str | None] = (), stream=None
) -> logging.Handler:
    """One handler on the root logger (stderr unless `stream`), with the job id and redaction
    filters; calling again replaces it. `secrets`: values to mask, e.g. [settings.discord_token]."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(JobContextFilter())
    handler.addFilter(RedactFilter(secrets))
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _handler = handler
    return handler


# --- the container's HEALTHCHECK ---------------------------------------------------------------


def healthcheck(port: int, timeout: float = 4.0) -> int:
    """0 when GET /healthz on 127.0.0.1:port answers 200 (or port is 0), else 1; prints why."""
    import urllib.error
    import urllib.request

    if not port:
        print("http_port is 0: no /healthz to ask")
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as error:
        print(f"{error.code}: {error.read().decode(errors='replace')}")
    except OSError as error:
        print(f"/healthz on port {port} unreachable: {error}")
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["healthcheck"]:
        print("usage: python -m bot.observability healthcheck", file=sys.stderr)
        return 2
    from bot.settings import Settings, SettingsError

    try:
        port = Settings.load().http_port
    except SettingsError as error:
        print(error)
        return 1
    return healthcheck(port)


if __name__ == "__main__":
    sys.exit(main())
