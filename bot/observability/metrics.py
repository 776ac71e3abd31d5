"""Prometheus metrics of the bot and its workers, in one dedicated registry (`REGISTRY`; nothing
from the default registry):

    observe_status(status)                 # bot: every finished JobStatus from queue.updates()
    observe_job(result.timings, "done")    # or directly, with a Result's timings
    set_queue_stats(await queue.stats())   # gauges: queue depth, jobs by state, workers alive
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.jobs import JobState, JobStatus

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[Mapping[str, Any]]]
Refresh = Callable[[], Awaitable[None]]

# Seconds. Sampling 4 x 8 bars takes ~0.1-1 s on a CPU; a job's total includes its queue wait.
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
TOTAL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


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
