"""The one-step stage's discriminator (MoViE Fig. 3, built the LADD way: Sauer et al., arXiv 2403.12015): the
frozen teacher UNet's encoder (conv_in, down blocks, mid block) reads a noised candidate latent beside the source
image's latents and the instruction, and one small trainable head per feature map says real (the guided teacher's
final latent) or fake (the student's one-step latent). It needs no other pretrained network, at any scale.
"""

from __future__ import annotations

import torch
from torch import nn


def _head(channels: int) -> nn.Module:
    groups = 8 if channels % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.SiLU(),
                         nn.Conv2d(channels, 1, 1))


class TeacherFeatureDiscriminator(nn.Module):
    """Trainable heads only; the teacher UNet is held outside the module's parameters (never trained, never
    saved with the heads)."""

    def __init__(self, teacher_unet):
        super().__init__()
        object.__setattr__(self, "teacher", teacher_unet)  # not a submodule: frozen, shared with the recipe
        channels = list(teacher_unet.config.block_out_channels)
        self.heads = nn.ModuleList([_head(c) for c in channels] + [_head(channels[-1])])  # + the mid block

    def features(self, latents: torch.Tensor, image_latents: torch.Tensor, text: torch.Tensor,
                 timesteps: torch.Tensor) -> list[torch.Tensor]:
        """The teacher encoder's feature map after every down block and after the mid block."""
        unet = self.teacher
        embedding = unet.time_embedding(unet.time_proj(timesteps).to(latents.dtype))
        hidden = unet.conv_in(torch.cat([latents, image_latents], dim=1))
        features = []
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                hidden, _ = block(hidden, embedding, encoder_hidden_states=text)
            else:
                hidden, _ = block(hidden, embedding)
            features.append(hidden)
        features.append(unet.mid_block(hidden, embedding, encoder_hidden_states=text))
        return features

    def logits(self, features: list[torch.Tensor], frozen_heads: bool = False) -> torch.Tensor:
        """[B] real-vs-fake logits, the mean of every head's mean. frozen_heads: the heads' weights are used
        detached (the generator's term must not train the discriminator)."""
        if frozen_heads:
            from torch.func import functional_call

            detached = {name: p.detach() for name, p in self.heads.named_parameters()}
            outputs = [functional_call(head_module, _sub(detached, index), (feature,))
                       for index, (head_module, feature) in enumerate(zip(self.heads, features))]
        else:
            outputs = [head(feature) for head, feature in zip(self.heads, features)]
        return torch.stack([out.mean(dim=(1, 2, 3)) for out in outputs]).mean(dim=0)


def _sub(parameters: dict, index: int) -> dict:
    prefix = f"{index}."
    return {name[len(prefix):]: value for name, value in parameters.items() if name.startswith(prefix)}


def hinge_losses(real_logits: torch.Tensor, fake_logits_for_d: torch.Tensor,
                 fake_logits_for_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (discriminator, generator) hinge losses (as LADD and ADD)."""
    discriminator = torch.relu(1.0 - real_logits) + torch.relu(1.0 + fake_logits_for_d)
    return discriminator, -fake_logits_for_g
