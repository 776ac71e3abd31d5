"""Sampling continuations with a tiny untrained network (never the shipped weights), and the CLI
that writes them to MIDI files (`model.generate`)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from midi_factory import TrackSpec, make_midi

from model import generate
from model.defaults import MAX_SEED, MAX_VARIATIONS
from model.melody import stepping
from model.melody.network import LOOKBACKS, MelodyNet, NetworkConfig, save_checkpoint
from model.melody.sampling import (
    MAX_PRIMER_STEPS,
    Key,
    SamplingOptions,
    allowed_events,
    continuation_chords,
    continue_melodies,
    detect_key,
    load_model,
    longest_quiet,
    prepare_primer,
    variation_seed,
)
from model.melody.stepping import StepWeights
from model.music.chords import parse_lead_sheet
from model.music.events import (
    NO_EVENT,
    NOTE_OFF,
    NUM_CLASSES,
    STEPS_PER_BAR,
    event_pitch,
    events_to_notes,
    is_note_on,
    note_on,
)
from model.music.midi_io import read_midi
from model.music.primer import parse_notes

C_MAJOR = parse_notes("C4 D E F G A B C")  # two bars
OTHER = parse_notes("A3 C E A C E G:2")  # also two bars
WILD = dict(temperature=3.0, top_p=1.0)  # near-uniform choices: every event gets its chance


def continue_one(model, primer, **options) -> list[list[int]]:
    return continue_melodies(model, [primer], [SamplingOptions(**options)])[0]


def test_shape_and_values(tiny_model):
    continuations = continue_one(tiny_model, C_MAJOR, bars=3, variations=5, seed=1)
    assert len(continuations) == 5
    assert all(len(c) == 3 * STEPS_PER_BAR for c in continuations)
    assert all(0 <= e < NUM_CLASSES for c in continuations for e in c)


def test_requests_get_their_own_lengths_and_counts(tiny_model):
    answers = continue_melodies(tiny_model, [C_MAJOR, OTHER, parse_notes("E4")],
                                [SamplingOptions(bars=1, variations=2), SamplingOptions(bars=2, variations=1),
                                 SamplingOptions(bars=1, variations=3)])
    assert [[len(c) for c in a] for a in answers] == [[16, 16], [32], [16, 16, 16]]


def test_same_seed_same_result_other_seed_other_result(tiny_model):
    first = continue_one(tiny_model, C_MAJOR, bars=2, variations=3, seed=42)
    assert continue_one(tiny_model, C_MAJOR, bars=2, variations=3, seed=42) == first
    assert continue_one(tiny_model, C_MAJOR, bars=2, variations=3, seed=43) != first
    assert len({tuple(c) for c in first}) == 3  # the variations differ from each other


def test_the_largest_seeds_have_noise_of_their_own(tiny_model):
    """torch seeds from 32 bits: seeds 2**28 apart used to give the same continuations. Every
    seed's variations have noise seeds below 2**32 (so none wraps onto another's), and sound so."""
    assert variation_seed(MAX_SEED, MAX_VARIATIONS - 1) < 2**32
    top = continue_one(tiny_model, C_MAJOR, bars=2, variations=MAX_VARIATIONS, seed=MAX_SEED, temperature=3.0)
    for other in (MAX_SEED - 2**28 // MAX_VARIATIONS, MAX_SEED - 1, (MAX_SEED + 1) // 2):
        again = continue_one(tiny_model, C_MAJOR, bars=2, variations=MAX_VARIATIONS, seed=other, temperature=3.0)
        assert all(a != b for a, b in zip(top, again)), other


def test_a_request_does_not_depend_on_its_batch(tiny_model):
    alone = continue_one(tiny_model, C_MAJOR, bars=2, variations=2, seed=7)
    batched = continue_melodies(
        tiny_model,
        [OTHER, C_MAJOR, parse_notes("C4 E G")],  # one pass, the last left-padded
        [SamplingOptions(bars=3, variations=3, seed=7, temperature=0.5, keep_key=False),
         SamplingOptions(bars=2, variations=2, seed=7),
         SamplingOptions(bars=1, variations=1)],
    )
    assert batched[1] == alone
    assert batched[0] == continue_one(tiny_model, OTHER, bars=3, variations=3, seed=7, temperature=0.5, keep_key=False)


def test_more_variations_keep_the_first_ones(tiny_model):
    """Variation v's noise depends only on (seed, v)."""
    two = continue_one(tiny_model, C_MAJOR, bars=1, variations=2, seed=3)
    assert continue_one(tiny_model, C_MAJOR, bars=1, variations=4, seed=3)[:2] == two


