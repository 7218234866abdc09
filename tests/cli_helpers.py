"""Run the real `vedit` CLI in a subprocess, as a user or a shell script would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_vedit(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    inherited = {key: value for key, value in os.environ.items() if key != "VEDIT_DEBUG"}
    full_env = {**inherited, "HF_HUB_OFFLINE": "1", **(env or {})}
    completed = subprocess.run(
        [sys.executable, "-m", "vedit_cli", *map(str, args)], capture_output=True, text=True, env=full_env,
        cwd=REPO_ROOT, timeout=timeout,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)
