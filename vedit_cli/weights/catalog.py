"""The checkpoints vedit uses: hub repository, pinned revision, the files fetched, size and licence.

Only what is loaded is fetched: safetensors weights and their configs; no .ckpt/.bin/flax/tf/onnx copies, no
fp16 duplicates, no safety checker. Revisions are full commit hashes confirmed from public pages (hub tree pages,
HF cache snapshot paths in other projects); where none could be confirmed the entry pins "main" and says so.
Sizes are approximate (MB = 10^6 bytes) and are shown before a download starts.
"""

from __future__ import annotations

from vedit_cli.weights.entry import HubSource, WeightsEntry

DIFFUSERS_SD_FILES = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "scheduler/scheduler_config.json",
)
DIFFUSERS_SD_PATTERNS = (*DIFFUSERS_SD_FILES, "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json")
DIFFUSERS_MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
CLIP_PROCESSOR_FILES = (
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)

HUB_ENTRIES = (
    WeightsEntry(
        name="instruct-pix2pix",
        repo_id="timbrooks/instruct-pix2pix",
        revision="31519b5cb02a7fd89b906d88731cd4d6a7bbf88d",
        allow_patterns=DIFFUSERS_SD_PATTERNS,
        required_files=DIFFUSERS_SD_FILES,
        size_mb=2135,  # the repo's safetensors are fp16-sized: UNet 1.72 GB + text encoder 246 MB + VAE 167 MB
        licence="MIT",
        used_by=("movie",),
    ),
    WeightsEntry(
        name="taesd",
        repo_id="madebyollin/taesd",
        revision="931366cc24b8bc15d6f682fa2e0352f1deec397b",
        allow_patterns=DIFFUSERS_MODEL_FILES,
        required_files=DIFFUSERS_MODEL_FILES,
        size_mb=10,
        licence="MIT",
        used_by=("movie", "svdiff"),
    ),
    WeightsEntry(
        name="sd15",
        repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision="451f4fe16113bff5a5d2269ed5ad43b0592e9a14",
        allow_patterns=DIFFUSERS_SD_PATTERNS,
        required_files=DIFFUSERS_SD_FILES,
        # fp32 safetensors (UNet 3.44 GB + text encoder 492 MB + VAE 335 MB): loads with a plain from_pretrained,
        # no `variant=` needed; the fp16 variant would be 2.1 GB but every loader would have to ask for it.
        size_mb=4270,
        licence="CreativeML OpenRAIL-M",
        used_by=("eve", "svdiff"),
    ),
    WeightsEntry(
        name="lcm-lora-sdv1-5",
        repo_id="latent-consistency/lcm-lora-sdv1-5",
        revision="cf2fced511dbe7e26c8d1d397e728fbab875db4b",
        allow_patterns=("pytorch_lora_weights.safetensors",),
        required_files=("pytorch_lora_weights.safetensors",),
        size_mb=135,
        licence="OpenRAIL++",
        used_by=("svdiff",),
    ),
    WeightsEntry(
        name="animatediff-motion-adapter",
        repo_id="guoyww/animatediff-motion-adapter-v1-5-2",
        revision="6167b88ffe39b4441fdf2113e77b99a6f56b7906",
        allow_patterns=DIFFUSERS_MODEL_FILES,
        required_files=DIFFUSERS_MODEL_FILES,
        size_mb=1820,
        licence="not stated on the model card (AnimateDiff code: Apache-2.0)",
        used_by=("eve",),
    ),
    WeightsEntry(
        name="controlnet-ip2p",
        repo_id="lllyasviel/control_v11e_sd15_ip2p",
        revision="1fed6ebb905c61929a60514830eb05b039969d6d",
        allow_patterns=DIFFUSERS_MODEL_FILES,  # fp32 safetensors; the repo also has .bin and fp16 copies
        required_files=DIFFUSERS_MODEL_FILES,
        size_mb=1450,
        licence="OpenRAIL",
        used_by=("eve",),
    ),
    WeightsEntry(
        name="clip-vit-large-patch14",
        repo_id="openai/clip-vit-large-patch14",
        revision="32bd64288804d66eefd0ccbe215aa642df71cc41",
        allow_patterns=("config.json", "model.safetensors", *CLIP_PROCESSOR_FILES),
        required_files=("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"),
        size_mb=1715,
        licence="not stated on the model card (OpenAI CLIP code: MIT)",
        used_by=("metrics",),
    ),
    WeightsEntry(
        name="pickscore",
        repo_id="yuvalkirstain/PickScore_v1",
        revision="main",  # no commit hash could be confirmed offline; pin one after the first real download
        allow_patterns=("config.json", "model.safetensors"),  # safetensors only: a pickle-only repo is refused
        required_files=("config.json", "model.safetensors"),
        size_mb=3950,
        licence="unconfirmed (check the model card); processor: MIT",
        used_by=("metrics",),
        extra_sources=(HubSource(
            repo_id="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
            revision="main",  # no commit hash could be confirmed offline
            allow_patterns=CLIP_PROCESSOR_FILES,
            subfolder="processor",
            required_files=("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"),
        ),),
    ),
    # Only `vedit train eve-lora --discriminator-features dinov2` reads it (the FDD discriminators' frozen features,
    # ADD/LADD style); no backend or metric loads it, so `vedit download eve` does not fetch it.
    WeightsEntry(
        name="dinov2-base",
        repo_id="facebook/dinov2-base",
        revision="f9e44c814b77203eaa57a6bdbbd535f21ede1415",  # the HF cache snapshot path other projects show
        allow_patterns=("config.json", "model.safetensors"),  # safetensors only, never a pickle copy
        required_files=("config.json", "model.safetensors"),
        size_mb=346,  # ViT-B/14, 86.6 M float32 parameters
        licence="Apache-2.0",
        used_by=("train-eve-lora",),
    ),
)

_TRAINED_HINT = "local only: produced by the project's own training (no hub repository yet); put it in {folder}"
TRAINED_ENTRIES = tuple(
    WeightsEntry(name=name, repo_id="", revision="", allow_patterns=(), required_files=(), size_mb=0,
                 licence="project", used_by=(backend,), local_hint=_TRAINED_HINT.format(folder=f"<weights_dir>/{name}"))
    for name, backend in (("movie-student", "movie"), ("svdiff-memory", "svdiff"), ("eve-lora", "eve"))
)
ENTRIES = HUB_ENTRIES + TRAINED_ENTRIES
