"""The tiny world's clips: which file is training, validation or held-out (tinyworld.json), and their frames,
downscaled to the world's size and extracted ONCE into a cache (decord random access is slow; VP9 decoding is not
bit-stable across runs). Without the real clips, clips synthesised with ffmpeg stand in (and the cache says so).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "validation", "held_out")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".gif", ".avi")
# ffmpeg lavfi sources standing in for real clips: (name, filter graph), one per split slot.
SYNTHETIC_SOURCES = (
    ("testsrc2", "testsrc2=size=160x120:rate=12"),
    ("mandelbrot", "mandelbrot=size=160x120:rate=12"),
    ("life", "life=size=160x120:rate=12:mold=10:ratio=0.3:death_color=#204060:life_color=#e0a040"),
    ("gradients", "gradients=size=160x120:rate=12:speed=0.05"),
    ("cellauto", "cellauto=size=160x120:rate=12:rule=110"),
    ("smptehdbars", "smptehdbars=size=160x120:rate=12,hue=H=0.6*t"),
)


@dataclass(frozen=True)
class WorldSpec:
    size: int
    frames_per_clip: int
    crops_per_frame: int
    clips: dict[str, tuple[str, ...]]  # split -> file names

    @classmethod
    def load(cls, path: Path) -> "WorldSpec":
        data = json.loads(Path(path).read_text())
        return cls(data["size"], data["frames_per_clip"], data.get("crops_per_frame", 1),
                   {split: tuple(data[split]) for split in SPLITS})


def find_clip(folder: Path, name: str) -> Path | None:
    """`name` directly in `folder` or anywhere below it."""
    direct = Path(folder) / name
    if direct.is_file():
        return direct
    return next(iter(sorted(Path(folder).rglob(name))), None)


def video_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def square_crops(frame: np.ndarray, size: int, crops: int) -> list[np.ndarray]:
    """Short side resized to `size` (area filter), then `crops` squares spread along the long side."""
    import cv2

    height, width = frame.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(frame, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    long_extra = max(resized.shape[0], resized.shape[1]) - size
    offsets = [long_extra // 2] if crops == 1 or long_extra == 0 else np.linspace(0, long_extra, crops).astype(int)
    if resized.shape[1] >= resized.shape[0]:
        return [resized[:size, o:o + size] for o in offsets]
    return [resized[o:o + size, :size] for o in offsets]


def extract_frames(path: Path, size: int, max_frames: int, crops: int = 1) -> np.ndarray:
    """Up to `max_frames` frames spread over the clip (read in order, once), as uint8 [N, size, size, 3]."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    info = probe(path)
    stride = max(1, info.frame_count // max_frames)
    out = []
    for index, frame in enumerate(read_frames(info)):
        if index % stride == 0 and len(out) < max_frames * crops:
            out.extend(square_crops(frame, size, crops))
    return np.stack(out)


def clip_frames(path: Path, size: int, max_frames: int | None = None) -> np.ndarray:
    """Every frame (or the first `max_frames`) of a clip, centre-cropped to size x size: held-out scoring."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    out = []
    for frame in read_frames(probe(path)):
        out.append(square_crops(frame, size, 1)[0])
        if max_frames is not None and len(out) >= max_frames:
            break
    return np.stack(out)


def synthesize_clip(path: Path, source: str, seconds: float = 2.0) -> Path:
    """A short H.264 clip from an ffmpeg lavfi source (the fallback when ../shared/videos is absent)."""
    from vedit_cli.io.ffmpeg import ffmpeg_exe

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds),
               "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "12", str(path)]
    subprocess.run(command, check=True, capture_output=True)
    return Path(path)


def resolve_clips(spec: WorldSpec, videos: Path | None, synth_dir: Path) -> tuple[dict[str, list[Path]], bool]:
    """Split -> clip paths: the pinned real clips when `videos` has them all, else synthetic ones (True)."""
    if videos is not None and Path(videos).is_dir():
        found = {split: [find_clip(videos, name) for name in names] for split, names in spec.clips.items()}
        if all(path is not None for paths in found.values() for path in paths):
            return found, False
    counts = {split: max(1, min(len(names), 2 if split == "train" else 1)) for split, names in spec.clips.items()}
    sources = iter(SYNTHETIC_SOURCES * 4)
    paths: dict[str, list[Path]] = {}
    for split in SPLITS:
        paths[split] = []
        for _ in range(counts[split]):
            name, graph = next(sources)
            target = synth_dir / f"{split}-{name}.mp4"
            paths[split].append(target if target.is_file() else synthesize_clip(target, graph))
    return paths, True


def build_cache(spec: WorldSpec, videos: Path | None, cache_dir: Path) -> dict:
    """frames_<split>.npy (uint8 [N, S, S, 3]) and cache.json naming every clip used; skipped when present."""
    cache_dir = Path(cache_dir)
    info_path = cache_dir / "cache.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    cache_dir.mkdir(parents=True, exist_ok=True)
    clips, synthetic = resolve_clips(spec, videos, cache_dir / "synthetic")
    info = {"synthetic": synthetic, "size": spec.size, "splits": {}}
    for split, paths in clips.items():
        crops = spec.crops_per_frame if split == "train" else 1
        frames = np.concatenate([extract_frames(p, spec.size, spec.frames_per_clip, crops) for p in paths])
        np.save(cache_dir / f"frames_{split}.npy", frames)
        info["splits"][split] = {"clips": [str(p) for p in paths], "frames": int(frames.shape[0])}
    info_path.write_text(json.dumps(info, indent=1))
    return info


def load_split(cache_dir: Path, split: str) -> np.ndarray:
    return np.load(Path(cache_dir) / f"frames_{split}.npy")


def extract_sequences(path: Path, size: int, length: int, count: int) -> np.ndarray:
    """`count` runs of `length` consecutive frames spread over the clip (centre square, read in order, once), as
    uint8 [S, length, size, size, 3]; a clip shorter than `length` gives none."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    info = probe(path)
    starts = sorted(set(np.linspace(0, max(0, info.frame_count - length), count).astype(int).tolist()))
    wanted = {index for start in starts for index in range(start, start + length)}
    kept = {}
    for index, frame in enumerate(read_frames(info)):
        if index in wanted:
            kept[index] = square_crops(frame, size, 1)[0]
        if index >= max(wanted):
            break
    runs = [np.stack([kept[i] for i in range(start, start + length)]) for start in starts
            if all(i in kept for i in range(start, start + length))]
    return np.stack(runs) if runs else np.zeros((0, length, size, size, 3), np.uint8)


def build_sequences(cache_dir: Path, size: int, length: int, per_clip: int, split: str = "train") -> np.ndarray:
    """sequences_<split>_<length>.npy: consecutive-frame runs of the split's cached clips (the motion adapter's and the
    memory's data); built once, from the clips cache.json names."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"sequences_{split}_{length}.npy"
    if target.is_file():
        return np.load(target)
    clips = json.loads((cache_dir / "cache.json").read_text())["splits"][split]["clips"]
    runs = [extract_sequences(Path(clip), size, length, per_clip) for clip in clips]
    sequences = np.concatenate([r for r in runs if len(r)]) if any(len(r) for r in runs) else None
    if sequences is None:
        raise ValueError(f"no clip of the {split} split has {length} frames")
    np.save(target, sequences)
    return sequences
