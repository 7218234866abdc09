"""Helpers shared by CLI commands: consoles, JSON output, traceback policy."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console


def stderr_console(quiet: bool = False) -> Console:
    """Logs and progress go to stderr, so stdout stays clean for --json."""
    return Console(stderr=True, quiet=quiet)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def debug_enabled() -> bool:
    return os.environ.get("VEDIT_DEBUG") == "1"


def quiet_libraries() -> None:
    """The CLI owns the output: silence diffusers/transformers advice and their weight-loading progress bars
    (a user's own settings win). Called before the heavy imports of a command that loads models."""
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
