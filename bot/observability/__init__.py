"""Metrics, health and logs for the bot and its workers: `metrics.py` (Prometheus), `http.py`
(/healthz, /metrics and the container's healthcheck), `logs.py` (formats, job ids, secrets masked).
"""

from bot.observability.http import healthcheck, make_app, serve_in_thread, start_http, stop_http
from bot.observability.logs import (
    MASK,
    JobContextFilter,
    JsonFormatter,
    RedactFilter,
    ScreenFormatter,
    TextFormatter,
    current_job_id,
    job_context,
    setup_logging,
)
from bot.observability.metrics import (
    METRICS,
    REGISTRY,
    Metrics,
    observe_job,
    observe_status,
    queue_probes,
    set_queue_stats,
)

__all__ = [
    "MASK", "METRICS", "REGISTRY", "JobContextFilter", "JsonFormatter", "Metrics", "RedactFilter", "ScreenFormatter",
    "TextFormatter", "current_job_id", "healthcheck", "job_context", "make_app", "observe_job", "observe_status",
    "queue_probes", "serve_in_thread", "set_queue_stats", "setup_logging", "start_http", "stop_http",
]
