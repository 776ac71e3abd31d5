"""What the commands are called and how they are written: `COMMANDS` maps every name and alias to
its command (bot/discord_app.py registers the same ones), `USAGE` gives each a one-line usage for
error replies, and `help_text` is the answer to !help, worded for Discord or the terminal.
"""

from __future__ import annotations

from bot.commands import jam_service as jam
from bot.commands.options import TEMPERATURE_RANGE, max_variations
from bot.commands.replies import DISCORD, TERMINAL
from bot.render import INSTRUMENTS
from bot.settings import Settings
from model.band.styles import style_list
from model.defaults import DEFAULT_TOP_P
from model.music.primer import NOTATION

COMMANDS = {  # name or alias -> command; bot/discord_app.py registers the same names and aliases
    "continue": "continue", "cont": "continue",
    "extend": "extend",
    "again": "again", "reroll": "again",
    "votes": "votes",
    "vote": "vote",
    "queue": "queue", "jobs": "queue",
    "cancel": "cancel",
    "channel": "channel",
    "help": "help",
    "jam": "jam", "song": "song", "forget": "forget",  # bot/commands/jam.py
}  # fmt: skip

USAGE = {
    "continue": "{p}continue C4 E4 G4 A4 [bars=8 temp=1.1 ...]  (or attach a .mid sketch)",
    "extend": "{p}extend [job] [variation] [bars=8 ...]",
    "again": "{p}again [job] [options]",
    "votes": "{p}votes [job]",
    "vote": "{p}vote <job> <variation>",
    "queue": "{p}queue",
    "cancel": "{p}cancel [job]",
    "channel": "{p}channel on|off",
    "help": "{p}help",
    "jam": "{p}jam C4 E4 G4 A4 [rounds=4 bars=4 minutes=2 options]  |  {p}jam stop  |  {p}jam status",
    "song": "{p}song [job or jam] [variation]",
    "forget": "{p}forget me",
}


def help_text(settings: Settings, prefix: str, platform: str) -> str:
    p = prefix
    most = max_variations(settings)
    if platform == TERMINAL:
        sketch = f"  {p}continue file=sketch.mid bars=4     (or --midi sketch.mid): continue a MIDI sketch"
        vote = f"  {p}vote <job> <n>   vote for a variation;  {p}votes <job>   the tally"
        end = f"  {p}quit   leave (Ctrl-D and Ctrl-C too)"
    else:
        sketch = f"  {p}continue bars=4   with a .mid file attached: continue your sketch (also /continue)"
        vote = f"  Vote with the number reactions under a result;  {p}votes <job>   the tally"
        end = f"  {p}channel off | on   (members with Manage Channels) silence me here or bring me back"
    lines = [
        "melodybot continues your melody. Type a few notes or give a MIDI sketch:",
        f"  {p}continue C4 E4 G4 A4",
        f"  {p}continue C4 E G A:2 | G:0.5 F:0.5 E D C:2 bars=16 temp=1.2 sound=guitar",
        sketch,
        "Options (name=value):",
        f"  bars={settings.default_bars}      continuation length, 1-{settings.max_bars} bars",
        f"  temp=1.0    wildness, {TEMPERATURE_RANGE[0]} safe to {TEMPERATURE_RANGE[1]:g} wild (also wild=)",
        "  bpm=120     tempo (default: the sketch's)",
        f"  sound=piano {', '.join(INSTRUMENTS)} (also instrument=)",
        f"  style=pop   the band that plays it: {style_list()}",
        "  seed=42     same seed, melody and options: same result",
        f"  variations={most}  how many continuations, 1-{most} (also n=, vars=)",
        f"  topp={DEFAULT_TOP_P:g}   0.05-1: lower keeps to the likeliest notes",
        "  key=on      keep to your melody's key; off: wander",
        '  lyrics="walking down the street / every window dark"  words to sing (melisma=on)',
        "  form=BA     sections: B new, then A (your sketch)",
        "Then:",
        vote,
        f"  {p}extend <job> [n] [bars=..]   continue variation n (default: the vote leader)",
        f"  {p}again <job> [options]        the same melody and settings, a new seed",
        f"  {p}queue   your jobs;  {p}cancel <job>   cancel one",
        end,
        *jam_lines(p),
        "Note notation:",
    ]
    notation = NOTATION if platform == TERMINAL else f"```\n{NOTATION}\n```"
    body = "\n".join(lines)
    return f"```\n{body}\n```\n{notation}" if platform == DISCORD else f"{body}\n{notation}"


def jam_lines(p: str) -> list[str]:
    """The main help's lines about jams and the votes kept (the rest is in jam_help)."""
    return [
        f"  {p}jam C4 E4 G4 A4 rounds=4 minutes=2   the channel writes a song together: {p}help jam",
        f"Votes are kept to improve the model; {p}forget me deletes yours.",
    ]


def jam_help(prefix: str, platform: str) -> str:
    """!help jam: jams, the whole song, the votes kept."""
    p = prefix
    low, high = jam.ROUNDS_RANGE
    vote = f"{p}vote <job> <n>" if platform == TERMINAL else "the number reactions"
    lines = [
        "Jam: the channel writes a song together, round by round.",
        f"  {p}jam C4 E4 G4 A4 rounds={jam.DEFAULT_ROUNDS} bars={jam.DEFAULT_BARS} minutes={jam.DEFAULT_MINUTES:g} "
        "[chords=... and any !continue option, or a .mid sketch]",
        f"  rounds {low}-{high}; minutes {jam.MINUTES_RANGE[0]:g}-{jam.MINUTES_RANGE[1]:g} per round, fractions "
        "too (minutes=0.2 is 12 s)",
        f"Each round posts its variations; vote with {vote}. When the round's time is up, the leader is",
        "appended to the song (a tie: the variation voted for first; no votes: variation 1), and the next",
        "round continues the whole song so far.",
        jam.agreement_rule()[0].upper() + jam.agreement_rule()[1:] + ".",
        f"  {p}jam status   the round, its leader and deadline;  {p}jam stop   its starter or a channel admin",
        "At the end: the whole song as one MIDI (with its chords), one MP3 and an engraved lead sheet (PNG, PDF).",
        f"  {p}song [job|jam] [n]   the whole song of a jam, or of a chain of {p}extend up to that job",
        "Votes, melodies and results are kept to improve the model (preference tuning).",
        f"  {p}forget me   deletes your votes, your finished jobs and your jams.",
    ]
    body = "\n".join(lines)
    return f"```\n{body}\n```" if platform == DISCORD else body
