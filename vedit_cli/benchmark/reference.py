"""The reference row: diffusers' stock StableDiffusionInstructPix2PixPipeline recipe, run as is, with stage hooks.

Recipe of MoViE Table 1's base model: 10 Euler-ancestral steps, 3 UNet passes per step (text + image guidance,
batched), full SD VAE in and out. The prompt is encoded once per clip (prompt and empty negative, as the pipeline
itself does) and handed to the pipeline as embeddings, so per-frame time excludes text, as for every backend.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vedit_cli.editor import Editor

REFERENCE_NAME = "reference"
PIPELINE_FOLDER = "instruct-pix2pix"
SCHEDULER_CONFIG = dict(  # timbrooks/instruct-pix2pix scheduler/scheduler_config.json
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="epsilon", steps_offset=1,
)


def random_weights_pipeline(dtype: torch.dtype, meta_stages: bool = False):
    """Real-size InstructPix2Pix (SD1.5 UNet with 8 input channels, SD VAE, CLIP ViT-L/14 text) with random weights.

    `meta_stages`: the UNet is built on meta (no memory, no init: FLOP counts only); the text encoder and the VAE
    stay on CPU, because the pipeline runs its glue on its first component's device (the text encoder) and the
    VAE's quant convs run outside the stage modules.
    """
    from diffusers import EulerAncestralDiscreteScheduler

    from vedit_cli.benchmark.tokenizer import byte_level_clip_tokenizer
    from vedit_cli.models.architectures import build_text_encoder, build_unet, build_vae

    unet_device = "meta" if meta_stages else "cpu"
    from diffusers import StableDiffusionInstructPix2PixPipeline

    return StableDiffusionInstructPix2PixPipeline(
        vae=build_vae("cpu", dtype), text_encoder=build_text_encoder("cpu", dtype),
        tokenizer=byte_level_clip_tokenizer(), unet=build_unet(8, unet_device, dtype),
        scheduler=EulerAncestralDiscreteScheduler(**SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def downloaded_pipeline(weights_dir: Path, dtype: torch.dtype):
    """The pipeline from the weights dir's "instruct-pix2pix" folder (raises WeightsMissingError when absent)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from vedit_cli.weights.registry import require

    folder = require(PIPELINE_FOLDER, weights_dir)
    return StableDiffusionInstructPix2PixPipeline.from_pretrained(
        str(folder), dtype=dtype, safety_checker=None, requires_safety_checker=False, use_safetensors=True,
    )


class ReferenceEditor(Editor):
    """Runs the stock pipeline frame by frame behind the Editor contract, so it is measured like every backend."""

    window_size = 1

    def __init__(self, pipeline, device: torch.device, steps: int, guidance_scale: float,
                 image_guidance_scale: float, seed: int):
        self.pipeline = pipeline  # already on `device` (or, for --flops-only, its UNet and text encoder on meta)
        self.pipeline.set_progress_bar_config(disable=True)
        self.device = device
        self.steps, self.seed = steps, seed
        self.guidance_scale, self.image_guidance_scale = guidance_scale, image_guidance_scale
        self.description = (f"diffusers InstructPix2Pix pipeline: {steps} steps x 3 passes "
                            f"(guidance {guidance_scale}/{image_guidance_scale}), full VAE")
        self.prompt_embeds = self.negative_prompt_embeds = None

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        vae = self.pipeline.vae
        return {"text_encoder": self.pipeline.text_encoder, "encode": vae.encoder, "unet": self.pipeline.unet,
                "decode": vae.decoder}

    def prepare(self, prompt: str) -> None:
        """The pipeline's own prompt and empty-negative encodings, once per clip."""
        self.prompt_embeds = self._encode_text(prompt)
        self.negative_prompt_embeds = self._encode_text("")

    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        edited = [self._edit_frame(frame_chw) for frame_chw in frames_tchw]
        return torch.stack(edited)

    def _encode_text(self, text: str) -> torch.Tensor:
        tokenizer = self.pipeline.tokenizer
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return self.pipeline.text_encoder(ids.to(self.device))[0]

    def _edit_frame(self, frame_chw: torch.Tensor) -> torch.Tensor:
        images = self.pipeline(
            prompt_embeds=self.prompt_embeds, negative_prompt_embeds=self.negative_prompt_embeds,
            image=(frame_chw[None].float() + 1) / 2, num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale, image_guidance_scale=self.image_guidance_scale,
            generator=torch.Generator("cpu").manual_seed(self.seed), output_type="pt",
        ).images
        return images[0] * 2 - 1
