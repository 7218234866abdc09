"""MoViE (arXiv 2412.06578) multimodal guidance distillation: the guidance scales (s_I, s_T) become an input of
the UNet.

Each scale is embedded sinusoidally (as timesteps are, times `scale_multiplier` as LCM does for its guidance
embedding), the two embeddings are concatenated, an MLP maps them to the UNet's timestep-embedding width, and the
result is added to the timestep embedding. It plugs into a stock diffusers UNet through the UNet's own
`class_embedding` slot (`emb = emb + class_embedding(class_labels)`), with `class_labels = [[s_I, s_T], ...]`.
The MLP's output layer starts at zero, so an untrained student equals the teacher's conditional pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vedit_cli.errors import ConfigError, WeightsIntegrityError
from vedit_cli.models.parameterisation import PREDICTION_TYPES

KIND = "movie-guidance-embedding"
VERSION = 1


class GuidanceEmbedding(nn.Module):
    """(s_I, s_T) -> sinusoidal -> MLP -> added to the timestep embedding (MoViE, Fig. 2 right)."""

    def __init__(self, time_embed_dim: int, sinusoidal_channels: int = 256, scale_multiplier: float = 1000.0):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.config = {"kind": KIND, "version": VERSION, "time_embed_dim": time_embed_dim,
                       "sinusoidal_channels": sinusoidal_channels, "scale_multiplier": scale_multiplier,
                       "scale_order": "image,text"}
        self.projection = Timesteps(sinusoidal_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.mlp = TimestepEmbedding(2 * sinusoidal_channels, time_embed_dim)
        nn.init.zeros_(self.mlp.linear_2.weight)
        nn.init.zeros_(self.mlp.linear_2.bias)

    def forward(self, scales: torch.Tensor) -> torch.Tensor:
        """scales [B, 2] as (s_I, s_T) -> [B, time_embed_dim]."""
        multiplier = self.config["scale_multiplier"]
        sinusoids = self.projection(scales.reshape(-1).float() * multiplier)
        features = sinusoids.reshape(scales.shape[0], -1).to(self.mlp.linear_1.weight.dtype)
        return self.mlp(features)


def guidance_labels(image_guidance_scale: float, guidance_scale: float, batch: int, device=None) -> torch.Tensor:
    """The UNet's `class_labels` for the student: [batch, 2] rows of (s_I, s_T)."""
    row = torch.tensor([[image_guidance_scale, guidance_scale]], dtype=torch.float32, device=device)
    return row.expand(batch, 2)


def unet_time_embed_dim(unet) -> int:
    return unet.time_embedding.linear_2.out_features


def attach(unet, embedding: GuidanceEmbedding):
    """Plug the embedding into the UNet's `class_embedding` slot (left empty by InstructPix2Pix's config)."""
    if unet.config.class_embed_type is not None or unet.config.class_embeddings_concat:
        raise ConfigError("this UNet already uses its class embedding; the guidance embedding cannot attach to it")
    if embedding.config["time_embed_dim"] != unet_time_embed_dim(unet):
        raise ConfigError(f"guidance embedding width {embedding.config['time_embed_dim']} does not match the UNet's "
                          f"timestep embedding width {unet_time_embed_dim(unet)}")
    unet.class_embedding = embedding
    return unet


def for_unet(unet) -> GuidanceEmbedding:
    """A zero-initialised embedding sized for `unet`, on its device and dtype."""
    embedding = GuidanceEmbedding(unet_time_embed_dim(unet))
    return embedding.to(device=unet.device, dtype=unet.dtype).eval()


def save(embedding: GuidanceEmbedding, path: Path, trained_steps: int = 1, timestep_spacing: str = "trailing",
         prediction_type: str = "epsilon", architecture: str | None = None) -> Path:
    """Weights as safetensors; the module's config, the step schedule the student was distilled for
    (`trained_steps`, `timestep_spacing`: MoViE's one step from pure noise by default), what its UNet predicts
    (`prediction_type`: "sample" for the one-step student, which outputs the clean latent) and its architecture
    name in the file's metadata, which inference reads back (backends.movie.student.trained_schedule)."""
    from safetensors.torch import save_file

    if trained_steps < 1:
        raise ConfigError(f"trained_steps must be at least 1, got {trained_steps}")
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")
    tensors = {name: tensor.detach().float().contiguous().cpu() for name, tensor in embedding.state_dict().items()}
    metadata = {"config": json.dumps(embedding.config), "trained_steps": str(int(trained_steps)),
                "timestep_spacing": timestep_spacing, "prediction_type": prediction_type}
    if architecture:
        metadata["architecture"] = architecture
    save_file(tensors, str(path), metadata=metadata)
    return Path(path)


def read_config(path: Path) -> dict:
    """The config stored in the file's metadata; a file without one is not ours."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "config" not in metadata:
        raise WeightsIntegrityError(f"{path} has no guidance-embedding config in its metadata; re-export it with vedit")
    return json.loads(metadata["config"])


def load(path: Path, time_embed_dim: int) -> GuidanceEmbedding:
    """Load and check: kind, version and width must match what the UNet needs, else refuse."""
    from safetensors.torch import load_file

    config = read_config(path)
    if config.get("kind") != KIND or config.get("version") != VERSION:
        raise WeightsIntegrityError(f"{path} holds {config.get('kind')} v{config.get('version')}, "
                                    f"expected {KIND} v{VERSION}; re-export it with this vedit version")
    if config.get("time_embed_dim") != time_embed_dim:
        raise WeightsIntegrityError(f"{path} was trained for a UNet with timestep-embedding width "
                                    f"{config.get('time_embed_dim')}, this UNet has {time_embed_dim}")
    embedding = GuidanceEmbedding(time_embed_dim, config["sinusoidal_channels"], config["scale_multiplier"])
    embedding.load_state_dict(load_file(str(path)))
    return embedding.eval()