def test_keep_key_keeps_notes_in_the_primer_key(tiny_model):
    assert detect_key(prepare_primer(C_MAJOR)) == Key(0, minor=False)
    c_major = {0, 2, 4, 5, 7, 9, 11}
    kept = continue_one(tiny_model, C_MAJOR, bars=4, variations=4, seed=0, **WILD)
    notes = [event_pitch(e) % 12 for c in kept for e in c if is_note_on(e)]
    assert len(notes) > 50 and set(notes) <= c_major
    free = continue_one(tiny_model, C_MAJOR, bars=4, variations=4, seed=0, keep_key=False, **WILD)
    assert {event_pitch(e) % 12 for c in free for e in c if is_note_on(e)} - c_major  # the check can fail


def test_keep_key_also_allows_the_primer_own_chromatic_notes():
    primer = parse_notes("C4 E G C:2 F E D C# D C:2")
    assert detect_key(primer) == Key(0, minor=False)
    allowed = allowed_events(primer, keep_key=True)
    allowed_classes = {event_pitch(e) % 12 for e in range(NUM_CLASSES) if is_note_on(e) and allowed[e]}
    assert allowed_classes == {0, 1, 2, 4, 5, 7, 9, 11}  # C major and the primer's C#
    assert allowed[NO_EVENT] and allowed[NOTE_OFF]
    assert allowed_events(C_MAJOR, keep_key=False).all()


def test_max_rest_limits_held_notes_and_rests(tiny_model):
    lazy = copy.deepcopy(tiny_model)
    with torch.no_grad():
        lazy.head[-1].bias[NO_EVENT] += 30.0  # a network that would hold its last note for ever
    assert continue_one(lazy, C_MAJOR, bars=2, variations=1, max_rest=0) == [[NO_EVENT] * 32]
    primer = prepare_primer(parse_notes("C4 D E F G:1.5"))  # ends with 5 NO_EVENTs
    for max_rest in (1, 4, 6, 16):
        [continuation] = continue_one(lazy, primer, bars=4, variations=1, max_rest=max_rest)
        assert longest_quiet(continuation) == max_rest
        leading = next(i for i, e in enumerate(continuation) if e != NO_EVENT)
        assert leading == max(0, max_rest - 5)  # the primer's last 5 count


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("C4 D E F G A B C", "C major"),
        ("G4 A B C D E F# G", "G major"),
        ("C4 E G C:2", "C major"),
        ("A3 B C D E F G A", "A minor"),
        ("A3:2 C E A:2 E C A:2", "A minor"),
        ("D4 F A D:2 C# D:2", "D minor"),
        ("C4 E G A", "C major"),  # a major triad and its 6th: major, though A minor has the same notes
        ("G4 C5:2", "C major"),  # only a tonic and its fifth: major
        ("C4 D E G A C5:2", "C major"),  # pentatonic: the scale without the 4th and 7th it never sounds
        ("G4 A B D E G:2", "G major"),
    ],
)
def test_detect_key(text, key):
    assert detect_key(parse_notes(text)).name == key


def test_detect_key_follows_transposition():
    for shift in range(12):
        moved = [e + shift if is_note_on(e) else e for e in C_MAJOR]
        assert detect_key(moved) == Key(shift, minor=False)


def test_no_notes_no_key():
    assert detect_key([NO_EVENT] * 8) is None


