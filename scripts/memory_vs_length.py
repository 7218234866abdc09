"""Peak memory of editing a short clip and a long clip with the same model: streaming means no growth with length.

Usage:
  .venv/bin/python scripts/memory_vs_length.py                       # copy backend
  .venv/bin/python scripts/memory_vs_length.py --backend movie --weights-dir DIR [--size 128 --steps 1]
  .venv/bin/python scripts/memory_vs_length.py --backend movie --tiny  # builds tiny weights (tests/tiny.py) first
  add --long-frames N to cut the long clip as well when a model is too slow for all 899 frames

The long clip is ../shared/videos/chrome.webm (899 frames, 480x270, Vorbis audio); the short clip is its first
30 frames (same size and content, cut with ffmpeg), so only the length differs. Each edit runs in a fresh Python
process, which reports its own peak RSS (resource.getrusage). Target: the long clip within 15% of the short one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LONG_CLIP = REPO_ROOT.parent / "shared" / "videos" / "chrome.webm"


def child(args: argparse.Namespace) -> None:
    """Runs in the fresh subprocess: one edit_clip, then prints JSON with peak RSS."""
    import torch

    from vedit_cli.editor import create_editor
    from vedit_cli.config import EditConfig, ModelConfig
    from vedit_cli.editing.clip import edit_clip

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    model = ModelConfig(backend=args.backend, size=args.size, steps=args.steps, device="cpu",
                        weights_dir=Path(args.weights_dir) if args.weights_dir else None)
    config = EditConfig(model=model, overwrite=True).validate()
    from vedit_cli.settings import resolve_run

    editor = create_editor(resolve_run(config.model))
    started = time.perf_counter()
    result = edit_clip(args.child[0], args.child[1], editor, "make it look like a watercolour painting", config)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"frames": result.frames_written, "seconds": time.perf_counter() - started,
                      "peak_rss_mib": peak_kib / 1024}))


def cut_clip(folder: Path, frames: int) -> Path:
    """The first `frames` frames of the long clip, re-encoded at high quality to keep size and content."""
    from vedit_cli.io.ffmpeg import run_ffmpeg, stderr_tail

    path = folder / f"chrome_first{frames}.mkv"
    result = run_ffmpeg(["-y", "-v", "error", "-i", str(LONG_CLIP), "-frames:v", str(frames),
                         "-c:v", "libx264", "-crf", "10", "-c:a", "copy", str(path)])
    if result.returncode != 0:
        sys.exit(f"ffmpeg could not cut the short clip: {stderr_tail(result.stderr)}")
    return path


def measure(clip: Path, output: Path, args: argparse.Namespace, weights_dir: str | None) -> dict:
    """Edit `clip` in a fresh interpreter and return what it reported."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(clip), str(output),
               "--backend", args.backend, "--size", str(args.size)]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    if weights_dir:
        command += ["--weights-dir", weights_dir]
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        sys.exit(f"editing {clip.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tiny_weights(folder: Path) -> str:
    """Tiny random instruct-pix2pix + taesd folders, the same ones the tests use."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests import tiny

    tiny.save_instruct_pix2pix(folder / "instruct-pix2pix")
    tiny.save_taesd(folder / "taesd")
    return str(folder)


def _print_report(label: str, report: dict) -> None:
    print(f"  {label:5s} {report['frames']:4d} frames: {report['peak_rss_mib']:8.1f} MiB "
          f"({report['frames'] / report['seconds']:.1f} frames/s)", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="copy")
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--tiny", action="store_true", help="build tiny random weights into a temp dir and use them")
    parser.add_argument("--size", type=int, default=128, help="processing short side (model backends)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads in each edit (1 avoids thread thrashing on a busy CPU)")
    parser.add_argument("--short-frames", type=int, default=30)
    parser.add_argument("--long-frames", type=int, default=None, help="cut the long clip too (default: all 899)")
    parser.add_argument("--child", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    if not LONG_CLIP.is_file():
        sys.exit(f"long clip not found: {LONG_CLIP}")
    with tempfile.TemporaryDirectory(prefix="vedit_mem_") as name:
        folder = Path(name)
        weights_dir = tiny_weights(folder / "weights") if args.tiny else args.weights_dir
        short_clip = cut_clip(folder, args.short_frames)
        long_clip = cut_clip(folder, args.long_frames) if args.long_frames else LONG_CLIP
        print(f"backend {args.backend}, size {args.size}: peak RSS per fresh process", flush=True)
        short = measure(short_clip, folder / "short.mp4", args, weights_dir)
        _print_report("short", short)
        long = measure(long_clip, folder / "long.mp4", args, weights_dir)
        _print_report("long", long)
    growth = long["peak_rss_mib"] / short["peak_rss_mib"] - 1
    print(f"long/short peak RSS: {1 + growth:.3f} ({growth:+.1%}; target within 15%)")


if __name__ == "__main__":
    main()
