"""Helpers shared by CLI commands: option definitions (one place for --device, --dtype, --weights-dir, --json,
--quiet), help panels, the options a user gave, consoles, JSON output, traceback policy."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console

from vedit_cli.config import DEVICES, DTYPES

# Help panels of `vedit edit --help` (other commands reuse the names where they have such options).
PANEL_IO = "Inputs and outputs"
PANEL_MODEL = "Model"
PANEL_MOVIE = "movie backend"
PANEL_EVE = "eve backend"
PANEL_SVDIFF = "svdiff backend"
PANEL_ENCODING = "Encoding"
PANEL_WEIGHTS = "Weights"

Device = Annotated[Literal[DEVICES], typer.Option(
    help="Where models run: auto (cuda, else mps, else cpu), cpu, cuda or mps.", rich_help_panel=PANEL_MODEL)]
Dtype = Annotated[Literal[DTYPES], typer.Option(
    help="auto: float16 on CUDA and MPS; on CPU bfloat16 only with native bfloat16 "
         "(AVX512-BF16/AMX), else float32.", rich_help_panel=PANEL_MODEL)]
WeightsDir = Annotated[Optional[Path], typer.Option(
    help="Checkpoint folder (default: $VEDIT_WEIGHTS, else ~/.cache/vedit/weights).", envvar="VEDIT_WEIGHTS",
    show_default=False, rich_help_panel=PANEL_WEIGHTS)]
AllowDownload = Annotated[bool, typer.Option(
    "--download/--no-download", help="Download missing weights (safetensors only, checked against the hub's sha256).",
    envvar="VEDIT_ALLOW_DOWNLOAD", rich_help_panel=PANEL_WEIGHTS)]
JsonOutput = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout (progress stays on stderr).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, only errors and the summary.")]


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of `values` for repeatable choice options (Typer takes Literal for single values only)."""
    return Enum(name, {value: value for value in values}, type=str)


def values(chosen) -> tuple[str, ...]:
    """The plain strings of a list of `choices` members (None: none given)."""
    return tuple(getattr(item, "value", item) for item in chosen or ())


def given_on_command_line(ctx: typer.Context) -> set[str]:
    """Parameter names the user typed (not defaults, not environment variables such as $VEDIT_WEIGHTS)."""
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}


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
