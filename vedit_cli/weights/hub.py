"""Fetching registry entries from the Hugging Face hub with huggingface_hub, verified, and never by surprise.

Policy: nothing is downloaded unless the user asks (`vedit download`, or `vedit edit --download` /
`VEDIT_ALLOW_DOWNLOAD=1`); otherwise a missing entry fails at once with the exact `vedit download ...` command.
Offline (`HF_HUB_OFFLINE=1`) or an unreachable hub gives one line naming what is missing and where it looked,
within seconds: the first request is a single metadata call with a short connect timeout and no retries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vedit_cli.errors import DownloadError, WeightsIntegrityError, WeightsMissingError
from vedit_cli.weights.integrity import (
    RemoteFile,
    check_against_hub,
    check_safetensors_only,
    verified_file_record,
    read_verified_record,
    verify_entry,
    write_verified_record,
)
from vedit_cli.weights.registry import (
    HubSource,
    WeightsEntry,
    download_command,
    entry_path,
    get_entry,
    missing_files,
)

CONNECT_TIMEOUT_S = 4.0  # an unreachable hub must fail well inside 10 s
API_TIMEOUT_S = 5.0  # metadata calls; file bodies use HF_HUB_DOWNLOAD_TIMEOUT
ALLOW_DOWNLOAD_ENV = "VEDIT_ALLOW_DOWNLOAD"
ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total) of the entry being fetched


@dataclass(frozen=True)
class SourcePlan:
    """One repository resolved to a commit, with the hub's record of every file to fetch."""

    source: HubSource
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(remote.size for remote in self.files)


@dataclass(frozen=True)
class DownloadResult:
    name: str
    folder: Path
    status: str  # "downloaded" | "present"
    bytes_total: int
    commits: tuple[str, ...]


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def entry_status(name: str, weights_dir: Path) -> str:
    """absent | incomplete | verified | unverified (placed by hand, no verified record) | outdated (other pin) | corrupt."""
    folder = entry_path(name, weights_dir)
    if not folder.is_dir():
        return "absent"
    if missing_files(name, weights_dir):
        return "incomplete"
    try:
        status = verify_entry(name, weights_dir)
    except WeightsIntegrityError:
        return "corrupt"
    if status == "verified" and _pinned_sources(read_verified_record(folder)) != _registry_sources(get_entry(name)):
        return "outdated"
    return status


def _pinned_sources(record: dict | None) -> list[tuple[str, str]]:
    return [(source["repo_id"], source["revision"]) for source in (record or {}).get("sources", [])]


def _registry_sources(entry: WeightsEntry) -> list[tuple[str, str]]:
    return [(source.repo_id, source.revision) for source in entry.sources]


def plan_entry(name: str, weights_dir: Path) -> list[SourcePlan]:
    """Ask the hub (one metadata call per repository) which commit and files an entry resolves to."""
    entry = get_entry(name)
    _raise_if_offline(entry, entry_path(name, weights_dir))
    _use_short_timeouts()
    return [_plan_source(entry, source) for source in entry.sources]


def download_entry(
    name: str,
    weights_dir: Path,
    *,
    plans: list[SourcePlan] | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
    max_workers: int = 8,
) -> DownloadResult:
    """Fetch entry `name` into `<weights_dir>/<name>/`, verify every file against the hub, write the verified record."""
    entry = get_entry(name)
    folder = entry_path(name, weights_dir)
    if entry.local_only:
        return _local_only_result(entry, weights_dir)
    if not force and entry_status(name, weights_dir) == "verified":
        return DownloadResult(name, folder, "present", 0, ())
    _raise_if_offline(entry, folder)
    plans = plans if plans is not None else plan_entry(name, weights_dir)
    total = sum(plan.total_bytes for plan in plans)
    records: dict[str, dict] = {}
    done = 0
    for plan in plans:
        report = _offset_reporter(progress, done, total)
        records.update(_fetch_source(entry, plan, folder, report, max_workers))
        done += plan.total_bytes
    write_verified_record(folder, [_describe(plan) for plan in plans], records)
    if progress:
        progress(total, total)
    return DownloadResult(name, folder, "downloaded", total, tuple(plan.commit for plan in plans))


