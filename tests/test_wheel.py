"""What ships is what runs: the project built as a wheel, as any non-editable install (`pip install .`,
the container image) builds it, installed into a fresh virtual environment outside this checkout,
answers a `!continue` through the terminal channel from a folder of its own, with the shipped
weights and suggested chords.

The fresh environment sees this one's installed dependencies through a .pth line placed after its
own site-packages (no network, seconds), but not this checkout nor its editable install: a .pth
file inside a folder added that way is not read, so the editable install's finder stays off.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import mido
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "bot")


def run_time_files() -> list[str]:
    """Every file of the packages that is not Python source or bytecode: what the product opens
    (learned weights and tables, and whatever the band and lyrics parts add), all of it package data."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".py", ".pyc", ".pyo"):
                found.append(path.relative_to(ROOT).as_posix())
    return found


def site_packages(env_dir: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))


@dataclass
class Installed:
    wheel: Path
    python: Path  # the fresh venv's interpreter
    site: Path  # its own site-packages, where the wheel went
    env: dict[str, str]  # an environment without this checkout or any melodybot setting


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    # The build runs on a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("MELODYBOT_", "PIP_")) and k != "DISCORD_TOKEN"}
    env.update(HOME=str(base), PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    dist = base / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(source)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dist.glob("melodybot-*.whl")

    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    site = site_packages(env_dir)
    # zz-: .pth lines are appended in file-name order, after the venv's own site-packages anyway.
    (site / "zz-shared-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = env_dir / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], env=env, cwd=base,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return Installed(wheel, python, site, env)


def test_the_wheel_carries_every_file_the_product_opens(installed):
    shipped = set(zipfile.ZipFile(installed.wheel).namelist())
    wanted = run_time_files()
    assert {"model/weights/melody.pt", "model/weights/harmony.json"} <= set(wanted)
    missing = [name for name in wanted if name not in shipped]
    assert not missing, f"not package data (pyproject.toml [tool.setuptools.package-data]): {missing}"


def test_the_installed_packages_are_the_wheels_not_this_checkout(installed, tmp_path):
    done = subprocess.run([str(installed.python), "-c", "import bot, model, bot.worker; print(bot.__file__); "
                           "print(model.__file__)"], env=installed.env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for line in done.stdout.split():
        assert Path(line).is_relative_to(installed.site), line


def test_the_installed_wheel_answers_a_continue_with_suggested_chords(installed, tmp_path):
    """`python -m bot` in the fresh venv, from an empty folder, no settings: the shipped weights,
    the shipped chord model, the real worker and renderer; piped input waits for its job."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    done = subprocess.run([str(installed.python), "-m", "bot"], input="!continue C4 E4 G4 A4\n", env=installed.env,
                          cwd=folder, capture_output=True, text=True, timeout=180)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    job_id = re.search(r"Queued as job ([a-z0-9]{6})", done.stdout)[1]
    assert re.search(rf"Job {job_id}: \d+ continuations?", done.stdout), output
    assert re.search(r"Chords(?: \d)? \(suggested\): \S", done.stdout), output
    log_text = (folder / "data" / "melodybot.log").read_text()
    assert "suggesting chords failed" not in log_text and "Traceback" not in log_text, log_text[-3000:]
    midis = sorted((folder / "data" / "out" / job_id).glob("*.mid"))
    assert midis, output
    printed = dict(re.findall(r"Chords (\d+) \(suggested\): (.+)", done.stdout))
    for number, path in enumerate(midis, 1):
        midi = mido.MidiFile(file=io.BytesIO(path.read_bytes()))
        markers = [m.text for track in midi.tracks for m in track if m.type == "marker"]
        # the MIDI names the chords the reply showed, one marker at each change (a melody that
        # stays on one triad's notes rightly gets a single chord, so no count is asked for)
        shown = [name for bar in printed[str(number)].split("|") for name in bar.split()]
        changes = [name for i, name in enumerate(shown) if i == 0 or name != shown[i - 1]]
        assert markers and markers == changes, f"{path.name}: chord markers {markers}, reply {printed[str(number)]}"
        keys = [track for track in midi.tracks if track.name in ("KEYS", "GUITAR")]  # the band plays them
        assert keys, f"{path.name}: no KEYS or GUITAR track in {[track.name for track in midi.tracks]}"
        assert sum(1 for m in keys[0] if m.type == "note_on" and m.velocity) >= 3, path.name


def test_an_install_without_its_chord_model_says_so(installed, tmp_path):
    """The hole this file guards, made on purpose: the installed package without harmony.json.
    The worker's start-up check names the file, in one line, instead of every job losing its chords."""
    shipped = installed.site / "model" / "weights" / "harmony.json"
    aside = tmp_path / "harmony.json"
    shutil.move(shipped, aside)
    try:
        done = subprocess.run([str(installed.python), "-m", "bot.worker", "--check"], env=installed.env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        shutil.move(aside, shipped)
    assert done.returncode == 1
    assert done.stderr.strip() == f"the chord model cannot be loaded: no file at {shipped}"
