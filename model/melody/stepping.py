"""The melody network's sampler: continue primers one sixteenth step at a time.

`generate` is the one sampling entry point (model.melody.sampling builds its requests). It runs
the same maths as MelodyNet.forward in eval mode, but step by step, reading weights rearranged
for it (StepWeights): a step's decoder inputs are rows of a table, the attention memory grows by
one key and value per step, and each row samples by the Gumbel-max trick from its own seeded
noise, so a row's result depends only on its own inputs and seed. Teacher forcing lives in
model.melody.network; tests/test_sampling.py checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.melody.network import LOOKBACKS, MelodyNet
from model.melody.same_note import SameNoteRun
from model.music.events import FIRST_NOTE_ON, NO_EVENT, NOTE_OFF, NUM_CLASSES, PAD, STEPS_PER_BAR


@torch.no_grad()
def generate(
    model: MelodyNet,
    primer: torch.Tensor,
    steps: int,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    allowed_events: torch.Tensor,
    seeds: list[int],
    offset: torch.Tensor | None = None,
    max_run: torch.Tensor | None = None,
    chords: torch.Tensor | None = None,
    with_loglik: bool = False,
    chord_scale: float = 1.0,
    lengths: torch.Tensor | None = None,
    step_allowed: torch.Tensor | None = None,
    repeat_cap: torch.Tensor | None = None,
    copy_lag: torch.Tensor | None = None,
    copy_bias: float = 0.0,
    copy_free_runs: bool = True,
    event_bias: torch.Tensor | None = None,
    end_bias: torch.Tensor | None = None,
    end_start: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Continue each primer row by `steps` events, all rows in one batched pass.

    primer (B, P) with P >= 2; temperature, top_p (B,); allowed_events (B, NUM_CLASSES) bool
    masks events out (e.g. notes outside the key); seeds: one per row; offset (B,) as in
    forward: the step where row b's first bar starts, its left padding included; max_run (B,):
    the most NO_EVENTs in a row (a held note or a rest) before something must happen, 0 for no
    limit; chords (B, P + steps) chord codes or None; lengths (B,): each row's own primer
    steps, >= 2, the last of its row: the P - lengths[b] steps before them are padding (PAD),
    which nothing reads (None: no padding). So primers of different lengths share a pass,
    and a row's result depends only on its own inputs and seed, never on what else shares
    the batch (up to float rounding). repeat_cap (K,) or None: when the last r notes in a row
    had one pitch, the largest share of the (temperature-scaled, allowed) NOTE_ON probability
    one more of it may have is entry min(r, K - 1) (0: it may not come again; SameNoteRun).
    -> (B, steps); with_loglik, also (B, steps) each sampled
    step's log-likelihood under the model itself (no temperature, nucleus or masks), per step
    so a row asking for fewer steps than the batch can score just its own. step_allowed
    (B, steps, NUM_CLASSES) bool or None: what each row may do at each step besides
    allowed_events (a lyric's rhythm: NOTE_ON only where a syllable starts); where the two
    leave nothing, step_allowed alone. copy_lag (B, steps) long or None: per step, 0 or how many
    steps back lies the event this step should copy (a form plan's returning bar,
    model.melody.form): that event's logit gets copy_bias more (after temperature, before the
    same-note cap, which with copy_free_runs spares a copying step until the run is at the cap's
    last entry: the source's own repeats come back, never a run past the stop), a rest or held
    note it copies is allowed past max_run, and a NOTE_OFF it copies while nothing sounds reads
    as NO_EVENT. event_bias (B, NUM_CLASSES) or None: added to every step's logits after
    temperature (a register's lift). end_bias (B, K, NUM_CLASSES) or None: added likewise on each
    row's K steps from end_start (B,) on (a phrase's end: its row's last K steps), which it samples
    no hotter than temperature 1."""
    batch, p_len = primer.shape
    device = primer.device
    pad = [0] * batch if lengths is None else [p_len - int(n) for n in lengths.tolist()]
    if not all(0 <= p <= p_len - 2 for p in pad):
        raise ValueError(f"primer lengths must be between 2 and {p_len}, not {lengths.tolist()}")
    offset = torch.zeros(batch, dtype=torch.long, device=device) if offset is None else offset
    max_run = torch.zeros(batch, dtype=torch.long, device=device) if max_run is None else max_run
    inputs = (primer, temperature, top_p, allowed_events, offset, max_run, chords, step_allowed, copy_lag, event_bias,
              end_bias, end_start)
    order = sorted(range(batch), key=pad.__getitem__)  # rows padded alike side by side: each group a slice
    if order == list(range(batch)):
        out = _generate_sorted(model, *inputs, steps, seeds, pad, chord_scale, with_loglik, repeat_cap, copy_bias,
                               copy_free_runs)
    else:
        index = torch.tensor(order, device=device)
        inputs = tuple(x if x is None else x[index] for x in inputs)
        out = _generate_sorted(model, *inputs, steps, [seeds[b] for b in order], [pad[b] for b in order],
                               chord_scale, with_loglik, repeat_cap, copy_bias, copy_free_runs)  # fmt: skip
        back = torch.argsort(index)
        out = out[0][back], out[1][back]
    return out if with_loglik else out[0]


