"""Peak memory of the eve backend with window 16 on a 32-frame and a 320-frame clip: flat, not growing with length.

Each clip runs in a fresh Python process through the real runner (vedit_cli.pipeline.runner.run_clip) with
synthetic frames made on the fly and a sink that drops them, so only the editor and the runner hold memory; the
process reports its peak RSS (resource.getrusage). The eve stack is the tiny random one from tests/tiny.py by
default (real checkpoints cannot be downloaded here); pass --weights-dir to use real ones.

    .venv/bin/python scripts/eve_memory.py [--lengths 32 320] [--size 64] [--steps 2] [--weights-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def synthetic_frames(count: int, size: int):
    """A moving gradient, one uint8 frame at a time: the source never holds the clip."""
    import numpy as np

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for index in range(count):
        red = np.roll(ramp, index)[None, :].repeat(size, 0)
        yield np.stack([red, red.T, np.full_like(red, 128)], axis=-1).astype(np.uint8)


class DroppingSink:
    def __init__(self):
        self.count = 0

    def write(self, frame_hwc) -> None:
        self.count += 1


def child(args: argparse.Namespace) -> None:
    """In the fresh process: one clip through run_clip, then JSON with the peak RSS."""
    import torch

    from vedit_cli.backends.eve.editor import EveEditor
    from vedit_cli.config import EditConfig, ModelConfig
    from vedit_cli.pipeline.runner import run_clip

    torch.set_num_threads(1)
    model = ModelConfig(backend="eve", weights_dir=Path(args.weights_dir), device="cpu", dtype="float32",
                        steps=args.steps, guidance_scale=args.guidance_scale, window=16, overlap=4)
    from vedit_cli.settings import resolve_run

    editor = EveEditor.from_run(resolve_run(model))
    config = EditConfig(model=replace(model, size=args.size), output_size="processing")
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    sink = DroppingSink()
    run_clip(synthetic_frames(args.child, args.size), args.child, editor, "make it winter", sink, None, config)
    print(json.dumps({"frames": args.child, "written": sink.count, "seconds": time.perf_counter() - started,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "after_load_mib": baseline_kib / 1024, "chunk": editor.window_size}))


def run_child(frames: int, args: argparse.Namespace, weights_dir: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(frames), "--weights-dir", str(weights_dir),
               "--size", str(args.size), "--steps", str(args.steps), "--guidance-scale", str(args.guidance_scale)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 320])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args)
    with tempfile.TemporaryDirectory() as scratch:
        weights_dir = Path(args.weights_dir) if args.weights_dir else _tiny_weights(Path(scratch))
        results = [run_child(frames, args, weights_dir) for frames in args.lengths]
    print(f"eve peak RSS, window 16 / overlap 4, chunks of {results[0]['chunk']} frames, {args.size}x{args.size}, "
          f"{args.steps} steps ({'tiny random stack' if not args.weights_dir else args.weights_dir})")
    for result in results:
        raw_mib = result["frames"] * 3 * args.size * args.size * 4 / 2**20
        print(f"  {result['frames']:>5} frames: peak {result['peak_mib']:8.1f} MiB (after loading "
              f"{result['after_load_mib']:.1f}), {result['written']} written, {result['seconds']:.1f} s; "
              f"the whole clip as float frames would be {raw_mib:.1f} MiB")
    print(f"  peak ratio {results[-1]['peak_mib'] / results[0]['peak_mib']:.3f} "
          f"({results[-1]['frames']} vs {results[0]['frames']} frames)")


def _tiny_weights(root: Path) -> Path:
    from tests import tiny

    return tiny.save_eve_weights(root / "weights")


if __name__ == "__main__":
    main()
