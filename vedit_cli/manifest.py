"""Rows of a CSV (header line) or JSONL (one object a line) manifest, with their line numbers for error messages.
Shared by `vedit edit --manifest` and `vedit evaluate --manifest`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vedit_cli.errors import VeditError

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_manifest_rows(path: Path, error: type[VeditError]) -> list[tuple[int, dict]]:
    """[(line number, row)] of a .jsonl/.ndjson or .csv file; malformed lines raise `error` naming the line."""
    if Path(path).suffix.lower() in JSONL_SUFFIXES:
        return _jsonl_rows(Path(path), error)
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [(number, row) for number, row in enumerate(csv.DictReader(handle), start=2)]


def _jsonl_rows(path: Path, error: type[VeditError]) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as decode_error:
            raise error(f"{path}: line {number} is not valid JSON ({decode_error.msg}); write one object per line") from None
        if not isinstance(row, dict):
            raise error(f"{path}: line {number} must be a JSON object")
        rows.append((number, row))
    return rows
