"""The InstructPix2Pix recipe's output folder (diffusers layout, safetensors only) and its validation images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".msgpack", ".h5", ".onnx")
FROZEN_COMPONENTS = ("vae", "text_encoder", "tokenizer")
OUTPUT_SCHEDULER = "EulerAncestralDiscreteScheduler"  # what timbrooks/instruct-pix2pix ships


def model_index() -> dict:
    """model_index.json of timbrooks/instruct-pix2pix (no safety checker)."""
    import diffusers

    return {
        "_class_name": "StableDiffusionInstructPix2PixPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", OUTPUT_SCHEDULER],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }


def save_pipeline_folder(base: Path, unet, output: Path, scheduler_config: dict) -> Path:
    """Write `output` whole under a temporary name, then rename: the frozen components are the base's files (no
    pickles), the UNet the trained one in float32, the scheduler the base's schedule as Euler ancestral."""
    import diffusers

    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for component in FROZEN_COMPONENTS:
        shutil.copytree(Path(base) / component, partial / component,
                        ignore=lambda _, names: [n for n in names if n.endswith(PICKLE_SUFFIXES)])
    if unet.dtype != torch.float32:
        unet.to(torch.float32)
    unet.save_pretrained(str(partial / "unet"), safe_serialization=True)
    scheduler = getattr(diffusers, OUTPUT_SCHEDULER).from_config(scheduler_config)
    scheduler.save_pretrained(str(partial / "scheduler"))
    (partial / "model_index.json").write_text(json.dumps(model_index(), indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    return output


def validation_images(recipe, unet, folder: Path) -> None:
    """[source | edit | target] PNGs for the first validation samples, through diffusers' own pipeline."""
    import diffusers
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from PIL import Image

    from vedit_cli.train.data.samples import BadSample
    from vedit_cli.train.data.triplets import open_triplets

    config = recipe.config
    data = config.validation_data if config.validation_data is not None else recipe.source
    if isinstance(data, (str, Path)):
        data = open_triplets(data, config.columns)
    scheduler = diffusers.EulerDiscreteScheduler.from_config(recipe.scheduler_config)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=recipe.vae, text_encoder=recipe.text_encoder, tokenizer=recipe.tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for index in range(min(config.validation_count, len(data))):
        try:
            raw = data.load(index)
            sample, raw_instruction = recipe.prepare_sample(raw, seed=index), str(raw["instruction"])
        except BadSample:
            continue
        source = _to_image(sample["source"])
        edit = pipe(raw_instruction, image=source, num_inference_steps=config.validation_steps,
                    generator=torch.Generator().manual_seed(index), output_type="pil").images[0]
        row = np.concatenate([np.asarray(source), np.asarray(edit.resize(source.size)),
                              np.asarray(_to_image(sample["edited"]))], axis=1)
        Image.fromarray(row).save(folder / f"{index:03d}.png")
        (folder / f"{index:03d}.txt").write_text(raw_instruction + "\n")


def _to_image(tensor_chw: torch.Tensor):
    from PIL import Image

    array = ((tensor_chw.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)
