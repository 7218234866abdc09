"""The tiny world's InstructPix2Pix teacher: a UNet shaped like SD1.5's at small width, its training triplets,
trained by `vedit train pix2pix`'s recipe (InstructPix2Pix, Brooks et al. 2023: epsilon loss, condition dropout).

SD1.5's pattern, scaled down: cross-attention in every down/up block but the lowest, which has the mid block's
attention, so every resolution attends (the top one included); 8 input channels (noisy latents + image latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vedit_cli.tinyworld.edits import EDITS, apply_uint8


@dataclass(frozen=True)
class TeacherSize:
    steps: int = 1500
    batch: int = 32
    lr: float = 1e-3
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    snr_gamma: float | None = None  # Min-SNR-gamma weighting of the recipe's loss (None: the paper's plain loss)
    # what the UNet learns to predict, set in its scheduler config: v, because at this size an epsilon teacher loses
    # the source's structure (its x0 estimate at high noise amplifies epsilon errors ~15x; README, "Tiny world")
    prediction_type: str = "v_prediction"


def new_teacher_unet(size: TeacherSize, sample_size: int, cross_attention_dim: int, seed: int = 0,
                     in_channels: int = 8):
    """The teacher's UNet (8 input channels); with in_channels 4, the text-to-image base of the same pattern."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    levels = len(size.block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=4, block_out_channels=size.block_out_channels,
        layers_per_block=1, norm_num_groups=8, cross_attention_dim=cross_attention_dim,
        attention_head_dim=tuple(max(1, channels // 16) for channels in size.block_out_channels),  # heads of 16
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
    )


class FrameEditTriplets:
    """Every (training frame, edit) pair as a triplet, computed on demand: the pix2pix recipe's sample source."""

    def __init__(self, frames_nhwc: np.ndarray):
        self.frames = frames_nhwc

    def __len__(self) -> int:
        return len(self.frames) * len(EDITS)

    def load(self, index: int) -> dict:
        frame, edit = self.frames[index // len(EDITS)], EDITS[index % len(EDITS)]
        return {"source": frame, "instruction": edit.instruction, "edited": apply_uint8(edit, frame[None])[0]}

    def describe(self, index: int) -> str:
        return f"frame {index // len(EDITS)}, edit {EDITS[index % len(EDITS)].name}"

    @staticmethod
    def distinct_images(frames: int) -> int:
        """Distinct images these triplets hold over `frames` frames: each frame and each of its edits, both ways round
        (the recipe's random flip): what the latent cache encodes once each."""
        return frames * (1 + len(EDITS)) * 2


def pix2pix_config(base: Path, frames_nhwc: np.ndarray, output: Path, size: TeacherSize, resolution: int,
                   steps: int | None = None, work_dir: Path | None = None):
    """The recipe's config: the base's (random) UNet fine-tuned on the world's triplets, resumable."""
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig

    trainer = TrainerConfig(
        work_dir=work_dir, max_steps=steps or size.steps, batch_size=size.batch, learning_rate=size.lr,
        lr_scheduler="cosine", lr_warmup_steps=max(1, (steps or size.steps) // 20), checkpoint_every=100,
        keep_checkpoints=1, resume=True, cpu=True, seed=0, ema_decay=None,
    )
    return Pix2PixConfig(base=Path(base), data=FrameEditTriplets(frames_nhwc), output_dir=Path(output),
                         trainer=trainer, resolution=resolution, random_resize=1.0, random_flip=True,
                         validation_count=0, overwrite=True, snr_gamma=size.snr_gamma,
                         cache_latents=True)  # a fixed 64x64 crop: every image repeats, each encoded once


def train_teacher(config, progress=None) -> Path:
    """`vedit train pix2pix`'s recipe (vedit_cli.train.recipes.pix2pix) on the world's triplets."""
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    return train_pix2pix(config, progress)
