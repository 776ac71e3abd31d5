"""The renderer's one exception, and running its helper programs under a deadline."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


class RenderError(Exception):
    """A preview could not be made; the message says what is missing and how to fix it."""


def find_program(name: str) -> str:
    """Absolute path of `fluidsynth` or `ffmpeg` on $PATH, or a RenderError saying how to install it."""
    found = shutil.which(name)
    if found is None:
        label = {"fluidsynth": "FluidSynth"}.get(name, name)
        raise RenderError(f"{label} is not installed: apt-get install {name}")
    return found


def run(command: list[str], label: str, deadline: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a program to completion, killing it at `deadline` (time.monotonic() seconds)."""
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        raise RenderError(f"rendering ran out of time before {label} could start")
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:  # subprocess.run has killed the process
        raise RenderError(f"{label} took longer than the rendering timeout allowed and was stopped") from error
    except OSError as error:  # e.g. removed or not executable since find_program
        raise RenderError(f"cannot run {label} ({Path(command[0]).name}): {error.strerror}") from error
