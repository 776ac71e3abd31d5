"""A learned component that cannot load fails loudly (bot/worker/components.py): the chord model at
a broken or missing file. The worker says so at start and in /healthz, and a job that needs
suggested chords fails saying why instead of going out without them; chords=off still works, and
a fixed file is picked up without a restart."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import QUEUE_WORKER_ENV, free_port
from test_terminal import BotProcess

from bot.jobs import Job, JobState
from bot.settings import Settings, SettingsError
from bot.worker.components import CHORDS, CHORDS_FAILED, CHORDS_UNAVAILABLE, harmony_problem
from bot.worker.generator import Generator
from bot.worker.rendering import Sampled, render_job
from model.harmony.suggest import DEFAULT_HARMONY_WEIGHTS

PRIMER = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0]  # C4 E4 G4, a bar
# What a checkout without Git LFS (or a truncated download) holds instead of the chord model.
LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 237087\n")


def job(**fields) -> Job:
    return Job(user_id=1, channel_id=1, **{"primer": PRIMER, "bars": 1, "variations": 1, **fields})


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELODYBOT_") and k != "DISCORD_TOKEN"}
    env.update(QUEUE_WORKER_ENV, PYTHONUNBUFFERED="1", **settings)
    return env


@pytest.fixture
def broken_chords(tmp_path) -> Path:
    path = tmp_path / "harmony.json"
    path.write_text(LFS_POINTER)
    return path


def test_a_missing_chord_model_file_is_a_bad_setting(tmp_path):
    with pytest.raises(SettingsError, match=f"MELODYBOT_HARMONY_WEIGHTS: no file at {tmp_path / 'none.json'}"):
        Settings.load(env={"MELODYBOT_HARMONY_WEIGHTS": str(tmp_path / "none.json")}, dotenv=None)
    done = subprocess.run([sys.executable, "-m", "bot.worker", "--check"], capture_output=True, text=True, timeout=60,
                          env=clean_env(MELODYBOT_HARMONY_WEIGHTS=str(tmp_path / "none.json")))  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "MELODYBOT_HARMONY_WEIGHTS: no file at" in done.stderr


def test_the_check_command_names_the_component_that_does_not_load(tiny_weights, broken_chords):
    """(That it passes on a good install, scripts/install-python checks: tests/test_docker.py.)"""
    env = clean_env(MELODYBOT_WEIGHTS=str(tiny_weights), MELODYBOT_HARMONY_WEIGHTS=str(broken_chords))
    done = subprocess.run([sys.executable, "-m", "bot.worker", "--check"], capture_output=True, text=True, timeout=60,
                          env=env)  # fmt: skip
    assert done.returncode == 1
    assert "melody model: ok" in done.stdout
    assert f"the chord model cannot be loaded from {broken_chords}: JSONDecodeError" in done.stderr
    assert "Traceback" not in done.stderr


def test_jobs_needing_suggested_chords_fail_saying_why_until_the_file_is_fixed(tiny_weights, broken_chords, caplog):
    generator = Generator(Settings(weights=tiny_weights, harmony_weights=broken_chords, device="cpu"))
    try:
        with caplog.at_level(logging.INFO, logger="bot.worker"):
            generator.load()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and f"the chord model cannot be loaded from {broken_chords}" in errors[0], errors
        assert CHORDS in generator.problems and generator.model is not None  # melodies still work
        suggested, given, off = job(), job(chords="C | G"), job(harmony=False)
        outcomes = {o.job.job_id: o for o in generator.run([suggested, given, off])}
        for failed in (suggested, given):  # chords= still wants them under the typed notes
            assert outcomes[failed.job_id].state == JobState.FAILED
            assert outcomes[failed.job_id].error == CHORDS_UNAVAILABLE
        assert outcomes[off.job_id].state == JobState.DONE
        assert outcomes[off.job_id].result.variations[0].chords is None

        shutil.copyfile(DEFAULT_HARMONY_WEIGHTS, broken_chords)  # the operator fixes the file
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bot.worker"):
            (outcome,) = generator.run([job()])
        assert outcome.state == JobState.DONE, outcome.error
        assert outcome.result.variations[0].chords  # a lead sheet of suggested chords
        assert CHORDS not in generator.problems
        assert any("the chord model loads now" in r.getMessage() for r in caplog.records)
    finally:
        generator.close()


def test_a_chord_model_that_reads_but_cannot_suggest_is_caught_at_start_and_fails_its_job(tmp_path, caplog):
    """Arrays of the wrong shapes load fine: the start-up check suggests chords for two bars, so it
    is found there; a job that meets it anyway (render_job alone) fails saying chords failed."""
    data = json.loads(DEFAULT_HARMONY_WEIGHTS.read_text())
    data["emission"] = data["emission"][:3]  # 3 chord states' rows of the 96
    path = tmp_path / "harmony.json"
    path.write_text(json.dumps(data))
    settings = Settings(harmony_weights=path)
    problem = harmony_problem(settings)
    assert problem and problem.startswith(f"the chord model cannot be loaded from {path}: "), problem
    sampled = Sampled(job(), PRIMER, [PRIMER], None, time.time(), 0.0)
    with caplog.at_level(logging.ERROR, logger="bot.worker"):
        outcome = render_job(settings, sampled, skip_render=True)
    assert outcome.state == JobState.FAILED
    assert outcome.error == CHORDS_FAILED.format(job_id=sampled.job.job_id)
    assert "suggesting chords failed" in caplog.text


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def poll_json(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get_json(url)
        except OSError:
            assert proc.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, f"no answer from {url}"
            time.sleep(0.2)


def test_a_redis_worker_without_its_chord_model_says_so_at_start_and_in_healthz(
    tiny_weights, broken_chords, redis_url, tmp_path
):
    port = free_port()
    log_path = tmp_path / "worker.log"
    env = clean_env(MELODYBOT_WEIGHTS=str(tiny_weights), MELODYBOT_HARMONY_WEIGHTS=str(broken_chords),
                    MELODYBOT_DEVICE="cpu", MELODYBOT_HTTP_PORT=str(port))  # fmt: skip
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "bot.worker", "--redis", redis_url, "--concurrency", "1"],
                                env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        status, body = poll_json(f"http://127.0.0.1:{port}/healthz", proc)
        assert status == 503, body
        assert body["status"] == "unavailable" and list(body["problems"]) == [CHORDS]
        assert f"the chord model cannot be loaded from {broken_chords}" in body["reason"]
    finally:
        proc.terminate()
        proc.wait(30)
    errors = [line for line in log_path.read_text().splitlines() if " ERROR " in line]
    assert any(f"the chord model cannot be loaded from {broken_chords}" in line for line in errors), errors


def test_the_terminal_bot_says_so_on_screen_and_in_healthz_and_answers_with_chords_off(
    tiny_weights, broken_chords, tmp_path
):
    port = free_port()
    bot = BotProcess(tmp_path / "data", tiny_weights, tmp_path, MELODYBOT_HARMONY_WEIGHTS=str(broken_chords),
                     MELODYBOT_HTTP_PORT=str(port))  # fmt: skip
    try:
        bot.expect(r"^bot> melodybot, terminal channel")
        status, body = poll_json(f"http://127.0.0.1:{port}/healthz", bot.proc)
        assert status == 503 and list(body["problems"]) == [CHORDS], body
        assert f"the chord model cannot be loaded from {broken_chords}" in body["reason"]
        bot.send("!continue C4 E4 G4 A4 bars=1 variations=1")
        bot.expect(rf"Job [a-z0-9]{{6}} failed: {re.escape(CHORDS_UNAVAILABLE)}")
        bot.send("!continue C4 E4 G4 A4 bars=1 variations=1 chords=off")
        bot.expect(r"^bot> Job [a-z0-9]{6}: 1 continuation")
        shutil.copyfile(DEFAULT_HARMONY_WEIGHTS, broken_chords)  # fixed: all heals without a restart
        assert get_json(f"http://127.0.0.1:{port}/healthz")[0] == 200
        bot.send("!continue C4 E4 G4 A4 bars=1 variations=1")
        bot.expect(r"^bot> Job [a-z0-9]{6}: 1 continuation")
        bot.expect(r"Chords \(suggested\): \S")
        bot.send("!quit")
        assert bot.wait() == 0
    finally:
        if bot.proc.poll() is None:
            bot.proc.kill()
    screen = bot.proc.stderr.read()
    assert f"melodybot: error: the chord model cannot be loaded from {broken_chords}" in screen
    assert "Traceback" not in screen
