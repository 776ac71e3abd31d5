"""`python -m bot`: the Discord bot when a token is set (DISCORD_TOKEN or MELODYBOT_DISCORD_TOKEN),
else the local terminal channel (bot/terminal.py). Both with the same queue and worker.

Resources are opened here and handed down: the vote store, the job queue (embedded: it starts the
local worker process), the /healthz + /metrics server when MELODYBOT_HTTP_PORT is set. Exit codes:
0 after a clean stop (Ctrl-C, !quit, end of input, SIGTERM), 2 for a setting or token that cannot
work (the message says which; e.g. a data folder this user cannot write), 1 when the queue cannot start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from bot.settings import Settings, SettingsError
from bot.worker.components import CHORDS, MELODY, harmony_problem, melody_path

log = logging.getLogger("bot")

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    try:
        settings = Settings.load()
    except SettingsError as error:
        print(f"melodybot: bad setting: {error}", file=sys.stderr)
        return 2
    terminal = not settings.discord_token
    try:
        check_data_dir(settings)
        _setup_logging(settings, terminal)
    except SettingsError as error:  # before any logging: one line, no traceback
        print(f"melodybot: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:  # Ctrl-C before the terminal's own handler was installed
        return 0
    except SettingsError as error:  # found while starting: the database folder, the port, the token
        _say(settings, f"melodybot: {error}")
        return 2
    except Exception as error:  # e.g. Discord unreachable: the details are logged, the screen gets a line
        log.exception("melodybot stopped")
        _say(settings, f"melodybot stopped: {type(error).__name__}: {error}")
        return 1


def _say(settings: Settings, text: str) -> None:
    """A line for the operator's screen, secrets masked."""
    from bot.observability import RedactFilter

    print(RedactFilter(settings.secrets()).redact(text), file=sys.stderr)


def check_data_dir(settings: Settings) -> None:
    """The data folder exists (made if not) and this process may write there; else SettingsError
    naming the folder and the user id this process runs as, the usual cause in a container (a host
    folder mounted on /data, owned by another user)."""
    data_dir, database = settings.data_dir, settings.database.name
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as error:
        raise SettingsError(unwritable(data_dir, error)) from None
    # Files a run as another user left (the database, its journal, the log): opened to append,
    # nothing written, so that SQLite does not fail at the first job instead.
    for name in (database, f"{database}-wal", f"{database}-shm", "melodybot.log"):
        path = data_dir / name
        if path.exists():
            try:
                open(path, "ab").close()
            except OSError as error:
                raise SettingsError(unwritable(path, error)) from None


def unwritable(path: Path, error: OSError) -> str:
    uid, gid = os.getuid(), os.getgid()
    what = "the data folder" if path.is_dir() or not path.exists() else "the file"
    return (f"cannot write to {what} {path} (MELODYBOT_DATA_DIR) as user id {uid}, group id {gid}: "
            f"{error.strerror or error}. Let that user write there (chown -R {uid}:{gid} on the folder), or, in a "
            f"container, mount a named volume on it (README: Docker)")


def _setup_logging(settings: Settings, terminal: bool) -> None:
    from bot.observability import RedactFilter, ScreenFormatter, setup_logging

    secrets = settings.secrets()
    if not terminal:
        setup_logging(settings.log_level, json=settings.log_format == "json", secrets=secrets)
        return
    # The terminal is the conversation: the details go to a log file, only warnings to the screen.
    # The worker process inherits file descriptor 2, so that descriptor becomes the log file too,
    # and Python's sys.stderr keeps the real terminal.
    log_path = settings.data_dir / "melodybot.log"
    try:
        log_file = open(log_path, "a", buffering=1)
    except OSError as error:  # e.g. a log file left by another user
        raise SettingsError(unwritable(log_path, error)) from None
    screen = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(log_file.fileno(), 2)
    sys.stderr = screen
    setup_logging(settings.log_level, json=settings.log_format == "json", stream=log_file, secrets=secrets)
    warnings = logging.StreamHandler(screen)  # one line each, no tracebacks: those are in the log file
    warnings.setLevel(logging.WARNING)
    warnings.addFilter(RedactFilter(secrets))
    warnings.setFormatter(ScreenFormatter(settings.data_dir / "melodybot.log"))
    logging.getLogger().addHandler(warnings)
    logging.getLogger("discord").setLevel(logging.WARNING)


def _check_local_worker(settings: Settings) -> None:
    """Say early what would make jobs fail in the embedded worker (its log is the log file, not
    the screen)."""
    problems = learned_problems(settings)
    if MELODY in problems:
        log.warning("%s: jobs will fail until they exist (train the model, or set MELODYBOT_WEIGHTS to a "
                    "checkpoint)", problems[MELODY])
    if CHORDS in problems:
        log.error("%s; jobs that need suggested chords will fail (chords=off still works)", problems[CHORDS])
    from bot.render import RenderError, check_setup

    try:
        check_setup(str(settings.soundfont) if settings.soundfont else None)
    except RenderError as error:
        log.warning("previews cannot be rendered: %s", error)


def learned_problems(settings: Settings) -> dict[str, str]:
    """{component: why} for the embedded worker's learned components that cannot load; none in
    Redis mode (the workers run elsewhere, with their own files and /healthz). Cheap enough for
    each /healthz: a file's presence, and the chord model (pure numpy, cached once it loads)."""
    if settings.redis_url:
        return {}
    problems = {}
    weights = melody_path(settings)
    if not weights.is_file():
        problems[MELODY] = f"no model weights at {weights}"
    chords = harmony_problem(settings)
    if chords:
        problems[CHORDS] = chords
    return problems


def _with_problems(health_check, settings: Settings):
    """/healthz of the embedded mode: the queue's, and 503 naming each learned component that
    cannot load (asked again each time: a fixed file heals it)."""
    if settings.redis_url:
        return health_check

    async def check() -> dict:
        body = dict(await health_check())
        problems = learned_problems(settings)
        if problems:
            body.update(status="unavailable", reason="; ".join(problems.values()), problems=problems)
        return body

    return check


async def serve(settings: Settings) -> int:
    from bot.observability import observe_status, queue_probes, start_http, stop_http
    from bot.queue import make_queue
    from bot.storage import BotStore

    if settings.discord_token:
        from bot.discord_app import run_discord
    else:
        from bot.terminal import run_terminal

    try:
        store = BotStore(settings.database)
    except (OSError, sqlite3.Error) as error:
        raise SettingsError(f"cannot open the database {settings.database} (MELODYBOT_DATA_DIR): {error}") from None
    _check_local_worker(settings)
    queue = make_queue(settings)
    try:
        await queue.start()
    except Exception as error:
        log.exception("the job queue did not start")
        store.close()
        _say(settings, f"melodybot: the job queue did not start: {error}")
        return 1
    runner = None
    try:
        try:
            health_check, refresh = queue_probes(queue)
            runner = await start_http(settings.http_port, _with_problems(health_check, settings), refresh)
        except OSError as error:
            raise SettingsError(f"cannot serve /healthz on port {settings.http_port} (MELODYBOT_HTTP_PORT): "
                             f"{error}") from None
        # What start-up loaded lives as long as the process: keep it out of the garbage collector's
        # full passes, which otherwise stall the event loop (measured: 40 ms for the 67k objects
        # here; the !help latency test in tests/test_discord.py).
        gc.freeze()
        if settings.discord_token:
            await run_discord(settings, queue, store, observe=observe_status)
        else:
            await run_terminal(settings, queue, store, observe=observe_status)
        return 0
    finally:
        await stop_http(runner)
        await queue.close()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
