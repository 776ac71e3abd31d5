"""The melody network's sampler: continue primers one sixteenth step at a time.

`generate` is the one sampling entry point (model.melody.sampling builds its requests). It runs
the same maths as MelodyNet.forward in eval mode, but step by step, reading weights rearranged
for it (StepWeights): a step's decoder inputs are rows of a table, the attention memory grows by
one key and value per step, and each row samples by the Gumbel-max trick from its own seeded
noise, so a row's result depends only on its own inputs and seed. Teacher forcing lives in
model.melody.network; tests/test_sampling.py checks that the two agree.

On a CPU a step of a small batch costs more in per-op overhead than in arithmetic, so the loop
keeps its ops few: what does not depend on the samples is computed for all steps before it
(step-major, step s reads row s), the network runs in torch and hands its logits to the host,
where the rules besides the network (rests, copies, same notes, motifs) and the sample itself
are numpy (a few hundred numbers a step: numpy's ops cost less than torch's dispatch) and cost
nothing on a step they leave alone, the log-likelihoods are scored once at the end, and the
nucleus is sorted out only for a row whose sample could lie outside it. A change here is checked
against the samples before it (benchmarks/sampler_identity.py: every row the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.melody.bar_loops import BarLoop
from model.melody.form import LABEL_NEW, LABEL_REST, LABEL_RETURN, LABEL_UNKNOWN, plan_code
from model.melody.fresh_bars import FreshBar
from model.melody.motifs import MotifEcho, lean
from model.melody.network import LOOKBACKS, MelodyNet
from model.melody.pitch_variety import FreshPitches
from model.melody.same_note import SameNoteRun
from model.music.events import FIRST_NOTE_ON, NO_EVENT, NOTE_OFF, NUM_CLASSES, PAD, STEPS_PER_BAR

REST_BAR, NEW_BAR = -1, -2  # copy_lag's codes for a form plan's bars that bring nothing back
CHORD_GATE_STEPS = STEPS_PER_BAR  # steps whose chord gates are worked out together (8 MB at 168 rows)


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
    motif_bias: torch.Tensor | None = None,
    loop_penalty: float = 0.0,
    fresh_penalty: float = 0.0,
    fresh_pitch_bias: float = 0.0,
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
    leave nothing, step_allowed alone. copy_lag (B, steps) long or None: per step, 0, REST_BAR (a
    form plan's bar where no note starts), NEW_BAR (a bar the plan calls new: with fresh_penalty,
    model.melody.fresh_bars keeps it from copying a sketch bar note for note) or how many
    steps back lies the event this step should copy (a form plan's returning bar,
    model.melody.form): that event's logit gets copy_bias more (after temperature, before the
    same-note cap, which with copy_free_runs spares a copying step until the run is at the cap's
    last entry: the source's own repeats come back, never a run past the stop), a rest or held
    note it copies is allowed past max_run, and a NOTE_OFF it copies while nothing sounds reads
    as NO_EVENT. event_bias (B, NUM_CLASSES) or None: added to every step's logits after
    temperature (a register's lift). end_bias (B, K, NUM_CLASSES) or None: added likewise on each
    row's K steps from end_start (B,) on (a phrase's end: its row's last K steps), which it samples
    no hotter than temperature 1. motif_bias (B,) or None: added (after temperature) to each NOTE_ON that would
    finish one of the row's primer's 4-note interval patterns from its last three notes, the
    NOTE_ONs then shifted to keep their share: it picks the note, not whether one starts
    (model.melody.motifs). loop_penalty: taken from each note that would repeat, in place, a bar
    that follows two alike bars (a third in a row; model.melody.bar_loops), copy_lag's steps too.
    fresh_penalty: taken, in copy_lag's NEW_BAR steps, from the note that would go on copying a
    bar of the primer (model.melody.fresh_bars). fresh_pitch_bias: added (after temperature) to each
    NOTE_ON of the primer's scale and register that its row has not played yet, the NOTE_ONs then
    shifted to keep their share (model.melody.pitch_variety)."""
    batch, p_len = primer.shape
    device = primer.device
    pad = [0] * batch if lengths is None else [p_len - int(n) for n in lengths.tolist()]
    if not all(0 <= p <= p_len - 2 for p in pad):
        raise ValueError(f"primer lengths must be between 2 and {p_len}, not {lengths.tolist()}")
    offset = torch.zeros(batch, dtype=torch.long, device=device) if offset is None else offset
    max_run = torch.zeros(batch, dtype=torch.long, device=device) if max_run is None else max_run
    inputs = (primer, temperature, top_p, allowed_events, offset, max_run, chords, step_allowed, copy_lag, event_bias,
              end_bias, end_start, motif_bias)
    order = sorted(range(batch), key=pad.__getitem__)  # rows padded alike side by side: each group a slice
    # inference mode: the ~100 small ops of a step skip autograd's bookkeeping (~10% of a pass's CPU)
    with torch.inference_mode():
        if order == list(range(batch)):
            out = _generate_sorted(model, *inputs, steps, seeds, pad, chord_scale, with_loglik, repeat_cap, copy_bias,
                                   copy_free_runs, loop_penalty, fresh_penalty, fresh_pitch_bias)
        else:
            index = torch.tensor(order, device=device)
            inputs = tuple(x if x is None else x[index] for x in inputs)
            out = _generate_sorted(model, *inputs, steps, [seeds[b] for b in order], [pad[b] for b in order],
                                   chord_scale, with_loglik, repeat_cap, copy_bias, copy_free_runs,
                                   loop_penalty, fresh_penalty, fresh_pitch_bias)  # fmt: skip
            back = torch.argsort(index)
            out = out[0][back], out[1][back]
    out = out[0].clone(), out[1].clone()  # ordinary tensors again, which a caller may use with autograd on
    return out if with_loglik else out[0]


