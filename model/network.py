"""The attention encoder/decoder LSTM and its sampler.

The encoder reads the primer; the decoder predicts the continuation one sixteenth at a time. Each
decoder step sees the previous event, its position in the bar, and the events one and two bars
back (pop melodies repeat by the bar). Attention looks back over a memory of everything so far,
encoder states for the primer and decoder states after it: a key is a state and the position in
the bar of the step after it, a value is that state with the event that actually followed it. So
attention can find "where the melody was like this before" and copy what came next, while
teacher-forced training stays parallel (no attention fed back into the LSTM input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.defaults import DEFAULT_WEIGHTS  # noqa: F401 - loaded by default, re-exported
from model.events import FIRST_NOTE_ON, NO_EVENT, NUM_CLASSES, PAD, STEPS_PER_BAR, STEPS_PER_BEAT

LOOKBACKS = (STEPS_PER_BAR, 2 * STEPS_PER_BAR)  # steps; events this far back are decoder inputs

# Chords reach the network as one int code per step: a 12-bit pitch-class mask (bit k = pitch
# class k) plus CHORD_ROOT * root; NO_CHORD (root 12, empty mask) for no chord or not told.
CHORD_ROOT = 1 << 12
NO_CHORD = 12 * CHORD_ROOT
CHORD_AHEAD = (0, STEPS_PER_BEAT)  # a decoder step sees the chord at its own step and one beat later
CHORD_INPUT = 12 + 13  # chroma + root one-hot (13th: no chord)


@dataclass
class NetworkConfig:
    embed: int = 64  # event embedding size
    hidden: int = 192  # LSTM units per layer, also the attention width
    layers: int = 2  # LSTM layers in encoder and decoder each
    heads: int = 4  # attention heads
    window: int = 4096  # steps of memory attention may look back over (256 bars: any song, any request)
    dropout: float = 0.2
    chords: bool = False  # decoder conditioned on the chord at each step (checkpoints before it: False)


class MelodyNet(nn.Module):
    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = c = config
        self.event_embed = nn.Embedding(NUM_CLASSES + 1, c.embed)  # + PAD
        self.position_embed = nn.Embedding(STEPS_PER_BAR, c.embed)
        self.encoder = nn.LSTM(2 * c.embed, c.hidden, c.layers, batch_first=True, dropout=c.dropout)
        decoder_input = (2 + len(LOOKBACKS) + c.chords) * c.embed
        if c.chords:
            self.chord_proj = nn.Linear(len(CHORD_AHEAD) * CHORD_INPUT, c.embed)
            # and straight to the output: a learned "chord tones are likelier" bias, zero at first
            self.chord_logits = nn.Linear(len(CHORD_AHEAD) * CHORD_INPUT, NUM_CLASSES)
            nn.init.zeros_(self.chord_logits.weight)
            nn.init.zeros_(self.chord_logits.bias)
        self.decoder = nn.LSTM(decoder_input, c.hidden, c.layers, batch_first=True, dropout=c.dropout)
        self.query = nn.Linear(c.hidden + c.embed, c.hidden)
        self.key = nn.Linear(c.hidden + c.embed, c.hidden)
        self.value = nn.Linear(c.hidden + c.embed, c.hidden)
        self.null_key = nn.Parameter(torch.zeros(1, 1, c.hidden))  # always visible: lets a head
        self.null_value = nn.Parameter(torch.zeros(1, 1, c.hidden))  # attend to "nothing"
        self.head = nn.Sequential(
            nn.Linear(2 * c.hidden, c.hidden), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.hidden, NUM_CLASSES)
        )
        self.drop = nn.Dropout(c.dropout)

    # -- pieces shared by teacher forcing and sampling --------------------------------------
    def _positions(self, steps: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Position-in-bar embeddings (B, len(steps), E); row b's bar starts at step offset[b]."""
        return self.position_embed((steps[None, :] - offset[:, None]) % STEPS_PER_BAR)

    def _encode(self, primer: torch.Tensor, offset: torch.Tensor):
        """primer (B, P) -> encoder outputs (B, P, H) and the final LSTM state."""
        steps = torch.arange(primer.shape[1], device=primer.device)
        x = torch.cat([self.event_embed(primer), self._positions(steps, offset)], -1)
        return self.encoder(self.drop(x))

    def _decoder_inputs(self, sequence, targets, offset, chord_features=None) -> torch.Tensor:
        """Inputs for predicting `sequence[:, t]` for each t in `targets` (absolute steps);
        chord_features: _chord_inputs for these targets (models with chord inputs)."""
        parts = [self.event_embed(sequence[:, targets - 1]), self._positions(targets, offset)]
        for lookback in LOOKBACKS:
            back = targets - lookback
            events = sequence[:, back.clamp(min=0)]
            events = torch.where(back >= 0, events, torch.full_like(events, PAD))
            parts.append(self.event_embed(events))
        if self.config.chords:
            parts.append(chord_features)
        return self.drop(torch.cat(parts, -1))

    def _chord_inputs(self, chords, targets, batch, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The chords at each target step and CHORD_AHEAD steps later, as decoder inputs
        (B, len(targets), E) and as output biases (B, len(targets), NUM_CLASSES)."""
        if chords is None:
            chords = torch.full((batch, 1), NO_CHORD, dtype=torch.long, device=device)
        features = []
        for ahead in CHORD_AHEAD:
            at = targets + ahead
            codes = chords[:, at.clamp(max=chords.shape[1] - 1)]
            codes = torch.where(at < chords.shape[1], codes, NO_CHORD)
            chroma = (codes[..., None] >> torch.arange(12, device=device)) & 1
            root = F.one_hot(codes // CHORD_ROOT, 13)
            features += [chroma, root]
        features = torch.cat(features, -1).float()
        return self.chord_proj(features), self.chord_logits(features)

    def _keys_values(self, states, next_events, next_steps, offset):
        """Memory entries: states (B, M, H) and the events that followed them (B, M) at steps (M,)."""
        positions = self._positions(next_steps, offset)
        keys = self.key(torch.cat([states, positions], -1))
        values = self.value(torch.cat([states, self.event_embed(next_events)], -1))
        return keys, values

    def _attend(self, queries, keys, values, allowed):
        """queries (B, Q, H); keys/values (B, M, H), the null slot first; allowed (Q, M) bool or
        None for all -> context (B, Q, H)."""
        batch, q_len, hidden = queries.shape
        heads = self.config.heads

        def split(x):
            return x.view(batch, x.shape[1], heads, hidden // heads).transpose(1, 2)  # (B, heads, L, h)

        context = F.scaled_dot_product_attention(split(queries), split(keys), split(values), attn_mask=allowed)
        return context.transpose(1, 2).reshape(batch, q_len, hidden)

    def _by_head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, [M,] H) -> (B, heads, [M,] H / heads)."""
        heads = self.config.heads
        if x.dim() == 2:
            return x.view(x.shape[0], heads, -1)
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    def _attend_one(self, query, keys, values, visible_from: int = 1):
        """_attend for one query step, every slot allowed: query (B, 1, H); keys/values (B, heads,
        M, H / heads), the null slot first. Only the null slot and the slots from `visible_from`
        on are read (the window, and a row's own slots). The same maths as
        scaled_dot_product_attention, as matmuls: for a single query they cost a fraction of
        its CPU kernel."""
        batch, _, hidden = query.shape
        q = self._by_head(query[:, 0])[:, :, None] * (hidden // self.config.heads) ** -0.5  # (B, heads, 1, h)
        if visible_from == 1:
            return (torch.softmax(q @ keys.transpose(-1, -2), -1) @ values).reshape(batch, 1, hidden)
        null_key, null_value = keys[:, :, :1], values[:, :, :1]  # the null slot apart: nothing else before is read
        keys, values = keys[:, :, visible_from:], values[:, :, visible_from:]
        probs = torch.softmax(torch.cat([q @ null_key.transpose(-1, -2), q @ keys.transpose(-1, -2)], -1), -1)
        return (probs[..., :1] @ null_value + probs[..., 1:] @ values).reshape(batch, 1, hidden)

    def _with_null(self, keys, values, allowed):
        """Put the always-visible null slot in front of the memory (and of its mask)."""
        batch = keys.shape[0]
        keys = torch.cat([self.null_key.expand(batch, -1, -1), keys], 1)
        values = torch.cat([self.null_value.expand(batch, -1, -1), values], 1)
        return keys, values, torch.cat([torch.ones_like(allowed[:, :1]), allowed], 1)

    def _window_mask(self, query_pos: torch.Tensor, memory_pos: torch.Tensor) -> torch.Tensor:
        """Memory position m is visible from query position q when q - window <= m < q."""
        diff = query_pos[:, None] - memory_pos[None, :]
        return (diff >= 1) & (diff <= self.config.window)

    # -- teacher forcing -----------------------------------------------------------------------
    def forward(self, primer: torch.Tensor, target: torch.Tensor, offset: torch.Tensor | None = None,
                chords: torch.Tensor | None = None) -> torch.Tensor:
        """primer (B, P), target (B, T) -> logits (B, T, NUM_CLASSES) for each target step.
        offset (B,): the step where row b's first bar starts (its left padding); default 0.
        chords (B, P+T) chord codes per step of primer and target (None: no chords; a model
        without chord inputs ignores them)."""
        p_len, t_len = primer.shape[1], target.shape[1]
        sequence = torch.cat([primer, target], 1)  # (B, P+T)
        device = primer.device
        offset = torch.zeros(len(primer), dtype=torch.long, device=device) if offset is None else offset
        encoded, state = self._encode(primer, offset)  # (B, P, H)
        targets = torch.arange(p_len, p_len + t_len, device=device)
        chord_features, chord_bias = self._chord_inputs(chords, targets, len(primer), device) if self.config.chords \
            else (None, 0.0)
        decoded, _ = self.decoder(self._decoder_inputs(sequence, targets, offset, chord_features), state)
        queries = self.query(torch.cat([decoded, self._positions(targets, offset)], -1))

        # Memory position m holds the state that has read events[..m]; its value carries events[m+1].
        memory = torch.cat([encoded[:, : p_len - 1], decoded[:, :-1]], 1)  # (B, P+T-2, H)
        memory_pos = torch.arange(memory.shape[1], device=device)
        keys, values = self._keys_values(memory, sequence[:, 1 : memory.shape[1] + 1], memory_pos + 1, offset)
        context = self._attend(queries, *self._with_null(keys, values, self._window_mask(targets - 1, memory_pos)))
        return self.head(self.drop(torch.cat([decoded, context], -1))) + chord_bias

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
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
        repeat_cap: torch.Tensor | None = None,
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
        one more of it may have is entry min(r, K - 1) (0: it may not come again).
        -> (B, steps); with_loglik, also (B, steps) each sampled
        step's log-likelihood under the model itself (no temperature, nucleus or masks), per step
        so a row asking for fewer steps than the batch can score just its own."""
        batch, p_len = primer.shape
        device = primer.device
        pad = [0] * batch if lengths is None else [p_len - int(n) for n in lengths.tolist()]
        if not all(0 <= p <= p_len - 2 for p in pad):
            raise ValueError(f"primer lengths must be between 2 and {p_len}, not {lengths.tolist()}")
        offset = torch.zeros(batch, dtype=torch.long, device=device) if offset is None else offset
        max_run = torch.zeros(batch, dtype=torch.long, device=device) if max_run is None else max_run
        inputs = (primer, temperature, top_p, allowed_events, offset, max_run, chords)
        order = sorted(range(batch), key=pad.__getitem__)  # rows padded alike side by side: each group a slice
        if order == list(range(batch)):
            out = self._generate_sorted(*inputs, steps, seeds, pad, chord_scale, with_loglik, repeat_cap)
        else:
            index = torch.tensor(order, device=device)
            inputs = tuple(x if x is None else x[index] for x in inputs)
            out = self._generate_sorted(*inputs, steps, [seeds[b] for b in order], [pad[b] for b in order],
                                        chord_scale, with_loglik, repeat_cap)  # fmt: skip
            back = torch.argsort(index)
            out = out[0][back], out[1][back]
        return out if with_loglik else out[0]

    def _generate_sorted(self, primer, temperature, top_p, allowed_events, offset, max_run, chords, steps, seeds, pad,
                         chord_scale, with_loglik, repeat_cap=None):  # fmt: skip
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
        heads = self.config.heads
        keys = torch.empty(batch, heads, p_len + steps, self.config.hidden // heads, device=device)
        values = torch.empty_like(keys)
        keys[:, :, 0], values[:, :, 0] = self._by_head(self.null_key[:, 0]), self._by_head(self.null_value[:, 0])
        # Each group's encoder reads only its own steps, so its final state is each row's own last
        # step. Slot j holds the state after step j - 1 and what followed it; slots over the
        # padding, or before the window of the first step, are never read, nor filled.
        state = None
        for start, end, skip in groups:
            rows = slice(start, end)
            encoded, group_state = self._encode(sequence[rows, skip:p_len], offset[rows] - skip)
            if len(groups) == 1:
                state = group_state
            else:
                if state is None:
                    state = tuple(torch.empty(self.config.layers, batch, self.config.hidden, device=device)
                                  for _ in range(2))  # fmt: skip
                state[0][:, rows], state[1][:, rows] = group_state
            first = max(skip + 1, p_len - self.config.window)
            primer_keys, primer_values = self._keys_values(
                encoded[:, first - 1 - skip : -1], sequence[rows, first:p_len],
                torch.arange(first, p_len, device=device), offset[rows])  # fmt: skip
            keys[rows, :, first:p_len] = self._by_head(primer_keys)
            values[rows, :, first:p_len] = self._by_head(primer_values)
        filled = p_len  # entries so far: the null slot and p_len - 1 memory slots
        chord_features = chord_bias = chord_guide = None
        if self.config.chords:  # all steps at once; step t reads its row
            steps_ahead = torch.arange(p_len, p_len + steps, device=device)
            chord_features, chord_bias = self._chord_inputs(chords, steps_ahead, batch, device)
            if chord_scale != 1.0 and chords is not None:  # scale what the chords add to "no chord"
                _, no_chord_bias = self._chord_inputs(None, steps_ahead, batch, device)
                chord_guide = (chord_scale - 1.0) * (chord_bias - no_chord_bias)
        run = _trailing_no_events(sequence[:, :p_len])  # (B,) NO_EVENTs in a row at the end so far (PAD is none)
        repeats = None if repeat_cap is None else SameNoteRun.of(sequence[:, :p_len], repeat_cap)
        loglik = torch.zeros(batch, steps, device=device)
        nucleus_p = None if bool((top_p >= 1).all()) else top_p  # top_p 1 everywhere: no sorting
        w = StepWeights.cached(self)
        hidden = self.config.hidden
        chord_gates = None if chord_features is None else chord_features @ w.chord_gates  # (B, steps, 4H)
        # Per step: the rows of w.gate_table to add up (the previous event, the events LOOKBACKS
        # back, the position in the bar). A step before the sequence reads the PAD column at its end.
        targets = torch.arange(p_len, p_len + steps, device=device)
        event_columns = torch.stack([targets - 1] + [(targets - back).clamp(min=-1) for back in LOOKBACKS], 1)
        positions = (targets[None, :] - offset[:, None]) % STEPS_PER_BAR  # (B, steps)
        position_rows = positions + w.position_row
        state = [list(state[0]), list(state[1])]  # per layer (B, H), replaced step by step
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
                self._attend_one(query[start:end], keys[start:end, :, :filled], values[start:end, :, :filled],
                                 max(skip + 1, filled - self.config.window))
                for start, end, skip in groups
            ]) if len(groups) > 1 else self._attend_one(query, keys[:, :, :filled], values[:, :, :filled],
                                                        max(1, filled - self.config.window))  # fmt: skip
            head = F.gelu(torch.addmm(projected[:, 3 * hidden :], context[:, 0], w.from_context))
            logits = torch.addmm(w.out_bias, head, w.out_weight)  # (B, C)
            model_logits = logits
            if chord_bias is not None:
                model_logits = logits = logits + chord_bias[:, s]
                if chord_guide is not None:
                    logits = logits + chord_guide[:, s]
            allowed_now = allowed_events.clone()
            allowed_now[:, NO_EVENT] &= (max_run == 0) | (run < max_run)
            scaled = logits / temperature[:, None].clamp(min=1e-3)
            if repeats is not None:
                scaled = repeats.limit(scaled, allowed_now)
            log_probs = nucleus(scaled, nucleus_p, allowed_now)
            sequence[:, t] = (log_probs + noise[:, s]).argmax(-1)  # Gumbel-max sampling
            if repeats is not None:
                repeats.update(sequence[:, t])
            run = torch.where(sequence[:, t] == NO_EVENT, run + 1, 0)
            if with_loglik:
                loglik[:, s] = torch.log_softmax(model_logits, -1).gather(1, sequence[:, t : t + 1])[:, 0]
            new_key = projected[:, hidden : 2 * hidden] + position_qk[:, hidden:]
            new_value = projected[:, 2 * hidden : 3 * hidden] + w.value_event[sequence[:, t]]
            keys[:, :, filled], values[:, :, filled] = self._by_head(new_key), self._by_head(new_value)
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


@dataclass
class SameNoteRun:
    """Per row, the pitch the melody's last notes share and how many notes in a row have had it
    (rests between them do not break a run: a listener hears the same note again), and the most
    a next note of that pitch may get. Left alone, the network reinforces its own repetition:
    the more notes of one pitch in a row, the likelier one more, well past what real pop does
    (BENCHMARKS.md, issue 23: one take in ten, with chords one in four, sat on a pitch for 6+)."""

    last: torch.Tensor  # (B,) the last NOTE_ON event, -1 before any
    count: torch.Tensor  # (B,) notes in a row with that pitch
    cap: torch.Tensor  # (K,) by count (capped at K - 1): the largest share of NOTE_ON probability it keeps

    @classmethod
    def of(cls, primer: torch.Tensor, cap: torch.Tensor) -> SameNoteRun:
        last, count = [], []
        for row in primer.tolist():  # short loops: a primer's notes, once per pass
            notes = [e for e in row if FIRST_NOTE_ON <= e < NUM_CLASSES]
            same = 0
            while same < len(notes) and notes[-1 - same] == notes[-1]:
                same += 1
            last.append(notes[-1] if notes else -1)
            count.append(same)
        device = primer.device
        return cls(torch.tensor(last, device=device), torch.tensor(count, device=device),
                   cap.to(device=device, dtype=torch.float32))

    def limit(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Lower the logit of the run's pitch, where needed, until its share of the allowed
        NOTE_ONs' probability is at most the cap for the run's length (only ever lowered: a
        model that repeats less than that is left as it is)."""
        column = self.last.clamp(min=0)[:, None]
        same = logits.gather(1, column)[:, 0]
        note_ons = logits[:, FIRST_NOTE_ON:].masked_fill(~allowed[:, FIRST_NOTE_ON:], float("-inf"))
        all_ons = note_ons.logsumexp(-1)
        share = (same - all_ons).exp().clamp(max=1.0)
        cap = self.cap[self.count.clamp(max=len(self.cap) - 1)]
        others = all_ons + torch.log1p(-share)  # log of the other notes' probability mass
        highest = torch.log(cap) - torch.log1p(-cap) + others  # the logit that gives the run's pitch `cap`
        lower = (self.last >= 0) & (share > cap)  # comparisons with nan (no NOTE_ON allowed) are False
        return logits.scatter(1, column, torch.where(lower, highest, same)[:, None])

    def update(self, events: torch.Tensor) -> None:
        on = (events >= FIRST_NOTE_ON) & (events < NUM_CLASSES)
        self.count = torch.where(on, torch.where(events == self.last, self.count + 1, 1), self.count)
        self.last = torch.where(on, events, self.last)


def _trailing_no_events(primer: torch.Tensor) -> torch.Tensor:
    """(B, P) -> (B,) how many NO_EVENTs end each row."""
    is_event = primer != NO_EVENT
    last_event = torch.where(is_event, torch.arange(primer.shape[1], device=primer.device), -1).max(1).values
    return primer.shape[1] - 1 - last_event


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


def save_checkpoint(path, model: MelodyNet, **extra) -> None:
    torch.save({"model_args": asdict(model.config), "state_dict": model.state_dict(), **extra}, path)


def load_checkpoint(path, device: str = "cpu") -> tuple[MelodyNet, dict]:
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = MelodyNet(NetworkConfig(**checkpoint["model_args"])).to(device)
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if unexpected or any(not name.startswith("chord_logits.") for name in missing):  # that one starts at zero
        model.load_state_dict(checkpoint["state_dict"])  # raises, naming what does not fit
    model.eval()
    return model, checkpoint
