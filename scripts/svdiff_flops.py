"""FLOPs per frame of the svdiff backend at 512x512, real-size architecture, counted on meta tensors (no weights).

Per frame (SVDiff sec. 4.3 / 5.1): TAESD encode, 3 LCM steps x 2 UNet passes (conditional + unconditional, run as
a batch of 2) with memory attention after each of the 16 transformer blocks, TAESD decode. The text encoder runs
once per prompt, not per frame. Printed beside the paper's claims: 15.2 FPS at 512x512 on an RTX 4090, +49.7 MB of
memory parameters, +2,887 GFLOPs over the temporal-shift baseline.

    .venv/bin/python scripts/svdiff_flops.py [--size 512] [--steps 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vedit_cli.benchmark.flops import flops_of  # noqa: E402
from vedit_cli.models.architectures import build_taesd, build_text_encoder, build_unet, parameter_count  # noqa: E402
from vedit_cli.models.memory_attention import MemoryConfig, UNetMemory  # noqa: E402

PAPER_FPS = 15.2  # RTX 4090, 512x512, TensorRT + TAESD (sec. 5.1)
PAPER_MEMORY_MB = 49.7
RTX4090_FP16_TENSOR_TFLOPS = 165.2  # dense FP16 with FP32 accumulate, NVIDIA Ada whitepaper



def unet_pass_flops(unet, latent: int, batch: int) -> int:
    sample = torch.empty(batch, 4, latent, latent, device="meta")
    text = torch.empty(batch, 77, 768, device="meta")
    return flops_of(lambda: unet(sample, torch.tensor(500, device="meta"), text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    latent = args.size // 8
    unet, taesd, text_encoder = build_unet(4, device="meta"), build_taesd(device="meta"), build_text_encoder("meta")
    with torch.device("meta"):
        memory = UNetMemory(MemoryConfig.for_unet(unet)).eval().requires_grad_(False)
    image = torch.empty(1, 3, args.size, args.size, device="meta")
    encode = flops_of(lambda: taesd.encode(image))
    decode = flops_of(lambda: taesd.decode(torch.empty(1, 4, latent, latent, device="meta")))
    text = flops_of(lambda: text_encoder(torch.zeros(1, 77, dtype=torch.long, device="meta")))
    plain_pair = unet_pass_flops(unet, latent, batch=2)
    memory.attach(unet)
    memory_pair = unet_pass_flops(unet, latent, batch=2)
    memory.clear()
    memory_single = unet_pass_flops(unet, latent, batch=1)
    report(args, encode, decode, text, plain_pair, memory_pair, memory_single, memory, unet)


def report(args, encode, decode, text, plain_pair, memory_pair, memory_single, memory, unet) -> None:
    tera = 1e12
    steps = args.steps
    per_frame = encode + decode + steps * memory_pair
    per_frame_plain = encode + decode + steps * plain_pair
    params = parameter_count(memory)
    print(f"svdiff FLOPs per frame at {args.size}x{args.size} (FlopCounterMode on meta; multiply-add = 2 FLOPs)")
    print(f"  TAESD encode                          {encode / tera:8.3f} T")
    print(f"  UNet pass, batch 1, with memory       {memory_single / tera:8.3f} T")
    print(f"  UNet CFG pair (batch 2) without memory{plain_pair / tera:8.3f} T")
    print(f"  UNet CFG pair (batch 2) with memory   {memory_pair / tera:8.3f} T "
          f"(memory attention +{(memory_pair - plain_pair) / 1e9:,.0f} G per pair)")
    print(f"  TAESD decode                          {decode / tera:8.3f} T")
    print(f"  text encoder (once per prompt)        {text / tera:8.3f} T")
    print(f"  per frame, {steps} steps x 2 passes, with memory   {per_frame / tera:8.3f} T")
    print(f"  per frame, same without memory              {per_frame_plain / tera:8.3f} T "
          f"(memory adds {(per_frame - per_frame_plain) / 1e9:,.0f} GFLOPs = "
          f"{100 * (per_frame / per_frame_plain - 1):.1f}%; paper: +2,887 GFLOPs vs temporal shift)")
    needed = per_frame * PAPER_FPS / tera
    print(f"paper: {PAPER_FPS} FPS on an RTX 4090 -> {needed:.1f} TFLOP/s sustained = "
          f"{100 * needed / RTX4090_FP16_TENSOR_TFLOPS:.0f}% of its {RTX4090_FP16_TENSOR_TFLOPS} dense FP16 TFLOPS")
    print(f"memory modules: {len(memory.blocks)} (one per transformer block), {params / 1e6:.2f} M parameters "
          f"= {params * 4 / 1e6:.1f} MB fp32 / {params * 2 / 1e6:.1f} MB fp16 "
          f"(UNet itself {parameter_count(unet) - params:,} params; paper: +{PAPER_MEMORY_MB} MB)")


if __name__ == "__main__":
    main()
