"""The EVE stack: an SD1.5 backbone with an image-editing adapter (ControlNet) and a video adapter (AnimateDiff).

EVE (Singer et al., arXiv 2403.09334, "Video Editing via Factorized Diffusion Distillation") stacks both adapters
on one frozen text-to-image backbone, plus optional alignment LoRA weights on the backbone. Public stand-ins: SD1.5, the
instruction ControlNet `control_v11e_sd15_ip2p` and the AnimateDiff motion adapter v1-5-2. Everything loads from
local folders (safetensors only); a missing folder is one WeightsMissingError line.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from vedit_cli.errors import WeightsMissingError
from vedit_cli.weights.guards import load_clip_tokenizer
from vedit_cli.weights.registry import entry_path, missing_files, require

SD15_NAME = "sd15"
CONTROLNET_NAME = "controlnet-ip2p"
MOTION_ADAPTER_NAME = "animatediff-motion-adapter"
LORA_NAME = "eve-lora"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LoRA file name (peft keys, "unet." prefix)
LORA_ADAPTER = "eve-align"
# stable-diffusion-v1-5 scheduler/scheduler_config.json: for the random-weights benchmark stack only; loaded stacks
# read the checkpoint's own file.
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1)
CLIP_BOS, CLIP_EOS = 49406, 49407  # openai/clip-vit-large-patch14 special tokens


@dataclass
class EveStack:
    """The modules one EVE edit runs; `tokenizer` is None for the random-weights benchmark stack."""

    tokenizer: object | None
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module  # diffusers UNetMotionModel: SD1.5 spatial layers + AnimateDiff temporal layers
    controlnet: torch.nn.Module
    scheduler: object  # diffusers DDIMScheduler
    lora_loaded: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device


def _frozen(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def motion_unet(unet2d: torch.nn.Module, motion_adapter: torch.nn.Module) -> torch.nn.Module:
    """The backbone with the video adapter's temporal layers inserted (diffusers UNetMotionModel.from_unet2d)."""
    from diffusers import UNetMotionModel

    return UNetMotionModel.from_unet2d(unet2d, motion_adapter)


def ddim_scheduler(scheduler_config: dict, spacing: str | None = None):
    """DDIM (deterministic and stateless: blended windows and the anchor pass step the same schedule) over the
    stored scheduler config's betas, offset and clipping; `spacing` is the run's (None: the config's own)."""
    from diffusers import DDIMScheduler

    overrides = {"timestep_spacing": spacing} if spacing else {}
    return DDIMScheduler.from_config(scheduler_config, **overrides)


def load_stack(weights_dir: Path, lora_scale: float, device: torch.device, dtype: torch.dtype,
               spacing: str | None = None) -> EveStack:
    """Load backbone, adapters and (when present) the alignment LoRA from `weights_dir`; the schedule is the
    backbone's stored scheduler config with the run's timestep spacing."""
    from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel

    sd15 = require(SD15_NAME, weights_dir)
    controlnet_dir = require(CONTROLNET_NAME, weights_dir)
    motion_dir = require(MOTION_ADAPTER_NAME, weights_dir)
    lora_file = lora_path(weights_dir)
    options = dict(use_safetensors=True, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(str(sd15), subfolder="text_encoder", **options)
    unet = motion_unet(UNet2DConditionModel.from_pretrained(str(sd15), subfolder="unet", **options),
                       MotionAdapter.from_pretrained(str(motion_dir), **options))
    if lora_file is not None:
        attach_lora(unet, lora_file, lora_scale)
    return EveStack(
        tokenizer=load_clip_tokenizer(sd15 / "tokenizer", SD15_NAME, weights_dir, text_encoder.config.vocab_size),
        text_encoder=_frozen(text_encoder, device, dtype),
        vae=_frozen(AutoencoderKL.from_pretrained(str(sd15), subfolder="vae", **options), device, dtype),
        unet=_frozen(unet, device, dtype),
        controlnet=_frozen(ControlNetModel.from_pretrained(str(controlnet_dir), **options), device, dtype),
        scheduler=ddim_scheduler(dict(ddim_scheduler_config(sd15)), spacing),
        lora_loaded=lora_file is not None,
    )


def ddim_scheduler_config(sd15: Path):
    from diffusers import DDIMScheduler

    return DDIMScheduler.load_config(str(sd15), subfolder="scheduler", local_files_only=True)


def lora_path(weights_dir: Path) -> Path | None:
    """The alignment LoRA file when its folder exists (None: plug-and-play); a folder without the file is an error."""
    if missing_files(LORA_NAME, weights_dir):
        return None
    path = entry_path(LORA_NAME, weights_dir) / LORA_FILE
    if not path.is_file():
        raise WeightsMissingError(
            f"weights '{LORA_NAME}' in {weights_dir} lack {LORA_FILE}; put the alignment LoRA there "
            f"(diffusers/peft LoRA safetensors) or remove the folder to run plug-and-play"
        )
    return path


def attach_lora(unet: torch.nn.Module, path: Path, scale: float) -> None:
    """Load the alignment LoRA (peft) onto the backbone's layers with strength `scale` (EVE's theta_align)."""
    unet.load_lora_adapter(str(path), prefix="unet", adapter_name=LORA_ADAPTER)
    unet.set_adapters([LORA_ADAPTER], weights=[scale])


def random_stack(device: torch.device, dtype: torch.dtype, spacing: str | None = None) -> EveStack:
    """The real-size stack from published configs with random weights (benchmarks: no download, no tokenizer)."""
    from vedit_cli.models import architectures as arch

    unet = motion_unet(arch.build_unet(4, device="cpu"), arch.build_motion_adapter(device="cpu"))
    return EveStack(
        tokenizer=None,
        text_encoder=_frozen(arch.build_text_encoder(device="cpu"), device, dtype),
        vae=_frozen(arch.build_vae(device="cpu"), device, dtype),
        unet=_frozen(unet, device, dtype),
        controlnet=_frozen(arch.build_controlnet(device="cpu"), device, dtype),
        scheduler=ddim_scheduler(SD15_SCHEDULER, spacing),
    )


def token_ids(stack: EveStack, text: str) -> torch.Tensor:
    """[1, 77] CLIP ids; without a tokenizer (random weights) every text encodes as the empty prompt."""
    if stack.tokenizer is None:
        length = stack.text_encoder.config.max_position_embeddings
        return torch.tensor([[CLIP_BOS] + [CLIP_EOS] * (length - 1)])
    tokens = stack.tokenizer(text, padding="max_length", max_length=stack.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
    return tokens.input_ids


@contextmanager
def motion_bypassed(unet: torch.nn.Module) -> Iterator[None]:
    """Temporal layers act as the identity inside this block: the backbone + edit adapter alone (EVE's psi)."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    hooks = [module.register_forward_hook(lambda _module, args, _output: args[0])
             for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
