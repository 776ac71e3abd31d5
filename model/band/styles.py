"""The band's styles: who plays (General MIDI programs), where they sit in the mix (pan, level),
the drum groove, how busy the keys are, and keys or guitar (the melody keeps the user's sound=).
`STYLES` is the table every command, the CLI and the help read; `resolve_style` turns what a user
typed into a name, or raises StyleError listing the styles.

Drum grooves are one bar of (step, General MIDI percussion key, velocity); bass rhythms are the
steps the bass may play (the kick's, so bass and kick lock), the first of a chord always played.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

DEFAULT_STYLE = "pop"
NO_BAND = "none"  # today's sound: the melody over sustained block chords

# General MIDI percussion keys (channel 10)
KICK, SIDE_STICK, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
LOW_TOM, MID_TOM, HIGH_TOM, CRASH, RIDE, TAMBOURINE, SHAKER = 45, 47, 50, 49, 51, 54, 70


@dataclass(frozen=True)
class Style:
    name: str
    description: str  # for !help
    keys_program: int
    keys_name: str  # the track: KEYS or GUITAR
    bass_program: int
    groove: tuple[tuple[int, int, int], ...]  # one bar of (step, drum key, velocity)
    fill_every: int  # a fill leads into every Nth bar (4 or 8)
    bass_steps: tuple[int, ...]  # where the bass may strike in a bar (kick-locked)
    density: tuple[float, float]  # keys notes per bar wanted from the texture library (low, high)
    keys_centre: int  # the keys' register: their phrase centre, at most (MIDI pitch)
    strum: float  # guitar: steps between the strings of a strummed chord (0: struck together)
    velocity: int = 84  # the band's base loudness (melody ~100)
    power: bool = False  # power chords: the keys' thirds and sevenths played as fifths and roots
    pans: tuple[float, float, float] = (-0.3, 0.0, 0.0)  # keys, bass, drums (melody in the middle)
    levels: tuple[float, float, float] = (-6.0, -5.0, -7.0)  # dB relative to the melody


def _hats(key: int, velocity: int, every: int = 2, accent: int = 8) -> tuple[tuple[int, int, int], ...]:
    return tuple((s, key, velocity + (accent if s % 4 == 0 else 0)) for s in range(0, 16, every))


STYLES: dict[str, Style] = {
    "pop": Style(
        "pop", "piano, bass and drums, a steady eighth-note groove",
        0, "KEYS", 33,
        ((0, KICK, 100), (6, KICK, 80), (8, KICK, 95), (4, SNARE, 100), (12, SNARE, 100),
         *_hats(CLOSED_HAT, 62)),
        4, (0, 6, 8, 14), (8.0, 11.0), 64, 0.0,
        pans=(-0.25, 0.0, 0.05), levels=(-5.0, -4.0, -6.0)),
    "ballad": Style(
        "ballad", "soft piano arpeggios, fretless bass, brushes in half time",
        0, "KEYS", 35,
        ((0, KICK, 80), (10, KICK, 55), (8, SIDE_STICK, 70), *_hats(PEDAL_HAT, 40, every=4, accent=0)),
        8, (0, 8, 10), (5.0, 8.0), 62, 0.0, velocity=70,
        pans=(-0.2, 0.0, 0.0), levels=(-4.0, -5.0, -10.0)),
    "rock": Style(
        "rock", "overdriven guitar, picked bass, big drums",
        29, "GUITAR", 34,
        ((0, KICK, 110), (8, KICK, 105), (10, KICK, 90), (4, SNARE, 115), (12, SNARE, 115),
         *_hats(OPEN_HAT, 60, accent=12)),
        4, (0, 2, 4, 6, 8, 10, 12, 14), (10.0, 16.0), 58, 0.25, velocity=96, power=True,
        pans=(-0.5, 0.0, 0.0), levels=(-5.0, -4.0, -4.0)),
    "bossa": Style(
        "bossa", "nylon guitar, upright bass, rim-click bossa nova",
        24, "GUITAR", 32,
        ((0, KICK, 85), (6, KICK, 60), (8, KICK, 85), (14, KICK, 60),
         (0, SIDE_STICK, 70), (6, SIDE_STICK, 70), (12, SIDE_STICK, 70),
         *_hats(SHAKER, 45, accent=10)),
        8, (0, 6, 8, 14), (7.0, 11.0), 60, 0.35, velocity=76,
        pans=(0.35, 0.0, -0.1), levels=(-4.0, -5.0, -9.0)),
    "folk": Style(
        "folk", "strummed steel-string guitar, acoustic bass, light kick and tambourine",
        25, "GUITAR", 32,
        ((0, KICK, 85), (8, KICK, 80), (4, TAMBOURINE, 70), (12, TAMBOURINE, 70), (10, TAMBOURINE, 45)),
        8, (0, 8), (8.0, 13.0), 60, 0.45, velocity=80,
        pans=(-0.35, 0.0, 0.1), levels=(-3.0, -6.0, -10.0)),
    NO_BAND: Style(
        NO_BAND, "no band: the melody over sustained chords, as before",
        5, "CHORDS", 0, (), 0, (), (0.0, 0.0), 60, 0.0),
}
STYLE_NAMES = tuple(STYLES)
ALIASES = {"default": "pop", "latin": "bossa", "bossanova": "bossa", "bossa-nova": "bossa", "acoustic": "folk",
           "slow": "ballad", "off": NO_BAND, "plain": NO_BAND, "chords": NO_BAND}


class StyleError(ValueError):
    """A style name that is not one of STYLES, with a message listing them."""


def style_list() -> str:
    """ "pop (the default), ballad, rock, bossa, folk, none" """
    return ", ".join(f"{name} (the default)" if name == DEFAULT_STYLE else name for name in STYLES)


def resolve_style(text: str | None) -> str:
    """What a user typed (any case, aliases such as latin, acoustic) -> a key of STYLES; None or
    "" -> the default. Raises StyleError naming the styles and a close spelling."""
    if text is None or not text.strip():
        return DEFAULT_STYLE
    word = text.strip().lower().replace(" ", "-")
    word = ALIASES.get(word, word)
    if word in STYLES:
        return word
    close = difflib.get_close_matches(word, [*STYLES, *ALIASES], n=1, cutoff=0.6)
    hint = f" Did you mean {ALIASES.get(close[0], close[0])}?" if close else ""
    raise StyleError(f'I have no style called "{text.strip()}".{hint} Styles: {style_list()}.')
