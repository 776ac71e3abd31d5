"""The worker processes: they hold the model (loaded once, kept warm), sample jobs in batches and
render the previews. The bot process never imports this package's torch side.

    python -m bot.worker --redis redis://host:6379/0    # a Celery worker for the Redis queue
    python -m bot.worker --local data/melodybot.sqlite3  # the embedded queue's worker (LocalQueue
                                                         # starts and supervises it itself)

- `generator.py`: the model service (Generator): check a job, sample a batch, have each job rendered.
- `render_process.py`: the child process that renders sampled jobs beside the next batch's sampling.
- `rendering.py`: a sampled job's chords, previews (bot/render) and Result.
- `local.py`: the embedded worker loop over the SQLite queue (bot/storage/jobs.py).
- `celery_worker.py`: the Celery worker: the task, the Batcher that joins concurrent tasks into one
  sampled pass, the heartbeat and the events it reports to the bot over Redis.
- `__main__.py`: the command line.
"""
