"""The learned components a worker loads, and what it does when one cannot load: say so loudly.

- The melody model (settings.weights, else the shipped model/weights/melody.pt): without it no job
  runs; the worker logs why, fails each job with the generic message and tries again per batch.
- The chord model (settings.harmony_weights, else the shipped model/weights/harmony.json): without
  it no chords can be suggested. The worker logs an error at start, its /healthz answers 503 naming
  it, and a job that needs suggested chords fails with CHORDS_UNAVAILABLE (chords=off still works)
  instead of going out without chords in silence, as it once did from every non-editable install.

`python -m bot.worker --check` loads both and prints one line each (scripts/install-python runs it
on the installed package, in the image too); exit 1 if one cannot load.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bot.settings import Settings

MELODY = "melody model"
CHORDS = "chord model"
CHORDS_UNAVAILABLE = ("Chords cannot be suggested right now: the chord model did not load (the operator sees why in "
                      "the worker's log and /healthz). Try again with chords=off.")  # fmt: skip


CHORDS_FAILED = ("Suggesting chords for these notes failed (job {job_id}; the details are logged). Try again with "
                 "chords=off.")


class ChordsUnavailable(Exception):
    """Suggesting chords failed: the job fails with this user-facing message."""

    def __init__(self, message: str = CHORDS_UNAVAILABLE):
        super().__init__(message)


def melody_path(settings: Settings) -> Path:
    from model.defaults import DEFAULT_WEIGHTS

    return settings.weights or DEFAULT_WEIGHTS


def harmony_path(settings: Settings) -> Path:
    from model.harmony.suggest import DEFAULT_HARMONY_WEIGHTS

    return settings.harmony_weights or DEFAULT_HARMONY_WEIGHTS


def load_harmony(settings: Settings):
    """The chord model (model.harmony.suggest.HarmonyModel), loaded once per process and path; raises
    if it cannot be read."""
    from model.harmony.suggest import load_model

    return load_model(str(harmony_path(settings)))


SMOKE_MELODY = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0] * 2  # C4 E4 G4, two bars


def harmony_problem(settings: Settings) -> str | None:
    """None when the chord model loads and suggests chords for two bars, else why not (one line):
    a file that reads but holds arrays of the wrong shapes fails here, not at the first job."""
    from model.harmony.suggest import suggest_chords

    try:
        model = load_harmony(settings)
        if not any(suggest_chords(SMOKE_MELODY, model=model)):
            raise ValueError("it suggests no chords for a C major arpeggio")
    except Exception as error:
        return component_problem(CHORDS, harmony_path(settings), error)
    return None


def component_problem(name: str, path: Path, error: BaseException) -> str:
    """One line naming the component, its file and what went wrong."""
    if isinstance(error, FileNotFoundError):
        return f"the {name} cannot be loaded: no file at {path}"
    return f"the {name} cannot be loaded from {path}: {type(error).__name__}: {error}"


def needs_suggested_chords(job) -> bool:
    """Whether the job's previews carry suggested chords somewhere (bot/worker/rendering.py's
    harmony_of): under typed notes, or under a continuation without chords=."""
    return bool(job.harmony) and (not job.chords or job.primer_chords is None)


def check(settings: Settings) -> int:
    """`python -m bot.worker --check`: load each learned component, one line each; 0 when all load."""
    failed = False
    try:
        from model.melody.sampling import load_model

        load_model(str(melody_path(settings)), "cpu")
        print(f"{MELODY}: ok ({melody_path(settings)})")
    except Exception as error:
        print(component_problem(MELODY, melody_path(settings), error), file=sys.stderr)
        failed = True
    chords = harmony_problem(settings)
    if chords:
        print(chords, file=sys.stderr)
        failed = True
    else:
        print(f"{CHORDS}: ok ({harmony_path(settings)})")
    return 1 if failed else 0
