"""A data folder the bot cannot write: one line naming the folder (or file) and the user id the
bot runs as, exit 2, no traceback (bot/__main__.py's check_data_dir), in both channels.

Permissions are real: the folders are made read-only with chmod. Tests run as root here, and root
ignores file modes through its capability CAP_DAC_OVERRIDE, so the bot then runs under
`setpriv --bounding-set=-dac_override,-dac_read_search`: still user id 0, without those two
capabilities, which is what makes a mode deny root (as it denies user 10001 in the image).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bot(data_dir: Path, cwd: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELODYBOT_") and k != "DISCORD_TOKEN"}
    env.update(MELODYBOT_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), **settings)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.fail("setpriv (util-linux) is needed to drop root's permission override")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-m", "bot"], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def read_only(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return path


@pytest.fixture
def folder(tmp_path):
    yield tmp_path
    for path in [tmp_path, *tmp_path.rglob("*")]:  # let pytest clean up
        if path.is_dir():
            path.chmod(0o755)


def assert_one_line_exit_2(done: subprocess.CompletedProcess, named: Path) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("melodybot: cannot write to the ") and f" {named} (MELODYBOT_DATA_DIR)" in lines[0]
    assert f"as user id {os.getuid()}," in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("channel", ["terminal", "discord"])
def test_a_read_only_data_folder(folder, channel):
    data = read_only(folder / "data")
    token = {"DISCORD_TOKEN": "not-a-real-token"} if channel == "discord" else {}
    done = run_bot(data, folder, **token)
    assert_one_line_exit_2(done, data)
    assert "Permission denied" in done.stderr and not list(data.iterdir())


def test_a_data_folder_that_cannot_be_made(folder):
    data = read_only(folder / "mount") / "data"
    assert_one_line_exit_2(run_bot(data, folder), data)
    not_a_folder = folder / "file"
    not_a_folder.write_text("")
    assert_one_line_exit_2(run_bot(not_a_folder / "data", folder), not_a_folder / "data")


@pytest.mark.parametrize("name", ["melodybot.sqlite3", "melodybot.log"])
def test_a_file_left_by_another_user(folder, name):
    """The folder is writable but a file in it is not (a run as root left it): found at start, not
    at the first job."""
    data = folder / "data"
    data.mkdir()
    left = data / name
    left.write_bytes(b"")
    left.chmod(0o444)
    assert_one_line_exit_2(run_bot(data, folder), left)
