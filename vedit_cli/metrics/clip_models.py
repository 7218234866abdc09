"""CLIP image/text embedders loaded from local folders (transformers CLIPModel + processor), as TGVE's run_eval.py
uses them: CLIP ViT-L/14 for CLIPFrame/text scores, PickScore_v1 with the CLIP-ViT-H-14 processor for PickScore."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vedit_cli.weights.guards import check_tokenizer

CLIP_ENTRY = "clip-vit-large-patch14"  # openai/clip-vit-large-patch14: model and processor in one folder
PICKSCORE_ENTRY = "pickscore"  # yuvalkirstain/PickScore_v1 at top level; laion/CLIP-ViT-H-14 processor in processor/
PICKSCORE_PROCESSOR_SUBFOLDER = "processor"


class ClipEmbedder:
    """Embeds frames and texts with one CLIP-family model; keeps only embeddings, never the frames."""

    def __init__(self, model_folder: Path, processor_folder: Path | None = None, device: str = "cpu",
                 frame_size: int = 480, entry: str = CLIP_ENTRY):
        from transformers import CLIPModel, CLIPProcessor

        processor_folder = Path(processor_folder or model_folder)
        self.model = CLIPModel.from_pretrained(str(model_folder), use_safetensors=True, local_files_only=True).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(str(processor_folder))
        check_tokenizer(self.processor.tokenizer, processor_folder, entry, Path(model_folder).parent)
        self.device = device
        self.frame_size = frame_size

    @property
    def logit_scale(self) -> float:
        """The model's learned log temperature (ln 100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.detach())

    def embed_images(self, frames: Iterable[np.ndarray]):
        """Projected image embeddings [N, D] of uint8 RGB frames, each first resized to frame_size^2 as TGVE does."""
        import torch
        from PIL import Image

        images = [Image.fromarray(frame).resize((self.frame_size, self.frame_size), Image.BICUBIC) for frame in frames]
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with torch.no_grad():
            return _projected(self.model.get_image_features(pixel_values=inputs["pixel_values"])).float().cpu()

    def embed_text(self, text: str):
        """Projected text embedding [D]; truncated to 77 tokens like TGVE's pick_score."""
        import torch

        inputs = self.processor(text=[text], padding=True, truncation=True, max_length=77, return_tensors="pt").to(self.device)
        with torch.no_grad():
            features = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return _projected(features).float().cpu()[0]


def _projected(output):
    """transformers < 5 returns the projected tensor; 5.x returns a model output whose pooler_output holds it."""
    return output if hasattr(output, "shape") else output.pooler_output


def load_clip(weights_dir: Path, device: str, frame_size: int) -> ClipEmbedder:
    """CLIP ViT-L/14 from <weights_dir>/clip-vit-large-patch14/."""
    from vedit_cli.weights.registry import require

    folder = require(CLIP_ENTRY, weights_dir)
    return ClipEmbedder(folder, device=device, frame_size=frame_size)


def load_pickscore(weights_dir: Path, device: str, frame_size: int) -> ClipEmbedder:
    """PickScore_v1 from <weights_dir>/pickscore/, processor from its processor/ subfolder (else the same folder)."""
    from vedit_cli.weights.registry import require

    folder = require(PICKSCORE_ENTRY, weights_dir)
    processor_folder = folder / PICKSCORE_PROCESSOR_SUBFOLDER
    if not processor_folder.is_dir():
        processor_folder = folder
    return ClipEmbedder(folder, processor_folder, device=device, frame_size=frame_size, entry=PICKSCORE_ENTRY)
