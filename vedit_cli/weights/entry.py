"""One checkpoint entry of the weights catalog: plain data, importing nothing of vedit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubSource:
    """A further hub repository whose files land in `<entry>/<subfolder>/` (e.g. PickScore's processor)."""

    repo_id: str
    revision: str
    allow_patterns: tuple[str, ...]
    subfolder: str
    required_files: tuple[str, ...] = ()  # relative to the subfolder


@dataclass(frozen=True)
class WeightsEntry:
    """One checkpoint: which hub repository, which files, and the files that prove it is complete."""

    name: str
    repo_id: str  # "" for project-trained weights that have no hub repository yet
    revision: str  # a 40-hex commit where confirmed; "main" where it could not be confirmed (see catalog.py)
    allow_patterns: tuple[str, ...]
    required_files: tuple[str, ...]  # relative paths that must exist for the folder to be usable
    size_mb: int
    licence: str
    used_by: tuple[str, ...]
    extra_sources: tuple[HubSource, ...] = ()
    local_hint: str = ""  # for local-only entries: how to produce them

    @property
    def local_only(self) -> bool:
        return not self.repo_id

    @property
    def sources(self) -> tuple[HubSource, ...]:
        """Every repository this entry is built from; the first lands in the entry folder itself."""
        if self.local_only:
            return self.extra_sources
        primary = HubSource(self.repo_id, self.revision, self.allow_patterns, "", self.required_files)
        return (primary, *self.extra_sources)

    def all_required_files(self) -> tuple[str, ...]:
        """Required files of every source, relative to the entry folder."""
        files = list(self.required_files)
        for source in self.extra_sources:
            files += [f"{source.subfolder}/{rel}" for rel in source.required_files]
        return tuple(files)
