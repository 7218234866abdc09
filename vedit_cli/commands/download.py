"""`vedit download [NAME...]`: fetch registry checkpoints from the hub, verified; `--list` shows what exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from vedit_cli.commands.common import JsonOutput, WeightsDir, choices, values
from vedit_cli.weights.registry import REGISTRY

USERS = tuple(dict.fromkeys(user for entry in REGISTRY.values() for user in entry.used_by))  # movie, ..., metrics
NAMES = tuple(REGISTRY) + tuple(user for user in USERS if user not in REGISTRY)
EntryName = choices("EntryName", NAMES)


def register(app: typer.Typer) -> None:
    @app.command("download")
    def download(
        ctx: typer.Context,
        names: Annotated[list[EntryName] | None, typer.Argument(help="Entries to fetch (see --list), or a backend name for all it needs.", show_default=False, metavar="NAME...")] = None,
        backend: Annotated[Literal[USERS] | None, typer.Option(help="Fetch every entry a backend needs.")] = None,
        list_entries: Annotated[bool, typer.Option("--list", help="List every entry and whether it is present.")] = False,
        weights_dir: WeightsDir = None,
        force: Annotated[bool, typer.Option(help="Fetch again even when the entry is present and verified.")] = False,
        verify: Annotated[bool, typer.Option(help="Re-hash present entries against their verified record, no download.")] = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Download checkpoints with huggingface_hub into --weights-dir; every file is checked against the hub's sha256."""
        from vedit_cli.weights.registry import entries_for_backend, resolve_weights_dir

        root = resolve_weights_dir(weights_dir)
        if list_entries:
            _print_listing(root, as_json)
            return
        wanted = [entry for name in values(names) for entry in _expand(name)]
        wanted += entries_for_backend(backend) if backend else []
        if not wanted:
            raise typer.BadParameter("name the entries to fetch (e.g. `vedit download taesd`), or use --backend or --list",
                                     ctx=ctx, param_hint="'NAME...'")
        if verify:
            _print_verification(wanted, root, as_json)
            return
        _print_results([_fetch(name, root, force, as_json) for name in dict.fromkeys(wanted)], root, as_json)


def _fetch(name: str, root: Path, force: bool, as_json: bool):
    """One entry: announce its size, fetch it with a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from vedit_cli.weights.hub import download_entry, entry_status, plan_entry
    from vedit_cli.weights.registry import get_entry

    entry = get_entry(name)
    console = Console(stderr=True)
    if entry.local_only or (not force and entry_status(name, root) == "verified"):
        return download_entry(name, root, force=force)
    plans = plan_entry(name, root)
    total = sum(plan.total_bytes for plan in plans)
    files = sum(len(plan.files) for plan in plans)
    source = f"{entry.repo_id}@{plans[0].commit[:12]}"
    console.print(f"{name}: {files} files, {total / 1e6:,.1f} MB from {source} -> {root / name}", soft_wrap=True)
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=as_json) as progress:
        task = progress.add_task(name, total=total)
        return download_entry(name, root, plans=plans, force=force,
                              progress=lambda done, all_: progress.update(task, completed=done, total=all_))


def _print_results(results, root: Path, as_json: bool) -> None:
    if as_json:
        payload = [{"name": r.name, "status": r.status, "folder": str(r.folder), "bytes": r.bytes_total,
                    "commits": list(r.commits)} for r in results]
        typer.echo(json.dumps({"weights_dir": str(root), "results": payload}, indent=1))
        return
    for result in results:
        typer.echo(f"{result.name}: {result.status} and verified in {result.folder}")


def _expand(name: str) -> list[str]:
    """A backend name (`vedit download movie`) stands for every entry it needs; anything else is an entry name."""
    from vedit_cli.weights.registry import REGISTRY, entries_for_backend

    if name in REGISTRY:
        return [name]
    users = {user for entry in REGISTRY.values() for user in entry.used_by}
    return entries_for_backend(name) if name in users else [name]


def _print_verification(names: list[str], root: Path, as_json: bool) -> None:
    statuses = {name: _full_verify(name, root) for name in names}
    if as_json:
        typer.echo(json.dumps({"weights_dir": str(root), "verified": statuses}, indent=1))
        return
    for name, status in statuses.items():
        typer.echo(f"{name}: {status}")


def _full_verify(name: str, root: Path) -> str:
    from vedit_cli.weights.integrity import verify_entry
    from vedit_cli.weights.registry import require

    require(name, root)
    return verify_entry(name, root, full=True)


def listing(root: Path) -> list[dict]:
    """Every registry entry with its pinned source, size, licence and local status."""
    from vedit_cli.weights.hub import entry_status
    from vedit_cli.weights.registry import REGISTRY

    rows = []
    for entry in REGISTRY.values():
        sources = [{"repo_id": s.repo_id, "revision": s.revision, "subfolder": s.subfolder} for s in entry.sources]
        rows.append({"name": entry.name, "repo_id": entry.repo_id or None, "revision": entry.revision or None,
                     "sources": sources, "size_mb": entry.size_mb, "licence": entry.licence,
                     "used_by": list(entry.used_by), "status": entry_status(entry.name, root),
                     "local_only": entry.local_only})
    return rows


def _print_listing(root: Path, as_json: bool) -> None:
    rows = listing(root)
    if as_json:
        typer.echo(json.dumps({"weights_dir": str(root), "entries": rows}, indent=1))
        return
    typer.echo(f"weights dir: {root}")
    header = ("NAME", "REPOSITORY@REVISION", "SIZE", "USED BY", "STATUS", "LICENCE")
    table = [header] + [_listing_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])


def _listing_cells(row: dict) -> tuple[str, ...]:
    if row["local_only"]:
        source, size = "local only (trained by the project)", "-"
    else:
        source = " + ".join(f"{s['repo_id']}@{s['revision'][:12]}" for s in row["sources"])
        size = f"{row['size_mb'] / 1000:.2f} GB" if row["size_mb"] >= 1000 else f"{row['size_mb']} MB"
    return (row["name"], source, size, ",".join(row["used_by"]), row["status"], row["licence"])
