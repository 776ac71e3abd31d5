"""The network's chord inputs: chord codes, their transposition, training windows that carry them,
warm starts from a model without them, and sampling that agrees with teacher forcing."""

from __future__ import annotations

import numpy as np
import torch

from model.lab.data import Song, chord_code, chord_codes, sample_chord_batch, transpose, transpose_chords
from model.lab.train import warm_start
from model.melody import stepping
from model.melody.network import CHORD_ROOT, NO_CHORD, MelodyNet, NetworkConfig, save_checkpoint
from model.music.events import NUM_CLASSES, PAD, note_on
from model.music.primer import parse_notes

SMALL = dict(embed=8, hidden=16, layers=1, heads=2, window=64, dropout=0.0)


class FakeChord:  # what model.music.chords.Chord offers the encoding: a root and pitch classes
    def __init__(self, root, pitch_classes):
        self.root, self.pitch_classes = root, frozenset(pitch_classes)


C_MAJOR, A_MINOR = FakeChord(0, {0, 4, 7}), FakeChord(9, {9, 0, 4})


def test_chord_codes_hold_root_and_pitch_classes():
    assert chord_code(None) == NO_CHORD
    assert chord_code(C_MAJOR) == 0 * CHORD_ROOT + (1 << 0 | 1 << 4 | 1 << 7)
    assert chord_code(A_MINOR) == 9 * CHORD_ROOT + (1 << 9 | 1 << 0 | 1 << 4)
    assert chord_codes([C_MAJOR, None]).tolist() == [chord_code(C_MAJOR), NO_CHORD]


def test_transposed_chords_move_with_the_melody():
    codes = chord_codes([C_MAJOR, A_MINOR, None])
    up = transpose_chords(codes, 3)  # C -> Eb (3, 7, 10); Am -> Cm (0, 3, 7)
    assert up.tolist() == [chord_code(FakeChord(3, {3, 7, 10})), chord_code(FakeChord(0, {0, 3, 7})), NO_CHORD]
    assert transpose_chords(up, -3).tolist() == codes.tolist()
    assert transpose_chords(codes, 12).tolist() == codes.tolist()


