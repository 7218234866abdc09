"""FLOPs per frame of the eve backend at 480x480, real-size stack on meta tensors, beside the movie backend's.

Per frame, eve runs `steps` DDIM steps of the full stack (ControlNet + SD1.5 UNet with AnimateDiff temporal
layers) x 2 CFG passes on every window slot that holds the frame, plus the anchor frame's slot in each window and
the chunk overlaps the runner cross-fades; once per clip the anchor frame is edited alone. The slot counts come
from the same planner the editor and the runner use, for a clip of --frames frames.

    .venv/bin/python scripts/eve_flops.py [--size 480] [--frames 320] [--steps 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vedit_cli.benchmark.flops import flops_of  # noqa: E402
from vedit_cli.backends.eve.editor import chunk_frames  # noqa: E402
from vedit_cli.backends.eve.components import motion_bypassed  # noqa: E402
from vedit_cli.config import BACKEND_DEFAULTS, ModelConfig  # noqa: E402
from vedit_cli.models import architectures as arch  # noqa: E402
from vedit_cli.pipeline.windows import plan_windows  # noqa: E402

TERA = 1e12
CFG = 2



def stack_call(unet, controlnet, latent: int, frames: int) -> tuple[int, int]:
    """(ControlNet, UNet) FLOPs of one guided call on `frames` frames: batch CFG x frames, as the editor runs it."""
    sample = torch.empty(CFG, 4, frames, latent, latent, device="meta")
    flat = torch.empty(CFG * frames, 4, latent, latent, device="meta")
    text = torch.empty(CFG * frames, 77, 768, device="meta")
    hint = torch.empty(CFG * frames, 3, latent * 8, latent * 8, device="meta")
    t = torch.tensor(500, device="meta")
    residuals = []
    controlnet_flops = flops_of(lambda: residuals.extend(controlnet(flat, t, text, controlnet_cond=hint, return_dict=False)))
    down, mid = residuals[0], residuals[1]
    unet_flops = flops_of(lambda: unet(sample, t, text, down_block_additional_residuals=down,
                                    mid_block_additional_residual=mid))
    return controlnet_flops, unet_flops


def measure(size: int, window: int) -> dict[str, float]:
    """TFLOPs of each call the editor makes, real-size modules built on meta."""
    from diffusers import UNetMotionModel

    latent = size // 8
    with torch.device("meta"):
        unet = UNetMotionModel.from_unet2d(arch.build_unet(4), arch.build_motion_adapter(), load_weights=False).eval()
    controlnet, vae = arch.build_controlnet(), arch.build_vae()
    window_cn, window_unet = stack_call(unet, controlnet, latent, window + 1)
    with motion_bypassed(unet):
        anchor_cn, anchor_unet = stack_call(unet, controlnet, latent, 1)
    unet2d, one_latent = arch.build_unet(4), torch.empty(1, 4, latent, latent, device="meta")
    spatial_unet = flops_of(lambda: unet2d(one_latent, torch.tensor(500, device="meta"),
                                        torch.empty(1, 77, 768, device="meta")))
    ids = torch.zeros(1, 77, dtype=torch.long, device="meta")
    return {name: flops / TERA for name, flops in {
        "window_call": window_cn + window_unet, "window_unet": window_unet, "window_controlnet": window_cn,
        "anchor_call": anchor_cn + anchor_unet, "sd15_unet_pass": spatial_unet,
        "controlnet_pass": anchor_cn / CFG, "vae_decode": flops_of(lambda: vae.decode(one_latent)),
        "text_encoder": flops_of(lambda: arch.build_text_encoder()(ids)),
    }.items()}


def schedule(frames: int, config: ModelConfig) -> dict[str, int]:
    """How many window calls, decoded frames and anchor slots a clip costs, from the planner."""
    chunks = plan_windows(frames, chunk_frames(config.window, config.overlap, config.chunk_windows), config.overlap)
    window_calls, frame_slots, decoded = 0, 0, 0
    for chunk in chunks:
        for window in plan_windows(len(chunk), config.window, config.overlap):
            window_calls += 1
            frame_slots += len(window) + (0 if chunk.start == 0 and window.start == 0 else 1)
        decoded += len(chunk)
    return {"window_calls": window_calls, "frame_slots": frame_slots, "decoded": decoded, "chunks": len(chunks)}


def per_frame(t: dict[str, float], plan: dict[str, int], frames: int, steps: int, window: int) -> dict[str, float]:
    """TFLOPs per output frame, by stage (window calls are scaled from full windows + anchor to their slots)."""
    per_slot = t["window_call"] / (window + 1)
    return {
        "denoise (UNet+motion+ControlNet)": steps * plan["frame_slots"] * per_slot / frames,
        "anchor edit (once per clip)": steps * t["anchor_call"] / frames,
        "vae decode": plan["decoded"] * t["vae_decode"] / frames,
        "text encoder (3 prompts per clip)": 3 * t["text_encoder"] / frames,
    }


def movie_rows(size: int) -> list[tuple[str, float, float, str]]:
    """The movie backend's rows from scripts/movie_flops.py, when that script is there."""
    path = Path(__file__).with_name("movie_flops.py")
    if not path.is_file():
        return []
    spec = importlib.util.spec_from_file_location("movie_flops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rows(module.measure(size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--frames", type=int, default=320)
    parser.add_argument("--steps", type=int, default=BACKEND_DEFAULTS["eve"].steps)
    args = parser.parse_args()
    config = ModelConfig(backend="eve")
    t, plan = measure(args.size, config.window), schedule(args.frames, config)
    print(f"eve FLOPs at {args.size}x{args.size} (FlopCounterMode on meta tensors; multiply-add = 2 FLOPs)")
    for name, value in t.items():
        print(f"  {name:<20} {value:8.3f} T")
    print(f"  a clip of {args.frames} frames: {plan['chunks']} chunks, {plan['window_calls']} window calls, "
          f"{plan['frame_slots']} frame slots per step ({plan['frame_slots'] / args.frames:.3f} per frame), "
          f"{plan['decoded']} decoded frames")
    stages = per_frame(t, plan, args.frames, args.steps, config.window)
    print(f"\n  eve per output frame, {args.steps} DDIM steps x {CFG} passes:")
    for name, value in stages.items():
        print(f"    {name:<36} {value:8.2f} T")
    print(f"    {'total':<36} {sum(stages.values()):8.2f} T")
    print(f"\n  reference: SD1.5 UNet pass at this size {t['sd15_unet_pass']:.3f} T (measured: 0.698 T for the "
          f"8-channel IP2P UNet at 480)")
    for label, total, unet, _paper in movie_rows(args.size):
        print(f"  movie {label:<42} {total:8.2f} T per frame (UNet {unet:.2f} T)")


if __name__ == "__main__":
    main()
