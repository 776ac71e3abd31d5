"""Lyrics set to the melody (model/lyrics/): syllables and stress of tricky words, the rhythm plan,
the constrained sampler on the shipped weights, lyric events in the MIDI, and bad input."""

from __future__ import annotations

import io

import mido
import pytest

from model.lab.lyrics_eval import LINES, line_scores, load_lines, prompts
from model.lyrics.rhythm import (
    BREATH,
    END,
    HOLD,
    ONSET,
    QUIET,
    bars_needed,
    choose_bars,
    line_bars,
    plan_rhythm,
)
from model.lyrics.setting import LyricSetting, lead_in, set_lyrics
from model.lyrics.syllables import (
    MAX_LYRICS_CHARS,
    LyricsError,
    guess_syllable_count,
    parse_lyrics,
    spell_number,
    split_written,
)
from model.music.events import STEPS_PER_BAR, events_to_notes
from model.music.midi_io import write_midi
from model.music.primer import primer_from_text

WALKING = "Walking down the empty street / every window dark"


def display(text: str) -> str:
    return parse_lyrics(text).display()


# -- syllables and stress --------------------------------------------------------------------------
def test_the_split_shows_stress_in_capitals():
    assert display(WALKING) == "WALK-ing DOWN the EMP-ty STREET / EV-e-ry WIN-dow DARK"
    assert parse_lyrics(WALKING).counts() == [7, 6]


@pytest.mark.parametrize("word, shown", [
    ("tonight", "to-NIGHT"),  # stress on the second syllable
    ("beautiful", "BEAU-ti-ful"),
    ("every", "EV-e-ry"),  # CMUdict's first pronunciation: three syllables
    ("fire", "FI-re"),  # two, as CMUdict's first pronunciation has it
    ("TONIGHT", "to-NIGHT"),  # capitals
    ("don't", "don't"),  # an apostrophe, a function word: unstressed
    ("rock'n'roll", "ROCK-'n'-ROLL"),
    ("lovin'", "LO-vin"),  # a dropped g
    ("café", "ca-FE"),  # accents dropped for the look-up
    ("well-known", "WELL KNOWN"),  # hyphenated: two words
    ("21", "TWEN-ty ONE"),
    # more syllables than pyphen's pieces: a vowel run sung as two, a final -sm, never a lone consonant
    ("video", "VI-de-o"),  # was VI-d-eo
    ("chaos", "CHA-os"),  # was CH-aos
    ("prism", "PRIS-m"),  # was PR-ism
    ("antidisestablishmentarianism", "an-ti-dis-es-tab-lish-men-TAR-i-an-is-m"),  # was lis-h-MEN: stress shown early
    ("1999", "NINE-TEEN NINE-ty NINE"),  # a year as sung
    ("3rd", "THIRD"),
    ("the", "the"),
    ("heart,", "HEART"),  # punctuation dropped
])
def test_tricky_words(word, shown):
    assert display(word) == shown


def test_unknown_words_fall_back_to_rules_and_are_named():
    lyrics = parse_lyrics("zorblaxing calibanic")
    assert lyrics.display() == "ZOR-blax-ing cal-i-BAN-ic"
    assert lyrics.guessed() == ["zorblaxing", "calibanic"]
    assert guess_syllable_count("grable") == 2 and guess_syllable_count("flome") == 1


def test_numbers_are_spelled():
    assert [spell_number(n) for n in (0, 13, 21, 100, 342, 2026, 1_000_001)] == [
        "zero", "thirteen", "twenty-one", "one hundred", "three hundred forty-two", "two thousand twenty-six",
        "one million one"]


def test_written_pieces_keep_every_letter():
    for word, count in (("skyscraper", 3), ("every", 3), ("tv", 2), ("www", 9), ("a", 1)):
        pieces = split_written(word, count)
        assert len(pieces) == count and "".join(pieces) == word


def test_markdown_is_removed_and_empty_lines_dropped():
    assert display("**Walking** _down_ the `empty` ||street|| / / > every window dark") == (
        "WALK-ing DOWN the EMP-ty STREET / EV-e-ry WIN-dow DARK")
    assert len(parse_lyrics("one\n\n\ntwo\r\nthree").lines) == 3


@pytest.mark.parametrize("text, expected", [
    ("こんにちは世界", "Latin letters"),
    ("Привет мир", "Cyrillic"),
    ("I ❤️ you", "emoji"),
    ("hello <:party:123456>", "emoji"),
    ("see https://example.com", "link"),
    ("hey <@1234>", "mention"),
    ("la " * 1000, f"at most {MAX_LYRICS_CHARS:,}"),
    (" / / ... !!", "no words"),
    ("pfft", "no vowels"),
    ("x" * 50, "not a word"),
    ("1234567890123", "too long a number"),
])
def test_bad_words_get_a_reason(text, expected):
    with pytest.raises(LyricsError, match=expected):
        parse_lyrics(text)


