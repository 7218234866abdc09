"""Tiny random components, built and saved locally, loaded back through the real `from_pretrained` paths.

Nothing here touches the network: the tokenizer is written from a byte-level vocabulary made on the spot.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_HIDDEN = 32


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of GPT-2/CLIP byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder: Path) -> Path:
    """A CLIPTokenizer with every byte as a token (no merges): small, deterministic, offline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return folder


def tiny_text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=TEXT_HIDDEN, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, vocab_size=514, max_position_embeddings=77,
    )
    return CLIPTextModel(config).eval()


def tiny_unet(in_channels: int = 8, seed: int = 0, cross_attention_dim: int = TEXT_HIDDEN):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=8, attention_head_dim=4,
    ).eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    ).eval()


def tiny_taesd(seed: int = 0):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1), latent_channels=4,
    ).eval()


def save_instruct_pix2pix(folder: Path, seed: int = 0) -> Path:
    """A diffusers-format InstructPix2Pix folder (unet, vae, text_encoder, tokenizer, scheduler)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    folder = Path(folder)
    pipe = StableDiffusionInstructPix2PixPipeline(
        unet=tiny_unet(8, seed), vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed),
        tokenizer=_load_tokenizer(folder.parent / f"_tok_{folder.name}"),
        scheduler=EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_taesd(folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    tiny_taesd(seed).save_pretrained(str(folder), safe_serialization=True)
    return folder


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_tokenizer(folder)))


def save_sd15(folder: Path, seed: int = 0) -> Path:
    """A diffusers-format text-to-image folder shaped like SD1.5 (unet in_channels 4, vae, text encoder, DDIM)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = Path(folder)
    pipe = StableDiffusionPipeline(
        unet=tiny_unet(4, seed), vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed),
        tokenizer=_load_tokenizer(folder.parent / f"_tok_{folder.name}"),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def tiny_clip_model(seed: int = 0, projection_dim: int = 16, logit_scale: float = 2.6592):
    """A tiny CLIPModel (text + vision towers) whose text side matches write_tokenizer's 514-token vocabulary."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text_config = dict(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=TEXT_HIDDEN, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=514, max_position_embeddings=77,
    )
    vision_config = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8)
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim,
                        logit_scale_init_value=logit_scale)
    return CLIPModel(config).eval()


def save_tiny_clip(folder: Path, seed: int = 0, logit_scale: float = 2.6592, processor_subfolder: str | None = None) -> Path:
    """A CLIP folder as the hub has it (model + CLIPProcessor); the processor goes to a subfolder if asked (PickScore)."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    folder = Path(folder)
    tiny_clip_model(seed, logit_scale=logit_scale).save_pretrained(str(folder), safe_serialization=True)
    processor_folder = folder / processor_subfolder if processor_subfolder else folder
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=_load_tokenizer(folder.parent / f"_tok_{folder.name}")).save_pretrained(
        str(processor_folder)
    )
    return folder
