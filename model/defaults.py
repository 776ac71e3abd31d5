"""The shipped weights and the limits of a sampling request, in a module that does not import
torch: the bot process checks a user's options against these same numbers."""

from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "melody.pt"  # shipped, loaded by default

MAX_BARS = 32  # continuation length limit per request, in bars
MAX_VARIATIONS = 16  # continuations per request
TEMPERATURE_RANGE = (0.05, 3.0)  # inclusive
TOP_P_RANGE = (0.05, 1.0)  # inclusive
MAX_SEED = 2**31 - 1  # inclusive; seeds start at 0
MAX_REST_LIMIT = 256  # steps; the largest max_rest a request may set
