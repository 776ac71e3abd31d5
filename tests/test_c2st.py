"""The two-sample test's features (model/lab/c2st.py, model/melody/critic.py) hear what they claim to."""

from __future__ import annotations

import pytest

from model.lab import c2st
from model.music.primer import parse_notes

BAR_1, BAR_2 = parse_notes("C4 E G E")[:16], parse_notes("D4 F A F")[:16]
CONTEXT = (BAR_1 + BAR_2) * 4  # 8 bars


def named(context, piece) -> dict[str, float]:
    values = c2st.features(context, piece)
    return dict(zip(c2st.FEATURE_NAMES, values))


def test_a_repeat_of_the_context_copies_its_bars_and_patterns():
    copy = named(CONTEXT, CONTEXT)
    assert copy["bars copying context"] == 1.0 and copy["context 4-note patterns"] == 1.0
    assert copy["mean pitch vs context"] == 0.0 and copy["notes per bar"] == 4.0


def test_new_material_copies_nothing_and_its_lift_is_heard():
    new = parse_notes("G4 B D5 B4 A4 C5 E C")[:32] * 4  # a fifth up, other shapes
    row = named(CONTEXT, new)
    assert row["bars copying context"] == 0.0 and row["bars re-using context"] == 0.0
    assert row["mean pitch vs context"] > 4 and row["top vs context peak"] == pytest.approx(7.0)  # E5 over A4
    assert row["longest run"] == 1 and row["repeated notes"] == 0.0


def test_stuck_notes_and_long_rests():
    stuck = parse_notes("E4 " * 8 + "r:8 C4:4")
    row = named(CONTEXT, stuck + [0] * (c2st.STEPS - len(stuck)))
    assert row["longest run"] == 8 and row["longest rest"] >= 32


def test_the_unseen_features_hear_a_copy_and_a_stuck_take():
    """The second set (the critic never learns from it) hears what it claims to as well."""
    values = c2st.unseen_features(CONTEXT, CONTEXT)  # names the features on its first call
    copy = dict(zip(c2st.UNSEEN_NAMES, values))
    assert copy["longest run of bars copying context"] == 8 and copy["pitch classes shared with the context"] == 1.0
    assert copy["notes per bar spread"] == 0.0 and copy["mean length vs context"] == 0.0
    stuck = parse_notes("E4:0.5 " * 16)[:32] + [0] * (c2st.STEPS - 32)  # two bars of one pitch, then silence
    row = dict(zip(c2st.UNSEEN_NAMES, c2st.unseen_features(CONTEXT, stuck)))
    assert row["longest run of bars copying context"] == 0 and row["fewest notes in a bar"] == 0
    assert row["most notes in a bar"] == 8 and row["steps (<= 2)"] == 1.0 and row["rising"] == 0.0
