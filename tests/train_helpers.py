"""Tiny training data and runs for the trainer tests: PNG triplets with a CSV, a tiny SD base, weight comparisons."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ("--resolution", "32", "--random-resize", "1", "--no-random-flip", "--cpu", "--learning-rate", "1e-3")


def write_triplets(folder: Path, count: int = 8, size: tuple[int, int] = (40, 36), bad: dict[int, str] | None = None) -> Path:
    """`count` (random image, "invert the colours", inverted image) PNG triplets and triplets.csv; rows in `bad`
    point at a missing file ("missing") or a file that is not a PNG ("corrupt")."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        image = np.random.default_rng(index).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{index:03d}_source.png")
        Image.fromarray(255 - image).save(folder / f"{index:03d}_edited.png")
        rows.append({"source": f"{index:03d}_source.png", "instruction": "invert the colours",
                     "edited": f"{index:03d}_edited.png"})
    for index, kind in (bad or {}).items():
        if kind == "missing":
            rows[index]["source"] = f"{index:03d}_absent.png"
        else:
            (folder / f"{index:03d}_edited.png").write_bytes(b"not a png")
    table = folder / "triplets.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["source", "instruction", "edited"])
        writer.writeheader()
        writer.writerows(rows)
    return table


def unet_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "unet" / "diffusion_pytorch_model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def relative_difference(a: dict, b: dict, start: dict) -> float:
    """||a - b|| / ||b - start|| over the tensors `start` has with the same shape: how far apart two runs end,
    as a fraction of how far training moved the weights."""
    import torch

    keys = [key for key in a if key in start and start[key].shape == a[key].shape]
    apart = torch.cat([(a[key] - b[key]).flatten() for key in keys]).norm()
    moved = torch.cat([(b[key] - start[key]).flatten() for key in keys]).norm()
    return float(apart / moved)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "VEDIT_DEBUG"}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def vedit_command(*args, processes: int = 1) -> list[str]:
    """`python -m vedit_cli ARGS`, under torchrun (gloo on CPU) when processes > 1."""
    if processes == 1:
        return [sys.executable, "-m", "vedit_cli", *map(str, args)]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}",
            f"--master-port={free_port()}", "-m", "vedit_cli", *map(str, args)]


def run_train(*args, processes: int = 1, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(vedit_command("train", "pix2pix", *args, processes=processes), capture_output=True,
                          text=True, env=train_env(), cwd=REPO_ROOT, timeout=timeout)
