"""`vedit edit` through the real CLI: single clips, batches, resume, and one clear line for every bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import run_vedit
from vedit_cli.io.probe import probe

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example.mp4"


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _assert_one_line_error(result, *needles: str) -> None:
    assert result.code != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert any(all(needle in line for needle in needles) for line in lines), result.stderr


@pytest.fixture
def clip(tmp_path) -> Path:
    target = tmp_path / "in" / "clip.mp4"
    target.parent.mkdir()
    shutil.copy(EXAMPLE, target)
    return target


def test_copy_backend_keeps_frames_rate_size_and_audio(clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_vedit("edit", clip, "", "--backend", "copy", "-o", out, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["summary"] == {"ok": 1, "skipped": 0, "failed": 0}
    source, edited = probe(clip), probe(out)
    assert (edited.frame_count, edited.fps, edited.width, edited.height) == (
        source.frame_count, source.fps, source.width, source.height)
    assert edited.has_audio and source.has_audio
    assert summary["clips"][0]["frames"] == source.frame_count
    assert summary["clips"][0]["editor"].startswith("copy")


def test_rerun_skips_finished_outputs_and_overwrite_redoes_them(clip, tmp_path):
    out = tmp_path / "out.mp4"
    assert run_vedit("edit", clip, "", "--backend", "copy", "-o", out).code == 0
    stamp = out.stat().st_mtime_ns
    again = run_vedit("edit", clip, "", "--backend", "copy", "-o", out, "--json")
    assert again.code == 0 and again.json()["summary"]["skipped"] == 1
    assert out.stat().st_mtime_ns == stamp
    redo = run_vedit("edit", clip, "", "--backend", "copy", "-o", out, "--overwrite", "--json")
    assert redo.json()["summary"]["ok"] == 1


def test_a_batch_survives_bad_files_and_reports_them(clip, tmp_path):
    folder = clip.parent
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video\n")
    result = run_vedit("edit", folder, "", "--backend", "copy", "--output-dir", tmp_path / "edited", "--json")
    assert result.code == 1
    by_name = {Path(c["input"]).name: c for c in result.json()["clips"]}
    assert by_name["clip.mp4"]["status"] == "ok"
    assert (tmp_path / "edited" / "clip.vedit.mp4").is_file()
    for bad in ("empty.mp4", "notes.mp4"):
        assert by_name[bad]["status"] == "failed" and bad in by_name[bad]["error"]
        assert not (tmp_path / "edited" / bad.replace(".mp4", ".vedit.mp4")).exists()
    assert sorted(p.name for p in (tmp_path / "edited").iterdir()) == ["clip.vedit.mp4"]


def _truncated(clip: Path, target: Path) -> Path:
    data = clip.read_bytes()
    target.write_bytes(data[: len(data) // 3])
    return target


def _audio_only(target: Path) -> Path:
    subprocess.run([_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac",
                    str(target)], check=True)
    return target


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated", "audio_only"])
def test_every_bad_input_gets_one_line_and_no_output(kind, clip, tmp_path):
    bad = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("hello\n")
    elif kind == "truncated":
        _truncated(clip, bad)
    elif kind == "audio_only":
        _audio_only(bad.with_suffix(".m4a"))
        bad = bad.with_suffix(".m4a")
    out = tmp_path / "out.mp4"
    result = run_vedit("edit", bad, "", "--backend", "copy", "-o", out)
    _assert_one_line_error(result, bad.name)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_output_equal_to_input_is_refused(clip):
    before = clip.read_bytes()
    result = run_vedit("edit", clip, "", "--backend", "copy", "-o", clip, "--overwrite")
    _assert_one_line_error(result, clip.name)
    assert clip.read_bytes() == before


def test_unwritable_output_directory(clip, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be\n")  # unwritable even for root
    result = run_vedit("edit", clip, "", "--backend", "copy", "-o", blocker / "sub" / "out.mp4")
    _assert_one_line_error(result, "blocker")


def test_empty_prompt_for_a_model_backend_is_refused(clip, tmp_path):
    result = run_vedit("edit", clip, "  ", "--backend", "movie", "-o", tmp_path / "o.mp4")
    _assert_one_line_error(result, "prompt")


def test_missing_weights_name_the_download_command(clip, tmp_path):
    result = run_vedit("edit", clip, "make it red", "--backend", "movie", "--weights-dir", tmp_path / "none",
                       "-o", tmp_path / "o.mp4")
    _assert_one_line_error(result, "vedit download")
    assert not (tmp_path / "o.mp4").exists()


def test_usage_errors_are_one_line(clip):
    _assert_one_line_error(run_vedit("edit", clip), "PROMPT")
    _assert_one_line_error(run_vedit("edit", clip, "x", "--backend", "nope"), "nope")
    _assert_one_line_error(run_vedit("edit", clip, "x", "--steps", "0"), "--steps")


def test_quiet_prints_nothing_on_success_and_debug_shows_the_traceback(clip, tmp_path):
    quiet = run_vedit("edit", clip, "", "--backend", "copy", "-o", tmp_path / "q.mp4", "--quiet")
    assert quiet.code == 0 and quiet.stdout == "" and quiet.stderr.strip() == ""
    debug = run_vedit("edit", tmp_path / "missing.mp4", "", "--backend", "copy", "-o", tmp_path / "d.mp4",
                      env={"VEDIT_DEBUG": "1"})
    assert debug.code != 0 and "Traceback" in debug.stderr and "InputVideoError" in debug.stderr


def test_manifest_gives_each_clip_its_prompt_and_output(clip, tmp_path):
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"input,prompt,output\n{clip},,a.mp4\n{clip},,sub/b.mp4\n")
    result = run_vedit("edit", "--manifest", manifest, "--backend", "copy", "--json")
    assert result.code == 0, result.stderr
    assert [c["status"] for c in result.json()["clips"]] == ["ok", "ok"]
    assert (tmp_path / "a.mp4").is_file() and (tmp_path / "sub" / "b.mp4").is_file()


def test_ctrl_c_leaves_no_file_no_temp_and_no_ffmpeg(shared_videos, tmp_path):
    import os
    import signal
    import sys
    import time

    out_dir = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "vedit_cli", "edit", str(shared_videos / "chrome.webm"), "", "--backend", "copy",
         "--preset", "veryslow", "-o", str(out_dir / "chrome.mp4")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (out_dir.is_dir() and any(out_dir.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until the encoder is writing its temporary file
    assert process.poll() is None, "the edit finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []
    assert _session_processes(process.pid) == []  # ffmpeg encoders and decoders of that session are gone


def _session_processes(session_id: int) -> list[int]:
    import os

    import psutil

    alive = []
    for candidate in psutil.pids():
        try:
            if os.getsid(candidate) == session_id:
                alive.append(candidate)
        except (ProcessLookupError, PermissionError):
            continue
    return alive
