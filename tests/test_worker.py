"""The worker's job runner (bot/worker.py) in this process: checks, batched sampling, rendering,
user-facing and internal failures, and the Celery worker's batcher."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.jobs import Job, JobState
from bot.settings import Settings
from bot.worker.celery_worker import Batcher
from bot.worker.generator import FIRST_PASS_ROWS, GATHER_S, QUIET_S, Gathering, Generator
from bot.worker.rendering import render_job
from model.melody import stepping
from model.melody.network import save_checkpoint
from model.melody.sampling import SamplingOptions, continue_melodies

CANDIDATES = SamplingOptions().candidates  # rows sampled per variation
PRIMER = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0]  # C4 E4 G4, a bar


def job(user: int = 1, **fields) -> Job:
    fields = {"primer": PRIMER, "bars": 1, "variations": 1, **fields}
    return Job(user_id=user, channel_id=1, **fields)


@pytest.fixture(scope="module")
def generator(tiny_weights) -> Generator:
    generator = Generator(Settings(weights=tiny_weights, device="cpu"))
    generator.load()
    return generator


class CountingModel:
    """The generator's model's sampling passes, counted (the real network does the work)."""

    def __init__(self, model):
        self.model, self.rows = model, []

    def __enter__(self):
        self.original = stepping.generate

        def generate(model, primer, *args, **kwargs):
            if model is self.model:
                self.rows.append(primer.shape[0])
            return self.original(model, primer, *args, **kwargs)

        stepping.generate = generate
        return self

    def __exit__(self, *exc):
        stepping.generate = self.original


def test_jobs_are_sampled_in_one_batch_and_rendered(generator):
    jobs = [job(1, variations=2, seed=1), job(2, variations=3, seed=2, bars=2, instrument="strings")]
    with CountingModel(generator.model) as counting:
        outcomes = list(generator.run(jobs))
    assert counting.rows == [5 * CANDIDATES]  # every candidate of every variation of both jobs: one pass
    assert [o.job for o in outcomes] == jobs and all(o.state == JobState.DONE for o in outcomes)
    first, second = (o.result for o in outcomes)
    assert (len(first.variations), len(second.variations)) == (2, 3)
    assert [len(v.events) for v in second.variations] == [len(PRIMER) + 32] * 3
    for variation in first.variations + second.variations:
        assert variation.mp3 and variation.midi.startswith(b"MThd")
    assert first.combined_png.startswith(b"\x89PNG") and second.combined_png.startswith(b"\x89PNG")
    # Batching changes nothing: the same seed gives the same continuation alone.
    alone = continue_melodies(generator.model, [PRIMER], [SamplingOptions(bars=1, variations=2, seed=1)])[0]
    assert [v.events[len(PRIMER) :] for v in first.variations] == alone
    assert first.key == "C major" and first.timings["sample"] > 0 and first.timings["render"] > 0


def test_bad_requests_fail_with_their_reason_and_the_rest_still_run(generator):
    jobs = [
        job(1, primer=[0, 0, 0, 0]),
        job(2, temperature=9.0),
        job(3, instrument="kazoo"),
        job(4, primer=[26, 999, 1]),
        job(5),
    ]
    outcomes = {o.job.user_id: o for o in generator.run(jobs)}
    assert outcomes[1].error == "The primer has no notes."
    assert outcomes[2].error == "Temperature must be between 0.05 and 3.0, not 9.0."
    assert outcomes[3].error.startswith("Unknown instrument 'kazoo'; choose one of: piano")
    assert outcomes[4].error == "The primer holds events the model does not know."
    assert [outcomes[u].state for u in range(1, 6)] == [JobState.FAILED] * 4 + [JobState.DONE]


def test_an_internal_error_fails_the_job_with_a_generic_message_and_logs_it(generator, caplog, monkeypatch):
    import bot.render

    real = bot.render.render_variations

    def buggy(melodies, primer_steps, bpm, *args, **kwargs):  # a renderer bug that only this tempo meets
        if bpm == 123:
            raise RuntimeError("renderer bug at 123 bpm")
        return real(melodies, primer_steps, bpm, *args, **kwargs)

    monkeypatch.setattr(bot.render, "render_variations", buggy)
    broken, fine = job(1, bpm=123), job(2)
    with caplog.at_level(logging.ERROR, logger="bot.worker"):
        # What the render process runs for each job, here, where the bug can be planted.
        outcomes = [render_job(generator.settings, sampled) for sampled in generator.sample([broken, fine])]
    assert outcomes[0].state == JobState.FAILED
    assert outcomes[0].error == f"The generator hit an error (job {broken.job_id}); try again."
    assert outcomes[1].state == JobState.DONE
    assert f"job {broken.job_id}: rendering failed" in caplog.text and "123 bpm" in caplog.text


def test_a_job_too_long_in_seconds_fails_with_the_reason(generator):
    [outcome] = generator.run([job(1, bars=32, bpm=20)])
    assert outcome.state == JobState.FAILED
    assert outcome.error.startswith("32 bars at 20 BPM last 6.4 minutes; the longest continuation is 5 minutes")


def test_a_job_cancelled_during_the_batch_is_not_rendered(generator):
    kept, cancelled = job(1), job(2)
    outcomes = list(generator.run([kept, cancelled], wanted=lambda j: j is not cancelled))
    assert [(o.job, o.state) for o in outcomes] == [(kept, JobState.DONE), (cancelled, JobState.CANCELLED)]
    assert outcomes[1].result is None


def test_without_weights_jobs_fail_until_the_weights_appear(tmp_path, tiny_model, caplog):
    weights = tmp_path / "melody.pt"
    generator = Generator(Settings(weights=weights, device="cpu"))  # not checked: no file yet
    with pytest.raises(FileNotFoundError):
        generator.load()
    first, second = job(1), job(2)
    with caplog.at_level(logging.ERROR, logger="bot.worker"):
        [outcome] = generator.run([first])
    assert outcome.error == f"The generator hit an error (job {first.job_id}); try again."
    assert "the model cannot be loaded" in caplog.text
    save_checkpoint(weights, tiny_model)
    [outcome] = generator.run([second])
    assert outcome.state == JobState.DONE


def burst_through_batcher(generator, limit: int, jobs: list[Job]):
    """Run `jobs` through a Batcher of `limit` rows: the first alone, held at its start until all
    the others wait (rendering skipped: the batching is the point). Returns (outcome per job id,
    the job ids of each batch as it started)."""
    started: list[list[str]] = []
    gate = threading.Event()

    def on_start(batch):
        started.append([j.job_id for j in batch])
        gate.wait(30)

    batcher = Batcher(generator, limit=limit, on_start=on_start)
    outcomes = {}

    def submit(j):
        outcomes[j.job_id] = batcher.run(j)

    threads = [threading.Thread(target=submit, args=(j,)) for j in jobs]
    generator.skip_render = True
    try:
        threads[0].start()
        while not started:
            time.sleep(0.01)
        for thread in threads[1:]:
            thread.start()
        while len(batcher._waiting) < len(jobs) - 1:
            time.sleep(0.01)
        gate.set()
        for thread in threads:
            thread.join(30)
    finally:
        generator.skip_render = False
    return outcomes, started


def test_the_batcher_runs_jobs_that_arrive_together_in_one_pass(generator):
    jobs = [job(user, variations=2, primer=PRIMER[: 4 + 4 * user]) for user in range(4)]  # 4 primer lengths
    with CountingModel(generator.model) as counting:
        outcomes, started = burst_through_batcher(generator, 4, jobs)
    assert all(outcomes[j.job_id].state == JobState.DONE for j in jobs)
    ids = [j.job_id for j in jobs]
    assert started[0] == ids[:1] and [len(batch) for batch in started] == [1, 2, 1]  # the limit of 4 rows
    assert sorted(started[1] + started[2]) == sorted(ids[1:])  # splits the three that were waiting
    assert counting.rows == [2 * CANDIDATES, 4 * CANDIDATES, 2 * CANDIDATES]  # two lengths share the second


def test_while_nothing_waits_to_be_rendered_a_pass_is_small_so_answers_start_soon(generator):
    """A burst of 7 jobs of 4 variations behind a first one, batch limit 64 rows: rendered at once
    (skip_render), nothing waits for the renderer, so each pass takes FIRST_PASS_ROWS (16), not 28."""
    jobs = [job(user, variations=4) for user in range(8)]
    outcomes, started = burst_through_batcher(generator, 64, jobs)
    assert all(outcomes[j.job_id].state == JobState.DONE for j in jobs)
    assert FIRST_PASS_ROWS == 16 and [len(batch) for batch in started] == [1, 4, 3]



def test_a_job_after_a_quiet_spell_starts_at_once_and_jobs_in_a_burst_wait_for_each_other():
    """The wait before a pass (both workers): none for a job typed alone, GATHER_S within a burst."""
    gathering = Gathering()
    assert gathering.wait_s() == 0.0  # the first job: nothing else is on its way
    assert gathering.wait_s() == GATHER_S  # a second right behind it: others may follow
    time.sleep(QUIET_S + 0.05)
    assert gathering.wait_s() == 0.0

@pytest.fixture(scope="module")
def loud_generator(tmp_path_factory, tiny_config) -> Generator:
    """A Generator on a tiny network whose weights are loud enough that it hears its primer (an
    untrained tiny one hardly does), so reading a row's padding would change its result."""
    import torch

    from model.melody.network import MelodyNet

    torch.manual_seed(6)
    model = MelodyNet(tiny_config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(5.0)
    path = tmp_path_factory.mktemp("loud") / "loud.pt"
    save_checkpoint(path, model)
    generator = Generator(Settings(weights=path, device="cpu"))
    generator.load()
    generator.skip_render = True  # the sampling is the point here
    return generator


def test_jobs_with_primers_of_different_lengths_share_one_pass(loud_generator):
    primers = [[33], PRIMER[:5], PRIMER, PRIMER + [28, 0, 1, 0, 31, 0, 0, 0, 0, 1] * 3]  # 1 to 46 steps
    jobs = [job(user, primer=p, variations=2, bars=2, seed=10 + user, temperature=1.5)
            for user, p in enumerate(primers)]
    with CountingModel(loud_generator.model) as counting:
        outcomes = list(loud_generator.run(jobs))
    assert counting.rows == [len(jobs) * 2 * CANDIDATES]  # one pass for all four lengths
    assert all(o.state == JobState.DONE for o in outcomes)
    for j, outcome in zip(jobs, outcomes):
        [alone] = loud_generator.run([j])  # the same job by itself, the same seed
        mixed = [tuple(v.events[outcome.result.primer_steps :]) for v in outcome.result.variations]
        assert mixed == [tuple(v.events[alone.result.primer_steps :]) for v in alone.result.variations]
        assert len(set(mixed)) == 2


def test_a_render_process_that_dies_is_replaced_and_its_job_tried_again(generator, caplog):
    import os
    import signal

    first = generator.run([job(1)])
    assert next(first).state == JobState.DONE
    renderer = generator._render_process
    os.kill(renderer._process.pid, signal.SIGKILL)  # between jobs
    [outcome] = generator.run([job(2)])
    assert outcome.state == JobState.DONE

    # Killed while rendering a long job (32 bars at 40 BPM: seconds of synthesis), every time:
    # after the second try the job fails, with the generic message, and the next job is fine.
    long_job = job(3, bars=32, bpm=40)
    [sampled] = generator.sample([long_job])
    killer_stop = threading.Event()

    def kill_each_renderer():
        killed = set()
        while not killer_stop.is_set() and len(killed) < 2:
            process = renderer._process
            if process is not None and renderer._started and process.pid not in killed:
                time.sleep(0.3)
                os.kill(process.pid, signal.SIGKILL)
                killed.add(process.pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_each_renderer)
    with caplog.at_level(logging.WARNING, logger="bot.worker"):
        killer.start()
        outcome = generator.render(sampled)
        killer_stop.set()
        killer.join()
    assert outcome.state == JobState.FAILED
    assert outcome.error == f"The generator hit an error (job {long_job.job_id}); try again."
    assert "attempt 1 of 2" in caplog.text and "attempt 2 of 2" in caplog.text
    [outcome] = generator.run([job(4)])
    assert outcome.state == JobState.DONE


def test_the_render_process_keeps_its_freed_buffers_instead_of_faulting_them_in_again():
    # What a render does: eight buffers of 3.4 MB (a preview's stereo mix) written, then all freed,
    # five times over. By default glibc hands the freed memory back to the kernel and faults it in
    # again next time (~6,600 page faults a round); in the render process (keep_freed_buffers) the
    # heap keeps it, and the faults stop after the first round.
    script = """
import resource, sys
import numpy as np
if sys.argv[1] == "kept":
    from bot.worker.allocator import keep_freed_buffers
    keep_freed_buffers()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one_render():
    buffers = [np.empty(850_000, dtype=np.float32) for _ in range(8)]
    for buffer in buffers:
        buffer.fill(1.0)
one_render()
before = faults()
for _ in range(4):
    one_render()
print(faults() - before)
"""
    counts = {mode: _last_number(script, mode) for mode in ("default", "kept")}
    assert counts["default"] > 4 * 5_000 and counts["kept"] < 500, counts


def test_the_sampling_process_hands_a_passs_large_tables_back_when_they_are_freed():
    # What a burst's passes do: tables of 20 MB made and freed. By default glibc raises its mmap
    # threshold after the first free and keeps the next table in the heap once freed; in the
    # sampling process (return_large_buffers) it goes back to the system.
    script = """
import sys
import numpy as np
if sys.argv[1] == "returned":
    from bot.worker.allocator import return_large_buffers
    return_large_buffers()
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
before = rss_mb()
for _ in range(3):  # three passes
    table = np.ones(5_000_000, dtype=np.float32)
    del table
print(rss_mb() - before)
"""
    held = {mode: _last_number(script, mode) for mode in ("default", "returned")}
    assert held["default"] > 15 and held["returned"] < 3, held


def _last_number(script: str, mode: str) -> float:
    """The last number a fresh Python process running `script` with argument `mode` printed (a
    process of its own: glibc's allocator settings last as long as the process)."""
    done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])
