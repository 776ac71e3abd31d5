"""The shipped weights and the limits of a request, in a module that does not import torch: the
bot and the CLI check a user's input against these same numbers, so the same input gets the same
answer everywhere (the bot's own, stricter policies live in bot/settings.py)."""

from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "melody.pt"  # shipped, loaded by default

MAX_BARS = 32  # continuation length limit per request, in bars
MAX_VARIATIONS = 16  # continuations per request
TEMPERATURE_RANGE = (0.05, 3.0)  # inclusive
TOP_P_RANGE = (0.05, 1.0)  # inclusive
# Inclusive; seeds start at 0. torch's CPU generator keeps only the low 32 bits of a seed, and a
# variation's noise seed is seed * MAX_VARIATIONS + variation (model.melody.sampling.variation_seed): up to
# 2**27 every seed's noise is its own (above, seed s and s + 2**28 sounded the same).
MAX_SEED = 2**27 - 1
MAX_REST_LIMIT = 256  # steps; the largest max_rest a request may set
MAX_CANDIDATES = 8  # continuations sampled per variation; the best of them is kept
DEFAULT_TEMPERATURE = 1.0  # the sampler's defaults (docs/history.md section 1: the musical protocol's sweep)
DEFAULT_TOP_P = 0.98
DEFAULT_CANDIDATES = 3

DEFAULT_BPM = 120.0  # typed notes, and a sketch that states no tempo
BPM_RANGE = (20.0, 300.0)  # inclusive; a sketch's tempo outside is moved to the nearest end
MAX_SKETCH_BYTES = 1024 * 1024  # a MIDI sketch larger than this is refused before parsing
MAX_CONTINUATION_S = 300.0  # seconds of continuation one request may ask for (bars at the tempo)


def continuation_seconds(bars: int, bpm: float) -> float:
    return bars * 4 * 60.0 / bpm


def length_problem(bars: int, bpm: float) -> str | None:
    """Why `bars` at `bpm` cannot be made (a tempo out of range, too long in seconds), or None."""
    if not BPM_RANGE[0] <= bpm <= BPM_RANGE[1]:
        return f"the tempo must be between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g} BPM, not {bpm:g}"
    seconds = continuation_seconds(bars, bpm)
    if seconds <= MAX_CONTINUATION_S:
        return None
    most = max(1, int(MAX_CONTINUATION_S * bpm / 240.0))
    return (f"{bars} bars at {bpm:g} BPM last {seconds / 60:.1f} minutes; the longest continuation is "
            f"{MAX_CONTINUATION_S / 60:g} minutes, so ask for at most {most} bars at this tempo, or a faster tempo")

MAX_CHORD_BARS = 64  # bars of a typed lead sheet ("C | G | Am F"); the list repeats to cover longer music
MAX_CHORDS_PER_BAR = 8  # chords sharing one bar (two sixteenths each at the most)
MAX_LEAD_SHEET_CHARS = 2000  # characters of a typed lead sheet, checked before parsing