def ensure_entries(
    names: list[str], weights_dir: Path, allow_download: bool, progress: ProgressCallback | None = None,
) -> dict[str, Path]:
    """Folders of every entry in `names`, verified; downloads the missing ones only when allowed, else one line."""
    missing = [name for name in names if entry_status(name, weights_dir) in ("absent", "incomplete")]
    local_only = [name for name in missing if get_entry(name).local_only]
    if local_only:
        hint = get_entry(local_only[0]).local_hint
        raise WeightsMissingError(f"weights '{local_only[0]}' not found in {weights_dir}: {hint}")
    if missing and not allow_download:
        raise WeightsMissingError(
            f"weights {', '.join(missing)} missing in {weights_dir} (looked for {entry_path(missing[0], weights_dir)}); "
            f"run: {download_command(missing, weights_dir)}  (or pass --download / set {ALLOW_DOWNLOAD_ENV}=1)"
        )
    for name in missing:
        download_entry(name, weights_dir, progress=progress)
    for name in names:
        verify_entry(name, weights_dir)
    return {name: entry_path(name, weights_dir) for name in names}


# -- steps -------------------------------------------------------------------------------------------------------


def _raise_if_offline(entry: WeightsEntry, folder: Path) -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise DownloadError(
            f"the hub is offline (HF_HUB_OFFLINE=1): cannot fetch '{entry.name}' ({entry.repo_id}@{entry.revision}); "
            f"looked in {folder}; unset HF_HUB_OFFLINE, or copy the files there"
        )


def _use_short_timeouts() -> None:
    """huggingface_hub's shared client has no timeout: give it a short connect timeout so a dead hub fails fast."""
    import httpx2
    from huggingface_hub import get_session

    get_session().timeout = httpx2.Timeout(API_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)


