"""Components of the svdiff backend: SD1.5 + fused LCM-LoRA + TAESD + optional trained memory
(SVDiff, arXiv 2405.19726, sec. 5.1).

Loaded from local folders only (`weights.registry.require`), or built at real size with random weights for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vedit_cli.models.memory_attention import WEIGHTS_FILE, MemoryConfig, UNetMemory, load_memory_weights
from vedit_cli.settings import ResolvedRun
from vedit_cli.weights.guards import load_clip_tokenizer, missing_weights
from vedit_cli.weights.registry import entry_path, require

SAFE = dict(use_safetensors=True, local_files_only=True)  # weights load from safetensors only, never fetched

SD15 = "sd15"
LCM_LORA = "lcm-lora-sdv1-5"
TAESD = "taesd"
MEMORY = "svdiff-memory"
LCM_LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass
class SvdiffComponents:
    """Everything one svdiff editor runs; `memory` is None without trained memory weights."""

    unet: torch.nn.Module
    taesd: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object | None  # None only for random-weights benchmarks (token values do not change the cost)
    scheduler: object  # diffusers LCMScheduler
    memory: UNetMemory | None
    device: torch.device
    dtype: torch.dtype
    random: bool = False



def load_components(run: ResolvedRun) -> SvdiffComponents:
    """Load SD1.5, fuse LCM-LoRA into its UNet, load TAESD and (when present) the trained memory."""
    weights_dir = run.weights_dir
    sd15 = require(SD15, weights_dir)
    lora_scale = run.model.lora_scale
    lora_file = _require_file(LCM_LORA, LCM_LORA_FILE, weights_dir) if lora_scale else None
    taesd_dir = require(TAESD, weights_dir)
    memory_file = _optional_memory_file(weights_dir)
    from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(str(sd15), subfolder="unet", **SAFE)
    if lora_file is not None:  # --lora-scale 0: the base alone (what the LCM-LoRA adds, measured)
        fuse_lcm_lora(unet, lora_file, lora_scale)
    memory = load_memory_weights(memory_file).attach(unet) if memory_file else None
    text_encoder = CLIPTextModel.from_pretrained(str(sd15), subfolder="text_encoder", **SAFE)
    return SvdiffComponents(
        unet=unet, taesd=AutoencoderTiny.from_pretrained(str(taesd_dir), **SAFE), text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(sd15 / "tokenizer", SD15, weights_dir, text_encoder.config.vocab_size),
        scheduler=LCMScheduler.from_pretrained(str(sd15), subfolder="scheduler"),
        memory=memory, device=run.device, dtype=run.dtype,
    )


def random_components(run: ResolvedRun) -> SvdiffComponents:
    """Real-size SD1.5 UNet (+ memory after each transformer block), TAESD and CLIP-L text encoder, random weights."""
    from diffusers import LCMScheduler

    from vedit_cli.models.architectures import build_taesd, build_text_encoder, build_unet

    unet = build_unet(4, device="cpu")
    memory = UNetMemory(MemoryConfig.for_unet(unet)).eval().requires_grad_(False).attach(unet)
    return SvdiffComponents(
        unet=unet, taesd=build_taesd(device="cpu"), text_encoder=build_text_encoder(device="cpu"), tokenizer=None,
        scheduler=LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),  # SD1.5's betas
        memory=memory, device=run.device, dtype=run.dtype, random=True,
    )


def fuse_lcm_lora(unet: torch.nn.Module, lora_file: Path, scale: float = 1.0) -> None:
    """Load LCM-LoRA (kohya or diffusers/peft keys) into the UNet through diffusers, fuse it at `scale`, drop the
    adapter."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state_dict, network_alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(lora_file.parent), weight_name=lora_file.name, local_files_only=True
    )
    unet_keys = {k: v for k, v in state_dict.items() if not k.startswith("text_encoder")}
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(unet_keys, network_alphas, unet=unet, adapter_name="lcm")
    unet.fuse_lora(lora_scale=scale)
    unet.unload_lora()


def _require_file(name: str, relative: str, weights_dir: Path) -> Path:
    path = require(name, weights_dir) / relative
    if not path.is_file():
        raise missing_weights(name, weights_dir, str(path))
    return path


def _optional_memory_file(weights_dir: Path) -> Path | None:
    """The trained memory weights when their folder exists (an incomplete folder is an error, not a silent skip)."""
    if not entry_path(MEMORY, weights_dir).is_dir():
        return None
    return _require_file(MEMORY, WEIGHTS_FILE, weights_dir)
