"""The jobs: every accepted job, its state, and its result, in the bot's SQLite database.

One file (`Settings.database`) in WAL mode, shared by the bot and the embedded worker process
(which claims jobs and writes results straight into it). Other parts of the bot may keep their
own tables in the same file; the tables here are prefixed `queue_`.

- `queue_jobs`: one row per job; `seq` orders the queue (FIFO), `state` is a JobState value,
  `worker` names the worker holding a running job, `delivered` is set once the bot answered.
- `queue_events`: an append-only log of state changes (RUNNING, QUEUED again after a worker died,
  DONE, FAILED, CANCELLED); the bot follows it to emit updates. A row is written only by the
  update that changed the state, inside the same transaction, so each job has at most one
  terminal event however many workers raced to finish it.

A `JobStore` is one connection; use it from one thread at a time (from the event loop, through
bot/storage/sqlite.py's AsyncSQLite). Every write is one short
`BEGIN IMMEDIATE` transaction, so the bot and the worker never hold each other up for long.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.jobs import Job, JobState, JobStatus, Result, new_job_id
from bot.storage.sqlite import WAL_CHECKPOINT_PAGES, connect

UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)
FINISHED = (JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value)
EVENT_LOG_DAYS = 2  # state-change log rows older than this are pruned when the bot opens the store
REDELIVER_DAYS = 7  # undelivered answers older than this are not emitted again after a restart
RECENT_JOBS = 20  # finished jobs the throughput estimate looks at

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    job TEXT NOT NULL,             -- Job.to_dict() as JSON
    result TEXT,                   -- Result.stored()'s JSON (older rows: Result.to_dict()'s), when done
    error TEXT,                    -- user-facing reason, when failed
    worker TEXT,                   -- who runs it, while running
    attempts INTEGER NOT NULL DEFAULT 0,
    dispatched INTEGER NOT NULL DEFAULT 0,  -- Redis mode: handed to the broker
    delivered INTEGER NOT NULL DEFAULT 0,   -- the bot answered
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    previews BLOB                  -- the result's files end to end (Result.stored()); NULL once pruned
);
CREATE INDEX IF NOT EXISTS queue_jobs_state ON queue_jobs (state, seq);
CREATE INDEX IF NOT EXISTS queue_jobs_user ON queue_jobs (user_id, state);
CREATE INDEX IF NOT EXISTS queue_jobs_finished ON queue_jobs (finished_at);
CREATE TABLE IF NOT EXISTS queue_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL
);
"""

_STATUS_COLUMNS = "seq, job, state, error, result, previews"


class Rejected(Exception):
    """A submission over a cap: `kind` is "user" or "queue", `count` the unfinished jobs counted,
    `retry_after_s` (queue only) the estimated wait for a free slot."""

    def __init__(self, kind: str, count: int, retry_after_s: float = 0.0):
        super().__init__(kind, count)
        self.kind, self.count, self.retry_after_s = kind, count, retry_after_s


class StoreError(Exception):
    """A request about a job that cannot be done; the message is user-facing."""


