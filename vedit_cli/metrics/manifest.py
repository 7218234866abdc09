"""Many clips to evaluate: a CSV or JSONL manifest (one row per edited clip), or a TGVE submission folder."""

from __future__ import annotations

from pathlib import Path

from vedit_cli.errors import EvaluationError
from vedit_cli.manifest import read_manifest_rows
from vedit_cli.metrics.evaluation import ClipToEvaluate

COLUMNS = ("edited", "source", "prompt", "caption", "source_caption", "name", "reference")
ALIASES = {"output": "edited", "input": "source", "edited_caption": "caption", "instruction": "prompt"}


def read_manifest(path: Path) -> list[ClipToEvaluate]:
    """Rows of a .csv (header line) or .jsonl (one object a line) manifest; relative paths are taken from the
    manifest's folder. Columns: edited (required), source, prompt, caption, source_caption, name, reference."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: manifest not found; give a .csv or .jsonl file")
    rows = read_manifest_rows(path, EvaluationError)
    clips = [_row_to_clip(row, path, number) for number, row in rows]
    if not clips:
        raise EvaluationError(f"{path}: manifest holds no rows")
    return clips


def _row_to_clip(row: dict, manifest: Path, number: int) -> ClipToEvaluate:
    fields = {ALIASES.get(key.strip(), key.strip()): (str(value).strip() if value is not None else "")
              for key, value in row.items() if key}
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise EvaluationError(f"{manifest}:{number}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    if not fields.get("edited"):
        raise EvaluationError(f"{manifest}:{number}: the 'edited' column is empty; every row needs the edited clip")
    resolve = lambda value: (manifest.parent / value) if value else None  # noqa: E731  (absolute paths stay absolute)
    text = lambda key: fields.get(key) or None  # noqa: E731
    return ClipToEvaluate(
        edited=resolve(fields["edited"]), source=resolve(fields.get("source", "")), prompt=text("prompt"),
        caption=text("caption"), source_caption=text("source_caption"), name=text("name"),
        reference=resolve(fields.get("reference", "")),
    )
