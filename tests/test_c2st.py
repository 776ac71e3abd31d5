"""The two-sample test's features (model/lab/c2st.py) hear what they claim to."""

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
