"""Primers of different lengths share one sampling pass, left-padded (model.melody.stepping.generate's
`lengths`), and every row comes out as it does alone: the encoder, the attention memory and its
window, the positions in the bar, the chords and the lookbacks all see only the row's own steps."""

from __future__ import annotations

import pytest
import torch

from model.melody import stepping
from model.melody.network import CHORD_ROOT, NO_CHORD, MelodyNet, NetworkConfig
from model.melody.sampling import SamplingOptions, continue_melodies
from model.music.events import NUM_CLASSES, PAD, STEPS_PER_BAR
from model.music.primer import parse_notes

LENGTHS = (2, 5, 16, 23)  # the primers' own steps
BAR_STARTS = (0, 1, 3, 0)  # where each one's first bar starts in it
STEPS = 30  # past the window of 12: the window's masking runs together with the padding's


def tiny(chords: bool) -> MelodyNet:
    torch.manual_seed(5)
    model = MelodyNet(NetworkConfig(embed=8, hidden=16, layers=2, heads=2, window=12, dropout=0.0, chords=chords))
    with torch.no_grad():  # an untrained tiny network hardly hears its inputs: louder weights, so it does
        for parameter in model.parameters():
            parameter.mul_(5.0)
    if chords:
        with torch.no_grad():  # loud enough that the chords change what is sampled
            model.chord_proj.weight.mul_(20.0)
            model.chord_logits.weight.normal_(0.0, 2.0)
    return model.eval()


def row_inputs(b: int, length: int) -> dict:
    """Row b's own inputs, unpadded, the same each time they are asked for."""
    gen = torch.Generator().manual_seed(100 + b)
    roots = torch.randint(0, 12, (length + STEPS,), generator=gen)
    masks = torch.randint(0, 1 << 12, (length + STEPS,), generator=gen)
    chords = torch.where(torch.rand(length + STEPS, generator=gen) < 0.2, NO_CHORD, CHORD_ROOT * roots + masks)
    allowed = torch.rand(NUM_CLASSES, generator=gen) < 0.8
    allowed[:2] = True  # NO_EVENT and NOTE_OFF
    return dict(primer=torch.randint(0, NUM_CLASSES, (length,), generator=gen), chords=chords, allowed=allowed,
                temperature=0.7 + 0.4 * b, top_p=(0.9, 1.0, 0.95, 0.8)[b], max_run=(0, 4, 8, 2)[b], seed=1000 + b)


def generate(model, rows: list[dict], lengths: list[int], bar_starts: list[int], with_chords: bool):
    """One pass over the rows, left-padded to the longest with junk that must not be read."""
    p_len = max(lengths)
    pads = [p_len - n for n in lengths]
    junk = torch.randint(0, NUM_CLASSES, (len(rows), p_len), generator=torch.Generator().manual_seed(9))
    primer = torch.stack([torch.cat([junk[b, :pad], r["primer"]]) for b, (r, pad) in enumerate(zip(rows, pads))])
    chords = torch.stack([torch.cat([torch.full((pad,), NO_CHORD), r["chords"]]) for r, pad in zip(rows, pads)])
    return stepping.generate(model,
        primer, STEPS,
        temperature=torch.tensor([r["temperature"] for r in rows]),
        top_p=torch.tensor([r["top_p"] for r in rows]),
        allowed_events=torch.stack([r["allowed"] for r in rows]),
        seeds=[r["seed"] for r in rows],
        offset=torch.tensor([pad + start for pad, start in zip(pads, bar_starts)]),
        max_run=torch.tensor([r["max_run"] for r in rows]),
        chords=chords if with_chords else None,
        with_loglik=True, chord_scale=1.4,
        lengths=torch.tensor(lengths),
    )  # fmt: skip


@pytest.mark.parametrize("with_chords", [False, True])
def test_each_row_of_a_mixed_length_pass_is_what_it_is_alone(with_chords):
    model = tiny(chords=with_chords)
    rows = [row_inputs(b, n) for b, n in enumerate(LENGTHS)]
    mixed, mixed_loglik = generate(model, rows, list(LENGTHS), list(BAR_STARTS), with_chords)
    for b, (row, length, start) in enumerate(zip(rows, LENGTHS, BAR_STARTS)):
        alone, alone_loglik = generate(model, [row], [length], [start], with_chords)
        assert torch.equal(mixed[b], alone[0]), f"row {b} (primer of {length} steps)"
        assert torch.allclose(mixed_loglik[b], alone_loglik[0], rtol=1e-4, atol=1e-4)
    assert len({tuple(r.tolist()) for r in mixed}) == len(rows)  # the rows differ: the check can fail


def test_padding_would_change_a_row_if_it_were_read():
    """The same rows, the padding read as primer (no `lengths`): not what they are alone. So the
    test above tells a pass that reads no padding from one that does."""
    model = tiny(chords=False)
    rows = [row_inputs(b, n) for b, n in enumerate(LENGTHS)]
    mixed, _ = generate(model, rows, list(LENGTHS), list(BAR_STARTS), False)
    p_len = max(LENGTHS)
    read = stepping.generate(model,
        torch.stack([torch.cat([torch.full((p_len - n,), PAD), r["primer"]]) for r, n in zip(rows, LENGTHS)]), STEPS,
        temperature=torch.tensor([r["temperature"] for r in rows]), top_p=torch.tensor([r["top_p"] for r in rows]),
        allowed_events=torch.stack([r["allowed"] for r in rows]), seeds=[r["seed"] for r in rows],
        offset=torch.tensor([p_len - n + s for n, s in zip(LENGTHS, BAR_STARTS)]),
        max_run=torch.tensor([r["max_run"] for r in rows]),
    )  # fmt: skip
    assert torch.equal(read[-1], mixed[-1])  # the longest row has no padding
    assert all(not torch.equal(read[b], mixed[b]) for b in range(len(rows) - 1))


def test_requests_of_different_lengths_share_one_pass_and_keep_their_answers(tiny_model, monkeypatch):
    primers = [parse_notes("E4")[:1], parse_notes("C4 E G"), parse_notes("C4 D E F G A B C"),
               parse_notes("A3 C E A C E G:2 F E D C B3 A3:4")]
    options = [SamplingOptions(bars=2, variations=2, seed=s, temperature=1.5) for s in range(len(primers))]
    calls = []
    original = stepping.generate

    def counting(model, primer, *args, **kwargs):
        calls.append(primer.shape)
        return original(model, primer, *args, **kwargs)

    monkeypatch.setattr(stepping, "generate", counting)
    together = continue_melodies(tiny_model, primers, options)
    assert len(calls) == 1 and calls[0][0] == 2 * len(primers) * options[0].candidates
    alone = [continue_melodies(tiny_model, [p], [o])[0] for p, o in zip(primers, options)]
    assert together == alone
    assert len({tuple(v) for answer in together for v in answer}) == 2 * len(primers)


def test_a_one_note_primer_keeps_its_bar_in_a_mixed_pass(tiny_model):
    """A one-step primer gets a rest before it (the network needs two steps) and its bar starts
    after that rest, padded or not."""
    one = parse_notes("G4")[:1]  # one NOTE_ON
    long = parse_notes("C4 D E F G A B C") * 2
    opts = SamplingOptions(bars=1, variations=2, seed=4)
    alone = continue_melodies(tiny_model, [one], [opts])[0]
    assert continue_melodies(tiny_model, [long, one], [opts, opts])[1] == alone
    assert len(long) > STEPS_PER_BAR  # more than one bar of padding before the one note
