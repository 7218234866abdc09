"""Checkpoint registry: every model a backend or metric needs, by name, and where it lives on disk.

Layout: each entry is a folder `<weights_dir>/<name>/` holding the repository files as the hub has them
(diffusers format for pipelines); an entry built from a second repository keeps that one's files in a subfolder.
Resolution order of `weights_dir`, shared by every command:
  1. `--weights-dir DIR`   2. `$VEDIT_WEIGHTS`   3. `~/.cache/vedit/weights`
The entries themselves (repo ids, pinned revisions, file patterns, sizes, licences) live in `catalog.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vedit_cli.errors import WeightsMissingError
from vedit_cli.weights.catalog import ENTRIES
from vedit_cli.weights.entry import HubSource, WeightsEntry  # noqa: F401  (re-exported)

DEFAULT_WEIGHTS_DIR = Path("~/.cache/vedit/weights")
VERIFIED_RECORD_NAME = ".vedit-verified.json"


# Every entry by name (catalog.py holds them as data); names and required files are what backends rely on.
REGISTRY: dict[str, WeightsEntry] = {entry.name: entry for entry in ENTRIES}


def register(entry: WeightsEntry) -> WeightsEntry:
    REGISTRY[entry.name] = entry
    return entry


def get_entry(name: str) -> WeightsEntry:
    """The registered entry `name`, or one line listing the names that exist."""
    if name not in REGISTRY:
        raise WeightsMissingError(f"unknown weights '{name}'; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def entries_for_backend(backend: str) -> list[str]:
    """Names of the hub entries a backend (or `metrics`) needs, in download order."""
    names = [entry.name for entry in REGISTRY.values() if backend in entry.used_by and not entry.local_only]
    if not names:
        known = sorted({user for entry in REGISTRY.values() for user in entry.used_by})
        raise WeightsMissingError(f"no weights registered for '{backend}'; known: {', '.join(known)}")
    return names


def entries_for_model(model) -> list[str]:
    """The entries one run needs (`model`: a ModelConfig): its backend's, less the LCM-LoRA when svdiff runs the
    base without it (--lora-scale 0)."""
    names = entries_for_backend(model.backend)
    if model.backend == "svdiff" and model.lora_scale == 0:
        names = [name for name in names if name != "lcm-lora-sdv1-5"]
    return names


def resolve_weights_dir(cli_value: Path | None = None) -> Path:
    """The one resolution order: --weights-dir, then $VEDIT_WEIGHTS, then ~/.cache/vedit/weights."""
    if cli_value is not None:
        return Path(cli_value).expanduser()
    env = os.environ.get("VEDIT_WEIGHTS")
    if env:
        return Path(env).expanduser()
    return DEFAULT_WEIGHTS_DIR.expanduser()


def entry_path(name: str, weights_dir: Path) -> Path:
    return Path(weights_dir) / name


def missing_files(name: str, weights_dir: Path) -> list[str]:
    """Required files of entry `name` that are absent under weights_dir."""
    folder = entry_path(name, weights_dir)
    entry = REGISTRY.get(name)
    required = entry.all_required_files() if entry else ()
    if not folder.is_dir():
        return [str(folder)]
    return [rel for rel in required if not (folder / rel).exists()]


def download_command(names: list[str], weights_dir: Path) -> str:
    """The exact command that fetches `names` into weights_dir."""
    return f"vedit download {' '.join(names)} --weights-dir {weights_dir}"


def require(name: str, weights_dir: Path) -> Path:
    """Return the folder of entry `name`, or raise one line saying exactly what to run."""
    missing = missing_files(name, weights_dir)
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        entry = REGISTRY.get(name)
        action = entry.local_hint if entry and entry.local_only else f"run: {download_command([name], weights_dir)}"
        raise WeightsMissingError(
            f"weights '{name}' are missing or incomplete in {weights_dir} (missing: {shown}); {action}"
        )
    from vedit_cli.weights.integrity import verify_against_record

    verify_against_record(entry_path(name, weights_dir))  # a downloaded file that changed since it was verified is refused
    return entry_path(name, weights_dir)
