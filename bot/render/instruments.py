"""The General MIDI instruments a songwriter can pick by name for the audio preview."""

from __future__ import annotations

from bot.render.errors import RenderError

# Name -> General MIDI program (0-based), as MIDI files and FluidSynth count them.
INSTRUMENTS = {
    "piano": 0,  # Acoustic Grand Piano
    "electric piano": 4,  # Electric Piano 1
    "marimba": 12,
    "organ": 16,  # Drawbar Organ
    "guitar": 24,  # Acoustic Guitar (nylon)
    "bass": 33,  # Electric Bass (finger)
    "strings": 48,  # String Ensemble 1
    "sax": 65,  # Alto Sax
    "flute": 73,
    "synth": 80,  # Lead 1 (square)
}
DEFAULT_INSTRUMENT = "piano"
ALIASES = {
    "keys": "piano",
    "grand piano": "piano",
    "acoustic piano": "piano",
    "epiano": "electric piano",
    "e piano": "electric piano",
    "rhodes": "electric piano",
    "acoustic guitar": "guitar",
    "nylon guitar": "guitar",
    "bass guitar": "bass",
    "electric bass": "bass",
    "string": "strings",
    "string ensemble": "strings",
    "saxophone": "sax",
    "alto sax": "sax",
    "lead": "synth",
    "synth lead": "synth",
}


def resolve_instrument(name: str | None) -> str:
    """A songwriter's instrument name (any case, "-" or "_" for spaces, a few aliases) -> a key of
    INSTRUMENTS; None gives the default (piano)."""
    if name is None:
        return DEFAULT_INSTRUMENT
    key = " ".join(name.lower().replace("-", " ").replace("_", " ").split())
    key = ALIASES.get(key, key)
    if key not in INSTRUMENTS:
        raise RenderError(f"unknown instrument {name!r}; choose one of: {', '.join(INSTRUMENTS)}")
    return key
