"""The LOVEU-TGVE-2023 benchmark's files: captions from its yaml configs or the prompts CSV, instructions from
loveu_tgve_edit_prompt_dict.json, and the clips of a submission folder matched to them.

Submission layouts found (first match wins), for video V of subset S and edit type T (style/object/background/multiple):
  EDITED/S/V/T/*.jpg (the official TGVE submission), EDITED/S/V/T.mp4, EDITED/V/T/, EDITED/V/T.mp4,
  EDITED/V_T.mp4, EDITED/V-T.mp4  (any video suffix below)
Sources: SOURCE/V.mp4, SOURCE/S/V.mp4, SOURCE/S/480p_videos/V.mp4, SOURCE/S/480p_frames/V/, SOURCE/V/ (frames).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from vedit_cli.errors import EvaluationError
from vedit_cli.metrics.evaluation import ClipToEvaluate

EDIT_TYPES = ("style", "object", "background", "multiple")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")


@dataclass(frozen=True)
class TgveVideo:
    """One benchmark video: its source caption and, per edit type, the edited caption and the instruction."""

    name: str
    subset: str = ""
    caption: str = ""
    edited_captions: dict = field(default_factory=dict)
    instructions: dict = field(default_factory=dict)


def read_tgve_prompts(paths: list[Path]) -> dict[str, TgveVideo]:
    """Merge prompt files by video name: a configs folder (yaml), the prompts CSV, the instruction JSON."""
    videos: dict[str, TgveVideo] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found = _from_configs(path)
        elif path.suffix.lower() == ".csv":
            found = _from_csv(path)
        elif path.suffix.lower() == ".json":
            found = _from_instruction_json(path)
        else:
            raise EvaluationError(f"{path}: not a TGVE prompt source; give the configs folder, the .csv or the .json")
        for video in found:
            videos[video.name] = _merge(videos.get(video.name), video)
    return videos


def _merge(old: TgveVideo | None, new: TgveVideo) -> TgveVideo:
    if old is None:
        return new
    return replace(old, subset=old.subset or new.subset, caption=old.caption or new.caption,
                   edited_captions={**new.edited_captions, **old.edited_captions},
                   instructions={**old.instructions, **new.instructions})


def _from_configs(folder: Path) -> list[TgveVideo]:
    """The yaml configs of showlab/loveu-tgve-2023: train_data.prompt and validation_data.prompts.<type>."""
    import yaml  # PyYAML, a dependency of transformers and huggingface_hub

    videos = []
    for config_path in sorted(folder.rglob("*.yaml")):
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        prompts = (config.get("validation_data") or {}).get("prompts")
        caption = (config.get("train_data") or {}).get("prompt")
        if not isinstance(prompts, dict) or not caption:
            continue  # template.yaml and other non-benchmark files
        videos.append(TgveVideo(config_path.stem, config_path.parent.name, str(caption).strip(),
                                {t: str(prompts[t]).strip() for t in EDIT_TYPES if prompts.get(t)}))
    if not videos:
        raise EvaluationError(f"{folder}: no TGVE configs (yaml with train_data.prompt and validation_data.prompts)")
    return videos


def _from_csv(path: Path) -> list[TgveVideo]:
    """tgve_prompts_from_configs.csv: subset, video_name, num_frames, caption, style, object, background, multiple."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "video_name" not in rows[0] or "caption" not in rows[0]:
        raise EvaluationError(f"{path}: expected columns subset, video_name, caption, {', '.join(EDIT_TYPES)}")
    return [TgveVideo(row["video_name"].strip(), (row.get("subset") or "").strip(), row["caption"].strip(),
                      {t: row[t].strip() for t in EDIT_TYPES if (row.get(t) or "").strip()}) for row in rows]


def _from_instruction_json(path: Path) -> list[TgveVideo]:
    """loveu_tgve_edit_prompt_dict.json: {video: {"edit_style": instruction, ...}} (InsV2V's instructions)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected an object {{video: {{edit_<type>: instruction}}}}")
    return [TgveVideo(name, instructions={t: str(edits[f"edit_{t}"]).strip() for t in EDIT_TYPES if f"edit_{t}" in edits})
            for name, edits in data.items() if isinstance(edits, dict)]


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((path for path in candidates if path.exists()), None)


def _with_suffixes(stem: Path) -> list[Path]:
    return [stem.with_name(stem.name + suffix) for suffix in VIDEO_SUFFIXES]


def find_edited(root: Path, video: TgveVideo, edit_type: str) -> Path | None:
    """The edited clip of (video, edit type) in a submission folder, in the layouts listed above."""
    base = [root / video.subset / video.name] if video.subset else []
    base.append(root / video.name)
    candidates = [p for b in base for p in [b / edit_type, *_with_suffixes(b / edit_type)]]
    candidates += _with_suffixes(root / f"{video.name}_{edit_type}") + _with_suffixes(root / f"{video.name}-{edit_type}")
    return _first_existing([p for p in candidates if p.suffix or p.is_dir()])


def find_source(root: Path, video: TgveVideo) -> Path | None:
    """The source clip of a benchmark video (the TGVE zip's layout, or a flat folder of videos)."""
    subset = root / video.subset if video.subset else root
    candidates = _with_suffixes(root / video.name) + _with_suffixes(subset / video.name)
    candidates += _with_suffixes(subset / "480p_videos" / video.name)
    candidates += [subset / "480p_frames" / video.name, root / video.name]
    return _first_existing([p for p in candidates if p.suffix or p.is_dir()])


def tgve_clips(edited_root: Path, videos: dict[str, TgveVideo], source_root: Path | None = None,
               edit_types: tuple[str, ...] = EDIT_TYPES) -> list[ClipToEvaluate]:
    """One ClipToEvaluate per (video, edit type) present in the submission folder, named 'video/type'."""
    if not Path(edited_root).is_dir():
        raise EvaluationError(f"{edited_root}: TGVE submission folder not found")
    clips = []
    for video in sorted(videos.values(), key=lambda v: (v.subset, v.name)):
        for edit_type in edit_types:
            edited = find_edited(Path(edited_root), video, edit_type)
            if edited is None:
                continue
            source = find_source(Path(source_root), video) if source_root else None
            clips.append(ClipToEvaluate(
                edited=edited, source=source, prompt=video.instructions.get(edit_type) or None,
                caption=video.edited_captions.get(edit_type) or None, source_caption=video.caption or None,
                name=f"{video.name}/{edit_type}",
            ))
    if not clips:
        raise EvaluationError(
            f"{edited_root}: no edited clips found for the {len(videos)} TGVE videos "
            "(expected e.g. <subset>/<video>/<style|object|background|multiple>/*.jpg or <video>/<type>.mp4)"
        )
    return clips