def plan_codes(copy_lag: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(B, steps) copy_lag's plan, as the network is told it (model.melody.form.plan_code): per
    step its bar's label and the next bar's (none after the last step)."""
    labels = np.select([copy_lag > 0, copy_lag == REST_BAR, copy_lag == NEW_BAR], [LABEL_RETURN, LABEL_REST, LABEL_NEW],
                       LABEL_UNKNOWN)  # fmt: skip
    steps = labels.shape[1]
    next_bar = np.arange(steps)[None, :] + STEPS_PER_BAR - positions  # the step where the next bar starts
    following = np.take_along_axis(labels, np.minimum(next_bar, steps - 1), 1)
    return plan_code(labels, np.where(next_bar < steps, following, LABEL_UNKNOWN))


def _generate_sorted(model: MelodyNet, primer, temperature, top_p, allowed_events, offset, max_run, chords,
                     step_allowed, copy_lag, event_bias, end_bias, end_start, motif_bias, steps, seeds, pad,
                     chord_scale, with_loglik, repeat_cap=None, copy_bias=0.0, copy_free_runs=True,
                     loop_penalty=0.0, fresh_penalty=0.0, fresh_pitch_bias=0.0):  # fmt: skip
    """generate, its rows in order of padding -> (events, loglik: zeros without with_loglik)."""
    batch, p_len = primer.shape
    device = primer.device
    # (first row, end row, padding) of each group of rows padded alike
    groups = [(pad.index(p), len(pad) - pad[::-1].index(p), p) for p in sorted(set(pad))]
    noise = gumbel_noise(seeds, steps)  # (B, steps, C), drawn up front per row, kept on the host
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
    # What a step's choice depends on besides the network (the rules: rests, copies, same notes)
    # is kept per row in numpy arrays on the host: their few integer ops cost a fraction of the
    # tensor ops they replace, and they tell when a rule leaves a step alone.
    history = sequence.cpu().numpy().copy()  # (B, P + steps + 1): sampled events are written here
    everyone = np.arange(batch)
    run = _trailing_no_events(sequence[:, :p_len]).cpu().numpy()  # NO_EVENTs in a row at the end (PAD is none)
    rest_limit = max_run.cpu().numpy()
    rest_limit = np.where(rest_limit == 0, np.iinfo(np.int64).max, rest_limit)  # 0: no limit
    repeats = None if repeat_cap is None else SameNoteRun.of(sequence[:, :p_len], repeat_cap)
    echo = None
    if motif_bias is not None and bool((motif_bias != 0).any()):
        echo = MotifEcho(sequence[:, :p_len].tolist(), motif_bias.cpu().numpy())
    unplayed = FreshPitches(sequence[:, :p_len].tolist(), fresh_pitch_bias) if fresh_pitch_bias else None
    copying = None if copy_lag is None or not bool((copy_lag != 0).any()) else copy_lag
    if copying is not None:  # per step, once: which rows copy, from where; which steps need any of it
        sounding = _sounding(sequence[:, :p_len]).cpu().numpy()
        source_index = (torch.arange(p_len, p_len + steps, device=device)[None, :] - copying.clamp(min=0)).clamp(min=0)
        copy_any, quiet_any = (copying > 0).any(0).tolist(), (copying == REST_BAR).any(0).tolist()
        copying, source_index = copying.cpu().numpy(), source_index.cpu().numpy()
    masks = _StepMasks(allowed_events)
    nucleus_p = None if bool((top_p >= 1).all()) else top_p[:, None].float().cpu().numpy()  # 1 everywhere: no sorting
    nucleus_floor = np.log(1 - top_p.double().cpu().numpy() + NUCLEUS_MARGIN)
    w = StepWeights.cached(model)
    hidden, heads = model.config.hidden, model.config.heads
    # Everything a step reads that does not depend on what was sampled, step-major: step s reads row s.
    noise = noise.transpose(0, 1).contiguous().numpy()  # (steps, B, C)
    # the chords' input to layer 0's gates, worked out CHORD_GATE_STEPS steps at a time: for all
    # steps at once it was (steps, B, 4H), 67 MB at a burst's 168 rows, and twice that while it
    # was made step-major; one step at a time, 128 small products a pass
    chord_steps = None if chord_features is None else chord_features.transpose(0, 1).contiguous()  # (steps, B, E)
    if chord_bias is not None:
        chord_bias = chord_bias.transpose(0, 1).contiguous()
        chord_guide = None if chord_guide is None else chord_guide.transpose(0, 1).contiguous().cpu().numpy()
    if step_allowed is not None:
        step_allowed = step_allowed.transpose(0, 1).contiguous().cpu().numpy()
    if event_bias is not None:
        event_bias = event_bias.float().cpu().numpy()
    targets = torch.arange(p_len, p_len + steps, device=device)
    positions = (targets[None, :] - offset[:, None]) % STEPS_PER_BAR  # (B, steps)
    loops = BarLoop(history, positions.cpu().numpy(), p_len, loop_penalty) if loop_penalty else None
    fresh = None
    if fresh_penalty and copying is not None and (copying == NEW_BAR).any():
        fresh = FreshBar(history, positions.cpu().numpy(), p_len, copying == NEW_BAR, fresh_penalty)
    # the position's query and key rows are gathered per step: for all steps at once they would be
    # (steps, B, 2H), ~57 MB at a burst's 192 rows, held through the pass
    position_rows = positions.T.contiguous()  # (steps, B)
    # Per step, the rows of w.gate_table each row adds up for layer 0's gates: the previous event,
    # the events LOOKBACKS back (a step before the sequence reads the PAD column at its end), the
    # position in the bar. What the primer tells is filled in now; each sampled event is written
    # into the steps that will read it.
    # A model with plan inputs reads its bar's plan label too (none: nothing told).
    backs = (1, *LOOKBACKS)
    event_rows = w.event_rows.tolist()
    columns = [[max(t - back, -1) for back in backs] for t in targets.tolist()]
    width = len(backs) + 1 + (w.plan_row is not None)
    bags = np.empty((steps, batch, width), dtype=np.int64)
    bags[:, :, : len(backs)] = history[:, columns].transpose(1, 0, 2) + event_rows
    bags[:, :, len(backs)] = (positions + w.position_row).T.cpu().numpy()
    if w.plan_row is not None:
        told = np.zeros((batch, steps), dtype=np.int64) if copy_lag is None else \
            plan_codes(copy_lag.cpu().numpy(), positions.cpu().numpy())
        bags[:, :, -1] = told.T + w.plan_row
    bag_offsets = torch.arange(0, batch * width, width, device=device)
    heat = temperature[None, :].expand(steps, -1)  # (steps, B)
    end_any = [False] * steps
    if end_bias is not None:  # per step, which rows are in their last steps: their bias, sampled no hotter than 1
        end_index = torch.arange(steps, device=device)[None, :] - end_start[:, None]
        end_inside = (end_index >= 0) & (end_index < end_bias.shape[1])  # (B, steps)
        end_index = end_index.clamp(0, end_bias.shape[1] - 1)
        end_any = end_inside.any(0).tolist()
        end_add = end_bias[torch.arange(batch, device=device)[:, None], end_index] * end_inside[..., None]
        end_add = end_add.transpose(0, 1).contiguous().float().cpu().numpy()  # (steps, B, C)
        heat = torch.where(end_inside.T, temperature.clamp(max=1.0), temperature)
    divisor = heat[..., None].clamp(min=1e-3).float().cpu().numpy()  # (steps, B, 1)
    state = [list(state[0]), list(state[1])]  # per layer (B, H), replaced step by step
    # the network's own logits per step, for the log-likelihoods, scored once at the end
    model_logits = torch.empty(steps, batch, NUM_CLASSES, device=device) if with_loglik else None
    scale = (hidden // heads) ** -0.5
    head_keys, head_values = keys.flatten(0, 1), values.flatten(0, 1)  # (B * heads, slots, H / heads) views
    for t in range(p_len, p_len + steps):
        s = t - p_len
        rows = torch.from_numpy(bags[s]).view(-1).to(device)
        inputs = torch.embedding_bag(w.gate_table, rows, bag_offsets, False, 0, False, None, False, None)[0]
        if chord_steps is not None:
            if s % CHORD_GATE_STEPS == 0:  # the next steps' chord gates, in one product
                ahead = chord_steps[s : s + CHORD_GATE_STEPS]
                chord_gates = (ahead.flatten(0, 1) @ w.chord_gates).view(len(ahead), batch, -1)
            inputs += chord_gates[s % CHORD_GATE_STEPS]
        decoded = w.decoder_step(inputs, state)  # (B, H)
        position_q, position_k = w.position_qk.index_select(0, position_rows[s]).split(hidden, 1)  # (B, H) each
        projected = torch.addmm(w.state_bias, decoded, w.from_state)
        from_query, from_key, from_value, from_head = projected.split(hidden, 1)  # (B, H) views
        visible_from = max(1, filled - model.config.window)
        if len(groups) == 1 and visible_from == 1:  # model._attend_one, inline: one batch of heads
            q = torch.add(from_query, position_q).view(batch * heads, 1, -1).mul_(scale)
            probs = torch.softmax(torch.bmm(q, head_keys.narrow(1, 0, filled).transpose(1, 2)), -1)
            context = torch.bmm(probs, head_values.narrow(1, 0, filled)).view(batch, hidden)
        else:  # each group reads the null slot and its own slots within the window
            query = (from_query + position_q)[:, None]
            context = torch.cat([
                model._attend_one(query[start:end], keys[start:end, :, :filled], values[start:end, :, :filled],
                                 max(skip + 1, visible_from))
                for start, end, skip in groups
            ])[:, 0]  # fmt: skip
        head = F.gelu(torch.addmm(from_head, context, w.from_context))
        if chord_bias is None:
            logits = torch.addmm(w.out_bias, head, w.out_weight, out=None if model_logits is None else model_logits[s])
        else:
            logits = torch.addmm(w.out_bias, head, w.out_weight)  # (B, C)
            logits = torch.add(logits, chord_bias[s], out=None if model_logits is None else model_logits[s])
        # The rest of the step is decided on the host, in numpy: the network's logits (B, C) are a
        # few hundred numbers, where a numpy op costs less than half a torch op's dispatch (the
        # lean, the same-note cap and the sample took 25 ms of a default job's CPU in torch, 15 in
        # numpy; the same samples: BENCHMARKS.md, issue 23 point 5). Never written in place: they
        # may be model_logits' own row.
        network = logits.cpu().numpy()
        if chord_guide is not None:
            network = network + chord_guide[s]
        # what each row may do now; a rule that changes nothing costs nothing
        no_event = masks.no_event & (run < rest_limit)
        quiet = None
        copy_now = copying is not None and copy_any[s]
        if copy_now:  # a returning bar: lean towards its source's event
            target = history[everyone, source_index[:, s]]
            target = np.where((target == NOTE_OFF) & ~sounding, NO_EVENT, target)
            active = (copying[:, s] > 0) & (target < NUM_CLASSES)
            target = np.minimum(target, NUM_CLASSES - 1)
            no_event |= active & (target == NO_EVENT)
        if copying is not None and quiet_any[s]:  # a rest bar: no note starts; a held note ends as it likes
            quiet = copying[:, s] == REST_BAR
            no_event |= quiet
        allowed_now, blocked_now = masks.pick(no_event, quiet, None if quiet is None else quiet & ~sounding)
        if step_allowed is not None:
            both = allowed_now & step_allowed[s]
            allowed_now = np.where(both.any(-1, keepdims=True), both, step_allowed[s])
            blocked_now = ~allowed_now
        scaled = network / divisor[s]
        if event_bias is not None:
            scaled += event_bias
        if end_any[s]:  # a phrase's end
            scaled += end_add[s]
        # the sketch's motifs and the notes not played yet: which note, not whether one starts
        leans = [bias.now for bias in (echo, unplayed) if bias is not None and bias.any()]
        if leans:  # one lean with both biases is the same as one after the other
            scaled = lean(scaled, allowed_now, sum(leans))
        if loops is not None and (found := loops.penalties(s)) is not None:  # a third bar alike in a row
            echoed, penalty = found
            scaled[everyone, echoed] += penalty
        if fresh is not None and (away := fresh.penalties(s)) is not None:  # a new bar turning into a copy
            scaled += away
        if copy_now:
            scaled[everyone, target] += np.where(active, copy_bias, 0.0).astype(np.float32)
        if repeats is not None:
            kept = None
            if copy_now and copy_free_runs:  # a returning bar keeps its source's repeats, to the stop
                kept = active & (repeats.count < len(repeats.cap) - 1)
            if repeats.binds(kept):
                limited = repeats.limit(scaled, allowed_now)
                if kept is not None and kept.any():
                    limited = np.where(kept[:, None], scaled, limited)
                scaled = limited
        events = _sample(scaled, nucleus_p, nucleus_floor, blocked_now, noise[s])
        sampled = torch.from_numpy(events).to(device)
        history[:, t] = events
        rest = events == NO_EVENT
        run = (run + 1) * rest
        for k, back in enumerate(backs):
            if s + back < steps:
                bags[s + back, :, k] = events + event_rows[k]
        if copying is not None:
            sounding = np.where(rest, sounding, events != NOTE_OFF)
        if repeats is not None:
            repeats.update(events)
        if echo is not None:
            echo.update(events)
        if unplayed is not None:
            unplayed.update(events)
        if fresh is not None:
            fresh.update(s, events)
        # the step's memory entry: key from its state and the next position, value from its state and event
        torch.add(from_key.view(batch, heads, -1), position_k.view(batch, heads, -1), out=keys.select(2, filled))
        torch.add(from_value.view(batch, heads, -1), w.value_event.index_select(0, sampled).view(batch, heads, -1),
                  out=values.select(2, filled))
        filled += 1
    out = torch.from_numpy(np.ascontiguousarray(history[:, p_len : p_len + steps])).to(device)
    if model_logits is None:
        return out, torch.zeros(batch, steps, device=device)
    loglik = torch.log_softmax(model_logits, -1).gather(2, out.T[..., None])[..., 0].T.contiguous()  # (B, steps)
    return out, loglik


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
    plan_row: int | None  # where the plan codes' rows start (models with plan inputs)
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
        chord_at = (2 + len(LOOKBACKS)) * e  # then the chord input, then the plan's
        plan_at = chord_at + c.chords * e
        if c.plan:
            blocks.append(model.plan_embed.weight @ w_ih0[:, plan_at : plan_at + e].T)
        rows = len(events)
        event_rows = torch.tensor([0] + [rows * (1 + k) + len(positions) for k in range(len(LOOKBACKS))])
        layers = range(c.layers)
        weights = lambda kind, k: getattr(decoder, f"{kind}_l{k}")  # noqa: E731
        head_in, head_out = model.head[0], model.head[3]
        return cls(
            gate_table=torch.cat(blocks).contiguous(),
            event_rows=event_rows.to(events.device),
            position_row=rows,
            chord_gates=w_ih0[:, chord_at : chord_at + e].T.contiguous() if c.chords else None,
            plan_row=rows * (1 + len(LOOKBACKS)) + len(positions) if c.plan else None,
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
    cell = gates[:, 2 * hidden : 3 * hidden].tanh()
    input_gate, forget, _, output = gates.sigmoid().view(-1, 4, hidden).unbind(1)
    c = torch.addcmul(forget * c, input_gate, cell)
    return output * c.tanh(), c


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


def nucleus(logits: np.ndarray, top_p: np.ndarray | None, allowed: np.ndarray) -> np.ndarray:
    """Log-probabilities restricted to allowed events and, per row, to the smallest set of
    events whose probability reaches top_p (B,); everything else gets -inf. top_p None: the
    whole distribution (as top_p 1, without sorting). numpy arrays, (B, C) each."""
    blocked = ~allowed
    logits = np.where(blocked, -np.inf, logits).astype(np.float32)
    log_probs = log_softmax(logits)
    if top_p is None:
        return log_probs
    return np.where(_outside(logits, top_p[:, None]) | blocked, -np.inf, log_probs).astype(np.float32)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Per row (the last axis), logits minus their log-sum-exp; a row of -inf only gives nan."""
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = logits - logits.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _outside(logits: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    """(B, C) bool: the events outside each row's nucleus (logits masked already, top_p (B, 1))."""
    probs = np.exp(log_softmax(logits))
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, -1)
    outside_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # keeps the top event
    outside = np.empty_like(outside_sorted)
    np.put_along_axis(outside, order, outside_sorted, -1)
    return outside


NUCLEUS_MARGIN = 1e-3  # probability: far above float32 rounding of a softmax's sums (~1e-5)


def _sample(logits: np.ndarray, top_p: np.ndarray | None, floor: np.ndarray, blocked: np.ndarray,
            noise: np.ndarray) -> np.ndarray:
    """One step's Gumbel-max sample (B,) from nucleus(logits, top_p, ~blocked) + noise; logits
    (B, C) are overwritten, top_p is (B, 1) or None. Sorting out the nucleus is skipped when it
    cannot change the sample: where each row's sample has a log-probability above its floor,
    log(1 - top_p + NUCLEUS_MARGIN), all the other events hold less than top_p, so the sample is
    inside the nucleus, and taking out events it beat anyway leaves it the argmax (the first
    index of the same maximum). Only the rows where that does not hold are sorted out."""
    np.putmask(logits, blocked, -np.inf)
    log_probs = log_softmax(logits)
    noisy = log_probs + noise
    sampled = noisy.argmax(-1)
    if top_p is None:
        return sampled
    unsure = ~(log_probs[np.arange(len(sampled)), sampled] > floor)  # nan (nothing allowed) too
    if unsure.any():  # those rows the long way, each on its own
        rows = np.flatnonzero(unsure)
        noisy = noisy[rows]
        np.putmask(noisy, _outside(logits[rows], top_p[rows]) | blocked[rows], -np.inf)
        sampled[rows] = noisy.argmax(-1)
    return sampled


class _StepMasks:
    """What each row may do at a step: allowed_events (B, C) and its variants by what a step's
    rules change: NO_EVENT allowed or not (bit 1), NOTE_ONs barred (bit 2: a rest bar), NOTE_OFF
    barred (bit 4: a rest bar with nothing sounding). Each with its complement, `blocked`. numpy
    arrays on the host, as the step's rules."""

    def __init__(self, allowed: torch.Tensor):
        allowed = allowed.cpu().numpy().astype(bool)
        batch = len(allowed)
        self.allowed, self.blocked = allowed, ~allowed
        self.no_event = allowed[:, NO_EVENT].copy()  # (B,) what each row allows when no rule speaks
        self.first = np.arange(batch) * 8  # each row's variants start here
        bits = np.arange(8)
        variants = np.repeat(allowed[:, None, :], 8, axis=1)  # (B, 8, C)
        variants[:, :, NO_EVENT] = (bits & 1).astype(bool)
        variants[:, :, FIRST_NOTE_ON:] &= ~(bits & 2).astype(bool)[None, :, None]
        variants[:, :, NOTE_OFF] &= ~(bits & 4).astype(bool)
        self.variants = variants.reshape(batch * 8, -1)
        self.blocked_variants = ~self.variants

    def pick(self, no_event: np.ndarray, no_note_on: np.ndarray | None, no_note_off: np.ndarray | None):
        """-> (allowed, blocked) (B, C) for these per-row rules, (B,) bool each (None: all False)."""
        if no_note_on is None and not (no_event != self.no_event).any():
            return self.allowed, self.blocked
        index = self.first + no_event
        if no_note_on is not None:
            index = index + 2 * no_note_on + 4 * no_note_off
        return self.variants[index], self.blocked_variants[index]
