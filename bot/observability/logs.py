"""Logs: `setup_logging(settings.log_level, json=True, secrets=settings.secrets())` once at start;
`with job_context(job.job_id): ...` makes every line logged inside carry the job's id (also across
awaits and in tasks created inside, as it is a contextvar). The secrets given, and anything shaped
like a Discord token, are masked in every line.
"""

from __future__ import annotations

import contextvars
import json as jsonlib
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

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
