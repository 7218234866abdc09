"""Frames of a clip to evaluate: a video file (through vedit_cli.io) or a folder of images (TGVE submissions are
folders of .jpg frames). Always a stream of uint8 RGB HxWx3 frames, in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vedit_cli.errors import InputVideoError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_files(folder: Path) -> list[Path]:
    """Image files of a frame folder, sorted by name (TGVE's run_eval.py uses sorted(glob('*.jpg')))."""
    return sorted(path for path in Path(folder).iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Frames of a video file or of a folder of images, one at a time."""
    path = Path(path)
    if path.is_dir():
        return _iter_image_folder(path)
    if not path.exists():
        raise InputVideoError(f"{path}: no such file or folder; give a video file or a folder of frames")
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    return iter(read_frames(probe(path)))


def _iter_image_folder(folder: Path) -> Iterator[np.ndarray]:
    from PIL import Image

    files = image_files(folder)
    if not files:
        raise InputVideoError(f"{folder}: folder holds no frames ({', '.join(IMAGE_SUFFIXES)}); give a video or a frame folder")

    def generate():
        for file in files:
            with Image.open(file) as image:
                yield np.asarray(image.convert("RGB"))

    return generate()
