"""Integrity of checkpoint folders: hashes checked against the hub's records, a verified record per folder, safetensors only.

After a download every file is checked against what the hub recorded for it (sha256 of LFS files, git blob sha1 of
the others). The sha256 and size of every verified file go into `<entry>/.vedit-verified.json`; `verify_entry` checks
the folder against that record before a model is loaded and refuses any file that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vedit_cli.errors import WeightsIntegrityError
from vedit_cli.weights.registry import VERIFIED_RECORD_NAME, entry_path, get_entry

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class RemoteFile:
    """What the hub records about one file at one commit."""

    path: str
    size: int
    blob_id: str  # git sha1 of the blob (of the LFS pointer for LFS files)
    lfs_sha256: str | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1_of(path: Path) -> str:
    """The git object id of a file's content: sha1 of `blob <size>\\0<content>`."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_against_hub(folder: Path, remote: RemoteFile) -> str:
    """Return the local file's sha256 if it matches the hub's record; raise otherwise."""
    local = folder / remote.path
    if not local.is_file():
        raise WeightsIntegrityError(f"{local} was not downloaded; run the same `vedit download` again")
    if local.stat().st_size != remote.size:
        raise WeightsIntegrityError(
            f"{local} has {local.stat().st_size} bytes, the hub records {remote.size}: refused and deleted; "
            "run the same `vedit download` again"
        )
    sha256 = sha256_of(local)
    if remote.lfs_sha256 is not None:
        matches = sha256 == remote.lfs_sha256
    else:
        matches = git_blob_sha1_of(local) == remote.blob_id
    if not matches:
        expected = remote.lfs_sha256 or f"git blob {remote.blob_id}"
        raise WeightsIntegrityError(
            f"{local} does not match the hub's checksum (sha256 {sha256[:16]}..., expected {expected[:16]}...): "
            "refused and deleted; run the same `vedit download` again"
        )
    return sha256


def verified_file_record(folder: Path, relative: str, sha256: str) -> dict:
    """What the verified record keeps about one verified file (mtime lets later checks skip re-hashing)."""
    stat = (folder / relative).stat()
    return {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_verified_record(entry_folder: Path, sources: list[dict], files: dict[str, dict]) -> Path:
    """Write `.vedit-verified.json` atomically: sources (repo, revision, commit) and verified files."""
    path = Path(entry_folder) / VERIFIED_RECORD_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": 1, "sources": sources, "files": files}, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_verified_record(entry_folder: Path) -> dict | None:
    path = Path(entry_folder) / VERIFIED_RECORD_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WeightsIntegrityError(f"{path} is unreadable ({error}); delete it and run `vedit download` again")


def pickle_files(folder: Path) -> list[Path]:
    """Weight files in a pickle format (code can run on load) under folder, the hub's metadata cache excepted."""
    found = []
    for path in Path(folder).rglob("*"):
        if path.suffix in PICKLE_SUFFIXES and ".cache" not in path.relative_to(folder).parts:
            found.append(path)
    return sorted(found)


def check_safetensors_only(folder: Path) -> None:
    """Refuse a folder holding pickle checkpoints: every loader reads safetensors only."""
    unsafe = pickle_files(folder)
    if unsafe:
        raise WeightsIntegrityError(
            f"{unsafe[0]} is a pickle checkpoint (can run code when loaded); vedit loads safetensors only: "
            "delete it, or convert it to .safetensors"
        )


def verify_entry(name: str, weights_dir: Path, full: bool = False) -> str:
    """Check entry `name` against its verified record; return "verified" or "unverified" (none: placed by hand).

    Files whose size and mtime are unchanged since they were verified are not re-hashed unless `full`.
    """
    get_entry(name)  # an unknown name is a user error, reported like the others
    folder = entry_path(name, weights_dir)
    check_safetensors_only(folder)
    return verify_against_record(folder, full)


def verify_against_record(folder: Path, full: bool = False) -> str:
    """Check a folder's files against its verified record: "verified", or "unverified" when it has none."""
    record_of_folder = read_verified_record(folder)
    if record_of_folder is None:
        return "unverified"
    for relative, record in record_of_folder["files"].items():
        _check_recorded_file(Path(folder) / relative, record, full)
    return "verified"


def _check_recorded_file(path: Path, record: dict, full: bool) -> None:
    if not path.is_file():
        raise WeightsIntegrityError(f"{path} is missing (it was verified before); run `vedit download` again")
    stat = path.stat()
    if stat.st_size != record["size"]:
        raise WeightsIntegrityError(
            f"{path} changed size since it was verified ({stat.st_size} != {record['size']} bytes); refusing to load "
            "it: delete it and run `vedit download` again"
        )
    if full or stat.st_mtime_ns != record.get("mtime_ns"):
        if sha256_of(path) != record["sha256"]:
            raise WeightsIntegrityError(
                f"{path} does not match its verified sha256 {record['sha256'][:16]}...; refusing to load it: "
                "delete it and run `vedit download` again"
            )
