"""DINOv2 features for EVE's FDD discriminators (`EveLoraConfig.discriminator_features = "dinov2"`), built the ADD
way (Sauer et al., arXiv 2311.17042, sec. 3.2; StyleGAN-T's heads): frozen features, small trainable heads.

Features: a frozen transformers Dinov2Model (safetensors only; registry entry dinov2-base) reads frames decoded from
latents by the recipe's frozen VAE (the student's frames with their graph, so L_G reaches the LoRA through the decoder
and DINOv2), resized (bilinear, antialiased) to 224 pixels, ADD's size (or the model's image_size when smaller), and
normalised with ImageNet's mean and std. The hidden states (every token: CLS and patches) of `FEATURE_LAYERS` evenly
spaced layers are the features (4 of 12: layers 3, 6, 9, 12). Frames are NOT noised first: ADD feeds DINOv2 clean
images (the UNet-feature discriminators read latents noised at t ~ U[0, discriminator_max_timestep)).

Heads, one per layer, on tokens [N, D, L]: ADD's DiscHead body (a 1x1 Conv1d block, then a residual k = 9 Conv1d
block over the tokens; GroupNorm for its batch norm, no spectral norm), then a 1x1 Conv1d to one logit per token,
averaged over the tokens and the layers: one logit per frame.
D_e (edit) is conditioned on the input frame projection-discriminator style (ADD's image conditioning): at each
layer, the input frame's CLS token through a trainable linear projection, dotted with the mean of the head's token
features and divided by sqrt(D), is added to that layer's logit. D_v (video) mixes each token over the window's frames
(eve_lora.TemporalMixing: a Conv1d over frames, residual) before its logit.

DINOv2 and the VAE are held outside every module's parameters: never trained, never in a checkpoint. The heads are
the only trainable tensors; `logits(..., frozen_heads=True)` reads them detached (functional_call) for L_G.
Memory, not measured: the student's frames are decoded with their graph (at 512x512 the VAE decoder's activations
weigh on top of the student's); --gradient-checkpointing checkpoints the decoder's blocks as well.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vedit_cli.errors import WeightsMissingError
from vedit_cli.train.recipes.eve_lora import TemporalMixing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_SIZE = 224  # ADD's input size (dinov2-base's config says 518: its position table, interpolated)
FEATURE_LAYERS = 4


def load_dinov2(folder: Path):
    """The frozen Dinov2Model of `folder` (safetensors only), in eval mode."""
    from transformers import Dinov2Model

    try:
        model = Dinov2Model.from_pretrained(str(folder), use_safetensors=True, local_files_only=True)
    except (OSError, EnvironmentError, ValueError) as error:
        raise WeightsMissingError(f"DINOv2 {folder}: cannot load it as safetensors ({error})") from error
    return model.requires_grad_(False).eval()


def feature_layers(depth: int, count: int = FEATURE_LAYERS) -> list[int]:
    """`count` evenly spaced layers of `depth`, the last included (indices of hidden_states: 0 is the embedding)."""
    count = min(count, depth)
    return sorted({round(depth * (index + 1) / count) for index in range(count)})


def input_size(config) -> int:
    """ADD's 224, or the model's image_size when smaller, in whole patches."""
    patch = int(config.patch_size)
    return max(patch, min(DINO_SIZE, int(config.image_size)) // patch * patch)


class DinoFeatures:
    """Frozen DINOv2 and the frozen VAE (plain attributes: no module registers them): per-layer tokens of frames."""

    def __init__(self, model, vae, count: int = FEATURE_LAYERS):
        self.model, self.vae = model, vae
        self.layers = feature_layers(model.config.num_hidden_layers, count)
        self.size, self.width = input_size(model.config), int(model.config.hidden_size)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [N, C, h, w] -> frames [N, 3, H, W] in about [0, 1], in the caller's grad mode (not clamped:
        a clamp would cut the gradient of every saturated pixel)."""
        vae = self.vae
        images = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.float()
        return (images + 1.0) / 2.0

    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frames [N, 3, H, W] in [0, 1] -> one [N, D, 1 + patches] map per feature layer (float32)."""
        model = self.model
        size = (self.size, self.size)
        if tuple(images.shape[-2:]) != size:
            images = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                               antialias=True)
        mean = images.new_tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
        hidden = model(pixel_values=((images - mean) / std).to(model.dtype), output_hidden_states=True).hidden_states
        return [hidden[layer].float().transpose(1, 2) for layer in self.layers]

    def latent_tokens(self, latents: torch.Tensor) -> list[torch.Tensor]:
        return self.tokens(self.decode(latents))


def dino_features(folder: Path, vae) -> DinoFeatures:
    return DinoFeatures(load_dinov2(folder), vae)


# -- heads -----------------------------------------------------------------------------------------------------------

def token_block(width: int, kernel: int) -> nn.Module:
    groups = 8 if width % 8 == 0 else 1
    return nn.Sequential(nn.Conv1d(width, width, kernel, padding=kernel // 2), nn.GroupNorm(groups, width),
                         nn.LeakyReLU(0.2))


class TokenHead(nn.Module):
    """One layer's head: tokens [N, D, L] -> [N] logits. frames: mix every token over the window's frames (the N
    frames are batch-major windows); conditioned: + <projection(condition [N, D]), mean token feature> / sqrt(D)."""

    def __init__(self, width: int, frames: int | None = None, conditioned: bool = False):
        super().__init__()
        self.body, self.mix = token_block(width, 1), token_block(width, 9)
        self.temporal = TemporalMixing(width, frames) if frames else None
        self.out = nn.Conv1d(width, 1, 1)
        self.project = nn.Linear(width, width) if conditioned else None

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.body(tokens)
        hidden = hidden + self.mix(hidden)
        if self.temporal is not None:
            hidden = self.temporal(hidden.unsqueeze(-1)).squeeze(-1)  # tokens as an L x 1 map
        logits = self.out(hidden).mean(dim=(1, 2))
        if self.project is not None:
            logits = logits + (self.project(condition) * hidden.mean(dim=2)).sum(dim=1) / hidden.shape[1] ** 0.5
        return logits


class TokenHeads(nn.Module):
    """One TokenHead per feature layer; forward(features) -> [N], the mean of their logits. features: the layers'
    tokens, then (conditioned heads) one condition per layer."""

    def __init__(self, width: int, layers: int, frames: int | None = None, conditioned: bool = False):
        super().__init__()
        self.layers = nn.ModuleList([TokenHead(width, frames, conditioned) for _ in range(layers)])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        count = len(self.layers)
        conditions = features[count:] or [None] * count
        return torch.stack([head(tokens, condition) for head, tokens, condition
                            in zip(self.layers, features[:count], conditions)]).mean(dim=0)


class DinoDiscriminator(nn.Module):
    """Trainable heads only; `dino` (frozen DINOv2 + VAE, shared) is no submodule."""

    def __init__(self, dino: DinoFeatures, heads: TokenHeads):
        super().__init__()
        self.dino, self.heads = dino, heads

    def logits(self, features: list[torch.Tensor], frozen_heads: bool = False) -> torch.Tensor:
        """[N] real-vs-fake logits. frozen_heads: the heads' weights read detached (the generator's term)."""
        if not frozen_heads:
            return self.heads(features)
        from torch.func import functional_call

        detached = {name: p.detach() for name, p in self.heads.named_parameters()}
        return functional_call(self.heads, detached, (features,))


class DinoEditDiscriminator(DinoDiscriminator):
    """D_e: the output frame's tokens, conditioned on the input frame's CLS token (projection, per layer)."""

    def __init__(self, dino: DinoFeatures):
        super().__init__(dino, TokenHeads(dino.width, len(dino.layers), conditioned=True))

    @staticmethod
    def features(tokens: list[torch.Tensor], input_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """The output frames' tokens per layer, then the input frames' CLS per layer (the condition)."""
        return [*tokens, *(layer[:, :, 0] for layer in input_tokens)]


class DinoVideoDiscriminator(DinoDiscriminator):
    """D_v: every frame's tokens, each token mixed over the window's frames."""

    def __init__(self, dino: DinoFeatures, frames: int):
        super().__init__(dino, TokenHeads(dino.width, len(dino.layers), frames=frames))

    @staticmethod
    def features(tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(tokens)


def dino_discriminators(dino: DinoFeatures, frames: int) -> tuple[DinoEditDiscriminator, DinoVideoDiscriminator]:
    return DinoEditDiscriminator(dino), DinoVideoDiscriminator(dino, frames)
