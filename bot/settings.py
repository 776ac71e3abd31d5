"""Every setting of the bot and its workers, in one place.

Each comes from an environment variable `MELODYBOT_<NAME>` (the Discord token also from plain
`DISCORD_TOKEN`), or from a `.env` file in the working directory (`NAME=value` lines), else the
default below. `Settings.load()` validates them and raises `SettingsError` with a plain message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from model.defaults import MAX_BARS

ENV_PREFIX = "MELODYBOT_"
ATTACHED_VARIATIONS = 4  # most variations per job: 4 MIDI + 4 MP3 + 1 PNG = 9 of Discord's 10 attachments


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    discord_token: str | None = field(default=None, repr=False)  # none: the terminal channel
    command_prefix: str = "!"
    redis_url: str | None = None  # none: embedded queue (SQLite) and one local worker process
    data_dir: Path = Path("data")  # SQLite database, and the terminal channel's output files
    weights: Path | None = None  # none: the shipped weights
    harmony_weights: Path | None = None  # the chord model; none: the shipped model/weights/harmony.json
    device: str = "auto"  # worker's torch device: auto, cpu, cuda
    soundfont: Path | None = None  # none: TimGM6mb from the timgm6mb-soundfont package
    default_bars: int = 8  # continuation length when the user gives none
    max_bars: int = 32
    max_variations: int = 4
    max_queued_per_user: int = 3  # unfinished jobs one user may have
    max_queue: int = 100  # unfinished jobs in all
    job_timeout_s: float = 120.0  # a job running longer fails with a timeout
    batch_limit: int = 64  # most sampled rows (variations) in one batched pass
    worker_threads: int = 1  # torch CPU threads per worker process; 0: torch's default (one per core)
    rate_limit_per_minute: int = 10  # commands one user may send per minute
    http_port: int = 0  # /healthz and /metrics; 0: off
    preview_retention_days: float = 30.0  # MIDI/MP3/PNG of results older than this are deleted (events kept); 0: keep
    log_level: str = "INFO"
    log_format: str = "text"  # text: one readable line per record; json: one JSON object per line

    @property
    def database(self) -> Path:
        return self.data_dir / "melodybot.sqlite3"

    def secrets(self) -> list[str]:
        """What must never reach a log or a screen: the Discord token, the Redis password."""
        return [s for s in (self.discord_token, url_password(self.redis_url)) if s]

    @classmethod
    def load(cls, env: dict[str, str] | None = None, dotenv: Path | None = Path(".env"), **overrides) -> Settings:
        values = _read_dotenv(dotenv) if dotenv is not None else {}
        values.update(os.environ if env is None else env)
        if "DISCORD_TOKEN" in values and f"{ENV_PREFIX}DISCORD_TOKEN" not in values:
            values[f"{ENV_PREFIX}DISCORD_TOKEN"] = values["DISCORD_TOKEN"]
        kwargs = {}
        for f in fields(cls):
            raw = values.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kwargs[f.name] = _convert(f.name, f.type, raw)
        kwargs.update(overrides)
        # Relative paths mean "from the folder the bot was started in", once and for all: the
        # worker processes get these absolute paths, whatever folder they run in.
        for name in ("data_dir", "weights", "harmony_weights", "soundfont"):
            if kwargs.get(name) is not None:
                kwargs[name] = Path(kwargs[name]).expanduser().absolute()
        kwargs.setdefault("data_dir", Path(cls.data_dir).absolute())
        settings = cls(**kwargs)
        settings.check()
        return settings

    def check(self) -> None:
        positive = ("default_bars", "max_bars", "max_variations", "max_queued_per_user", "max_queue",
                    "job_timeout_s", "batch_limit", "rate_limit_per_minute")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be positive, not {getattr(self, name)}")
        if self.preview_retention_days < 0:
            raise SettingsError(f"{ENV_PREFIX}PREVIEW_RETENTION_DAYS must be 0 (keep) or more, not "
                                f"{self.preview_retention_days}")
        if self.worker_threads < 0:
            raise SettingsError(f"{ENV_PREFIX}WORKER_THREADS must be 0 (all cores) or more, not {self.worker_threads}")
        if self.max_variations > ATTACHED_VARIATIONS:
            raise SettingsError(f"{ENV_PREFIX}MAX_VARIATIONS can be at most {ATTACHED_VARIATIONS} (one message holds "
                                f"the MIDI and MP3 files of {ATTACHED_VARIATIONS}), not {self.max_variations}")
        if self.max_bars > MAX_BARS:
            raise SettingsError(f"{ENV_PREFIX}MAX_BARS can be at most {MAX_BARS} (the model's limit), "
                                f"not {self.max_bars}")
        if self.default_bars > self.max_bars:
            raise SettingsError(f"{ENV_PREFIX}DEFAULT_BARS ({self.default_bars}) exceeds MAX_BARS ({self.max_bars})")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SettingsError(f"{ENV_PREFIX}DEVICE must be auto, cpu or cuda, not {self.device!r}")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"{ENV_PREFIX}LOG_FORMAT must be text or json, not {self.log_format!r}")
        if not 0 <= self.http_port < 65536:
            raise SettingsError(f"{ENV_PREFIX}HTTP_PORT must be a port number, not {self.http_port}")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"{ENV_PREFIX}REDIS_URL must start with redis://, rediss:// or unix://, not "
                                f"{safe_url(self.redis_url)!r}")
        for name in ("weights", "harmony_weights", "soundfont"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise SettingsError(f"{ENV_PREFIX}{name.upper()}: no file at {path}")


def _convert(name: str, kind: str, raw: str):
    try:
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
        if "Path" in kind:
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a number, not {raw!r}") from None


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip().removeprefix("export ").strip()] = value.strip().strip("\"'")
    return values


def safe_url(url: str | None) -> str:
    """The URL without its password, for messages and logs: redis://:***@host:6379/0."""
    if not url:
        return str(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def url_password(url: str | None) -> str | None:
    """The secret in a Redis URL, for the log filters."""
    return urlsplit(url).password if url else None
