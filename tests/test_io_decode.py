"""read_frames(): upright display-size frames, exactly frame_count of them, bounded memory, clean early close."""

from __future__ import annotations

import dataclasses

import numpy as np
import psutil
import pytest

from tests.io_media import make_clip
from vedit_cli.errors import InputVideoError
from vedit_cli.io import decode
from vedit_cli.io.ffmpeg import run_ffmpeg
from vedit_cli.io.probe import probe


def _frames(iterator) -> list[np.ndarray]:
    return [frame.copy() for frame in iterator]


@pytest.mark.parametrize("name", ["fire2.mp4", "video_90.mov", "realshort.mp4", "flipping_a_pancake.mkv"])
def test_decord_and_ffmpeg_readers_agree(shared_videos, name):
    info = probe(shared_videos / name)
    assert decode._decord_suitable(info)
    by_decord = _frames(decode._decord_frames(info))
    by_ffmpeg = _frames(decode.read_frames_ffmpeg(info))
    assert len(by_decord) == len(by_ffmpeg) == info.frame_count
    worst = max(np.abs(a.astype(np.int16) - b).mean() for a, b in zip(by_decord, by_ffmpeg))
    assert worst < 2.0


@pytest.mark.parametrize("display_rotation", [90, 180, -90])
@pytest.mark.parametrize("reader", ["read_frames", "read_frames_ffmpeg"])
def test_frames_are_turned_upright(tmp_path, display_rotation, reader):
    """The coded frame turned clockwise by probe's rotation (numpy, not ffmpeg) is what the reader yields."""
    plain = make_clip(tmp_path / "plain.mp4", seconds=0.3, size="64x48", rate="10", audio=False)
    tagged = tmp_path / "tagged.mp4"
    run_ffmpeg(["-v", "error", "-display_rotation", str(display_rotation), "-i", str(plain), "-c", "copy",
                str(tagged)])
    info = probe(tagged)
    assert info.rotation == (-display_rotation) % 360
    coded = _frames(decode.read_frames(probe(plain)))
    upright = _frames(getattr(decode, reader)(info))
    assert upright[0].shape == (info.height, info.width, 3)
    expected = np.rot90(coded[0], k=-info.rotation // 90)
    assert np.abs(upright[0].astype(np.int16) - expected).mean() < 1.0


@pytest.mark.parametrize("name", ["chrome.webm", "newtonscradle.gif", "roadtrip-vp92-10bit.webm",
                                  "dolbyVision-hdr.MOV"])  # hdr10: every frame is decoded in test_io_roundtrip
def test_clips_decord_cannot_take_use_ffmpeg_and_yield_every_frame(shared_videos, name):
    info = probe(shared_videos / name)
    assert not decode._decord_suitable(info)  # VP8 (decord#91), GIF, 10-bit, HDR
    shapes = {frame.shape for frame in decode.read_frames(info)} if info.frame_count < 100 else None
    assert shapes is None or shapes == {(info.height, info.width, 3)}


def test_hdr_is_tone_mapped(shared_videos):
    """PQ through the tone curve differs clearly from swscale's plain (washed-out) conversion."""
    info = probe(shared_videos / "hdr10-video-with-sdr-container.mp4")
    assert decode._tonemap_filters(info)
    mapped = next(iter(decode.read_frames(info))).copy()
    plain = next(iter(decode.read_frames_ffmpeg(dataclasses.replace(info, is_hdr=False)))).copy()
    assert np.abs(mapped.astype(np.int16) - plain).mean() > 5


def test_decord_failure_midway_falls_back_to_ffmpeg(shared_videos, monkeypatch):
    info = probe(shared_videos / "realshort.mp4")
    reference = _frames(decode.read_frames_ffmpeg(info))
    real_next, calls = decode._next_decord_frame, []

    def flaky_next(reader):
        calls.append(1)
        if len(calls) > 5:
            raise decode._DecordMisbehaved("simulated decode error")
        return real_next(reader)

    monkeypatch.setattr(decode, "_next_decord_frame", flaky_next)
    frames = _frames(decode.read_frames(info))
    assert len(frames) == info.frame_count == len(reference)
    assert max(np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, reference)) < 2.0


def test_over_reported_count_raises_one_line(shared_videos):
    info = probe(shared_videos / "realshort.mp4")
    inflated = dataclasses.replace(info, frame_count=info.frame_count + 3)
    with pytest.raises(InputVideoError, match=r"decoding stopped after 36 of 39 frames"):
        for _ in decode.read_frames(inflated):
            pass


def test_closing_early_leaves_no_ffmpeg_process(shared_videos):
    info = probe(shared_videos / "chrome.webm")
    frames = decode.read_frames(info)
    next(frames)
    assert any("ffmpeg" in child.name() for child in psutil.Process().children(recursive=True))
    frames.close()
    assert not [child for child in psutil.Process().children(recursive=True) if child.is_running()
                and child.status() != psutil.STATUS_ZOMBIE]


def test_memory_stays_bounded_over_a_long_clip(shared_videos):
    """899 frames of 480x270 are 350 MB decoded; frame by frame reading must not accumulate them."""
    info = probe(shared_videos / "chrome.webm")
    process = psutil.Process()
    start, peak, count = process.memory_info().rss, 0, 0
    for frame in decode.read_frames(info):
        count += 1
        if count % 100 == 0:
            peak = max(peak, process.memory_info().rss - start)
    assert count == 899
    assert peak < 100 * 2**20


def test_decoding_twice_gives_identical_frames(shared_videos):
    """decord's threaded decoder failed at random mid-clip on VP9 and the reader switched decoders mid-clip."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    for name in ("bear-vp9-odd-dimensions.webm", "realshort.mp4"):
        info = probe(shared_videos / name)
        runs = [list(read_frames(info)) for _ in range(3)]
        for other in runs[1:]:
            assert all(np.array_equal(a, b) for a, b in zip(runs[0], other)), name


def test_under_reported_count_raises_one_line(shared_videos):
    """The probe counts packets; a clip that decodes more frames than its container lists is refused, not cut."""
    info = probe(shared_videos / "realshort.mp4")
    deflated = dataclasses.replace(info, frame_count=info.frame_count - 2)
    with pytest.raises(InputVideoError, match=r"decodes more frames than the 34 its container lists"):
        for _ in decode.read_frames(deflated):
            pass


@pytest.mark.parametrize("surplus", [3, -2])
def test_edit_clip_keeps_no_output_when_the_count_differs(shared_videos, tmp_path, surplus):
    from vedit_cli.backends.copy import CopyEditor
    from vedit_cli.config import EditConfig, ModelConfig
    from vedit_cli.editing.clip import edit_clip

    info = probe(shared_videos / "realshort.mp4")
    wrong = dataclasses.replace(info, frame_count=info.frame_count + surplus)
    with pytest.raises(InputVideoError) as caught:
        edit_clip(info.path, tmp_path / "out.mp4", CopyEditor(), "", EditConfig(model=ModelConfig(backend="copy")),
                  info=wrong)
    assert "\n" not in str(caught.value) and str(info.path) in str(caught.value)
    assert list(tmp_path.iterdir()) == []
