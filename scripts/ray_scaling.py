"""Clips/s of `vedit edit --ray` with 1 and 2 workers on this machine, in one run: copy backend and a tiny float32
movie model, with the threads each worker runs and the driver's overhead per clip.

Usage: .venv/bin/python scripts/ray_scaling.py [--clips 8] [--seconds 2] [--workers 1 2]

One local Ray instance (all CPUs of this machine) serves every row. For each backend and worker count, fresh
workers start (load the editor), then the clips run; the figures start once every worker is ready, so model
loading is not counted:
  clips/s          clips / (time from all workers ready to the last clip finished)
  frames/s         frames of all clips over the same time
  threads/worker   torch threads each worker pinned (its CPU share: CPUs / workers)
  overhead/clip    per clip, the driver's round trip (dispatch to result in hand) minus the seconds the worker
                   spent on the clip (probe to commit): the call, result transfer and the driver's polling
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Timing:
    """Observer: when all workers were ready, when the last clip finished."""

    def __init__(self, workers: int) -> None:
        self.workers, self.ready, self.all_ready, self.last, self.plan = workers, 0, None, None, None
        self.overhead = 0.0

    def batch_started(self, total_clips, plan, description) -> None:
        self.plan = plan

    def worker_started(self, info) -> None:
        self.ready += 1
        self.threads = info.hardware.get("torch_threads")
        if self.ready == self.workers:
            self.all_ready = time.perf_counter()

    def notice(self, line: str) -> None:
        print("  notice:", line, file=sys.stderr)

    def progress(self, snapshot) -> None:
        self.overhead = snapshot.driver_overhead

    def clip_finished(self, outcome) -> None:
        self.last = time.perf_counter()


def make_clips(folder: Path, count: int, seconds: float, size: str) -> Path:
    from tests.io_media import make_clip

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        make_clip(folder / f"clip{index:02d}.mp4", seconds=seconds, size=size)
    return folder


def measure(name: str, config, clips: Path, out: Path, workers: int) -> dict:
    from vedit_cli.editing.jobs import plan_jobs
    from vedit_cli.editing.ray_batch import RayOptions, driver_run, run_ray_batch

    jobs = plan_jobs([str(clips)], "make it red", None, out, None)
    timing = Timing(workers)
    outcomes = run_ray_batch(jobs, config, driver_run(config.model), RayOptions(workers=workers), timing)
    failed = [o.error for o in outcomes if o.status != "ok"]
    if failed:
        raise SystemExit(f"{name}: {failed[0]}")
    wall = timing.last - timing.all_ready
    frames = sum(o.frames for o in outcomes)
    return {"backend": name, "workers": workers, "threads": timing.threads, "clips": len(outcomes),
            "clips_per_s": len(outcomes) / wall, "frames_per_s": frames / wall,
            "overhead_ms": 1000 * timing.overhead,
            "pids": len({o.worker["pid"] for o in outcomes})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each copy clip (model clips: half)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import ray

    from tests import tiny
    from vedit_cli.config import EditConfig, EncodeConfig, ModelConfig

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        copy_clips = make_clips(root / "copy", args.clips, args.seconds, "320x240")
        model_clips = make_clips(root / "model", args.clips, args.seconds / 2, "96x64")
        weights = root / "weights"
        tiny.save_instruct_pix2pix(weights / "instruct-pix2pix")
        tiny.save_taesd(weights / "taesd")
        encode = EncodeConfig(preset="ultrafast")
        backends = {
            "copy (320x240)": (EditConfig(model=ModelConfig(backend="copy"), encode=encode, overwrite=True), copy_clips),
            "tiny movie (64 px, 1 step)": (EditConfig(model=ModelConfig(
                backend="movie", weights_dir=weights, device="cpu", dtype="float32", steps=1, vae="tiny", size=64),
                encode=encode, overwrite=True), model_clips),
        }
        ray.init(num_cpus=os.cpu_count(), object_store_memory=80 * 1024 * 1024, include_dashboard=False,
                 log_to_driver=False)
        try:
            rows = [measure(name, config.validate(), clips, root / "out" / f"{index}-{workers}", workers)
                    for index, (name, (config, clips)) in enumerate(backends.items()) for workers in args.workers]
        finally:
            ray.shutdown()
    print(f"machine: {os.cpu_count()} CPUs; {args.clips} clips per row ({args.seconds:g} s copy, "
          f"{args.seconds / 2:g} s model, 29.97 fps)")
    print("| backend | workers | torch threads/worker | clips/s | frames/s | speed-up | driver overhead/clip |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = {}
    for row in rows:
        base.setdefault(row["backend"], row["clips_per_s"])
        print(f"| {row['backend']} | {row['workers']} | {row['threads']} | {row['clips_per_s']:.2f} | "
              f"{row['frames_per_s']:.1f} | {row['clips_per_s'] / base[row['backend']]:.2f}x | "
              f"{row['overhead_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
