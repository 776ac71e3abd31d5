"""What the bot and the Celery workers agree on: the Celery app for a Redis URL, the task's name,
and the Redis keys of the side channel (events back to the bot, finished marks, heartbeats).

The bot only sends tasks by name (bot/queue/celery_backend.py); the task itself is registered by
the workers (bot/worker/celery_worker.py). Nothing here imports torch or the worker.

Every event a worker pushes on EVENTS_KEY is JSON: {"job_id", "state", "worker", "at"} plus
"result" (DONE) or "error" (FAILED). "running" is pushed as soon as a worker's pool thread takes
the task, so the bot knows which worker holds which job.
"""

from __future__ import annotations

from celery import Celery

from bot.settings import Settings

TASK_NAME = "melodybot.generate"
QUEUE_NAME = "melodybot"
EVENTS_KEY = "melodybot:events"  # list of JSON events from the workers
PROCESSING_KEY = "melodybot:events:processing"  # events the bot is applying
FINISHED_TTL_S = 7 * 86400
HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 6  # a worker silent this long is dead
RESTORE_INTERVAL_S = 2  # how often workers look for unacknowledged tasks past the visibility timeout


def finished_key(job_id: str) -> str:
    return f"melodybot:finished:{job_id}"


def worker_key(name: str) -> str:
    return f"melodybot:worker:{name}"


def default_visibility_timeout(settings: Settings) -> float:
    """Seconds before an unacknowledged task goes to another worker. Only a backstop: the bot
    re-sends a dead worker's jobs itself as soon as its heartbeat stops."""
    return 2 * settings.job_timeout_s + 30


def make_celery(settings: Settings, visibility_timeout_s: float | None = None) -> Celery:
    """The Celery app for settings.redis_url, for the bot (sending) and the workers (running)."""
    if visibility_timeout_s is None:
        visibility_timeout_s = default_visibility_timeout(settings)
    app = Celery("melodybot", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # answers come back on EVENTS_KEY
        # Acknowledged when a worker starts the task. The bot's SQLite is the record of every job,
        # and the bot re-sends what a dead worker held or Redis lost (bot/queue/celery_backend.py),
        # so late acks would only add Celery's crash when it acknowledges after a lost connection
        # ("Unrecoverable error ... 'NoneType' object has no attribute 'hostname'", Celery 5.7).
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,  # a task in flight finishes and reports
        task_default_queue=QUEUE_NAME,
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,  # a worker waits for Redis to come back, however long
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s,
            "unacked_restore_interval": RESTORE_INTERVAL_S,
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