# -- the rhythm plan -----------------------------------------------------------------------------
def test_bars_per_line_and_the_default_bars():
    assert line_bars([7, 6], 4) == [2, 2]
    assert line_bars([5, 9, 6], 8) == [2, 3, 3]  # the bars left over go to the longest lines
    lyrics = parse_lyrics(WALKING)
    assert choose_bars(lyrics, None, 32) == 4  # two bars a line
    assert choose_bars(lyrics, 8, 32) == 8
    assert choose_bars(parse_lyrics(" ".join(["walking"] * 10)), None, 32) == 4  # 20 syllables: more bars


def test_too_many_syllables_say_how_many_bars_they_need():
    lyrics = parse_lyrics(" ".join(["beautiful"] * 12))  # 36 syllables
    assert bars_needed(lyrics.counts()) == 3
    with pytest.raises(LyricsError, match=r"need at least 3 bars \(bars=3\)"):
        choose_bars(lyrics, 2, 32)
    with pytest.raises(LyricsError, match="more than the 4 bars"):
        choose_bars(parse_lyrics(" / ".join(["love"] * 5)), None, 4)  # five lines, at most four bars


@pytest.mark.parametrize("seed", range(6))
def test_a_plan_sets_each_syllable_once_stresses_on_beats_and_breathes(seed):
    lyrics = parse_lyrics(WALKING + " / I remember Sunday mornings")
    plan = plan_rhythm(lyrics, 6, seed=seed)
    codes = plan.step_codes()
    assert len(codes) == plan.steps == 6 * STEPS_PER_BAR
    assert [len([n for n in plan.notes if n.line == k]) for k in range(3)] == lyrics.counts()
    assert codes.count(ONSET) == len(plan.notes)
    for number in range(len(lyrics.lines)):
        notes = [n for n in plan.notes if n.line == number]
        start, end = plan.line_starts[number], plan.line_starts[number] + 2 * STEPS_PER_BAR
        assert start <= notes[0].start and notes[-1].end <= end - BREATH  # a breath after each line
        assert all(codes[t] == HOLD for t in range(notes[-1].end + 1, end))
        lengths = [n.end - n.start for n in notes]
        assert lengths[-1] == max(lengths)  # a line ends on its longest note
        for note in notes:
            position = (note.start - start) % STEPS_PER_BAR
            if note.syllable.strong:
                assert position % 4 == 0, (note, position)
            if note.syllable.weak:
                assert position % 8 != 0, (note, position)


def test_plans_differ_by_seed_and_repeat_for_the_same_seed():
    lyrics = parse_lyrics(WALKING)
    assert plan_rhythm(lyrics, 4, seed=1) == plan_rhythm(lyrics, 4, seed=1)
    assert len({tuple(n.start for n in plan_rhythm(lyrics, 4, seed=s).notes) for s in range(8)}) > 1


def test_a_primer_ending_inside_a_bar_leads_in_to_the_next_bar_line():
    setting = set_lyrics(WALKING, primer_from_text("C4 E4 G4").events, None, 2, 0)  # 3 beats
    plan = setting.plans[0]
    assert setting.primer_steps == 12 and plan.lead_in == lead_in(12) == 4
    assert plan.step_codes()[:4] == [QUIET] * 4 and plan.line_starts[0] == 4
    assert (setting.primer_steps + plan.line_starts[1]) % STEPS_PER_BAR == 0  # on a bar line too


def test_melisma_gives_a_syllable_a_second_slurred_note():
    lyrics = parse_lyrics("hold me now / love")
    slurs = 0
    for seed in range(10):
        plan = plan_rhythm(lyrics, 4, melisma=True, seed=seed)
        assert len(plan.syllable_notes()) == 4
        assert [text for _, text in plan.lyric_events()] == [" hold", " me", " now", " love"]
        slurred = [i for i, n in enumerate(plan.notes) if n.syllable is None]
        assert all(plan.notes[i].start == plan.notes[i - 1].end for i in slurred)  # legato, one syllable
        slurs += len(slurred)
    assert slurs >= 5


def test_karaoke_syllables_hyphenate_within_words():
    plan = plan_rhythm(parse_lyrics("walking tonight"), 2)
    assert [text for _, text in plan.lyric_events()] == [" walk-", "ing", " to-", "night"]