@pytest.mark.parametrize(
    "options",
    [dict(bars=0), dict(bars=33), dict(variations=0), dict(variations=17), dict(temperature=0.0),
     dict(temperature=3.5), dict(top_p=0.0), dict(top_p=1.01), dict(seed=-1), dict(seed=2**27), dict(max_rest=-1),
     dict(max_rest=257)],
)
def test_options_out_of_range(tiny_model, options):
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        SamplingOptions(**options).check()
    with pytest.raises(ValueError, match=name):
        continue_melodies(tiny_model, [C_MAJOR], [SamplingOptions(**options)])


def test_prepare_primer():
    assert prepare_primer(parse_notes("C4 E4")) == [note_on(60), 0, 0, 0, note_on(64), 0, 0, 0]  # last note open
    assert prepare_primer(parse_notes("C4 r")) == [note_on(60), 0, 0, 0, NOTE_OFF, 0, 0, 0]  # a rest stays
    bars = [e for b in range(70) for e in [note_on(48 + b % 24)] + [NO_EVENT] * (STEPS_PER_BAR - 1)]
    assert prepare_primer(bars) == bars[-MAX_PRIMER_STEPS:]  # the last 64 bars, cut at a bar line
    with pytest.raises(ValueError, match="no notes"):
        prepare_primer([NO_EVENT] * 4)


def test_a_one_step_primer_is_continued(tiny_model):
    [[continuation]] = continue_melodies(tiny_model, [parse_notes("C4:0.25")], [SamplingOptions(bars=1, variations=1)])
    assert len(continuation) == STEPS_PER_BAR


def test_load_model_from_a_checkpoint(tiny_model, tiny_weights):
    model = load_model(str(tiny_weights))
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert continue_one(model, C_MAJOR, bars=1, seed=5) == continue_one(tiny_model, C_MAJOR, bars=1, seed=5)


# -- the command line (model.generate) --------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "model.generate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def written_notes(path: Path):
    """The written file's melody (the band's other tracks follow it)."""
    midi = read_midi(path)
    track = midi.tracks[0]
    assert [t.name for t in midi.tracks][:1] == ["MELODY"]
    return midi.bpm, track, track.notes


