"""Anchor-frame attention against flicker: each frame's self-attention also attends to an anchor frame.

The self-attention (`attn1`) of every transformer block concatenates the anchor frame's keys and values to the
frame's own, as MoViE's on-device demo and Text2Video-Zero's cross-frame attention do. The anchor's keys and
values are recorded per layer and per denoising step while the anchor frame itself is denoised, then reused for
every later frame at the same layer and step. With identical frames the output is unchanged: attending to a
duplicated key/value set gives the same softmax average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class AnchorCache:
    """Anchor keys/values per (layer, step), shaped [passes, tokens, channels]; one per editor."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.pending: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] | None = None
        self.step = 0
        self.frames_per_pass = 1

    def begin_recording(self) -> None:
        """The next denoising loop processes a new anchor (alone); it still attends to the previous one."""
        self.pending = {}

    def commit(self) -> None:
        """The anchor's loop is done: its keys/values replace the previous anchor's."""
        if self.pending is not None:
            self.entries = self.pending
        self.pending = None

    def clear(self) -> None:
        self.entries, self.pending, self.step = {}, None, 0

    def anchor_for(self, layer: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The anchor's [passes * frames, tokens, channels] keys/values for this layer and step, or None."""
        stored = self.entries.get((layer, self.step))
        if stored is None:
            return None
        return tuple(t.repeat_interleave(self.frames_per_pass, dim=0) for t in stored)

    def record(self, layer: str, key: torch.Tensor, value: torch.Tensor) -> None:
        if self.pending is not None:
            self.pending[(layer, self.step)] = (key.detach(), value.detach())


class AnchorAttnProcessor:
    """Self-attention over the frame's own tokens plus the anchor frame's (scaled dot-product attention)."""

    def __init__(self, layer: str, cache: AnchorCache):
        self.layer = layer
        self.cache = cache

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("anchor attention applies to plain self-attention over [B, tokens, C] only")
        batch = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        self.cache.record(self.layer, key, value)
        anchor = self.cache.anchor_for(self.layer)
        if anchor is not None:
            key, value = torch.cat([key, anchor[0]], dim=1), torch.cat([value, anchor[1]], dim=1)
        head_dim = key.shape[-1] // attn.heads
        q, k, v = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def install(unet, cache: AnchorCache) -> int:
    """Give every self-attention (`attn1`) of the UNet an anchor processor; returns how many were replaced."""
    processors = dict(unet.attn_processors)
    replaced = 0
    for name in processors:
        if name.endswith("attn1.processor"):
            processors[name] = AnchorAttnProcessor(name.removesuffix(".processor"), cache)
            replaced += 1
    unet.set_attn_processor(processors)
    return replaced
