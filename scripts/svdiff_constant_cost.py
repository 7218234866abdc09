"""Per-frame time and memory of the svdiff backend along a long synthetic stream (tiny model): do they stay flat?

SVDiff (sec. 4.2) keeps a fixed-size recurrent memory, so frame 1000 should cost what frame 10 costs. Prints the
median time of the 5 frames ending at frames 10, 100 and 1000, the process RSS (CPU) or the peak CUDA memory of
those frames, and the size of the recurrent memory state; the growth between frame 10 and frame 1000 should stay
within 10% (on a shared CPU, time noise from other processes can exceed that: rerun on a quiet machine).

    .venv/bin/python scripts/svdiff_constant_cost.py [--frames 1000] [--size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tests.tiny builds the tiny checkpoints offline

from tests import tiny  # noqa: E402
from vedit_cli.editor import create_editor  # noqa: E402
from vedit_cli.settings import resolve_run  # noqa: E402
from vedit_cli.config import ModelConfig  # noqa: E402

CHECKPOINTS = (10, 100, 1000)


def build_tiny_weights(root: Path) -> Path:
    tiny.save_sd15(root / "sd15")
    tiny.save_lcm_lora(root / "lcm-lora-sdv1-5")
    tiny.save_taesd(root / "taesd")
    tiny.save_svdiff_memory(root / "svdiff-memory")
    return root


def synthetic_frame(index: int, size: int) -> torch.Tensor:
    """A moving gradient: frame `index` of a smooth synthetic video, [1, 3, size, size] in [-1, 1]."""
    coords = torch.linspace(0, 6.28, size)
    phase = index * 0.1
    wave = torch.sin(coords[None, :] + phase) * torch.cos(coords[:, None] - phase)
    return torch.stack([wave, wave.roll(size // 3, 0), -wave]).unsqueeze(0)


def memory_in_use(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return psutil.Process().memory_info().rss


def run_stream(editor, frames: int, size: int, device: torch.device) -> dict[int, tuple[float, int]]:
    """Edit `frames` frames one at a time; at each checkpoint return (median time of its last 5 frames, memory)."""
    times: list[float] = []
    results = {}
    for index in range(1, frames + 1):
        frame = synthetic_frame(index, size)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        editor.edit(frame)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        if index in CHECKPOINTS:
            results[index] = (statistics.median(times[-5:]), memory_in_use(device))
            print_row(index, results)
    return results


def print_row(index: int, results: dict[int, tuple[float, int]]) -> None:
    """One table row as soon as its checkpoint is reached (a long stream on a busy CPU shows progress)."""
    seconds, memory = results[index]
    first_seconds, first_memory = results[min(results)]
    print(f"{index:>6} {seconds * 1000:>9.1f} {memory / 2**20:>14.1f} {seconds / first_seconds:>14.3f} "
          f"{memory / first_memory:>16.3f}", flush=True)


def state_bytes(editor) -> int:
    return sum(t.numel() * t.element_size() for t in editor.memory_state().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = ModelConfig(backend="svdiff", weights_dir=build_tiny_weights(Path(folder)), device=args.device,
                             guidance_scale=1.5, size=max(64, args.size))
        editor = create_editor(resolve_run(config))
        editor.prepare("a synthetic stream")
        device = editor.parts.device
        print(f"{editor.description}; {args.size}x{args.size} frames on {device}, torch threads {torch.get_num_threads()}",
              flush=True)
        label = "peak CUDA MiB" if device.type == "cuda" else "RSS MiB"
        print(f"{'frame':>6} {'ms/frame':>9} {label:>14} {'time vs first':>14} {'memory vs first':>16}", flush=True)
        run_stream(editor, args.frames, args.size, device)
        print(f"memory state after {args.frames} frames: {state_bytes(editor) / 1024:.1f} KiB "
              f"({len(editor.memory_state())} tensors)")


if __name__ == "__main__":
    main()
