"""Turn `vedit edit` arguments into clip jobs: single files, folders (recursive), or a CSV/JSONL manifest.

Default output names never collide with inputs: `<stem>.vedit.mp4` beside a single file, and a sibling folder
`<folder>.vedit/` mirroring the input tree for folders. Folder scans skip vedit's own outputs and temporary files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vedit_cli.errors import ConfigError
from vedit_cli.manifest import JSONL_SUFFIXES, read_manifest_rows

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .gif .mpg .mpeg .wmv .flv .ts .mts .m2ts .3gp .ogv".split()
)
OUTPUT_TAG = ".vedit"
DEFAULT_EXTENSION = ".mp4"


@dataclass(frozen=True)
class ClipJob:
    """One clip to edit: where it comes from, the instruction, and where the result goes."""

    input_path: Path
    prompt: str
    output_path: Path


def split_arguments(arguments: list[str], prompt_option: str | None, manifest: Path | None) -> tuple[list[str], str | None]:
    """`vedit edit IN... PROMPT`: the last argument is the prompt unless --prompt or --manifest gives it."""
    if manifest is not None or prompt_option is not None:
        return arguments, prompt_option
    if len(arguments) < 2:
        raise ConfigError(
            "give at least one input and a prompt: vedit edit INPUT... PROMPT "
            "(use \"\" as the prompt with --backend copy, or --manifest FILE for per-clip prompts)"
        )
    return arguments[:-1], arguments[-1]


def plan_jobs(
    inputs: list[str], prompt: str | None, output: Path | None, output_dir: Path | None, manifest: Path | None
) -> list[ClipJob]:
    """All jobs of one invocation, in a stable order."""
    if output is not None and output_dir is not None:
        raise ConfigError("use either -o/--output (one clip) or --output-dir (many clips), not both")
    jobs: list[ClipJob] = []
    if manifest is not None:
        jobs += _jobs_from_manifest(manifest, prompt, output_dir)
    for raw in inputs:
        jobs += _jobs_from_path(Path(raw), prompt or "", output_dir)
    if not jobs:
        raise ConfigError("no input videos found: give video files, folders holding videos, or --manifest FILE")
    if output is not None:
        if len(jobs) != 1:
            raise ConfigError(f"-o/--output names one file but there are {len(jobs)} clips; use --output-dir instead")
        jobs = [ClipJob(jobs[0].input_path, jobs[0].prompt, output)]
    _check_no_shared_outputs(jobs)
    return jobs


def _jobs_from_path(path: Path, prompt: str, output_dir: Path | None) -> list[ClipJob]:
    if path.is_dir():
        root = path
        target_root = output_dir if output_dir is not None else path.with_name(path.name + OUTPUT_TAG)
        return [
            ClipJob(file, prompt, _default_name(target_root / file.relative_to(root)))
            for file in find_videos(root)
        ]
    # A missing or unreadable file still becomes a job: it is reported in its own line, and the batch goes on.
    target = (output_dir / path.name) if output_dir is not None else path
    return [ClipJob(path, prompt, _default_name(target))]


def find_videos(root: Path) -> list[Path]:
    """Video files under root, recursively, skipping hidden files, vedit outputs and their temporaries."""
    found = []
    for file in sorted(root.rglob("*")):
        relative_parts = file.relative_to(root).parts
        if any(part.startswith(".") for part in relative_parts) or not file.is_file():
            continue
        if file.suffix.lower() in VIDEO_EXTENSIONS and not is_vedit_output(file):
            found.append(file)
    return found


def is_vedit_output(path: Path) -> bool:
    return Path(path.stem).suffix == OUTPUT_TAG or any(part.endswith(OUTPUT_TAG) for part in path.parent.parts)


def _default_name(target: Path) -> Path:
    """`clip.webm` -> `clip.vedit.mp4`: tagged, so it can never be one of the inputs."""
    return target.with_name(target.stem + OUTPUT_TAG + DEFAULT_EXTENSION)


def _jobs_from_manifest(manifest: Path, default_prompt: str | None, output_dir: Path | None) -> list[ClipJob]:
    rows = read_manifest(manifest)
    base = manifest.parent
    jobs = []
    for number, row in enumerate(rows, start=1):
        if not row.get("input"):
            raise ConfigError(f"{manifest}: row {number} has no 'input' column value")
        prompt = row.get("prompt")
        if prompt is None:
            prompt = default_prompt or ""
        input_path = _resolve(base, row["input"])
        if row.get("output"):
            output_path = _resolve(base, row["output"])
        else:
            target = (output_dir / input_path.name) if output_dir is not None else input_path
            output_path = _default_name(target)
        jobs.append(ClipJob(input_path, prompt, output_path))
    return jobs


def read_manifest(manifest: Path) -> list[dict[str, str]]:
    """Rows of a CSV (header: input,prompt[,output]) or JSONL ({"input":..., "prompt":..., "output":...}) file."""
    if not manifest.is_file():
        raise ConfigError(f"manifest {manifest} does not exist")
    rows = read_manifest_rows(manifest, ConfigError)
    if rows and "input" not in rows[0][1] and manifest.suffix.lower() not in JSONL_SUFFIXES:
        raise ConfigError(f"{manifest}: a CSV manifest needs a header row with 'input' and 'prompt' columns")
    return [{key: str(value) for key, value in row.items() if key and value is not None} for _, row in rows]


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _check_no_shared_outputs(jobs: list[ClipJob]) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.output_path.resolve()
        if key in seen and seen[key] != job.input_path:
            raise ConfigError(
                f"{seen[key]} and {job.input_path} would both be written to {job.output_path}; "
                "name each output in a manifest (input,prompt,output) or rename one input"
            )
        seen[key] = job.input_path
