"""`python -m bot.worker`: a worker process, for the embedded queue (--local) or Redis (--redis);
`--check` loads its learned components and says whether they load (bot/worker/components.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bot.observability import setup_logging
from bot.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.worker", description="A melodybot worker process.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--redis", metavar="URL", help="take jobs from this Redis through Celery")
    mode.add_argument("--local", metavar="DB", type=Path, help="take jobs from this SQLite queue")
    mode.add_argument("--check", action="store_true", help="load the melody and chord models, say whether they "
                      "load (exit 1 if one does not), and exit")  # fmt: skip
    parser.add_argument("--token", help="--local: this worker's name in the database")
    parser.add_argument("--supervised", action="store_true", help="--local: started by the bot (stdin: wake-ups)")
    parser.add_argument("--concurrency", type=int, default=8, help="--redis: jobs taken at once (batched together)")
    parser.add_argument("--visibility-timeout", type=float, help="--redis: seconds before a taken job that was "
                        "not acknowledged goes to another worker (default: 2 x job timeout + 30)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(dotenv=None if args.supervised else Path(".env"),
                                 **({"redis_url": args.redis} if args.redis else {}))
    except SettingsError as error:
        print(f"melodybot worker: bad setting: {error}", file=sys.stderr)
        sys.exit(2)
    if args.check:
        from bot.worker.components import check

        sys.exit(check(settings))
    level = settings.log_level.upper()
    setup_logging(level, json=settings.log_format == "json", secrets=settings.secrets())
    if args.local is not None:
        from bot.worker.local import run_local

        run_local(args.local, args.token or f"local-{os.getpid()}", args.supervised)
    else:
        from bot.worker.celery_worker import run_celery

        run_celery(settings, args.concurrency, args.visibility_timeout, level)


if __name__ == "__main__":
    main()
