"""Checkpoint folders of a training run: `<work_dir>/checkpoints/checkpoint-0000500`, written under a `.partial`
name and renamed when complete (a kill mid-write leaves no half checkpoint), the last K kept, and the JSONL log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # step, skipped samples, LR schedule, EMA step: JSON, no pickle
EMA_FILE = "ema.safetensors"


def checkpoint_dir(work_dir: Path, step: int) -> Path:
    return Path(work_dir) / "checkpoints" / f"{PREFIX}{step:07d}"


def partial_dir(work_dir: Path, step: int) -> Path:
    final = checkpoint_dir(work_dir, step)
    return final.with_name(final.name + ".partial")


def list_checkpoints(work_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(work_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(work_dir: Path) -> Path | None:
    found = list_checkpoints(work_dir)
    return found[-1] if found else None


def remove_partials(work_dir: Path) -> None:
    folder = Path(work_dir) / "checkpoints"
    for stale in folder.glob(f"{PREFIX}*.partial") if folder.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)


def finish_checkpoint(work_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write the trainer state, rename the partial folder to its final name, keep only the newest `keep`."""
    partial, final = partial_dir(work_dir, step), checkpoint_dir(work_dir, step)
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    for old in list_checkpoints(work_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_ema(ema, folder: Path) -> None:
    """The EMA's shadow weights as safetensors (accelerate would pickle them; checkpoints load no pickled weights)."""
    from safetensors.torch import save_file

    tensors = {f"shadow.{index}": p.detach().contiguous().cpu() for index, p in enumerate(ema.shadow_params)}
    save_file(tensors, str(Path(folder) / EMA_FILE))


def load_ema(ema, folder: Path, optimization_step: int) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / EMA_FILE))
    for index, shadow in enumerate(ema.shadow_params):
        shadow.data.copy_(tensors[f"shadow.{index}"])
    ema.optimization_step = optimization_step


def read_state(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


class JsonlLog:
    """One JSON object a line; on resume, lines logged after the checkpoint's step are dropped (they are redone)."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None = None):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until_step is None:
            self.path.write_text("")
        elif self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= keep_until_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
