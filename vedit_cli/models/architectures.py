"""Real-size architectures built from their published configs, with random weights.

FLOPs and speed do not depend on weight values, so benchmarks measure the real thing without any download.
`device="meta"` builds without allocating memory (FLOP counting); `device="cpu"` gives runnable random weights.
"""

from __future__ import annotations

import torch

SD15_UNET = dict(  # stable-diffusion-v1-5 unet/config.json; InstructPix2Pix changes only in_channels to 8
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD15_VAE = dict(  # stable-diffusion-v1-5 vae/config.json
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512, scaling_factor=0.18215,
)
TAESD = dict(  # madebyollin/taesd config.json (diffusers AutoencoderTiny defaults)
    encoder_block_out_channels=(64, 64, 64, 64), decoder_block_out_channels=(64, 64, 64, 64),
    num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1), latent_channels=4, scaling_factor=1.0,
)
CLIP_VIT_L14_TEXT = dict(  # openai/clip-vit-large-patch14 text_config (the SD1.5 text encoder)
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406, eos_token_id=49407,
)
SD15_CONTROLNET = dict(cross_attention_dim=768, **{k: SD15_UNET[k] for k in ("block_out_channels", "attention_head_dim")})
ANIMATEDIFF_V152 = dict(  # guoyww/animatediff-motion-adapter-v1-5-2 config.json
    block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2, motion_mid_block_layers_per_block=1,
    motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True,
)


def _build(factory, device: str, dtype: torch.dtype):
    with torch.device(device):
        module = factory()
    if dtype != torch.float32:
        module = module.to(dtype=dtype)
    return module.eval().requires_grad_(False)


def build_unet(in_channels: int = 4, device: str = "meta", dtype: torch.dtype = torch.float32):
    """The SD1.5 UNet (859.5 M params with in_channels=8, as InstructPix2Pix)."""
    from diffusers import UNet2DConditionModel

    return _build(lambda: UNet2DConditionModel(**{**SD15_UNET, "in_channels": in_channels}), device, dtype)


def build_student_unet(architecture: str, device: str = "meta", dtype: torch.dtype = torch.float32):
    """MoViE's student UNet: the InstructPix2Pix UNet slimmed by `architecture` (models.student_architecture)."""
    from diffusers import UNet2DConditionModel

    from vedit_cli.models.student_architecture import slim_config

    config = slim_config({**SD15_UNET, "in_channels": 8}, architecture)
    return _build(lambda: UNet2DConditionModel(**config), device, dtype)


def build_vae(device: str = "meta", dtype: torch.dtype = torch.float32):
    from diffusers import AutoencoderKL

    return _build(lambda: AutoencoderKL(**SD15_VAE), device, dtype)


def build_taesd(device: str = "meta", dtype: torch.dtype = torch.float32):
    from diffusers import AutoencoderTiny

    return _build(lambda: AutoencoderTiny(**TAESD), device, dtype)


def build_text_encoder(device: str = "meta", dtype: torch.dtype = torch.float32):
    from transformers import CLIPTextConfig, CLIPTextModel

    return _build(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L14_TEXT)), device, dtype)


def build_controlnet(device: str = "meta", dtype: torch.dtype = torch.float32):
    from diffusers import ControlNetModel

    return _build(lambda: ControlNetModel(**SD15_CONTROLNET), device, dtype)


def build_motion_adapter(device: str = "meta", dtype: torch.dtype = torch.float32):
    from diffusers import MotionAdapter

    return _build(lambda: MotionAdapter(**ANIMATEDIFF_V152), device, dtype)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
