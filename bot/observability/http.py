"""`/healthz` and `/metrics`, one endpoint per process, bot and each worker:

    runner = await start_http(settings.http_port, *queue_probes(queue))   # None when the port is 0
    ...
    await stop_http(runner)
    server = serve_in_thread(port, health_check)  # the same from a process without asyncio; .stop()

`python -m bot.observability healthcheck` asks this container's /healthz (the Dockerfile's
HEALTHCHECK); it passes when MELODYBOT_HTTP_PORT is 0, as there is nothing to ask.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from concurrent.futures import Future

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.observability.metrics import METRICS, HealthCheck, Metrics, Refresh

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0  # a health check or metrics refresh taking longer counts as failed


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