def song_with_chords(bars=6):
    """Bar k: C4, then the pitch 62 + k half a bar later; chords C, Am, C, Am, ... (Am from its 5th step)."""
    events = np.zeros(16 * bars, dtype=np.int64)
    events[::16] = note_on(60)
    events[8::16] = [note_on(62 + k) for k in range(bars)]
    chords = np.array([chord_code(C_MAJOR if (s // 16) % 2 == 0 or s % 16 < 4 else A_MINOR) for s in range(16 * bars)])
    return Song("001", events, chords)


def test_training_windows_carry_aligned_transposed_chords():
    song = song_with_chords()
    rng = np.random.default_rng(0)
    primer, target, mask, chords, _ = sample_chord_batch([song], 32, 16, 48, rng, max_shift=5)
    assert chords.shape == (32, 64)
    shifts = set()
    for b in range(32):
        window = np.concatenate([primer[b], target[b]])
        real = window != PAD
        first = window[real]
        shift = first[0] - note_on(60)  # the window starts at a bar line: C4, moved
        start = 16 * (first[8] - note_on(62) - shift)
        assert np.array_equal(first, transpose(song.events, shift)[start : start + real.sum()])
        assert chords[b][real].tolist() == transpose_chords(song.chords[start : start + real.sum()], shift).tolist()
        assert (chords[b][~real] == NO_CHORD).all()
        shifts.add(int(shift))
    assert len(shifts) > 3


def test_chord_dropout_and_songs_without_chords_give_no_chords():
    song = song_with_chords()
    rng = np.random.default_rng(1)
    chords = sample_chord_batch([song], 200, 16, 48, rng, chord_dropout=0.4)[3]
    dropped = (chords == NO_CHORD).all(1).mean()
    assert 0.25 < dropped < 0.55
    chords = sample_chord_batch([Song("002", song.events)], 8, 16, 48, rng)[3]
    assert (chords == NO_CHORD).all()


def test_the_model_hears_the_chords_and_no_chords_is_the_default():
    torch.manual_seed(0)
    model = MelodyNet(NetworkConfig(**SMALL, chords=True)).eval()
    primer, target = torch.tensor([parse_notes("C4 E4 G4 A4")]), torch.tensor([parse_notes("G4 E4 C4 D4")])
    length = primer.shape[1] + target.shape[1]
    c_major = torch.full((1, length), chord_code(C_MAJOR))
    a_minor = torch.full((1, length), chord_code(A_MINOR))
    with torch.no_grad():
        plain = model(primer, target)
        assert torch.equal(plain, model(primer, target, chords=torch.full((1, length), NO_CHORD)))
        assert not torch.allclose(model(primer, target, chords=c_major), model(primer, target, chords=a_minor))
    blind = MelodyNet(NetworkConfig(**SMALL)).eval()  # no chord inputs: chords are ignored
    with torch.no_grad():
        assert torch.equal(blind(primer, target), blind(primer, target, chords=c_major))


def test_warm_start_from_a_model_without_chords_begins_as_that_model(tmp_path):
    torch.manual_seed(1)
    old = MelodyNet(NetworkConfig(**SMALL)).eval()
    save_checkpoint(tmp_path / "old.pt", old)
    new = MelodyNet(NetworkConfig(**SMALL, chords=True)).eval()
    warm_start(new, tmp_path / "old.pt")
    primer, target = torch.tensor([parse_notes("C4 E4 G4 A4")]), torch.tensor([parse_notes("G4 E4 C4 D4")])
    chords = torch.full((1, primer.shape[1] + target.shape[1]), chord_code(A_MINOR))
    with torch.no_grad():
        torch.testing.assert_close(new(primer, target, chords=chords), old(primer, target))


def test_step_by_step_sampling_with_chords_agrees_with_teacher_forcing():
    torch.manual_seed(3)
    model = MelodyNet(NetworkConfig(**{**SMALL, "window": 8}, chords=True)).eval()
    primer = torch.tensor([parse_notes("C4 E4 G4 A4:2")] * 2)
    steps = 40
    chords = torch.tensor([[chord_code(C_MAJOR if (s // 8) % 2 else A_MINOR) for s in range(primer.shape[1] + steps)],
                           [chord_code(A_MINOR)] * (primer.shape[1] + steps)])
    sampled, loglik = stepping.generate(model,
        primer, steps, temperature=torch.ones(2), top_p=torch.full((2,), 1e-6),
        allowed_events=torch.ones(2, NUM_CLASSES, dtype=torch.bool), seeds=[1, 2], chords=chords, with_loglik=True,
    )
    with torch.no_grad():
        logits = model(primer, sampled, chords=chords)
    assert torch.equal(logits.argmax(-1), sampled)
    expected = torch.log_softmax(logits, -1).gather(2, sampled[..., None])[..., 0].sum(1)
    torch.testing.assert_close(loglik.sum(-1), expected, atol=1e-4, rtol=1e-5)


def test_checkpoints_from_before_the_chord_bias_load_and_broken_ones_do_not(tmp_path):
    import pytest

    from model.melody.network import load_checkpoint

    model = MelodyNet(NetworkConfig(**SMALL, chords=True)).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("chord_logits.")}
    torch.save({"model_args": vars(model.config), "state_dict": state}, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert not loaded.chord_logits.weight.any()
    del state["head.0.weight"]
    torch.save({"model_args": vars(model.config), "state_dict": state}, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="head.0.weight"):
        load_checkpoint(tmp_path / "broken.pt")


def test_chord_scale_follows_the_chords_harder_and_leaves_no_chords_alone():
    torch.manual_seed(5)
    model = MelodyNet(NetworkConfig(**SMALL, chords=True)).eval()
    with torch.no_grad():
        model.chord_logits.weight.normal_(0, 1.0)
        model.chord_logits.bias.normal_(0, 1.0)
    primer = torch.tensor([parse_notes("C4 E4 G4 A4:2")] * 2)
    common = dict(temperature=torch.ones(2), top_p=torch.ones(2),
                  allowed_events=torch.ones(2, NUM_CLASSES, dtype=torch.bool), seeds=[1, 2])
    chords = torch.full((2, primer.shape[1] + 64), chord_code(A_MINOR))
    told = stepping.generate(model, primer, 64, chords=chords, **common)
    assert torch.equal(stepping.generate(model, primer, 64, chords=chords, chord_scale=1.0, **common), told)
    assert not torch.equal(stepping.generate(model, primer, 64, chords=chords, chord_scale=3.0, **common), told)
    plain = stepping.generate(model, primer, 64, **common)
    assert torch.equal(stepping.generate(model, primer, 64, chord_scale=3.0, **common), plain)