def _generate_sorted(model: MelodyNet, primer, temperature, top_p, allowed_events, offset, max_run, chords,
                     step_allowed, copy_lag, event_bias, end_bias, end_start, steps, seeds, pad, chord_scale,
                     with_loglik, repeat_cap=None, copy_bias=0.0, copy_free_runs=True):  # fmt: skip
    """generate, its rows in order of padding -> (events, loglik: zeros without with_loglik)."""
    batch, p_len = primer.shape
    device = primer.device
    # (first row, end row, padding) of each group of rows padded alike
    groups = [(pad.index(p), len(pad) - pad[::-1].index(p), p) for p in sorted(set(pad))]
    noise = gumbel_noise(seeds, steps).to(device)  # (B, steps, C), drawn up front per row
    # the steps to sample, then one PAD column: where lookbacks from before the sequence read
    sequence = torch.cat([primer, torch.full((batch, steps + 1), PAD, dtype=primer.dtype, device=device)], 1)
    for start, end, skip in groups:  # padding reads as PAD, as the steps before a primer do to the lookbacks
        sequence[start:end, :skip] = PAD
    # Memory buffers: the null slot, then one entry per step read so far, filled in place.
    # Kept split by head, (B, heads, slots, H / heads), so each step's attention is two matmuls.
    heads = model.config.heads
    keys = torch.empty(batch, heads, p_len + steps, model.config.hidden // heads, device=device)
    values = torch.empty_like(keys)
    keys[:, :, 0], values[:, :, 0] = model._by_head(model.null_key[:, 0]), model._by_head(model.null_value[:, 0])
    # Each group's encoder reads only its own steps, so its final state is each row's own last
    # step. Slot j holds the state after step j - 1 and what followed it; slots over the
    # padding, or before the window of the first step, are never read, nor filled.
    state = None
    for start, end, skip in groups:
        rows = slice(start, end)
        encoded, group_state = model._encode(sequence[rows, skip:p_len], offset[rows] - skip)
        if len(groups) == 1:
            state = group_state
        else:
            if state is None:
                state = tuple(torch.empty(model.config.layers, batch, model.config.hidden, device=device)
                              for _ in range(2))  # fmt: skip
            state[0][:, rows], state[1][:, rows] = group_state
        first = max(skip + 1, p_len - model.config.window)
        primer_keys, primer_values = model._keys_values(
            encoded[:, first - 1 - skip : -1], sequence[rows, first:p_len],
            torch.arange(first, p_len, device=device), offset[rows])  # fmt: skip
        keys[rows, :, first:p_len] = model._by_head(primer_keys)
        values[rows, :, first:p_len] = model._by_head(primer_values)
    filled = p_len  # entries so far: the null slot and p_len - 1 memory slots
    chord_features = chord_bias = chord_guide = None
    if model.config.chords:  # all steps at once; step t reads its row
        steps_ahead = torch.arange(p_len, p_len + steps, device=device)
        chord_features, chord_bias = model._chord_inputs(chords, steps_ahead, batch, device)
        if chord_scale != 1.0 and chords is not None:  # scale what the chords add to "no chord"
            _, no_chord_bias = model._chord_inputs(None, steps_ahead, batch, device)
            chord_guide = (chord_scale - 1.0) * (chord_bias - no_chord_bias)
    run = _trailing_no_events(sequence[:, :p_len])  # (B,) NO_EVENTs in a row at the end so far (PAD is none)
    repeats = None if repeat_cap is None else SameNoteRun.of(sequence[:, :p_len], repeat_cap)
    copying = None if copy_lag is None or not bool((copy_lag > 0).any()) else copy_lag
    if copying is not None:  # per step, once: which rows copy, from where; which steps need any of it
        sounding = _sounding(sequence[:, :p_len])
        copy_active = copying > 0
        source_index = (torch.arange(p_len, p_len + steps, device=device)[None, :] - copying.clamp(min=0)).clamp(min=0)
        copy_any, quiet_any = copy_active.any(0).tolist(), (copying < 0).any(0).tolist()
    loglik = torch.zeros(batch, steps, device=device)
    nucleus_p = None if bool((top_p >= 1).all()) else top_p  # top_p 1 everywhere: no sorting
    w = StepWeights.cached(model)
    hidden = model.config.hidden
    chord_gates = None if chord_features is None else chord_features @ w.chord_gates  # (B, steps, 4H)
    # Per step: the rows of w.gate_table to add up (the previous event, the events LOOKBACKS
    # back, the position in the bar). A step before the sequence reads the PAD column at its end.
    targets = torch.arange(p_len, p_len + steps, device=device)
    event_columns = torch.stack([targets - 1] + [(targets - back).clamp(min=-1) for back in LOOKBACKS], 1)
    positions = (targets[None, :] - offset[:, None]) % STEPS_PER_BAR  # (B, steps)
    position_rows = positions + w.position_row
    state = [list(state[0]), list(state[1])]  # per layer (B, H), replaced step by step
    if end_bias is not None:  # per step, which rows are in their last steps, and which of them
        end_index = torch.arange(steps, device=device)[None, :] - end_start[:, None]
        end_inside = (end_index >= 0) & (end_index < end_bias.shape[1])
        end_index = end_index.clamp(0, end_bias.shape[1] - 1)
        end_any = end_inside.any(0).tolist()
        rows_index = torch.arange(batch, device=device)
    for t in range(p_len, p_len + steps):
        s = t - p_len
        rows = torch.cat([sequence[:, event_columns[s]] + w.event_rows, position_rows[:, s, None]], 1)
        inputs = F.embedding_bag(rows, w.gate_table, mode="sum")  # layer 0's gates from its inputs
        if chord_gates is not None:
            inputs = inputs + chord_gates[:, s]
        decoded = w.decoder_step(inputs, state)  # (B, H)
        projected = torch.addmm(w.state_bias, decoded, w.from_state)  # query, key, value, head
        position_qk = w.position_qk[positions[:, s]]  # (B, 2H)
        query = (projected[:, :hidden] + position_qk[:, :hidden])[:, None]
        # Each group reads the null slot and its own slots within the window.
        context = torch.cat([
            model._attend_one(query[start:end], keys[start:end, :, :filled], values[start:end, :, :filled],
                             max(skip + 1, filled - model.config.window))
            for start, end, skip in groups
        ]) if len(groups) > 1 else model._attend_one(query, keys[:, :, :filled], values[:, :, :filled],
                                                    max(1, filled - model.config.window))  # fmt: skip
        head = F.gelu(torch.addmm(projected[:, 3 * hidden :], context[:, 0], w.from_context))
        logits = torch.addmm(w.out_bias, head, w.out_weight)  # (B, C)
        model_logits = logits
        if chord_bias is not None:
            model_logits = logits = logits + chord_bias[:, s]
            if chord_guide is not None:
                logits = logits + chord_guide[:, s]
        allowed_now = allowed_events.clone()
        allowed_now[:, NO_EVENT] &= (max_run == 0) | (run < max_run)
        copy_now = copying is not None and copy_any[s]
        if copy_now:  # a returning bar: lean towards its source's event
            target = sequence.gather(1, source_index[:, s, None])[:, 0]
            target = torch.where((target == NOTE_OFF) & ~sounding, NO_EVENT, target)
            active = copy_active[:, s] & (target < NUM_CLASSES)
            target = target.clamp(max=NUM_CLASSES - 1)
            allowed_now[:, NO_EVENT] |= active & (target == NO_EVENT)
        if copying is not None and quiet_any[s]:  # a rest bar: no note starts; a held note ends as it likes
            quiet = copying[:, s] < 0
            allowed_now[:, FIRST_NOTE_ON:] &= ~quiet[:, None]
            allowed_now[:, NO_EVENT] |= quiet
            allowed_now[:, NOTE_OFF] &= ~quiet | sounding
        if step_allowed is not None:
            both = allowed_now & step_allowed[:, s]
            allowed_now = torch.where(both.any(-1, keepdim=True), both, step_allowed[:, s])
        ending = end_bias is not None and end_any[s]
        if ending:  # a phrase's end: its bias, and a wild take still lands
            inside = end_inside[:, s]
            heat = torch.where(inside, temperature.clamp(max=1.0), temperature)
        scaled = logits / (heat if ending else temperature)[:, None].clamp(min=1e-3)
        if event_bias is not None:
            scaled = scaled + event_bias
        if ending:
            scaled = scaled + end_bias[rows_index, end_index[:, s]] * inside[:, None]
        if copy_now:
            scaled = scaled.scatter_add(1, target[:, None], active[:, None].to(scaled.dtype) * copy_bias)
        if repeats is not None:
            limited = repeats.limit(scaled, allowed_now)
            if copy_now and copy_free_runs:  # a returning bar keeps its source's repeats, to the stop
                kept = active & (repeats.count < len(repeats.cap) - 1)
                limited = torch.where(kept[:, None], scaled, limited)
            scaled = limited
        log_probs = nucleus(scaled, nucleus_p, allowed_now)
        sequence[:, t] = (log_probs + noise[:, s]).argmax(-1)  # Gumbel-max sampling
        if repeats is not None:
            repeats.update(sequence[:, t])
        run = torch.where(sequence[:, t] == NO_EVENT, run + 1, 0)
        if copying is not None:
            sounding = torch.where(sequence[:, t] == NO_EVENT, sounding, sequence[:, t] != NOTE_OFF)
        if with_loglik:
            loglik[:, s] = torch.log_softmax(model_logits, -1).gather(1, sequence[:, t : t + 1])[:, 0]
        new_key = projected[:, hidden : 2 * hidden] + position_qk[:, hidden:]
        new_value = projected[:, 2 * hidden : 3 * hidden] + w.value_event[sequence[:, t]]
        keys[:, :, filled], values[:, :, filled] = model._by_head(new_key), model._by_head(new_value)
        filled += 1
    return sequence[:, p_len : p_len + steps], loglik


@dataclass(frozen=True)
class StepWeights:
    """A MelodyNet's weights arranged for sampling one step at a time: the same maths as forward()
    (in eval mode: no dropout), with fewer and smaller matrix products per step. Step-by-step
    sampling is bound by reading the weights once per step (a few rows each), so every part of
    an input that is an embedding (events, positions) is multiplied through its layer once per
    pass, into a table a step only indexes, and products of the same input are one product."""

    gate_table: torch.Tensor  # decoder layer 0's gates from each input embedding, biases in the position rows
    event_rows: torch.Tensor  # (1 + len(LOOKBACKS),) where the previous event's and each lookback's rows start
    position_row: int  # where the position rows start
    chord_gates: torch.Tensor | None  # (E, 4H) layer 0's gates from the chord input (models with chords)
    recurrent: list  # per layer, (In, 4H): layer 0 its own state; later layers [input; own state]
    biases: list  # per layer (4H,): None for layer 0 (in gate_table)
    from_state: torch.Tensor  # (H, 4H): query, key, value and head hidden layer from the decoder output
    state_bias: torch.Tensor  # (4H,) their biases
    position_qk: torch.Tensor  # (STEPS_PER_BAR, 2H): query and key from the position in the bar
    value_event: torch.Tensor  # (NUM_CLASSES + 1, H): value from the event that followed
    from_context: torch.Tensor  # (H, H): head hidden layer from the attention context
    out_weight: torch.Tensor  # (H, NUM_CLASSES)
    out_bias: torch.Tensor

    @classmethod
    @torch.no_grad()
    def of(cls, model: MelodyNet) -> StepWeights:
        c, decoder = model.config, model.decoder
        e, h = c.embed, c.hidden
        w_ih0 = decoder.weight_ih_l0  # (4H, In): inputs ordered as in _decoder_inputs
        events, positions = model.event_embed.weight, model.position_embed.weight
        blocks = [events @ w_ih0[:, :e].T]  # the previous event
        blocks.append(positions @ w_ih0[:, e : 2 * e].T + decoder.bias_ih_l0 + decoder.bias_hh_l0)
        blocks += [events @ w_ih0[:, (2 + k) * e : (3 + k) * e].T for k in range(len(LOOKBACKS))]
        rows = len(events)
        event_rows = torch.tensor([0] + [rows * (1 + k) + len(positions) for k in range(len(LOOKBACKS))])
        layers = range(c.layers)
        weights = lambda kind, k: getattr(decoder, f"{kind}_l{k}")  # noqa: E731
        head_in, head_out = model.head[0], model.head[3]
        return cls(
            gate_table=torch.cat(blocks).contiguous(),
            event_rows=event_rows.to(events.device),
            position_row=rows,
            chord_gates=w_ih0[:, (2 + len(LOOKBACKS)) * e :].T.contiguous() if c.chords else None,
            recurrent=[weights("weight_hh", 0).T.contiguous()]
            + [torch.cat([weights("weight_ih", k), weights("weight_hh", k)], 1).T.contiguous() for k in layers[1:]],
            biases=[None] + [weights("bias_ih", k) + weights("bias_hh", k) for k in layers[1:]],
            from_state=torch.cat([model.query.weight[:, :h], model.key.weight[:, :h], model.value.weight[:, :h],
                                  head_in.weight[:, :h]]).T.contiguous(),  # fmt: skip
            state_bias=torch.cat([model.query.bias, model.key.bias, model.value.bias, head_in.bias]),
            position_qk=torch.cat([positions @ model.query.weight[:, h:].T, positions @ model.key.weight[:, h:].T], 1),
            value_event=events @ model.value.weight[:, h:].T,
            from_context=head_in.weight[:, h:].T.contiguous(),
            out_weight=head_out.weight.T.contiguous(),
            out_bias=head_out.bias,
        )

    @classmethod
    def cached(cls, model: MelodyNet) -> StepWeights:
        """of(model), kept on the model until one of its parameters changes (in place, as an
        optimizer step or load_state_dict does, or replaced, as .to() does): arranging them costs
        ~5 ms, 3% of a request's sampling."""
        stamp = tuple((id(p), p._version) for p in model.parameters())
        kept = model.__dict__.get("_step_weights")
        if kept is None or kept[0] != stamp:
            kept = model.__dict__["_step_weights"] = (stamp, cls.of(model))
        return kept[1]

    def decoder_step(self, gates: torch.Tensor, state: list) -> torch.Tensor:
        """One decoder step: layer 0's gates from its inputs (B, 4H) and state [h, c] (per layer
        (B, H), replaced in place) -> the last layer's output (B, H)."""
        h, c = state
        x = None
        for k in range(len(h)):
            if k == 0:
                gates = torch.addmm(gates, h[0], self.recurrent[0])
            else:
                gates = torch.addmm(self.biases[k], torch.cat([x, h[k]], 1), self.recurrent[k])
            x, c[k] = lstm_cell(gates, c[k])
            h[k] = x
        return x


def lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTM's cell from its summed gates (B, 4H) in PyTorch's order (input, forget, cell,
    output) and the cell state (B, H) -> (h, c)."""
    hidden = c.shape[1]
    squashed = gates.sigmoid()
    cell = gates[:, 2 * hidden : 3 * hidden].tanh()
    c = torch.addcmul(squashed[:, hidden : 2 * hidden] * c, squashed[:, :hidden], cell)
    return squashed[:, 3 * hidden :] * c.tanh(), c


def _trailing_no_events(primer: torch.Tensor) -> torch.Tensor:
    """(B, P) -> (B,) how many NO_EVENTs end each row."""
    is_event = primer != NO_EVENT
    last_event = torch.where(is_event, torch.arange(primer.shape[1], device=primer.device), -1).max(1).values
    return primer.shape[1] - 1 - last_event


def _sounding(primer: torch.Tensor) -> torch.Tensor:
    """(B, P) -> (B,) whether a note still sounds after each row (its last event other than
    NO_EVENT is a NOTE_ON)."""
    moves = (primer != NO_EVENT) & (primer != PAD)
    last = torch.where(moves, torch.arange(primer.shape[1], device=primer.device), 0).max(1).values
    event = primer.gather(1, last[:, None])[:, 0]
    return moves.any(1) & (event != NOTE_OFF) & (event != NO_EVENT) & (event != PAD)


def gumbel_noise(seeds: list[int], steps: int) -> torch.Tensor:
    """(B, steps, NUM_CLASSES) Gumbel noise, each row from its own seeded generator."""
    rows = []
    for seed in seeds:
        uniform = torch.rand(steps, NUM_CLASSES, generator=torch.Generator().manual_seed(seed))
        rows.append(-torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7))))
    return torch.stack(rows)


def nucleus(logits: torch.Tensor, top_p: torch.Tensor | None, allowed: torch.Tensor) -> torch.Tensor:
    """Log-probabilities restricted to allowed events and, per row, to the smallest set of
    events whose probability reaches top_p (B,); everything else gets -inf. top_p None: the
    whole distribution (as top_p 1, without sorting)."""
    logits = logits.masked_fill(~allowed, float("-inf"))
    if top_p is None:
        return torch.log_softmax(logits, -1)
    probs = torch.softmax(logits, -1)
    sorted_probs, order = probs.sort(-1, descending=True)
    outside_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p[:, None]  # keeps the top event
    outside = torch.zeros_like(outside_sorted).scatter(-1, order, outside_sorted)
    return torch.log_softmax(logits, -1).masked_fill(outside | ~allowed, float("-inf"))
