"""edit_clip end to end on real clips with the copy backend: frames, fps, display size, audio, pixels."""

from __future__ import annotations

import numpy as np
import pytest

from vedit_cli.editor import Editor, create_editor
from vedit_cli.settings import resolve_run
from vedit_cli.config import EditConfig, ModelConfig
from vedit_cli.errors import ConfigError, FrameCountError, OutputError
from vedit_cli.pipeline.runner import run_clip

CLIPS = ["realshort.mp4", "video_90.mov", "bear-vp9-odd-dimensions.webm"]


def copy_config(**changes) -> EditConfig:
    return EditConfig(model=ModelConfig(backend="copy"), **changes)


class ListSink:
    def __init__(self):
        self.frames = []

    def write(self, frame_hwc):
        self.frames.append(frame_hwc)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", CLIPS)
def test_copy_pipeline_is_pixel_exact_before_the_encoder(shared_videos, name):
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    info = probe(shared_videos / name)
    decoded = list(read_frames(info))  # decoded once: the comparison is of the pipeline, not of two decodes
    sink = ListSink()
    stats = run_clip(iter(decoded), info.frame_count, create_editor(resolve_run(ModelConfig(backend="copy"))), "", sink,
                     None, copy_config())
    assert stats.frames_written == info.frame_count == len(sink.frames) == len(decoded)
    for got, source in zip(sink.frames, decoded):
        np.testing.assert_array_equal(got, source)


@pytest.mark.parametrize("name", CLIPS)
def test_edit_clip_keeps_frames_fps_size_audio_and_pixels(shared_videos, tmp_path, name):
    pytest.importorskip("vedit_cli.io.output")
    from vedit_cli.editing.clip import edit_clip
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    source = probe(shared_videos / name)
    progress = []
    result = edit_clip(shared_videos / name, tmp_path / "out.mp4", create_editor(resolve_run(ModelConfig(backend="copy"))), "",
                       copy_config(), on_progress=progress.append)
    assert result.output_path == tmp_path / "out.mp4" and result.output_path.is_file()
    assert progress[-1] == source.frame_count == result.frames_written
    edited = probe(result.output_path)
    assert edited.frame_count == source.frame_count
    assert edited.fps == source.fps
    even_size = (source.width // 2 * 2, source.height // 2 * 2)  # an odd side loses one column/row for 4:2:0
    assert (edited.width, edited.height) == result.output_size == even_size
    assert edited.has_audio == source.has_audio
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary files left behind
    for got, original in zip(read_frames(edited), read_frames(source)):
        cropped = original[: even_size[1], : even_size[0]]
        assert psnr(got, cropped) > 30, "the copy backend changed the picture beyond codec loss"


class ShiftEditor(Editor):
    """Brightens every frame; resizes to the processing size like a real model."""

    size_multiple = 16

    @classmethod
    def from_run(cls, run):
        return cls()

    def prepare(self, prompt):
        self.prompt = prompt

    def edit(self, frames_tchw):
        return (frames_tchw + 0.2).clamp(-1, 1)


def test_resizing_editor_output_matches_source_or_processing_size(shared_videos, tmp_path):
    pytest.importorskip("vedit_cli.io.output")
    from vedit_cli.editing.clip import edit_clip
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    clip = shared_videos / "realshort.mp4"
    config = EditConfig(model=ModelConfig(backend="copy", size=96))
    result = edit_clip(clip, tmp_path / "source.mp4", ShiftEditor(), "brighter", config)
    edited = probe(result.output_path)
    assert (edited.width, edited.height) == (320, 240) and edited.frame_count == 36
    first_edited, first_source = next(read_frames(edited)), next(read_frames(probe(clip)))
    assert first_edited.astype(float).mean() > first_source.astype(float).mean() + 15

    processing = edit_clip(clip, tmp_path / "processing.mp4", ShiftEditor(), "brighter",
                           EditConfig(model=ModelConfig(backend="copy", size=96), output_size="processing"))
    assert processing.output_size == (128, 96)
    assert (probe(processing.output_path).width, probe(processing.output_path).height) == (128, 96)


def test_empty_prompt_for_a_prompted_editor_is_a_config_error(shared_videos, tmp_path):
    pytest.importorskip("vedit_cli.io.output")
    from vedit_cli.editing.clip import edit_clip

    with pytest.raises(ConfigError, match="instruction"):
        edit_clip(shared_videos / "video_90.mov", tmp_path / "out.mp4", ShiftEditor(), "   ", copy_config())
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_overwrite(shared_videos, tmp_path):
    pytest.importorskip("vedit_cli.io.output")
    from vedit_cli.editing.clip import edit_clip

    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputError):
        edit_clip(shared_videos / "video_90.mov", existing, create_editor(resolve_run(ModelConfig(backend="copy"))), "",
                  copy_config())
    assert existing.read_bytes() == b"keep me"


def test_dropped_frame_leaves_no_output(shared_videos, tmp_path):
    pytest.importorskip("vedit_cli.io.output")
    from vedit_cli.editing.clip import edit_clip

    class Dropping(ShiftEditor):
        needs_prompt, resizes = False, False

        def edit(self, frames_tchw):
            return frames_tchw[:0] if self.calls == 2 else frames_tchw

        def seek(self, frame_index):
            self.calls = frame_index

    with pytest.raises(FrameCountError):
        edit_clip(shared_videos / "realshort.mp4", tmp_path / "out.mp4", Dropping(), "", copy_config())
    assert list(tmp_path.iterdir()) == []
