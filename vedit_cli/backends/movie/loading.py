"""Loading the movie backend's components from local diffusers-format folders (safetensors only).

Every check here turns a missing or broken folder into one WeightsMissingError line naming the `vedit download`
command, before any large file is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vedit_cli.weights.guards import load_clip_tokenizer, missing_weights
from vedit_cli.weights.registry import require

IP2P_NAME = "instruct-pix2pix"
TAESD_NAME = "taesd"
SD_VAE_SCALING_FACTOR = 0.18215  # stable-diffusion-v1-5 vae/config.json
# Ancestral samplers draw fresh noise every step, per frame: that flickers and breaks "batch == single frames".
DETERMINISTIC_SCHEDULER = {
    "EulerAncestralDiscreteScheduler": "EulerDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler": "KDPM2DiscreteScheduler",
}


IP2P_SCHEDULER = dict(  # timbrooks/instruct-pix2pix scheduler/scheduler_config.json (Euler, made deterministic)
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", timestep_spacing="linspace", steps_offset=1,
)
IP2P_COMPONENTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def require_instruct_pix2pix(weights_dir: Path) -> Path:
    """The InstructPix2Pix folder, with every component's config and safetensors checked before loading any."""
    root = require(IP2P_NAME, weights_dir)
    for subfolder, stem in IP2P_COMPONENTS.items():
        safetensors_variant(root / subfolder, stem, IP2P_NAME, weights_dir)
    for needed in ("tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"):
        if not (root / needed).is_file():
            raise missing_weights(IP2P_NAME, weights_dir, needed)
    return root


def safetensors_variant(folder: Path, stem: str, name: str, weights_dir: Path) -> str | None:
    """None when `<stem>.safetensors` is there, "fp16" when only the fp16 variant is; else WeightsMissingError."""
    if not (folder / "config.json").is_file():
        raise missing_weights(name, weights_dir, f"{folder.name}/config.json")
    if (folder / f"{stem}.safetensors").is_file():
        return None
    if (folder / f"{stem}.fp16.safetensors").is_file():
        return "fp16"
    raise missing_weights(name, weights_dir, f"{folder.name}/{stem}.safetensors")


def load_model(model_class, root: Path, subfolder: str | None, name: str, weights_dir: Path, dtype: torch.dtype):
    """`model_class.from_pretrained` on a local folder, safetensors only, after checking the files exist."""
    folder = root / subfolder if subfolder else root
    stem = "model" if subfolder == "text_encoder" else "diffusion_pytorch_model"
    variant = safetensors_variant(folder, stem, name, weights_dir)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    dtype_key = "dtype" if model_class.__module__.startswith("transformers") else "torch_dtype"
    kwargs[dtype_key] = dtype
    model = model_class.from_pretrained(str(root), variant=variant, use_safetensors=True, local_files_only=True,
                                        **kwargs)
    return model.eval().requires_grad_(False)


def load_scheduler(root: Path, weights_dir: Path, spacing: str | None = None):
    """The checkpoint's scheduler, swapped for its deterministic counterpart when it is ancestral, with the
    timestep spacing the run resolved (None: the checkpoint's own)."""
    import diffusers

    config_path = root / "scheduler" / "scheduler_config.json"
    if not config_path.is_file():
        raise missing_weights(IP2P_NAME, weights_dir, "scheduler/scheduler_config.json")
    config = json.loads(config_path.read_text())
    class_name = DETERMINISTIC_SCHEDULER.get(config["_class_name"], config["_class_name"])
    return with_spacing(getattr(diffusers, class_name).from_config(config), spacing)


def with_spacing(scheduler, spacing: str | None):
    """The scheduler with `timestep_spacing` replaced: "trailing" makes step 1 start at the last training
    timestep, from pure noise (with "linspace", one Euler step starts at t=0, sigma 0.029: almost no noise)."""
    if spacing is None or scheduler.config.get("timestep_spacing") == spacing:
        return scheduler
    return type(scheduler).from_config(scheduler.config, timestep_spacing=spacing)


def with_prediction_type(scheduler, prediction_type: str):
    """The scheduler reading the UNet's output as `prediction_type` (a distilled student's, from its metadata)."""
    if scheduler.config.get("prediction_type") == prediction_type:
        return scheduler
    return type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)


def vae_scaling_factor(root: Path) -> float:
    """The full VAE's latent scaling factor, read from its config (TAESD latents are pre-scaled by it)."""
    config_path = root / "vae" / "config.json"
    if config_path.is_file():
        return float(json.loads(config_path.read_text()).get("scaling_factor", SD_VAE_SCALING_FACTOR))
    return SD_VAE_SCALING_FACTOR


def load_text_path(root: Path, weights_dir: Path, dtype: torch.dtype):
    """(tokenizer, text encoder) of the InstructPix2Pix folder."""
    from transformers import CLIPTextModel

    text_encoder = load_model(CLIPTextModel, root, "text_encoder", IP2P_NAME, weights_dir, dtype)
    tokenizer = load_clip_tokenizer(root / "tokenizer", IP2P_NAME, weights_dir, text_encoder.config.vocab_size)
    return tokenizer, text_encoder


def load_autoencoder(kind: str, root: Path, weights_dir: Path, dtype: torch.dtype):
    """The full VAE from the InstructPix2Pix folder, or TAESD from its own folder."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    if kind == "full":
        return load_model(AutoencoderKL, root, "vae", IP2P_NAME, weights_dir, dtype)
    taesd_root = require(TAESD_NAME, weights_dir)
    return load_model(AutoencoderTiny, taesd_root, None, TAESD_NAME, weights_dir, dtype)


def load_teacher_unet(root: Path, weights_dir: Path, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    return load_model(UNet2DConditionModel, root, "unet", IP2P_NAME, weights_dir, dtype)