# -- the constrained sampler on the shipped weights --------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    from model.melody.sampling import load_model

    return load_model()


def test_the_sampler_sets_every_syllable_on_its_planned_onset(shipped):
    from model.melody.sampling import SamplingOptions, continue_melodies, prepare_primer

    texts = prompts(load_lines(LINES))[:6]
    primers = [prepare_primer(primer_from_text(notes).events) for notes in ("C4 E4 G4 A4", "A3 C4 E4", "G4")]
    settings = [set_lyrics(text, primers[k % 3], None, 2, k) for k, text in enumerate(texts)]
    options = [SamplingOptions(bars=s.bars, variations=2, seed=k, rhythm=s.rhythm) for k, s in enumerate(settings)]
    answers = continue_melodies(shipped, [primers[k % 3] for k in range(len(texts))], options)
    for setting, continuations in zip(settings, answers):
        for v, continuation in enumerate(continuations):
            one = LyricSetting(setting.lyrics, setting.bars, setting.primer_steps, (setting.plans[v],))
            for row in line_scores(one, continuation):
                assert row["exact"] and row["strong_on_beat"] == row["strong"]
            onsets = [n.start for n in events_to_notes(continuation)]
            assert [n.start for n in setting.plans[v].notes] == [t for t in onsets if t >= setting.plans[v].lead_in]


def test_without_words_the_sampler_is_unchanged(shipped):
    from model.melody.sampling import SamplingOptions, continue_melodies, prepare_primer

    primer = prepare_primer(primer_from_text("C4 E4 G4 A4").events)
    plain = continue_melodies(shipped, [primer], [SamplingOptions(bars=2, variations=1, seed=3)])
    free = SamplingOptions(bars=2, variations=1, seed=3, rhythm=((0,) * 32,))  # FREE everywhere
    assert continue_melodies(shipped, [primer], [free]) != [[[]]]
    assert plain == continue_melodies(shipped, [primer], [SamplingOptions(bars=2, variations=1, seed=3)])


def test_a_rhythm_of_the_wrong_length_is_refused():
    from model.melody.sampling import SamplingOptions

    with pytest.raises(ValueError, match="rhythm"):
        SamplingOptions(bars=2, variations=1, rhythm=((0,) * 16,)).check()


# -- the words in the MIDI file ------------------------------------------------------------------
def test_the_midi_carries_one_lyric_event_per_syllable_at_its_note():
    primer = primer_from_text("C4 E4 G4 A4").events[:-1]
    setting = set_lyrics(WALKING, primer, None, 1, 0)
    continuation = []
    codes = setting.rhythm[0]
    for code in codes:  # a melody that follows the plan, one pitch
        continuation.append({ONSET: 2 + 28, END: 1}.get(code, 0))
    events = primer + continuation
    data = write_midi(events, 120, lyrics=setting.placements(0))
    midi = mido.MidiFile(file=io.BytesIO(data))
    melody = midi.tracks[1]
    tick, lyric_ticks, note_ticks, texts = 0, [], set(), []
    for message in melody:
        tick += message.time
        if message.type == "lyrics":
            lyric_ticks.append(tick)
            texts.append(message.text)
        elif message.type == "note_on" and message.velocity:
            note_ticks.add(tick)
    assert "".join(texts) == " walk-ing down the emp-ty street ev-e-ry win-dow dark"
    assert len(texts) == 13 and set(lyric_ticks) <= note_ticks
    assert all(t >= len(primer) * midi.ticks_per_beat // 4 for t in lyric_ticks)


def test_the_cli_sets_words_and_refuses_bad_ones(tiny_weights, tmp_path, capsys):
    from model import generate

    args = ["C4 E4 G4 A4", "--variations", "1", "--weights", str(tiny_weights), "--out", str(tmp_path)]
    assert generate.main([*args, "--lyrics", WALKING]) == 0
    assert "words: WALK-ing DOWN the EMP-ty STREET / EV-e-ry WIN-dow DARK (4 bars)" in capsys.readouterr().out
    midi = mido.MidiFile(tmp_path / "variation-1.mid")
    texts = [m.text for track in midi.tracks for m in track if m.type == "lyrics"]
    assert len(texts) == 13 and texts[:2] == [" walk-", "ing"]
    assert generate.main([*args, "--lyrics", WALKING, "--bars", "1"]) == 2
    assert "need at least 2 bars" in capsys.readouterr().err
    assert generate.main([*args, "--lyrics", "Привет"]) == 2
    assert "Cyrillic" in capsys.readouterr().err
