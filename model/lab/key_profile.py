"""Learn model/music/keys.py's key profiles from melodies with annotated keys; prints the constants.

    python -m model.lab.key_profile path/to/pop909 [--folk FOLDER]

A profile is the share of melody duration on each pitch class above a key's tonic, in 2-bar
windows: what model.music.keys.detect_key compares a primer with. POP909: the training split only (the
held-out songs stay unseen), windows at bars 0, 8 and 16 of each song, each with the key that
key_audio.txt gives where the window ends. Folk (`python -m model.lab.folk FOLDER --training`, none of
the fink0 tunes of the folk check): windows at bars 0, 2 and 4; a signature names a major key, so
a tune is read as its relative minor where its whole melody correlates better with the
Krumhansl-Kessler minor profile. Each window counts once, whatever its length; the folk windows
together weigh as much as the pop windows; every class starts at 0.01 windows, so none is
impossible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from model.lab.data import load_songs, split
from model.lab.musical_eval import PRIMER_STEPS, _melody_offset, parse_key_label, song_key_label
from model.music.keys import pitch_class_weights

# Krumhansl-Kessler probe-tone profiles, index 0 = tonic: only to tell a folk tune's mode.
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
POP_WINDOW_BARS = (0, 8, 16)
FOLK_WINDOW_BARS = (0, 2, 4)
FLOOR = 0.01  # windows' worth of duration every pitch class starts with


def pitch_class_share(events: list[int]) -> np.ndarray:
    """Share of the sounded steps per pitch class (all zero without notes)."""
    weights = np.array(pitch_class_weights(events))
    return weights / weights.sum() if weights.sum() else weights


def pop_windows(folder: Path) -> list[tuple[np.ndarray, int, bool]]:
    """(pitch-class shares, tonic, minor) of 2-bar windows of the training songs."""
    windows = []
    for song in split(load_songs(folder)[0])[0]:
        events, _ = song.aligned()
        start_step = _melody_offset(folder / song.song_id) + song.downbeat_start()
        for bar in POP_WINDOW_BARS:
            start = bar * 16
            if start + PRIMER_STEPS > len(events):
                break
            label = song_key_label(folder / song.song_id, start_step + start + PRIMER_STEPS)
            shares = pitch_class_share(events[start : start + PRIMER_STEPS].tolist())
            if label is not None and shares.any():
                windows.append((shares, *parse_key_label(label)))
    return windows


def folk_windows(folder: Path) -> list[tuple[np.ndarray, int, bool]]:
    windows = []
    for song in load_songs(folder)[0]:
        events, _ = song.aligned()
        label = song_key_label(folder / song.song_id, 0)
        if label is None:
            continue
        major, _ = parse_key_label(label)
        whole = pitch_class_share(events.tolist())
        relative = (major + 9) % 12
        minor = _correlation(whole, KK_MINOR, relative) > _correlation(whole, KK_MAJOR, major)
        for bar in FOLK_WINDOW_BARS:
            start = bar * 16
            if start + PRIMER_STEPS > len(events):
                break
            shares = pitch_class_share(events[start : start + PRIMER_STEPS].tolist())
            if shares.any():
                windows.append((shares, relative if minor else major, minor))
    return windows


def _correlation(shares: np.ndarray, profile: tuple, tonic: int) -> float:
    return float(np.corrcoef(shares, np.roll(profile, tonic))[0, 1])


def learn(pop: list, folk: list) -> tuple[np.ndarray, np.ndarray]:
    """(major, minor) profiles in percent."""
    sums = {False: np.full(12, FLOOR), True: np.full(12, FLOOR)}
    for windows, weight in ((pop, 1.0), (folk, len(pop) / len(folk) if folk else 0.0)):
        for shares, tonic, minor in windows:
            sums[minor] += weight * np.roll(shares, -tonic)
    return tuple(100 * sums[m] / sums[m].sum() for m in (False, True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pop909", type=Path)
    parser.add_argument("--folk", type=Path, help="folk tunes written by `python -m model.lab.folk OUT --training`")
    args = parser.parse_args(argv)
    pop = pop_windows(args.pop909)
    folk = folk_windows(args.folk) if args.folk else []
    major, minor = learn(pop, folk)
    print(f"# {len(pop)} POP909 windows, {len(folk)} folk windows")
    for name, profile in (("MAJOR_PROFILE", major), ("MINOR_PROFILE", minor)):
        print(f"{name} = ({', '.join(f'{v:.2f}' for v in profile)})")


if __name__ == "__main__":
    main()
