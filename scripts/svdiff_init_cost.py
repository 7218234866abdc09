"""Cost of svdiff's two initialisations per frame: UNet calls, UNet rows and seconds (`--svdiff-init`).

Real-size SD1.5 UNet + memory, TAESD and CLIP text encoder with random weights (no download), at a small size on
the CPU by default. Prints one line per initialisation:

    .venv/bin/python scripts/svdiff_init_cost.py --size 128 --frames 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vedit_cli.config import ModelConfig
from vedit_cli.editor import backend_class
from vedit_cli.settings import resolve_run


def measure(init: str, size: int, frames: int, device: str) -> dict:
    run = resolve_run(ModelConfig(backend="svdiff", svdiff_init=init, device=device, dtype="float32", size=size),
                      random_weights=True)
    editor = backend_class("svdiff").random_weights(run)
    rows: list[int] = []
    editor.parts.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    editor.prepare("make it Van Gogh")
    clip = torch.rand(frames + 1, 3, size, size) * 2 - 1
    editor.edit(clip[:1])  # warm-up
    rows.clear()
    seconds = []
    for frame in clip[1:]:
        start = time.perf_counter()
        editor.edit(frame[None])
        seconds.append(time.perf_counter() - start)
    return {"init": init, "calls": len(rows) // frames, "rows": sum(rows) // frames,
            "seconds": statistics.median(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for init in ("noise", "inversion"):
        result = measure(init, args.size, args.frames, args.device)
        print(f"svdiff --svdiff-init {init:<9} {result['calls']} UNet calls, {result['rows']} UNet rows per frame, "
              f"{result['seconds']:.2f} s per frame ({args.size}x{args.size}, {args.device}, float32, median of "
              f"{args.frames})")


if __name__ == "__main__":
    main()
