"""The chords under a whole answer (primer + continuation), one rule for the bot and the CLI:
the sketch's own chords under the primer and the given chords under the continuation where there
are, chords suggested from the melody (model.harmony.suggest, the HMM) where not."""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


def chords_under(melody: Sequence[int], primer_steps: int, primer_chords: Sequence | None = None,
                 continuation_chords: Sequence | None = None, harmony=None, strict: bool = False) -> list | None:
    """One Chord or None per step of `melody` (primer + continuation). primer_chords: per step
    of the primer (a sketch's own), continuation_chords: per step of the continuation (given);
    either None: suggested there (by `harmony`, a loaded HarmonyModel, default the shipped one).
    None when chords were needed and suggesting them failed; with strict (the worker), the
    failure is raised instead, so the job says so rather than going out without its chords."""
    from model.harmony.suggest import suggest_chords  # noqa: PLC0415 - numpy and the HMM table, loaded once

    continuation_steps = len(melody) - primer_steps
    suggested = None
    if primer_chords is None or continuation_chords is None:
        try:
            suggested = suggest_chords(list(melody), model=harmony)
        except Exception:  # the CLI's melody still goes out: suggested chords are an extra there
            if strict:
                raise
            log.exception("suggesting chords failed; no chords where none were given")
            if primer_chords is None and continuation_chords is None:
                return None
            suggested = [None] * len(melody)
    under_primer = list(primer_chords)[:primer_steps] if primer_chords is not None else suggested[:primer_steps]
    under_primer += [None] * (primer_steps - len(under_primer))
    under_continuation = (list(continuation_chords) if continuation_chords is not None
                          else suggested[primer_steps:])[:continuation_steps]
    under_continuation += [None] * (continuation_steps - len(under_continuation))
    return under_primer + under_continuation
