"""The attention encoder/decoder LSTM: its layers, teacher forcing and checkpoints.

The encoder reads the primer; the decoder predicts the continuation one sixteenth at a time. Each
decoder step sees the previous event, its position in the bar, and the events one and two bars
back (pop melodies repeat by the bar). Attention looks back over a memory of everything so far,
encoder states for the primer and decoder states after it: a key is a state and the position in
the bar of the step after it, a value is that state with the event that actually followed it. So
attention can find "where the melody was like this before" and copy what came next, while
teacher-forced training stays parallel (no attention fed back into the LSTM input). Sampling step
by step reuses these pieces: model.melody.stepping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.defaults import DEFAULT_WEIGHTS  # noqa: F401 - loaded by default, re-exported
from model.melody.form import PLAN_CODES
from model.music.events import NUM_CLASSES, PAD, STEPS_PER_BAR, STEPS_PER_BEAT

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
    plan: bool = False  # decoder told its bar's form-plan label and the next bar's (model.melody.form.plan_code)


class MelodyNet(nn.Module):
    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = c = config
        self.event_embed = nn.Embedding(NUM_CLASSES + 1, c.embed)  # + PAD
        self.position_embed = nn.Embedding(STEPS_PER_BAR, c.embed)
        self.encoder = nn.LSTM(2 * c.embed, c.hidden, c.layers, batch_first=True, dropout=c.dropout)
        decoder_input = (2 + len(LOOKBACKS) + c.chords + c.plan) * c.embed
        if c.chords:
            self.chord_proj = nn.Linear(len(CHORD_AHEAD) * CHORD_INPUT, c.embed)
            # and straight to the output: a learned "chord tones are likelier" bias, zero at first
            self.chord_logits = nn.Linear(len(CHORD_AHEAD) * CHORD_INPUT, NUM_CLASSES)
            nn.init.zeros_(self.chord_logits.weight)
            nn.init.zeros_(self.chord_logits.bias)
        if c.plan:
            self.plan_embed = nn.Embedding(PLAN_CODES, c.embed)
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

    def _decoder_inputs(self, sequence, targets, offset, chord_features=None, plan=None) -> torch.Tensor:
        """Inputs for predicting `sequence[:, t]` for each t in `targets` (absolute steps);
        chord_features: _chord_inputs for these targets (models with chord inputs); plan: (B,
        len(targets)) plan codes or None (nothing told; models with plan inputs)."""
        parts = [self.event_embed(sequence[:, targets - 1]), self._positions(targets, offset)]
        for lookback in LOOKBACKS:
            back = targets - lookback
            events = sequence[:, back.clamp(min=0)]
            events = torch.where(back >= 0, events, torch.full_like(events, PAD))
            parts.append(self.event_embed(events))
        if self.config.chords:
            parts.append(chord_features)
        if self.config.plan:
            plan = torch.zeros_like(sequence[:, targets]) if plan is None else plan
            parts.append(self.plan_embed(plan))
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
                chords: torch.Tensor | None = None, plan: torch.Tensor | None = None) -> torch.Tensor:
        """primer (B, P), target (B, T) -> logits (B, T, NUM_CLASSES) for each target step.
        offset (B,): the step where row b's first bar starts (its left padding); default 0.
        chords (B, P+T) chord codes per step of primer and target (None: no chords; a model
        without chord inputs ignores them); plan (B, T) plan codes per target step (None: nothing
        told; a model without plan inputs ignores them)."""
        p_len, t_len = primer.shape[1], target.shape[1]
        sequence = torch.cat([primer, target], 1)  # (B, P+T)
        device = primer.device
        offset = torch.zeros(len(primer), dtype=torch.long, device=device) if offset is None else offset
        encoded, state = self._encode(primer, offset)  # (B, P, H)
        targets = torch.arange(p_len, p_len + t_len, device=device)
        chord_features, chord_bias = self._chord_inputs(chords, targets, len(primer), device) if self.config.chords \
            else (None, 0.0)
        decoded, _ = self.decoder(self._decoder_inputs(sequence, targets, offset, chord_features, plan), state)
        queries = self.query(torch.cat([decoded, self._positions(targets, offset)], -1))

        # Memory position m holds the state that has read events[..m]; its value carries events[m+1].
        memory = torch.cat([encoded[:, : p_len - 1], decoded[:, :-1]], 1)  # (B, P+T-2, H)
        memory_pos = torch.arange(memory.shape[1], device=device)
        keys, values = self._keys_values(memory, sequence[:, 1 : memory.shape[1] + 1], memory_pos + 1, offset)
        context = self._attend(queries, *self._with_null(keys, values, self._window_mask(targets - 1, memory_pos)))
        return self.head(self.drop(torch.cat([decoded, context], -1))) + chord_bias


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