class JobStore:
    def __init__(self, path: str | Path):
        self.db = connect(path)
        self.db.executescript(SCHEMA)  # each statement commits by itself; IF NOT EXISTS makes it idempotent
        self._add_previews_column()

    def _add_previews_column(self) -> None:
        """A database made before the previews had a column of their own gets it (its older results
        keep their files in the result's JSON, which Result.from_stored reads too)."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(queue_jobs)")}
        if "previews" not in columns:
            try:
                self.db.execute("ALTER TABLE queue_jobs ADD COLUMN previews BLOB")
            except sqlite3.OperationalError as error:  # another process added it meanwhile
                if "duplicate column" not in str(error):
                    raise

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _write(self, large: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. large=True (a result: ~1.7 MB of previews): the commit waits neither
        for the disk (synchronous NORMAL: a power cut may undo it, never corrupt the database, and
        the next synced commit makes it durable too, the WAL being written in order) nor for a
        checkpoint (copying the WAL into the database and syncing it, ~30 ms every few results):
        the next ordinary commit does it, such as Discord's mark_delivered once the answer is
        posted. On an answer's way, the two took ~20 ms."""
        if large:
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA wal_autocheckpoint=0")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        finally:
            if large:
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several SELECTs."""
        self.db.execute("BEGIN")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    def _log(self, job_id: str, state: JobState | str, now: float) -> None:
        self.db.execute("INSERT INTO queue_events (job_id, state, at) VALUES (?, ?, ?)", (job_id, str(state), now))

    # -- the bot's side ----------------------------------------------------------------------------
    def add(self, job: Job, max_per_user: int, max_queue: int, now: float | None = None) -> JobStatus:
        """Persist a new QUEUED job, unless its user or the whole queue is at its cap (Rejected).
        A taken job id (rare: 6 random characters) gets a fresh one."""
        with self._write() as db:
            now = time.time() if now is None else now  # taken under the write lock: timestamps follow commit order
            mine = db.execute(
                "SELECT count(*) FROM queue_jobs WHERE user_id = ? AND state IN (?, ?)", (job.user_id, *UNFINISHED)
            ).fetchone()[0]
            if mine >= max_per_user:
                raise Rejected("user", mine)
            unfinished = db.execute("SELECT count(*) FROM queue_jobs WHERE state IN (?, ?)", UNFINISHED).fetchone()[0]
            if unfinished >= max_queue:
                per_job = self._seconds_per_job()
                raise Rejected("queue", unfinished, per_job * (unfinished - max_queue + 1))
            while db.execute("SELECT 1 FROM queue_jobs WHERE job_id = ?", (job.job_id,)).fetchone():
                job.job_id = new_job_id()
            cursor = db.execute(
                "INSERT INTO queue_jobs (job_id, user_id, state, job, created_at) VALUES (?, ?, ?, ?, ?)",
                (job.job_id, job.user_id, JobState.QUEUED.value, json.dumps(job.to_dict()), now),
            )
            position = self._position(cursor.lastrowid)
        return JobStatus(job, JobState.QUEUED, position=position)

    def remove(self, job_id: str) -> None:
        """Forget a job that was never really accepted (the broker refused it)."""
        with self._write() as db:
            db.execute("DELETE FROM queue_jobs WHERE job_id = ? AND state = ?", (job_id, JobState.QUEUED.value))

    def _seconds_per_job(self) -> float:
        """Seconds between finished jobs lately: the gaps between recent finishes (throughput,
        batching included), capped by the mean run time (gaps also contain idle time). 30 s with
        no history."""
        rows = self.db.execute(
            "SELECT started_at, finished_at FROM queue_jobs WHERE state IN (?, ?) AND started_at IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT ?",
            (JobState.DONE.value, JobState.FAILED.value, RECENT_JOBS),
        ).fetchall()
        if not rows:
            return 30.0
        mean_run = sum(finished - started for started, finished in rows) / len(rows)
        if len(rows) == 1:
            return mean_run
        finishes = [finished for _, finished in rows]
        return min(mean_run, (max(finishes) - min(finishes)) / (len(rows) - 1))

    def _position(self, seq: int) -> int:
        return self.db.execute(
            "SELECT count(*) FROM queue_jobs WHERE state = ? AND seq <= ?", (JobState.QUEUED.value, seq)
        ).fetchone()[0]

    def _status(self, row, with_result: bool = True) -> JobStatus:
        seq, job, state, error, result, previews = row
        state = JobState(state)
        return JobStatus(
            Job.from_dict(json.loads(job)),
            state,
            position=self._position(seq) if state == JobState.QUEUED else None,
            error=error if state == JobState.FAILED else None,
            result=Result.from_stored(result, previews) if with_result and result and state == JobState.DONE else None,
        )

    def get(self, job_id: str) -> JobStatus | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_STATUS_COLUMNS} FROM queue_jobs WHERE job_id = ?", (job_id,)).fetchone()
            return None if row is None else self._status(row)

    def user_jobs(self, user_id: int) -> list[JobStatus]:
        """The user's unfinished jobs, in queue order."""
        with self._read() as db:
            rows = db.execute(
                "SELECT seq, job, state, error, NULL, NULL FROM queue_jobs WHERE user_id = ? AND state IN (?, ?) "
                "ORDER BY seq",
                (user_id, *UNFINISHED),
            ).fetchall()
            return [self._status(row) for row in rows]

    def cancel(self, job_id: str, user_id: int | None = None, now: float | None = None) -> JobStatus:
        with self._write() as db:
            now = time.time() if now is None else now  # taken under the write lock: timestamps follow commit order
            row = db.execute("SELECT user_id, state, job FROM queue_jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise StoreError(f"There is no job {job_id}.")
            owner, state, job = row
            if user_id is not None and owner != user_id:
                raise StoreError(f"Job {job_id} is not yours to cancel.")
            if JobState(state).finished:
                raise StoreError(f"Job {job_id} has already finished ({state}).")
            db.execute(
                "UPDATE queue_jobs SET state = ?, worker = NULL, finished_at = ? WHERE job_id = ?",
                (JobState.CANCELLED.value, now, job_id),
            )
            self._log(job_id, JobState.CANCELLED, now)
        return JobStatus(Job.from_dict(json.loads(job)), JobState.CANCELLED)

    def mark_delivered(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE queue_jobs SET delivered = 1 WHERE job_id = ?", (job_id,))

    def mark_dispatched(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE queue_jobs SET dispatched = 1 WHERE job_id = ?", (job_id,))

    def queued_jobs(self) -> list[tuple[Job, bool]]:
        """Every queued job in queue order, with whether it was handed to the broker (Redis mode)."""
        rows = self.db.execute(
            "SELECT job, dispatched FROM queue_jobs WHERE state = ? ORDER BY seq", (JobState.QUEUED.value,)
        ).fetchall()
        return [(Job.from_dict(json.loads(job)), bool(dispatched)) for job, dispatched in rows]

    def follow_start(self, now: float | None = None) -> tuple[int, list[str]]:
        """Where to start following the event log, and the finished jobs the bot has not answered
        yet (from before that point), in one snapshot so nothing is emitted twice or missed."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute("DELETE FROM queue_events WHERE at < ?", (now - EVENT_LOG_DAYS * 86400,))
        with self._read() as db:
            cursor = db.execute("SELECT coalesce(max(seq), 0) FROM queue_events").fetchone()[0]
            rows = db.execute(
                "SELECT job_id FROM queue_jobs WHERE state IN (?, ?, ?) AND delivered = 0 AND finished_at > ? "
                "ORDER BY finished_at",
                (*FINISHED, now - REDELIVER_DAYS * 86400),
            ).fetchall()
        return cursor, [job_id for (job_id,) in rows]

    def events_since(self, cursor: int, limit: int = 500) -> list[tuple[int, str, JobState]]:
        rows = self.db.execute(
            "SELECT seq, job_id, state FROM queue_events WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit)
        ).fetchall()
        return [(seq, job_id, JobState(state)) for seq, job_id, state in rows]

    def prune_previews(self, finished_before: float) -> int:
        """Delete the rendered files (MIDI, MP3, PNG) of results finished before `finished_before`,
        keeping each variation's events, so `!extend`, `!again` and votes still work. Returns how
        many results were pruned."""
        rows = self.db.execute(
            "SELECT job_id, result FROM queue_jobs WHERE state = ? AND finished_at < ? AND result IS NOT NULL "
            "AND json_extract(result, '$.pruned') IS NULL",
            (JobState.DONE.value, finished_before),
        ).fetchall()
        for job_id, data in rows:
            result = json.loads(data)
            if "file_sizes" not in result:  # stored with its files in the JSON
                for variation in result["variations"]:
                    variation.update(midi="", mp3="")
                    variation.pop("png", None)  # jobs stored before 2026-12-04 had one (empty)
                result.update(combined_png="")
            result.update(pruned=True)
            with self._write() as db:
                db.execute("UPDATE queue_jobs SET result = ?, previews = NULL WHERE job_id = ?",
                           (json.dumps(result), job_id))
        return len(rows)

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in JobState}
        counts.update(self.db.execute("SELECT state, count(*) FROM queue_jobs GROUP BY state").fetchall())
        return counts

    def running(self) -> list[tuple[str, str | None, float | None]]:
        """(job_id, worker, started_at) of every running job."""
        return self.db.execute(
            "SELECT job_id, worker, started_at FROM queue_jobs WHERE state = ? ORDER BY seq", (JobState.RUNNING.value,)
        ).fetchall()

    def last_progress(self, since: float) -> dict[str, float]:
        """worker -> when it last finished a job, for workers that did since `since`."""
        rows = self.db.execute(
            "SELECT worker, max(finished_at) FROM queue_jobs WHERE finished_at > ? AND worker IS NOT NULL "
            "GROUP BY worker",
            (since,),
        ).fetchall()
        return dict(rows)

    # -- state changes, from either side -----------------------------------------------------------
    def claim(self, worker: str, max_rows: int, now: float | None = None) -> list[Job]:
        """Embedded worker: take the oldest queued jobs, as many as fit in `max_rows` sampled rows
        (variations; always at least one job), and mark them running by `worker`."""
        with self._write() as db:
            now = time.time() if now is None else now  # taken under the write lock: timestamps follow commit order
            rows = db.execute(
                "SELECT job FROM queue_jobs WHERE state = ? ORDER BY seq LIMIT ?", (JobState.QUEUED.value, max_rows)
            ).fetchall()
            jobs, total = [], 0
            for (data,) in rows:
                job = Job.from_dict(json.loads(data))
                if jobs and total + job.variations > max_rows:
                    break
                jobs.append(job)
                total += job.variations
            for job in jobs:
                db.execute(
                    "UPDATE queue_jobs SET state = ?, worker = ?, started_at = ?, attempts = attempts + 1 "
                    "WHERE job_id = ?",
                    (JobState.RUNNING.value, worker, now, job.job_id),
                )
                self._log(job.job_id, JobState.RUNNING, now)
        return jobs

    def holds(self, job_id: str, worker: str) -> bool:
        """Embedded worker: is the job still running, by this worker (not cancelled or taken back)?"""
        row = self.db.execute("SELECT state, worker FROM queue_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row == (JobState.RUNNING.value, worker)

    def start(self, job_id: str, worker: str, at: float | None = None) -> bool:
        """Redis mode: a worker reports it started the job (again, if its first worker died)."""
        at = time.time() if at is None else at
        with self._write() as db:
            changed = db.execute(
                "UPDATE queue_jobs SET state = ?, worker = ?, started_at = ?, attempts = attempts + 1, dispatched = 1 "
                "WHERE job_id = ? AND state IN (?, ?)",
                (JobState.RUNNING.value, worker, at, job_id, *UNFINISHED),
            ).rowcount
            if changed:
                self._log(job_id, JobState.RUNNING, at)
        return bool(changed)

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        result: Result | None = None,
        error: str | None = None,
        worker: str | None = None,
        now: float | None = None,
    ) -> bool:
        """DONE or FAILED, if the job is still unfinished (and, given `worker`, still held by that
        worker). False: someone else finished or cancelled it, or requeued it; the answer is dropped."""
        data, previews = result.stored() if result is not None else (None, None)
        query = ("UPDATE queue_jobs SET state = ?, result = ?, previews = ?, error = ?, finished_at = ? "
                 "WHERE job_id = ? AND ")
        guard: tuple = UNFINISHED if worker is None else (JobState.RUNNING.value, worker)
        query += "state IN (?, ?)" if worker is None else "state = ? AND worker = ?"
        # The embedded worker's own result (worker named) goes in large: a power cut that undoes it
        # was before its delivery (whose synced commit makes it durable) and took the worker down
        # too, so the job reads RUNNING and is requeued when the bot starts. A result the bot applies
        # from Redis (Celery, no worker named) is synced: its event is deleted once applied.
        with self._write(large=result is not None and worker is not None) as db:
            now = time.time() if now is None else now  # taken under the write lock: timestamps follow commit order
            changed = db.execute(query, (state.value, data, previews, error, now, job_id, *guard)).rowcount
            if changed:
                self._log(job_id, state, now)
        return bool(changed)

    def requeue(
        self, job_ids: list[str], max_attempts: int | None, error: str, now: float | None = None
    ) -> tuple[list[str], list[str]]:
        """Running jobs whose worker died go back to the queue, keeping their place (the front).
        Those that already had `max_attempts` fail with `error` (format field: job_id) instead,
        since they may be what kills the worker. max_attempts None: a clean hand-back (the bot
        shut down), which does not count as an attempt. Returns (requeued, failed)."""
        requeued, failed = [], []
        with self._write() as db:
            now = time.time() if now is None else now  # taken under the write lock: timestamps follow commit order
            for job_id in job_ids:
                row = db.execute(
                    "SELECT attempts FROM queue_jobs WHERE job_id = ? AND state = ?", (job_id, JobState.RUNNING.value)
                ).fetchone()
                if row is None:
                    continue
                if max_attempts is not None and row[0] >= max_attempts:
                    db.execute(
                        "UPDATE queue_jobs SET state = ?, error = ?, finished_at = ? WHERE job_id = ?",
                        (JobState.FAILED.value, error.format(job_id=job_id), now, job_id),
                    )
                    self._log(job_id, JobState.FAILED, now)
                    failed.append(job_id)
                else:
                    db.execute(
                        "UPDATE queue_jobs SET state = ?, worker = NULL, started_at = NULL, "
                        "attempts = attempts - ? WHERE job_id = ?",
                        (JobState.QUEUED.value, int(max_attempts is None), job_id),
                    )
                    self._log(job_id, JobState.QUEUED, now)
                    requeued.append(job_id)
        return requeued, failed

    def status_at(self, job_id: str, state: JobState) -> JobStatus | None:
        """The job as of an event: the stored row, but in the event's state (a RUNNING event read
        after the job finished still reads RUNNING); results only with DONE."""
        with self._read() as db:
            row = db.execute(f"SELECT {_STATUS_COLUMNS} FROM queue_jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            status = self._status(row, with_result=state == JobState.DONE)
            return status if status.state == state else JobStatus(status.job, state)
