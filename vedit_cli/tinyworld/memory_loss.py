"""What the trained SVDiff memory does to the noise-prediction loss of a stream (issue 15's measure).

Per clip and caption: the per-frame loss over the clip's first `frames` frames walked as in training (clips of the
world's `memory_clip` frames, the memory carried from clip to clip), with the trained memory and with it bypassed,
on the same frames, timestep and per-frame noise (the svdiff-memory recipe's `frame_losses` with one seed per
segment). The base is the world's sd15 with its LCM-LoRA fused, as the memory was trained.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from vedit_cli.tinyworld.edits import EDITS, apply_uint8
from vedit_cli.tinyworld.sd_side import IDENTITY_CAPTION


def trained_recipe(world: Path, frames: int, clip_frames: int, resolution: int, work: Path):
    """The svdiff-memory recipe on the world's base + LCM-LoRA, its memory loaded from <world>/svdiff-memory."""
    from safetensors.torch import load_file

    from vedit_cli.models.memory_attention import WEIGHTS_FILE
    from vedit_cli.train.config import SvdiffMemoryConfig, TrainerConfig
    from vedit_cli.train.recipes.svdiff_memory import SvdiffMemoryRecipe

    config = SvdiffMemoryConfig(base=world / "sd15", data=_Empty(frames), output_dir=work / "unused",
                                trainer=TrainerConfig(work_dir=work, cpu=True), resolution=resolution,
                                lcm_lora=world / "lcm-lora-sdv1-5", segment_frames=frames, clip_frames=clip_frames,
                                caption_dropout=0.0, random_flip=False)
    recipe = SvdiffMemoryRecipe(config)
    recipe.memory.blocks.load_state_dict(load_file(str(world / "svdiff-memory" / WEIGHTS_FILE)))
    recipe.memory.eval().requires_grad_(False)
    recipe.setup(SimpleNamespace(device=torch.device("cpu"), mixed_precision="no"))
    return recipe


class _Empty:
    """A sample source with one placeholder (the recipe checks its data; the report feeds samples itself)."""

    def __init__(self, frames: int):
        self.frames = frames

    def __len__(self) -> int:
        return 1

    def load(self, index: int) -> dict:
        return {"frames": np.zeros((self.frames, 8, 8, 3), np.uint8), "caption": IDENTITY_CAPTION}

    def describe(self, index: int) -> str:
        return "placeholder"


@torch.no_grad()
def stream_losses(recipe, frames_nhwc: np.ndarray, caption: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame losses [N] with the memory carried and with it bypassed (same frames, t and noise)."""
    sample = recipe.prepare_sample({"frames": frames_nhwc, "caption": caption}, seed)
    batch = {**recipe.collate([sample]), "sample_seed": torch.tensor([seed])}
    with_memory = recipe.frame_losses(batch)[0]
    with recipe.memory.bypassed():
        without = recipe.frame_losses(batch)[0]
    return with_memory.numpy(), without.numpy()


def report(recipe, clips: dict[str, np.ndarray], seeds: int = 4) -> dict:
    """Mean losses per (clip, caption variant, seed) and their relative change, with the spread over clips."""
    rows = []
    for name, frames in clips.items():
        variants = [(IDENTITY_CAPTION, frames)] + [(e.caption, apply_uint8(e, frames)) for e in EDITS]
        for caption, edited in variants:
            for seed in range(seeds):
                with_memory, without = stream_losses(recipe, edited, caption, seed)
                rows.append({"clip": name, "caption": caption, "seed": seed, "with_memory": float(with_memory.mean()),
                             "without_memory": float(without.mean())})
    per_clip = {}
    for name in clips:
        mine = [r for r in rows if r["clip"] == name]
        with_memory, without = np.mean([r["with_memory"] for r in mine]), np.mean([r["without_memory"] for r in mine])
        per_clip[name] = {"with_memory": float(with_memory), "without_memory": float(without),
                          "relative_change": float(with_memory / without - 1)}
    changes = [c["relative_change"] for c in per_clip.values()]
    return {"rows": rows, "clips": per_clip, "mean_relative_change": float(np.mean(changes)),
            "spread_relative_change": [float(min(changes)), float(max(changes))],
            "lower_with_memory": sum(r["with_memory"] < r["without_memory"] for r in rows), "streams": len(rows)}
