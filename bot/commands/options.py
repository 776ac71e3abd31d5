"""Options: the name=value words of a command (also name:value and --name value). `OPTIONS` is the
table of what a user may write, with aliases and an example each; `parse_options` splits a command
line into plain words and checked `Options`, raising `CommandError` with the allowed range (and a
close spelling) for anything it cannot use. The ranges and defaults live here too, so the parser,
the handler and the help text agree.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

from bot.commands.replies import CommandError
from bot.render import INSTRUMENTS, RenderError, resolve_instrument
from bot.settings import Settings
from model.band.styles import StyleError, resolve_style
from model.defaults import (  # no torch: the worker's limits
    BPM_RANGE,
    MAX_SEED,
    TEMPERATURE_RANGE,
    TOP_P_RANGE,
)
from model.music.chords import ChordError, chords_per_step, lead_sheet, parse_lead_sheet
from model.music.events import STEPS_PER_BAR

RANDOM_SEEDS = 100_000  # a fresh seed is below this: short enough to read out and retype
TRUE_WORDS = ("on", "yes", "true", "1", "keep", "in")
FALSE_WORDS = ("off", "no", "false", "0", "free", "out", "any")


@dataclass(frozen=True)
class Option:
    name: str  # as the user writes it
    field: str  # in Options
    aliases: tuple[str, ...]
    example: str


OPTIONS = (
    Option("bars", "bars", (), "bars=8"),
    Option("temp", "temperature", ("temperature", "wild", "wildness"), "temp=1.1"),
    Option("bpm", "bpm", ("tempo",), "bpm=96"),
    Option("sound", "instrument", ("instrument",), "sound=guitar"),
    Option("seed", "seed", (), "seed=42"),
    Option("variations", "variations", ("n", "vars", "variation"), "variations=3"),
    Option("topp", "top_p", ("top_p", "top-p", "nucleus"), "topp=0.9"),
    Option("key", "keep_key", ("scale",), "key=off"),
    Option("chords", "chords", ("chord", "harmony"), 'chords="C | G | Am F | F"'),
    Option("style", "style", ("band",), "style=rock"),
    Option("lyrics", "lyrics", ("words", "lyric"), 'lyrics="walking down the empty street / every window dark"'),
    Option("melisma", "melisma", (), "melisma=on"),
    Option("form", "form", ("sections", "structure"), "form=BA"),
)
LYRICS_OFF = "off"  # Options.lyrics for lyrics=off: no words (an !again or !extend of a job with words)
CHORDS_OFF = "off"  # Options.chords for chords=off: no harmony at all
FORM_OFF = "off"  # Options.form for form=off: the form plan draws the sections again (an !again or !extend)
_OPTION_FIELDS = {alias: option.field for option in OPTIONS for alias in (option.name, *option.aliases)}
_OPTION_TOKEN = re.compile(r"-{0,2}(?P<name>[A-Za-z][A-Za-z_-]*)(?P<sep>[=:])(?P<value>.*)", re.S)
_SKETCH_OPTIONS = ("file", "midi", "sketch")  # terminal only: a local MIDI file as the primer


@dataclass(frozen=True)
class Options:
    """What the user set; None = not given (the default or the parent job's value applies)."""

    bars: int | None = None
    temperature: float | None = None
    bpm: float | None = None
    instrument: str | None = None
    seed: int | None = None
    variations: int | None = None
    top_p: float | None = None
    keep_key: bool | None = None
    chords: str | None = None  # a lead sheet (normalised), or CHORDS_OFF
    style: str | None = None  # a key of model.band.styles.STYLES
    lyrics: str | None = None  # words as typed (checked for script, emoji, length), or LYRICS_OFF
    melisma: bool | None = None
    form: str | None = None  # the sections asked for (model.melody.form.parse_form checks it), or FORM_OFF


@dataclass
class Parsed:
    words: list[str]  # the tokens that are not options (notes, job ids, numbers)
    options: Options
    sketch_path: str | None = None


def known_options() -> str:
    return ", ".join(
        option.name + (f" ({', '.join(option.aliases)})" if option.aliases else "") for option in OPTIONS
    )


def split_tokens(text: str) -> list[str]:
    """Words of a command line; quotes group words (sound="electric piano"), `name = value` is
    one option. Falls back to plain splitting when quotes do not pair up."""
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    text = re.sub(r"\s*=\s*", "=", text)
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def parse_options(text: str, settings: Settings, *, allow_files: bool = False) -> Parsed:
    """Separate options from other words and check every option's value."""
    text, lyrics = _take_lyrics(text)
    tokens = split_tokens(text)
    words: list[str] = []
    values: dict[str, Any] = {} if lyrics is None else {"lyrics": _lyrics_value(lyrics)}
    sketch_path = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        match = _OPTION_TOKEN.fullmatch(token)
        if token.startswith("--") and match is None and len(token) > 2:  # --name value
            name = token[2:]
            if i >= len(tokens):
                raise CommandError(f"`{token}` needs a value after it, e.g. {_example(name)}")
            match = _OPTION_TOKEN.fullmatch(f"{name}={tokens[i]}")
            i += 1
        if match is None:
            words.append(token)
            continue
        name, value = match["name"].lower(), match["value"].strip()
        if match["sep"] == ":" and name not in _OPTION_FIELDS and name not in _SKETCH_OPTIONS:
            words.append(token)  # a note with a length, e.g. C4:2
            continue
        if name in _SKETCH_OPTIONS:
            if not allow_files:
                raise CommandError("Attach the .mid file to your message instead of naming a file.")
            sketch_path = value
            continue
        canonical = _OPTION_FIELDS.get(name)
        if canonical is None:
            raise CommandError(_unknown_option(name))
        if canonical in ("chords", "lyrics"):  # unquoted, the sheet runs to the next option: chords=C | G | Am F
            while i < len(tokens) and _OPTION_TOKEN.fullmatch(tokens[i]) is None:
                value += " " + tokens[i]
                i += 1
            value = value.strip()
        if value == "":
            raise CommandError(f"`{name}=` needs a value, e.g. {_example(canonical)}")
        values[canonical] = _lyrics_value(value) if canonical == "lyrics" else _option_value(canonical, name, value,
                                                                                              settings)
    return Parsed(words, Options(**values), sketch_path)


def _example(name: str) -> str:
    field_name = _OPTION_FIELDS.get(name.lower(), name)
    return next((option.example for option in OPTIONS if option.field == field_name), f"{name}=...")


def _unknown_option(name: str) -> str:
    close = difflib.get_close_matches(name, list(_OPTION_FIELDS), n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f" Did you mean `{next(o.name for o in OPTIONS if o.field == _OPTION_FIELDS[close[0]])}`?"
    return f"I don't know the option `{name}`.{hint} Options: {known_options()}."


def _option_value(canonical: str, name: str, text: str, settings: Settings):
    """Convert and range-check one option; CommandError says what is allowed."""
    if canonical == "bars":
        value = _number(name, text, int)
        if not 1 <= value <= settings.max_bars:
            raise CommandError(f"`{name}={text}` is out of range: the continuation can be 1 to {settings.max_bars} "
                               f"bars long.")
        return value
    if canonical == "temperature":
        value = _number(name, text, float)
        low, high = TEMPERATURE_RANGE
        if not low <= value <= high:
            raise CommandError(f"`{name}={text}` is out of range: choose {low} (safe) to {high:g} (wild); "
                               f"1 is the model's own.")
        return value
    if canonical == "bpm":
        value = _number(name, text, float)
        if not BPM_RANGE[0] <= value <= BPM_RANGE[1]:
            raise CommandError(f"`{name}={text}` is out of range: the tempo can be {BPM_RANGE[0]:g} to "
                               f"{BPM_RANGE[1]:g} BPM.")
        return value
    if canonical == "instrument":
        try:
            return resolve_instrument(text)
        except RenderError:
            raise CommandError(f"I have no instrument called `{text}`. Choose one of: {', '.join(INSTRUMENTS)} "
                               f"(write two words with a dash, e.g. sound=electric-piano).") from None
    if canonical == "seed":
        value = _number(name, text, int)
        if not 0 <= value <= MAX_SEED:
            raise CommandError(f"`{name}={text}` is out of range: a seed is a whole number from 0 to {MAX_SEED}.")
        return value
    if canonical == "variations":
        value = _number(name, text, int)
        most = max_variations(settings)
        if not 1 <= value <= most:
            raise CommandError(f"`{name}={text}` is out of range: I can make 1 to {most} variations at a time.")
        return value
    if canonical == "top_p":
        value = _number(name, text, float)
        if not TOP_P_RANGE[0] <= value <= TOP_P_RANGE[1]:
            raise CommandError(f"`{name}={text}` is out of range: top-p is a share from {TOP_P_RANGE[0]} to "
                               f"{TOP_P_RANGE[1]:g}, e.g. topp=0.9.")
        return value
    if canonical == "chords":
        if text.lower() in FALSE_WORDS + ("none",):
            return CHORDS_OFF
        try:
            bars = parse_lead_sheet(text)
        except ChordError as error:
            raise CommandError(f"I can't read those chords: {error}. Write bars split by `|`, e.g. "
                               f"{_example('chords')}.") from None
        if not bars:
            raise CommandError(f"`{name}=` needs chords, e.g. {_example('chords')}, or chords=off.")
        return lead_sheet(chords_per_step(bars, len(bars) * STEPS_PER_BAR))
    if canonical == "style":
        try:
            return resolve_style(text)
        except StyleError as error:
            raise CommandError(str(error).replace('"', "`")) from None
    if canonical == "form":  # its bars are checked with the job's (handler._submit)
        return FORM_OFF if text.lower() in FALSE_WORDS + ("none",) else text.upper()
    if canonical == "melisma":
        word = text.lower()
        if word in TRUE_WORDS + FALSE_WORDS:
            return word in TRUE_WORDS
        raise CommandError(f"`{name}={text}`: say melisma=on (a syllable may take two slurred notes) or melisma=off.")
    if canonical == "keep_key":
        word = text.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise CommandError(f"`{name}={text}`: say key=on (keep to the melody's key) or key=off (any note).")
    raise AssertionError(canonical)


_LYRICS_START = re.compile(r"(?:^|(?<=\s))-{0,2}(?:lyrics|lyric|words)\s*[=:]\s*", re.I)
_QUOTES = {'"': '"', "\u201c": "\u201d", "\u201e": "\u201c", "'": "'", "\u2018": "\u2019", "```": "```"}


def _take_lyrics(text: str) -> tuple[str, str | None]:
    """(the command without its lyrics= option, the words or None). Words are quoted ("...",
    curly quotes, '...', ```...```) or run to the next option; they may hold apostrophes, "/"
    and new lines. CommandError when their quotes do not close."""
    found = _LYRICS_START.search(text)
    if found is None:
        return text, None
    rest = text[found.end():]
    opener = next((q for q in sorted(_QUOTES, key=len, reverse=True) if rest.startswith(q)), None)
    if opener is not None:
        closer = _QUOTES[opener]
        body = rest[len(opener):]
        if closer == "'":  # an apostrophe inside (don't) is no closing quote: one is followed by a space or the end
            close = next((m.start() for m in re.finditer(r"'(?=\s|$)", body)), -1)
        else:
            close = body.find(closer)
            if close < 0 and opener == '"':
                close = body.find("\u201d")
        if close < 0:
            raise CommandError(f"The quotes around your lyrics don't close: end them with {closer}, e.g. "
                               f"{_example('lyrics')}.")
        return text[: found.start()] + " " + body[close + len(closer):], body[:close]
    following = re.search(r"\s-{0,2}(" + "|".join(map(re.escape, _OPTION_FIELDS)) + r")\s*[=:]", rest, re.I)
    end = following.start() if following else len(rest)
    return text[: found.start()] + " " + rest[end:], rest[:end]


def without_lyrics(text: str) -> str:
    """The command line without its lyrics= option (the jam sets each round's words itself)."""
    return _take_lyrics(text)[0]


def _lyrics_value(text: str) -> str:
    """The words, checked as far as the bot checks them without the dictionary (script, emoji,
    links, length, empty); their syllables are counted later, off the event loop."""
    from model.lyrics.syllables import LyricsError, split_lines

    text = text.strip()
    if text.lower() in FALSE_WORDS + ("none",):
        return LYRICS_OFF
    if not text:
        raise CommandError(f"`lyrics=` needs words, e.g. {_example('lyrics')}, or lyrics=off.")
    try:
        split_lines(text)
    except LyricsError as error:
        raise CommandError(f"I can't set those words: {error}.") from None
    return text


def _number(name: str, text: str, kind: type):
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise CommandError(f"`{name}={text}`: {name} must be {what}, e.g. {_example(name)}.") from None
    if kind is float and not math.isfinite(value):
        raise CommandError(f"`{name}={text}`: {name} must be a finite number, e.g. {_example(name)}.")
    return value


def max_variations(settings: Settings) -> int:
    return settings.max_variations


def harmony(chords_option: str | None) -> tuple[str | None, bool]:
    """(Job.chords, Job.harmony) for the chords= option: a sheet, none (suggested), or off."""
    if chords_option == CHORDS_OFF:
        return None, False
    return chords_option, True


def rotate_sheet(sheet: str | None, bars: int) -> str | None:
    """The lead sheet as it goes on `bars` bars later (it repeats)."""
    if not sheet or not bars:
        return sheet
    parsed = parse_lead_sheet(sheet)
    shift = bars % len(parsed)
    parsed = parsed[shift:] + parsed[:shift]
    return lead_sheet(chords_per_step(parsed, len(parsed) * STEPS_PER_BAR))
