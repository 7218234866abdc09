"""probe(): MANIFEST facts for every real clip, exact frame rates, and one-line errors for bad inputs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from tests.io_media import MANIFEST, VFR_FPS_TOLERANCE, make_clip
from vedit_cli.errors import InputVideoError
from vedit_cli.io.decode import read_frames
from vedit_cli.io.ffmpeg import run_ffmpeg
from vedit_cli.io.probe import probe
from vedit_cli.io.timing import frame_rate_from_timestamps


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_probe_matches_manifest(shared_videos, name):
    facts = MANIFEST[name]
    info = probe(shared_videos / name)
    assert info.frame_count == facts.frames
    assert (info.width, info.height) == facts.size
    assert info.rotation == facts.rotation
    assert info.audio_codec == facts.audio and info.has_audio == (facts.audio is not None)
    assert info.is_cfr == facts.cfr
    if facts.cfr:
        assert info.fps == facts.fps
    else:
        assert float(info.fps) == pytest.approx(float(facts.fps), rel=VFR_FPS_TOLERANCE)
    assert info.duration == pytest.approx(info.frame_count / float(info.fps))


def test_probe_reads_colour_and_depth(shared_videos):
    pq = probe(shared_videos / "hdr10-video-with-sdr-container.mp4")
    hlg = probe(shared_videos / "dolbyVision-hdr.MOV")
    ten_bit_sdr = probe(shared_videos / "roadtrip-vp92-10bit.webm")
    plain = probe(shared_videos / "realshort.mp4")
    assert (pq.color_transfer, pq.is_hdr, pq.bit_depth, pq.codec) == ("smpte2084", True, 10, "hevc")
    assert (hlg.color_transfer, hlg.is_hdr, (hlg.coded_width, hlg.coded_height)) == ("arib-std-b67", True, (1280, 720))
    assert (ten_bit_sdr.is_hdr, ten_bit_sdr.bit_depth, ten_bit_sdr.pixel_format) == (False, 10, "yuv420p10le")
    assert (plain.is_hdr, plain.bit_depth, plain.codec, plain.container) == (False, 8, "h264", "mov,mp4,m4a,3gp,3g2,mj2")


def test_probe_counts_frames_that_decode_not_packets(shared_videos):
    """VP9 hidden frames and an edit list make the packet count exceed the decoded frames (80 vs 72, 5 vs 4)."""
    for name, decoded in (("roadtrip-vp92-10bit.webm", 72), ("dolbyVision-hdr.MOV", 4)):
        packets = run_ffmpeg(["-v", "error", "-i", str(shared_videos / name), "-map", "0:v:0", "-c", "copy",
                              "-f", "framecrc", "-"]).stdout
        packet_count = sum(1 for line in packets.splitlines() if line and not line.startswith("#"))
        assert packet_count > decoded == probe(shared_videos / name).frame_count


def test_probe_exact_ntsc_rate_of_a_synthetic_clip(tmp_path):
    info = probe(make_clip(tmp_path / "ntsc.mp4", seconds=1.0, rate="30000/1001"))
    assert info.fps == Fraction(30000, 1001) and info.frame_count == 30 and info.has_audio


def test_frame_rate_exact_snapped_and_variable():
    assert frame_rate_from_timestamps([0, 2998, 5996], Fraction(1, 90000), None) == (Fraction(45000, 1499), True)
    ntsc_in_ms = [round(i * 1001 / 30) for i in range(100)]  # WebM's 1 ms time base rounds 33.367 ms
    assert frame_rate_from_timestamps(ntsc_in_ms, Fraction(1, 1000), None) == (Fraction(30000, 1001), True)
    assert frame_rate_from_timestamps([0, 5, 7, 9, 13], Fraction(1, 100), None) == (Fraction(400, 13), False)
    assert frame_rate_from_timestamps([0], Fraction(1, 1000), Fraction(24)) == (Fraction(24), True)


# ---- bad inputs: each one line naming the file, what is wrong, what to do
def _probe_error(path: Path) -> str:
    with pytest.raises(InputVideoError) as caught:
        probe(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    assert "not found" in _probe_error(tmp_path / "nope.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in _probe_error(tmp_path / "empty.mp4")


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    assert "not a readable video" in _probe_error(tmp_path / "notes.mp4")


def test_truncated_mp4_without_index(shared_videos, tmp_path):
    data = (shared_videos / "realshort.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # the moov index sits at the end: it is lost
    assert "not a readable video" in _probe_error(tmp_path / "cut.mp4")


@pytest.mark.parametrize("name", ["realshort.mp4", "flipping_a_pancake.mkv", "chrome.webm", "pigs_in_a_polka.gif"])
def test_truncated_files_whose_start_still_decodes_are_refused(shared_videos, tmp_path, name):
    """A faststart MP4, MKV, WebM or GIF cut short decodes its first frames: refuse rather than edit part of it.
    The probe reads no frame, so a cut GIF (whose demuxer does not notice) is refused by the decoder instead."""
    source = shared_videos / name
    if name.endswith(".mp4"):
        source = tmp_path / "faststart.mp4"
        run_ffmpeg(["-v", "error", "-i", str(shared_videos / name), "-c", "copy", "-movflags", "+faststart",
                    str(source)])
    data = source.read_bytes()
    cut = tmp_path / f"cut{source.suffix}"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated or damaged" in _probe_or_decode_error(cut)


def _probe_or_decode_error(path: Path) -> str:
    with pytest.raises(InputVideoError) as caught:
        for _ in read_frames(probe(path)):
            pass
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_index_without_frame_data_has_zero_frames(shared_videos, tmp_path):
    faststart = tmp_path / "faststart.mp4"
    run_ffmpeg(["-v", "error", "-i", str(shared_videos / "realshort.mp4"), "-c", "copy",
                "-movflags", "+faststart", str(faststart)])
    data = faststart.read_bytes()
    (tmp_path / "no_frames.mp4").write_bytes(data[: data.index(b"mdat") + 30])
    assert "no decodable frames" in _probe_error(tmp_path / "no_frames.mp4")


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.mp4"
    run_ffmpeg(["-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path)])
    assert "no video stream (audio only)" in _probe_error(path)


def test_folder_is_not_a_video(tmp_path):
    assert "is not a file" in _probe_error(tmp_path)


def test_committed_example_clip():
    """examples/example.mp4 (examples/make_example_clip.py): 3 s of 320x240 at 30000/1001 fps with AAC audio."""
    info = probe(Path(__file__).resolve().parents[1] / "examples" / "example.mp4")
    assert (info.width, info.height, info.fps, info.frame_count, info.audio_codec) == (
        320, 240, Fraction(30000, 1001), 90, "aac")


def test_probe_reads_container_facts_and_never_decodes(shared_videos, monkeypatch):
    """One ffmpeg run copying packets (no decoder) for H.264; VP9 adds one more copy run to merge hidden frames."""
    import vedit_cli.io.probe as probe_module

    runs = []

    def recording_run(args, timeout=None):
        runs.append(args)
        return run_ffmpeg(args, timeout)

    monkeypatch.setattr(probe_module, "run_ffmpeg", recording_run)
    for name, expected_runs in (("realshort.mp4", 1), ("flipping_a_pancake.mkv", 1), ("roadtrip-vp92-10bit.webm", 2)):
        runs.clear()
        info = probe(shared_videos / name)
        assert info.frame_count == MANIFEST[name].frames
        assert len(runs) == expected_runs
        assert all(args[args.index("-c:v") + 1] == "copy" and "wrapped_avframe" not in args for args in runs)


def test_constant_frame_duration_that_spans_the_clip_is_cfr():
    """An edit list reorders packet timestamps (0, 40, 41, 60 at 1/600) but every frame still lasts 20 ticks."""
    assert frame_rate_from_timestamps([0, 40, 41, 60], Fraction(1, 600), None, [20] * 4) == (Fraction(30), True)
    assert frame_rate_from_timestamps([0, 40, 41, 70], Fraction(1, 600), None, [20] * 4)[1] is False


@pytest.mark.parametrize("name, extra", [("mpeg2.ts", ("-c:v", "mpeg2video")), ("h264.ts", ()),
                                         ("mpeg4.mkv", ("-c:v", "mpeg4"))])
def test_probe_decodes_to_count_where_packets_may_not_be_frames(tmp_path, name, extra):
    """Field pictures (MPEG-TS) and packed B-frames (MPEG-4 part 2): the frames are decoded and counted instead."""
    info = probe(make_clip(tmp_path / name, seconds=1.0, rate="25", extra=extra))
    assert (info.frame_count, info.fps) == (25, Fraction(25))
    assert sum(1 for _ in read_frames(info)) == 25
