"""Flicker of the movie teacher with and without anchor-frame attention, on one real static-camera clip.

Runs the tiny random InstructPix2Pix (tests/tiny.py, built on the spot: no download) frame by frame, as the runner
does, and prints per variant: the mean absolute difference between consecutive output frames (0-255), and the
flow warping error of vedit_cli.metrics.temporal (Lai et al. 2018; flow from the source frames). A random tiny
model says whether the mechanism reduces frame-to-frame change, not how a trained model looks.

    .venv/bin/python scripts/anchor_flicker.py [--clip ../shared/videos/tgve/videos/cat-in-the-sun.mp4]
        [--frames 8] [--size 64] [--steps 10] [--keyframe-interval 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vedit_cli.config import ModelConfig  # noqa: E402
from vedit_cli.io.decode import read_frames  # noqa: E402
from vedit_cli.io.probe import probe  # noqa: E402
from vedit_cli.metrics.temporal import flicker, warp_error  # noqa: E402
from vedit_cli.pipeline.frames import resize_uint8, to_tensor, to_uint8  # noqa: E402

DEFAULT_CLIP = ROOT.parent / "shared" / "videos" / "tgve" / "videos" / "cat-in-the-sun.mp4"


def source_frames(clip: Path, count: int, size: int) -> list[np.ndarray]:
    """The clip's first `count` frames, resized to size x size (uint8 RGB)."""
    return [resize_uint8(frame, (size, size)) for frame in islice(read_frames(probe(clip)), count)]


def edit_frames(weights_dir: Path, frames: list[np.ndarray], anchor: bool, args) -> list[np.ndarray]:
    from vedit_cli.backends.movie.editor import MovieEditor

    config = ModelConfig(weights_dir=weights_dir, device="cpu", dtype="float32", steps=args.steps, anchor=anchor,
                         keyframe_interval=args.keyframe_interval, movie_mode="teacher").validate()
    from vedit_cli.settings import resolve_run

    editor = MovieEditor.from_run(resolve_run(config))
    editor.prepare("make it a watercolor painting")
    return [to_uint8(editor.edit(to_tensor(frame)[None])[0]) for frame in frames]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--keyframe-interval", type=int, default=0)
    args = parser.parse_args()
    from tests import tiny

    torch.set_grad_enabled(False)
    frames = source_frames(args.clip, args.frames, args.size)
    print(f"{args.clip.name}: {len(frames)} frames at {args.size}x{args.size}, tiny random InstructPix2Pix, "
          f"{args.steps} steps x 3 passes")
    print(f"  source                 flicker {flicker(frames):7.3f}")
    with tempfile.TemporaryDirectory() as folder:
        weights_dir = Path(folder)
        tiny.save_instruct_pix2pix(weights_dir / "instruct-pix2pix")
        for anchor in (False, True):
            start = time.perf_counter()
            edited = edit_frames(weights_dir, frames, anchor, args)
            label = "with anchor attention" if anchor else "without anchor       "
            print(f"  {label}  flicker {flicker(edited):7.3f}   warp error {warp_error(frames, edited):.5f}   "
                  f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