def _plan_source(entry: WeightsEntry, source: HubSource) -> SourcePlan:
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    try:
        info = HfApi().model_info(source.repo_id, revision=source.revision, files_metadata=True, timeout=API_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - every hub failure becomes one line naming what is missing
        raise _hub_error(error, entry, source) from error
    siblings = {sibling.rfilename: sibling for sibling in info.siblings or []}
    wanted = list(filter_repo_objects(siblings, allow_patterns=list(source.allow_patterns)))
    absent = [rel for rel in source.required_files if rel not in wanted]
    if absent:
        raise DownloadError(
            f"{source.repo_id}@{source.revision} has no {', '.join(absent)}; vedit fetches safetensors weights only "
            "and will not substitute a pickle (.bin/.ckpt) copy"
        )
    files = tuple(_remote_file(siblings[rel]) for rel in sorted(wanted))
    return SourcePlan(source, info.sha, files)


def _remote_file(sibling) -> RemoteFile:
    lfs_sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
    return RemoteFile(sibling.rfilename, int(sibling.size or 0), sibling.blob_id or "", lfs_sha256)


def _fetch_source(
    entry: WeightsEntry, plan: SourcePlan, entry_folder: Path, report: ProgressCallback | None, max_workers: int,
) -> dict[str, dict]:
    """snapshot_download of one repository at its resolved commit (resumes a cut transfer), then verification."""
    from huggingface_hub import snapshot_download

    folder = entry_folder / plan.source.subfolder if plan.source.subfolder else entry_folder
    folder.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(
            plan.source.repo_id, revision=plan.commit, local_dir=folder,
            allow_patterns=[remote.path for remote in plan.files], etag_timeout=API_TIMEOUT_S,
            max_workers=max_workers, tqdm_class=_reporting_bar_class(report),
        )
    except Exception as error:  # noqa: BLE001
        raise _hub_error(error, entry, plan.source, interrupted=True) from error
    check_safetensors_only(folder)
    return _verify_fetched(folder, plan)


def _verify_fetched(folder: Path, plan: SourcePlan) -> dict[str, dict]:
    """Check every fetched file against the hub's record; a mismatching file is deleted, never kept."""
    prefix = f"{plan.source.subfolder}/" if plan.source.subfolder else ""
    records = {}
    for remote in plan.files:
        try:
            sha256 = check_against_hub(folder, remote)
        except WeightsIntegrityError:
            _forget_local_file(folder, remote.path)
            raise
        records[prefix + remote.path] = verified_file_record(folder, remote.path, sha256)
    return records


def _forget_local_file(folder: Path, relative: str) -> None:
    """Delete a refused file and huggingface_hub's note of it, so the next run fetches it again."""
    from huggingface_hub._local_folder import get_local_download_paths

    paths = get_local_download_paths(Path(folder), relative)
    paths.file_path.unlink(missing_ok=True)
    paths.metadata_path.unlink(missing_ok=True)


def _describe(plan: SourcePlan) -> dict:
    source = plan.source
    return {"repo_id": source.repo_id, "revision": source.revision, "commit": plan.commit, "subfolder": source.subfolder}


def _local_only_result(entry: WeightsEntry, weights_dir: Path) -> DownloadResult:
    if missing_files(entry.name, weights_dir):
        raise WeightsMissingError(f"weights '{entry.name}' cannot be downloaded: {entry.local_hint}")
    return DownloadResult(entry.name, entry_path(entry.name, weights_dir), "present", 0, ())


def _hub_error(error: Exception, entry: WeightsEntry, source: HubSource, interrupted: bool = False) -> DownloadError:
    """One line: what failed, where it looked, what to do."""
    import httpx2
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip()[:200]
    where = f"{source.repo_id}@{source.revision} from {hub_endpoint()}"
    if isinstance(error, OfflineModeIsEnabled):
        return DownloadError(f"the hub is offline (HF_HUB_OFFLINE=1): cannot fetch '{entry.name}' ({where})")
    if isinstance(error, GatedRepoError):
        return DownloadError(f"{where} is gated: accept its licence on the hub and log in (hf auth login) ({reason})")
    if isinstance(error, RepositoryNotFoundError):
        return DownloadError(f"{where} was not found (wrong id or private) ({reason})")
    if isinstance(error, (httpx2.ConnectError, httpx2.TimeoutException)) and not interrupted:
        return DownloadError(
            f"cannot reach the hub to fetch '{entry.name}' ({where}; {reason}); check the connection or HF_ENDPOINT"
        )
    if interrupted:
        return DownloadError(
            f"download of '{entry.name}' ({where}) stopped ({reason}); run the same command again to resume "
            "(finished files are kept)"
        )
    return DownloadError(f"the hub refused '{entry.name}' ({where}): {reason}")


def _offset_reporter(progress: ProgressCallback | None, offset: int, total: int) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda done, _total: progress(min(offset + done, total), total)


def _reporting_bar_class(report: ProgressCallback | None):
    """A tqdm stand-in for snapshot_download: forwards the bytes-written bar to `report`, draws nothing itself."""
    lock = threading.Lock()

    class ReportingBar:
        def __init__(self, *args, **kwargs):
            self.n = kwargs.get("initial") or 0
            self.total = kwargs.get("total")
            self.format_dict: dict = {}
            self.reports_bytes = kwargs.get("unit") == "B" and str(kwargs.get("desc", "")).startswith("Reconstruct")

        def update(self, n: int | float | None = 1) -> None:
            with lock:
                self.n += n or 0
                if self.reports_bytes and report is not None:
                    report(int(self.n), int(self.total or 0))

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

        def __getattr__(self, name: str):  # close, refresh, set_description, set_postfix_str, ...: nothing to draw
            return lambda *args, **kwargs: None

    return ReportingBar