def test_cli_writes_one_midi_file_per_variation(tiny_weights, tmp_path):
    text = "C4 E4 G4 A4"
    done = run_cli(text, "--bars", "2", "--variations", "4", "--seed", "9", "--program", "40", "--bpm", "90",
                   "--weights", str(tiny_weights), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    paths = [tmp_path / "out" / f"variation-{n}.mid" for n in range(1, 5)]
    lines = done.stdout.splitlines()
    assert lines[:2] == ["primer: 4 notes, 1 bar from typed notes, 90 bpm", "key: C major"]
    assert lines[-5:] == ["style: pop", *map(str, paths)]
    assert all(line.startswith("chords") and line.endswith("(suggested)") for line in lines[2:-5])  # as the bot
    assert sorted((tmp_path / "out").iterdir()) == paths

    # Each file is the primer and then exactly what the sampler gives for the same options.
    primer = prepare_primer(parse_notes(text))
    expected = continue_one(load_model(str(tiny_weights)), primer, bars=2, variations=4, seed=9)
    for path, continuation in zip(paths, expected):
        bpm, track, notes = written_notes(path)
        assert (bpm, track.name, track.program) == (90, "MELODY", 40)
        assert [(n.start, n.pitch) for n in notes[:4]] == [(0, 60), (4, 64), (8, 67), (12, 69)]
        assert [(n.start, n.end, n.pitch) for n in notes] == [  # velocities are humanised
            (n.start, n.end, n.pitch) for n in events_to_notes(primer + continuation)]


def test_cli_bad_notes_exit_2_with_one_line_naming_the_token(tmp_path):
    done = run_cli("C4 E4 H4 A4", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith('error: "H4" is not a note (token 3).')
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_continues_a_midi_sketch_at_its_tempo(tiny_weights, tmp_path, capsys):
    sketch = tmp_path / "sketch.mid"
    sketch.write_bytes(make_midi([TrackSpec("Lead", [(4, 8, 67), (8, 16, 72)]), TrackSpec("Bass", [(0, 16, 36)])],
                                 bpm=93))
    assert generate.main(["--midi", str(sketch), "--bars", "1", "--variations", "2", "--no-key",
                          "--weights", str(tiny_weights), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["primer: 2 notes, 1 bar from Lead, 93 bpm", "key: C major (not enforced)"]
    for number in (1, 2):
        bpm, track, notes = written_notes(tmp_path / f"variation-{number}.mid")
        assert (bpm, track.program) == (93, 0)
        assert [(n.start, n.pitch) for n in notes[:2]] == [(4, 67), (8, 72)]


@pytest.mark.parametrize("typed", ["r:0.5 E4 G4:2", "H4 not notes"])  # typed notes are not even read
def test_cli_a_sketch_wins_over_typed_notes(typed, tiny_weights, tmp_path, capsys):
    # As the bot's !continue with a sketch attached: the sketch is the primer, a notice says so.
    sketch = tmp_path / "sketch.mid"
    sketch.write_bytes(make_midi([TrackSpec("Melody", [(0, 4, 60), (4, 6, 62)])]))
    common = ["--midi", str(sketch), "--bars", "1", "--variations", "1", "--weights", str(tiny_weights)]
    assert generate.main([*common, "--out", str(tmp_path / "alone")]) == 0
    alone = capsys.readouterr()
    assert generate.main([typed, *common, "--out", str(tmp_path / "both")]) == 0
    both = capsys.readouterr()
    assert both.err == f"note: you gave a sketch ({sketch}), so the typed notes were ignored\n"
    assert alone.err == ""
    assert both.out.startswith("primer: 2 notes, ")
    assert both.out.replace(str(tmp_path / "both"), str(tmp_path / "alone")) == alone.out
    _, _, notes = written_notes(tmp_path / "both" / "variation-1.mid")
    assert [(n.start, n.end, n.pitch) for n in notes[:2]] == [(0, 4, 60), (4, 6, 62)]
    assert (tmp_path / "both" / "variation-1.mid").read_bytes() == (tmp_path / "alone" / "variation-1.mid").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["C4", "--bars", "0"], "error: --bars must be between 1 and 32, not 0"),
        (["C4", "--top-p", "2"], "error: --top-p must be between 0.05 and 1.0, not 2.0"),
        (["C4", "--max-rest", "300"], "error: --max-rest must be between 0 and 256 steps, not 300"),
        (["C4", "--program", "128"], "error: --program must be between 0 and 127, not 128"),
        (["C4", "--bpm", "1000"], "error: --bpm must be between 20 and 300, not 1000"),
        (["C4", "--bars", "eight"], "error: argument --bars: invalid int value: 'eight' (see --help)"),
        (["C4", "--colour", "red"], "error: unrecognized arguments: --colour red (see --help)"),
        ([], 'error: give notes to continue, e.g. "C4 E4 G4 A4", or --midi FILE'),
        (["C4:1/3"], 'error: "C4:1/3" does not fit the grid (token 1)'),
        (["--midi", "{tmp}/missing.mid"], "error: {tmp}/missing.mid: cannot read {tmp}/missing.mid"),
        (["--midi", "{tmp}/notes.txt"], "error: {tmp}/notes.txt: this is not a MIDI file"),
        (["--midi", "{tmp}/drums.mid"], "error: {tmp}/drums.mid: the file has only drum tracks"),
        (["C4", "--weights", "{tmp}/notes.txt"], "error: cannot load weights from {tmp}/notes.txt"),
        (["C4", "--weights", "{tmp}/none.pt"], "error: no weights at {tmp}/none.pt; pass --weights PATH"),
        (["C4", "--style", "polka"], 'error: I have no style called "polka". Did you mean folk? Styles: pop'),
        (["C4", "--form", "B4A4B4A4"], 'error: --form: form "B4A4B4A4" needs exactly 16 bars, and the continuation'),
        (["C4", "--form", "BA", "--lyrics", "hello there"], "error: --form cannot be combined with --lyrics yet"),
    ],
)
def test_cli_mistakes_exit_2_with_one_line(args, message, tmp_path, tiny_weights, capsys):
    (tmp_path / "notes.txt").write_text("C4 E4 G4\n")
    (tmp_path / "drums.mid").write_bytes(make_midi([TrackSpec("Kit", [(0, 1, 36), (4, 5, 38)], drum=True)]))
    args = [a.format(tmp=tmp_path) for a in args]
    weights = [] if "--weights" in args else ["--weights", str(tiny_weights)]
    assert generate.main([*args, *weights, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message.format(tmp=tmp_path))
    assert len(captured.err.splitlines()) == 1 and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_the_one_step_decoder_matches_nn_lstm():
    model = MelodyNet(NetworkConfig(embed=8, hidden=16, layers=2, heads=2, window=64, dropout=0.0)).eval()
    weights = StepWeights.of(model)
    inputs = torch.randn(3, 1, model.decoder.input_size)
    state = (torch.randn(2, 3, 16), torch.randn(2, 3, 16))
    expected, (h, c) = model.decoder(inputs, state)
    decoder = model.decoder
    with torch.no_grad():
        gates = inputs[:, 0] @ decoder.weight_ih_l0.T + decoder.bias_ih_l0 + decoder.bias_hh_l0
        step_state = [list(state[0]), list(state[1])]
        got = weights.decoder_step(gates, step_state)
    assert torch.allclose(got, expected[:, 0], atol=1e-6)
    assert torch.allclose(torch.stack(step_state[0]), h, atol=1e-6)
    assert torch.allclose(torch.stack(step_state[1]), c, atol=1e-6)


def test_the_arranged_weights_are_kept_until_a_parameter_changes():
    model = MelodyNet(NetworkConfig(embed=8, hidden=16, layers=1, heads=2, window=64, dropout=0.0)).eval()
    kept = StepWeights.cached(model)
    assert StepWeights.cached(model) is kept
    with torch.no_grad():
        model.head[3].bias.add_(1.0)  # in place, as an optimizer step
    changed = StepWeights.cached(model)
    assert changed is not kept and torch.equal(changed.out_bias, model.head[3].bias)
    model.load_state_dict(MelodyNet(model.config).state_dict())
    assert torch.equal(StepWeights.cached(model).gate_table, StepWeights.of(model).gate_table)


def test_the_gate_table_adds_up_to_the_decoder_input_layer():
    """A step's rows of StepWeights.gate_table (previous event, lookbacks, position) sum to the
    decoder's first layer applied to _decoder_inputs, biases included."""
    torch.manual_seed(5)
    model = MelodyNet(NetworkConfig(embed=8, hidden=16, layers=1, heads=2, window=64, dropout=0.0)).eval()
    weights = StepWeights.of(model)
    sequence = torch.randint(0, NUM_CLASSES, (2, 40))
    offset, target = torch.tensor([0, 3]), 37
    decoder = model.decoder
    with torch.no_grad():
        inputs = model._decoder_inputs(sequence, torch.tensor([target]), offset)[:, 0]
        expected = inputs @ decoder.weight_ih_l0.T + decoder.bias_ih_l0 + decoder.bias_hh_l0
        events = sequence[:, [target - 1] + [target - back for back in LOOKBACKS]] + weights.event_rows
        position = (target - offset[:, None]) % STEPS_PER_BAR + weights.position_row
        got = torch.nn.functional.embedding_bag(torch.cat([events, position], 1), weights.gate_table, mode="sum")
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_one_query_attention_matches_scaled_dot_product_attention():
    model = MelodyNet(NetworkConfig(embed=8, hidden=16, layers=1, heads=4, window=64, dropout=0.0)).eval()
    query, keys, values = torch.randn(3, 1, 16), torch.randn(3, 9, 16), torch.randn(3, 9, 16)
    got = model._attend_one(query, model._by_head(keys), model._by_head(values))
    assert torch.allclose(got, model._attend(query, keys, values, None), atol=1e-6)
    # reading only the null slot and slots 4.. is the same as masking slots 1 to 3
    allowed = torch.ones(1, 9, dtype=torch.bool)
    allowed[:, 1:4] = False
    got = model._attend_one(query, model._by_head(keys), model._by_head(values), visible_from=4)
    assert torch.allclose(got, model._attend(query, keys, values, allowed), atol=1e-6)
    assert not torch.allclose(got, model._attend(query, keys, values, None), atol=1e-3)


def test_step_by_step_sampling_agrees_with_teacher_forcing():
    """Greedy sampling must pick, at every step, the argmax of the teacher-forced network on the
    same sequence: the incremental memory, its window and the one-step decoder match forward()."""
    torch.manual_seed(3)
    model = MelodyNet(NetworkConfig(embed=8, hidden=16, layers=2, heads=2, window=8, dropout=0.0)).eval()
    primer = torch.tensor([parse_notes("C4 E4 G4 A4:2")] * 2)
    steps = 40  # longer than the window: the masked path runs too
    sampled = stepping.generate(model,
        primer, steps, temperature=torch.ones(2), top_p=torch.full((2,), 1e-6),  # top_p ~0: the argmax
        allowed_events=torch.ones(2, NUM_CLASSES, dtype=torch.bool), seeds=[1, 2],
    )
    with torch.no_grad():
        greedy = model(primer, sampled).argmax(-1)
    assert torch.equal(greedy, sampled)


# -- chords in: continue_melodies(chords=...) and the CLI's --chords ---------------------------------
@pytest.fixture(scope="module")
def chord_model(tmp_path_factory):
    """A tiny network with chord inputs, their weights made loud enough to change its choices."""
    torch.manual_seed(4)
    model = MelodyNet(NetworkConfig(embed=8, hidden=16, layers=1, heads=2, window=64, dropout=0.0, chords=True))
    with torch.no_grad():
        model.chord_proj.weight.mul_(20.0)
        model.chord_logits.weight.normal_(0.0, 2.0)  # the direct chord bias, zero in a new model
    path = tmp_path_factory.mktemp("chord-weights") / "chords.pt"
    save_checkpoint(path, model.eval())
    return model.eval(), path


def test_chords_steer_a_model_with_chord_inputs(chord_model):
    model, _ = chord_model
    options = SamplingOptions(bars=2, variations=2, seed=1, **WILD)
    plain = continue_melodies(model, [C_MAJOR], [options])[0]
    assert continue_melodies(model, [C_MAJOR], [options], chords=[None])[0] == plain
    assert continue_melodies(model, [C_MAJOR], [options], chords=[[None] * 32])[0] == plain
    c_and_f = continuation_chords(parse_lead_sheet("C | F"), len(prepare_primer(C_MAJOR)), 32)
    assert continue_melodies(model, [C_MAJOR], [options], chords=[c_and_f])[0] != plain
    # A request with chords does not change one without them in the same batch.
    both = continue_melodies(model, [C_MAJOR, C_MAJOR], [options, options], chords=[c_and_f, None])
    assert both[1] == plain and both[0] == continue_melodies(model, [C_MAJOR], [options], chords=[c_and_f])[0]


def test_chords_outside_the_key_let_their_notes_in(tiny_model):
    e7 = continuation_chords(parse_lead_sheet("E7"), len(prepare_primer(C_MAJOR)), 64)  # G# is not in C major
    notes = {event_pitch(e) % 12 for c in continue_one(tiny_model, C_MAJOR, bars=4, variations=4, **WILD)
             for e in c if is_note_on(e)}
    assert 8 not in notes
    told = continue_melodies(tiny_model, [C_MAJOR], [SamplingOptions(bars=4, variations=4, **WILD)], chords=[e7])[0]
    assert 8 in {event_pitch(e) % 12 for c in told for e in c if is_note_on(e)}


def test_continuation_chords_start_at_the_bar_of_the_continuation():
    sheet = parse_lead_sheet("C | G")
    chords = continuation_chords(sheet, 32, 48)
    assert [c.symbol() for c in chords[::16]] == ["C", "G", "C"]
    chords = continuation_chords(sheet, 24, 24)  # starts in the middle of the primer's second bar
    assert [c.symbol() for c in chords[::8]] == ["C", "G", "G"]


def test_cli_chords_go_into_the_sampler_and_the_file(chord_model, tmp_path):
    from model.music.primer import chords_from_markers

    _, weights = chord_model
    text, sheet = "C4 E4 G4 A4", "C | G | Am F | F"
    done = run_cli(text, "--chords", sheet, "--bars", "4", "--variations", "2", "--seed", "3", "--style", "none",
                   "--weights", str(weights), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2:4] == ["chords: C | G | Am F | F", "style: none"]
    primer = prepare_primer(parse_notes(text))
    chords = continuation_chords(parse_lead_sheet(sheet), len(primer), 64)
    expected = continue_melodies(load_model(str(weights)), [primer], [SamplingOptions(bars=4, variations=2, seed=3)],
                                 chords=[chords])[0]
    for number, continuation in enumerate(expected, 1):
        midi = read_midi(tmp_path / f"variation-{number}.mid")
        melody, accompaniment = midi.tracks
        assert (melody.name, accompaniment.name) == ("MELODY", "CHORDS")
        assert [(n.start, n.end, n.pitch) for n in melody.notes] == [
            (n.start, n.end, n.pitch) for n in events_to_notes(primer + continuation)]
        bar_two = {n.pitch % 12 for n in accompaniment.notes if n.start == len(primer) + 16}
        assert bar_two == {7, 11, 2}  # G
        assert chords_from_markers(midi.markers, len(primer) + 64)[len(primer):] == chords  # the chord markers


def test_cli_bad_chord_exit_2_naming_it(tmp_path, tiny_weights, capsys):
    assert generate.main(["C4 E4", "--chords", "C | Gx7", "--weights", str(tiny_weights),
                          "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: I can\'t read the chord "Gx7" (bar 2)') and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_nucleus_of_one_is_the_whole_distribution_without_sorting():
    from model.melody.stepping import nucleus

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, NUM_CLASSES)).astype(np.float32)
    allowed = rng.random((3, NUM_CLASSES)) > 0.3
    np.testing.assert_allclose(nucleus(logits, None, allowed), nucleus(logits, np.ones(3, np.float32), allowed))
    assert np.isinf(nucleus(logits, np.full(3, 0.5, np.float32), allowed)).sum() > np.isinf(
        nucleus(logits, None, allowed)).sum()


def test_a_step_samples_from_the_nucleus_even_when_it_skips_sorting_it_out():
    """stepping._sample, which sorts out the nucleus only when a row's sample could lie outside it,
    picks what the argmax of nucleus() plus the noise picks, near the nucleus's edge too."""
    import math

    from model.melody.stepping import NUCLEUS_MARGIN, _sample, gumbel_noise, nucleus

    rng = np.random.default_rng(1)
    for top in (0.05, 0.5, 0.9, 0.98, 1.0):
        for spread in (0.5, 3.0, 8.0):  # flat to peaked: samples in the tail, on the edge, at the top
            logits = (rng.standard_normal((64, NUM_CLASSES)) * spread).astype(np.float32)
            allowed = rng.random((64, NUM_CLASSES)) > 0.2
            noise = gumbel_noise(list(range(64)), 1)[:, 0].numpy()
            top_p = np.full(64, top, dtype=np.float32)
            expected = (nucleus(logits, top_p, allowed) + noise).argmax(-1)
            floor = np.array([math.log(1 - p + NUCLEUS_MARGIN) for p in top_p.tolist()])
            assert np.array_equal(_sample(logits.copy(), top_p[:, None], floor, ~allowed, noise), expected)
