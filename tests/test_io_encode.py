"""VideoWriter, mux_audio, check_output and ClipWriter on small synthetic clips: exact rates, odd sizes, codecs,
containers, audio, and atomic behaviour (no half file, no temp, no ffmpeg left behind)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.io_media import audio_duration, header_text, make_clip
from vedit_cli.config import EncodeConfig
from vedit_cli.errors import ConfigError, FrameCountError, OutputError
from vedit_cli.io.decode import read_frames
from vedit_cli.io.encode import VideoWriter, encoded_size, output_pixel_format
from vedit_cli.io.output import ClipWriter, check_output
from vedit_cli.io.probe import probe

FAST = EncodeConfig(preset="ultrafast")


def _gradient_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    return [((ramp + 8 * index) % 256).astype(np.uint8) for index in range(count)]


def _ffmpeg_children() -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True)
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), Fraction(24000, 1001), Fraction(45000, 1499), Fraction(25)])
def test_writer_keeps_the_exact_rational_rate(tmp_path, fps):
    path = tmp_path / "rate.mp4"
    with VideoWriter(path, 64, 48, fps, FAST) as writer:
        for frame in _gradient_frames(20, 64, 48):
            writer.write(frame)
    info = probe(path)
    assert (info.fps, info.frame_count, info.width, info.height) == (fps, 20, 64, 48)


CODECS = [("libx264", ".mp4"), ("libx265", ".mp4"), ("libvpx-vp9", ".webm")]


@pytest.mark.parametrize("codec, suffix", CODECS)
def test_odd_sizes_are_cropped_to_even_in_4_2_0(tmp_path, codec, suffix):
    """161x121 -> 160x120 in 4:2:0 for every codec: the last column and row are cropped, nothing is rescaled."""
    encode = EncodeConfig(codec=codec, preset="ultrafast", crf=30)
    assert encoded_size(161, 121, encode) == (160, 120) and output_pixel_format(160, 120, encode) == "yuv420p"
    info, frames = _write_odd_clip(tmp_path / f"odd{suffix}", encode)
    assert (info.width, info.height, info.frame_count, info.pixel_format) == (160, 120, 5, "yuv420p")
    decoded = next(iter(read_frames(info)))
    assert np.abs(decoded.astype(np.int16) - frames[0][:120, :160]).mean() < 6.0


@pytest.mark.parametrize("codec, suffix", CODECS)
def test_keep_odd_size_keeps_it_exactly_in_4_4_4(tmp_path, codec, suffix):
    encode = EncodeConfig(codec=codec, preset="ultrafast", crf=30, keep_odd_size=True)
    assert encoded_size(161, 121, encode) == (161, 121) and output_pixel_format(161, 121, encode) == "yuv444p"
    info, frames = _write_odd_clip(tmp_path / f"odd{suffix}", encode)
    assert (info.width, info.height, info.frame_count, info.pixel_format) == (161, 121, 5, "yuv444p")
    decoded = next(iter(read_frames(info)))
    assert np.abs(decoded.astype(np.int16) - frames[0]).mean() < 6.0


def _write_odd_clip(path, encode):
    frames = _gradient_frames(5, 161, 121)
    with VideoWriter(path, 161, 121, Fraction(30000, 1001), encode) as writer:
        for frame in frames:
            writer.write(frame)
    return probe(path), frames


def test_even_sizes_keep_the_configured_pixel_format():
    assert output_pixel_format(64, 48, FAST) == "yuv420p"


@pytest.mark.parametrize("name, encode", [("out.webm", EncodeConfig(codec="libx264")), ("out.gif", EncodeConfig()),
                                          ("out.mp4", EncodeConfig(codec="libaom")), ("out.mp4", EncodeConfig(crf=60)),
                                          ("out.mp4", EncodeConfig(preset="quick"))])
def test_unsupported_combinations_fail_before_encoding(tmp_path, name, encode):
    with pytest.raises(ConfigError):
        VideoWriter(tmp_path / name, 64, 48, Fraction(30), encode)
    assert not _ffmpeg_children()


def test_writer_rejects_a_wrong_frame_shape_and_abort_leaves_no_process(tmp_path):
    writer = VideoWriter(tmp_path / "shape.mp4", 64, 48, Fraction(30), FAST)
    with pytest.raises(ValueError, match="uint8"):
        writer.write(np.zeros((48, 64, 3), dtype=np.float32))
    writer.abort()
    assert not _ffmpeg_children()


# ---- audio
@pytest.mark.parametrize("suffix, expected_codec", [(".mp4", "aac"), (".mkv", "aac"), (".webm", "opus"),
                                                    (".mov", "aac")])
def test_audio_is_carried_into_each_container(tmp_path, suffix, expected_codec):
    source = probe(make_clip(tmp_path / "source.mp4", seconds=1.0, size="64x48"))
    encode = EncodeConfig(codec="libvpx-vp9" if suffix == ".webm" else "libx264", preset="ultrafast")
    out_path = tmp_path / f"out{suffix}"
    with ClipWriter(out_path, source, source.width, source.height, encode) as writer:
        for frame in read_frames(source):
            writer.write(frame)
        writer.commit(source.frame_count)
    out = probe(out_path)
    assert (out.audio_codec, out.frame_count, out.fps) == (expected_codec, source.frame_count, source.fps)
    assert abs(audio_duration(out_path) - out.duration) <= 1 / float(out.fps)


def test_silent_source_gives_a_silent_output(tmp_path):
    source = probe(make_clip(tmp_path / "silent.mp4", seconds=0.5, audio=False))
    out_path = _write_copy(source, tmp_path / "out.mp4")
    assert not probe(out_path).has_audio


def test_longer_audio_is_cut_and_video_frames_are_all_kept(tmp_path):
    video = make_clip(tmp_path / "video.mp4", seconds=1.0, audio=False)
    longer = tmp_path / "longer.mp4"
    from vedit_cli.io.ffmpeg import run_ffmpeg

    run_ffmpeg(["-v", "error", "-i", str(video), "-f", "lavfi", "-i", "sine=duration=3", "-c:v", "copy",
                "-c:a", "aac", str(longer)])
    source = probe(longer)
    out = probe(_write_copy(source, tmp_path / "out.mp4"))
    assert out.frame_count == source.frame_count == 30
    assert abs(audio_duration(out.path) - out.duration) <= 1 / float(out.fps)


def test_audio_starting_before_the_video_is_aligned_to_the_first_frame(tmp_path):
    """A source whose video starts 0.5 s into the file: the output's audio starts at that point too."""
    from vedit_cli.io.ffmpeg import run_ffmpeg

    video = make_clip(tmp_path / "video.mp4", seconds=1.0, audio=False)
    late = tmp_path / "late.mp4"
    run_ffmpeg(["-v", "error", "-itsoffset", "0.5", "-i", str(video), "-f", "lavfi", "-i", "sine=duration=2",
                "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(late)])
    source = probe(late)
    assert source.video_start == pytest.approx(0.5, abs=0.05)
    out = probe(_write_copy(source, tmp_path / "out.mp4"))
    assert out.frame_count == source.frame_count and out.video_start == pytest.approx(0, abs=1e-3)
    assert abs(audio_duration(out.path) - out.duration) <= 1 / float(out.fps)


def _write_copy(source, out_path: Path) -> Path:
    with ClipWriter(out_path, source, source.width, source.height, FAST) as writer:
        for frame in read_frames(source):
            writer.write(frame)
        return writer.commit(source.frame_count)


# ---- output paths and atomic behaviour
def test_output_equal_to_input_is_always_refused(tmp_path):
    source_path = make_clip(tmp_path / "in.mp4", seconds=0.3)
    for same in (source_path, tmp_path / "." / "in.mp4"):
        with pytest.raises(OutputError, match="is the input"):
            check_output(source_path, same, overwrite=True)
    os.symlink(source_path, tmp_path / "link.mp4")
    with pytest.raises(OutputError, match="is the input"):
        check_output(source_path, tmp_path / "link.mp4", overwrite=True)
    with pytest.raises(OutputError):
        ClipWriter(source_path, probe(source_path), 64, 48, FAST)


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "out.mp4").write_bytes(b"old")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output(tmp_path / "in.mp4", tmp_path / "out.mp4", overwrite=False)
    check_output(tmp_path / "in.mp4", tmp_path / "out.mp4", overwrite=True)
    check_output(tmp_path / "in.mp4", tmp_path / "new" / "deeper" / "out.mp4", overwrite=False)


def test_bad_output_names_are_refused(tmp_path):
    for bad in (tmp_path, tmp_path / "out.gif", tmp_path / "noext"):
        with pytest.raises(OutputError):
            check_output(tmp_path / "in.mp4", bad, overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            check_output(tmp_path / "in.mp4", locked / "out.mp4", overwrite=False)
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_no_file_no_temp_no_process(tmp_path, interruption):
    source_path = make_clip(tmp_path / "in.mp4", seconds=1.0)
    source, before = probe(source_path), source_path.read_bytes()
    out_path = tmp_path / "out" / "edited.mp4"
    with pytest.raises(interruption):
        with ClipWriter(out_path, source, source.width, source.height, FAST) as writer:
            for index, frame in enumerate(read_frames(source)):
                writer.write(frame)
                if index == 5:
                    raise interruption("stop")
    assert list(out_path.parent.iterdir()) == []
    assert source_path.read_bytes() == before
    assert not _ffmpeg_children()


def test_frame_count_mismatch_keeps_the_previous_output(tmp_path):
    source = probe(make_clip(tmp_path / "in.mp4", seconds=0.5))
    out_path = tmp_path / "edited.mp4"
    out_path.write_bytes(b"previous result")
    with pytest.raises(FrameCountError, match="nothing was saved"):
        with ClipWriter(out_path, source, source.width, source.height, FAST) as writer:
            for frame in list(read_frames(source))[:-1]:
                writer.write(frame)
            writer.commit(source.frame_count)
    assert out_path.read_bytes() == b"previous result"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["edited.mp4", "in.mp4"]


def test_commit_replaces_an_existing_output_and_drops_metadata(tmp_path):
    from vedit_cli.io.ffmpeg import run_ffmpeg

    plain = make_clip(tmp_path / "plain.mp4", seconds=0.5)
    tagged = tmp_path / "tagged.mp4"
    run_ffmpeg(["-v", "error", "-i", str(plain), "-c", "copy", "-metadata", "location=+54.1843-002.7189/",
                "-metadata", "title=secret", str(tagged)])
    assert "location" in header_text(tagged)
    out_path = tmp_path / "edited.mp4"
    out_path.write_bytes(b"old")
    _write_copy(probe(tagged), out_path)
    header = header_text(out_path)
    assert probe(out_path).frame_count == 15 and "location" not in header and "secret" not in header


def test_awkward_file_names_reach_ffmpeg_as_files(tmp_path):
    """Names ffmpeg could read as an option ("-x") or a protocol ("take:2") still work."""
    source_path = make_clip(tmp_path / "-take:2.mp4", seconds=0.3)
    source = probe(source_path)
    assert source.frame_count == 9
    out = probe(_write_copy(source, tmp_path / "-edited:v2.mp4"))
    assert out.frame_count == 9 and out.has_audio


def test_non_square_pixels_are_scaled_to_the_display_size(tmp_path):
    """A 64x48 clip with SAR 2:1 displays as 128x48: probe, decode and the round trip all use 128x48."""
    from vedit_cli.io import decode
    from vedit_cli.io.ffmpeg import run_ffmpeg

    plain = make_clip(tmp_path / "plain.mp4", seconds=0.3, audio=False)
    wide = tmp_path / "wide.mp4"
    run_ffmpeg(["-v", "error", "-i", str(plain), "-vf", "setsar=2/1", "-c:v", "libx264", "-preset", "ultrafast",
                str(wide)])
    source = probe(wide)
    assert (source.coded_width, source.width, source.height) == (64, 128, 48)
    assert not decode._decord_suitable(source)
    assert {frame.shape for frame in read_frames(source)} == {(48, 128, 3)}
    out = probe(_write_copy(source, tmp_path / "out.mp4"))
    assert (out.coded_width, out.width, out.height, out.frame_count) == (128, 128, 48, 9)
