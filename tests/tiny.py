"""Tiny random components, built and saved locally, loaded back through the real `from_pretrained` paths.

Nothing here touches the network: the tokenizer is the byte-level one vedit_cli.benchmark.tokenizer writes offline.
"""

from __future__ import annotations

from pathlib import Path

import torch

TEXT_HIDDEN = 32


def write_tokenizer(folder: Path) -> Path:
    """A CLIPTokenizer with every byte as a token (no merges): small, deterministic, offline."""
    from vedit_cli.benchmark.tokenizer import byte_level_clip_tokenizer

    folder = Path(folder)
    byte_level_clip_tokenizer(folder=folder).save_pretrained(str(folder))
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
    _copy_vocab_files(folder.parent / f"_tok_{folder.name}", folder)
    return folder


def save_taesd(folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    tiny_taesd(seed).save_pretrained(str(folder), safe_serialization=True)
    return folder


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_tokenizer(folder)))


def _copy_vocab_files(tokenizer_source: Path, pipeline_folder: Path) -> None:
    """transformers 5 saves only tokenizer.json; hub checkpoints (and the weights catalog) have vocab.json +
    merges.txt in tokenizer/: keep them, so tiny folders pass the same completeness checks as real ones."""
    import shutil

    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_source / name, pipeline_folder / "tokenizer" / name)


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
    _copy_vocab_files(folder.parent / f"_tok_{folder.name}", folder)
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
    image_processor.save_pretrained(str(processor_folder))  # preprocessor_config.json, as the hub repositories have it
    (processor_folder / "processor_config.json").unlink(missing_ok=True)  # the hub repositories have none
    return folder


def tiny_controlnet(seed: int = 0):
    """A ControlNet matching `tiny_unet(4)`; its hint encoder downsamples by 2, as the tiny VAE does."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel(
        block_out_channels=(32, 64), layers_per_block=2, in_channels=4, cross_attention_dim=TEXT_HIDDEN,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), norm_num_groups=8, attention_head_dim=4,
        conditioning_embedding_out_channels=(16, 32),
    )
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]
    for conv in zero_convs:  # zero-initialised for training; random here so the hint changes the output
        torch.nn.init.normal_(conv.weight, std=0.05)
    return controlnet.eval()


def tiny_motion_adapter(seed: int = 0):
    """An AnimateDiff MotionAdapter whose temporal layers fit `tiny_unet(4)` (channels 32, 64; 8 norm groups)."""
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    return MotionAdapter(
        block_out_channels=(32, 64), motion_layers_per_block=2, motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=2, motion_norm_num_groups=8, motion_max_seq_length=32, use_motion_mid_block=True,
    ).eval()


def save_controlnet(folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    tiny_controlnet(seed).save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_motion_adapter(folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    tiny_motion_adapter(seed).save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_unet_lora(folder: Path, seed: int = 0, rank: int = 4) -> Path:
    """A peft LoRA on the attention projections of `tiny_unet(4)`, saved as diffusers' pytorch_lora_weights."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = tiny_unet(4, seed)
    torch.manual_seed(seed + 1)  # init_lora_weights=False: B is random too, so the LoRA changes the output
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    unet.add_adapter(config)
    folder = Path(folder)
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    return folder


def save_lcm_lora(folder: Path, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA for `tiny_unet(4)` in the kohya key format of `latent-consistency/lcm-lora-sdv1-5`, non-zero weights."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet = tiny_unet(4, seed)
    torch.manual_seed(seed + 1)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "time_emb_proj"]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    peft_state = {f"unet.{k}": v * 0.1 for k, v in get_peft_model_state_dict(unet).items()}
    save_file({k: v.contiguous() for k, v in convert_state_dict_to_kohya(peft_state).items()},
              str(folder / "pytorch_lora_weights.safetensors"))
    return folder


def save_svdiff_memory(folder: Path, seed: int = 0, output_scale: float = 2.0) -> Path:
    """Memory weights for `tiny_unet(4)` with a NON-zero output projection, so the memory changes the output."""
    from vedit_cli.models.memory_attention import WEIGHTS_FILE, MemoryConfig, UNetMemory, save_memory_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + 2)
    memory = UNetMemory(MemoryConfig.for_unet(tiny_unet(4, seed)))
    for block in memory.blocks:
        torch.nn.init.normal_(block.attention.to_out[0].weight, std=output_scale / block.attention.to_out[0].in_features**0.5)
    save_memory_weights(memory, folder / WEIGHTS_FILE)
    return folder


def save_eve_weights(root: Path, seed: int = 0, lora: bool = False) -> Path:
    """A weights dir with tiny 'sd15', 'controlnet-ip2p', 'animatediff-motion-adapter' (and 'eve-lora') entries."""
    root = Path(root)
    save_sd15(root / "sd15", seed)
    save_controlnet(root / "controlnet-ip2p", seed)
    save_motion_adapter(root / "animatediff-motion-adapter", seed)
    if lora:
        save_unet_lora(root / "eve-lora", seed)
    return root
