"""Checkpoint registry: every model a backend or metric needs, by name, and where it lives on disk.

Layout: each entry is a folder `<weights_dir>/<name>/` holding the repository files as the hub has them
(diffusers format for pipelines). Resolution order of `weights_dir`, shared by every command:
  1. `--weights-dir DIR`   2. `$VEDIT_WEIGHTS`   3. `~/.cache/vedit/weights`
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vedit_cli.errors import WeightsMissingError

DEFAULT_WEIGHTS_DIR = Path("~/.cache/vedit/weights")


@dataclass(frozen=True)
class WeightsEntry:
    """One checkpoint: which hub repository, which files, and the files that prove it is complete."""

    name: str
    repo_id: str
    revision: str
    allow_patterns: tuple[str, ...]
    required_files: tuple[str, ...]  # relative paths that must exist for the folder to be usable
    size_mb: int
    licence: str
    used_by: tuple[str, ...]


# Filled in and pinned by the download issue; the names and required files are what backends rely on.
REGISTRY: dict[str, WeightsEntry] = {}


def register(entry: WeightsEntry) -> WeightsEntry:
    REGISTRY[entry.name] = entry
    return entry


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
    required = entry.required_files if entry else ()
    if not folder.is_dir():
        return [str(folder)]
    return [rel for rel in required if not (folder / rel).exists()]


def require(name: str, weights_dir: Path) -> Path:
    """Return the folder of entry `name`, or raise one line saying exactly what to run."""
    missing = missing_files(name, weights_dir)
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise WeightsMissingError(
            f"weights '{name}' are missing or incomplete in {weights_dir} (missing: {shown}); "
            f"run: vedit download {name} --weights-dir {weights_dir}"
        )
    return entry_path(name, weights_dir)
