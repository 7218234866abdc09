"""`vedit evaluate` through the real entry point: --json, the table, thresholds as exit codes, user errors."""

from __future__ import annotations

import json
import sys

import pytest

from tests.test_metrics_evaluation import write_frames
from tests.test_metrics_temporal import smooth_texture, translated_clip, with_flicker


def run_vedit(monkeypatch, capsys, *arguments):
    """cli.main as a user runs it; returns (exit code, stdout, stderr)."""
    from vedit_cli import cli

    monkeypatch.setattr(sys, "argv", ["vedit", "evaluate", *map(str, arguments)])
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_clips")
    source = translated_clip(smooth_texture(0), frames=4)
    edited = translated_clip(smooth_texture(1), frames=4)
    return {
        "source": write_frames(root / "source", source),
        "edited": write_frames(root / "edited", edited),
        "flickering": write_frames(root / "flickering", with_flicker(edited, 16)),
    }


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    from tests import tiny

    root = tmp_path_factory.mktemp("cli_weights")
    tiny.save_tiny_clip(root / "clip-vit-large-patch14", seed=0)
    tiny.save_tiny_clip(root / "pickscore", seed=1, processor_subfolder="processor")
    return root


def test_json_report_of_one_clip(monkeypatch, capsys, clips, clip_weights):
    code, out, _ = run_vedit(monkeypatch, capsys, clips["edited"], "--source", clips["source"], "--caption", "a red texture",
                             "--source-caption", "a texture", "--weights-dir", clip_weights, "--json")
    assert code == 0
    report = json.loads(out)
    (clip,) = report["clips"]
    assert set(clip["metrics"]) == {"warp_error", "flicker", "clip_frame", "clip_text", "clip_direction", "pick_score"}
    assert "all ordered frame pairs" in report["conventions"]["clip_frame"].lower()
    assert report["threshold_failures"] == [] and report["errors"] == []


def test_thresholds_exit_1_with_one_line_per_failing_clip(monkeypatch, capsys, clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"name,edited,source\nsteady,{clips['edited']},{clips['source']}\nshaky,{clips['flickering']},{clips['source']}\n")
    code, out, err = run_vedit(monkeypatch, capsys, "--manifest", manifest, "--metrics", "warp_error,flicker",
                               "--max", "warp_error=0.01", "--max", "flicker=100", "--json")
    assert code == 1
    failing = [line for line in err.splitlines() if line.startswith("vedit: evaluate:")]
    assert len(failing) == 1 and "shaky: warp_error" in failing[0] and "> max 0.01" in failing[0]
    assert len(json.loads(out)["clips"]) == 2


def test_passing_thresholds_exit_0_and_print_a_table(monkeypatch, capsys, clips):
    code, out, _ = run_vedit(monkeypatch, capsys, clips["edited"], "--source", clips["source"], "--metrics",
                             "warp_error,flicker", "--max", "warp_error=0.01")
    assert code == 0
    assert "warp_error" in out and "E_warp" in out


def test_a_bad_clip_in_a_batch_is_reported_and_the_rest_go_on(monkeypatch, capsys, clips, tmp_path):
    manifest = tmp_path / "m.jsonl"
    rows = [{"edited": str(tmp_path / "missing.mp4")}, {"edited": str(clips["edited"])}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    code, out, err = run_vedit(monkeypatch, capsys, "--manifest", manifest, "--metrics", "flicker", "--json")
    assert code == 1
    report = json.loads(out)
    assert "no such file" in report["clips"][0]["error"] and "flicker" in report["clips"][1]["metrics"]
    assert "missing" in err


def test_no_clip_to_evaluate_is_a_usage_error(monkeypatch, capsys):
    code, _, err = run_vedit(monkeypatch, capsys)
    assert code == 2 and "Usage:" in err and "exactly one of EDITED, --manifest or --tgve" in err


@pytest.mark.parametrize("arguments, message", [
    (("--min", "clip_frame"), "METRIC=VALUE"),
    (("--metrics", "flicker", "--tgve", "."), "--tgve needs --tgve-prompts"),
])
def test_user_errors_are_one_line_and_exit_1(monkeypatch, capsys, clips, arguments, message):
    if arguments and arguments[0] == "--min":
        arguments = (clips["edited"], *arguments)
    code, _, err = run_vedit(monkeypatch, capsys, *arguments)
    assert code == 1
    assert err.strip().startswith("vedit: error:") and message in err and len(err.strip().splitlines()) == 1


def test_missing_weights_asked_for_explicitly_stop_with_the_download_command(monkeypatch, capsys, clips, tmp_path):
    code, _, err = run_vedit(monkeypatch, capsys, clips["edited"], "--caption", "x", "--metrics", "clip_text",
                             "--weights-dir", tmp_path)
    assert code == 1 and "vedit download clip-vit-large-patch14" in err


def test_tgve_mode_on_the_shared_benchmark_files(monkeypatch, capsys, clips, tmp_path, shared_videos):
    import shutil

    shutil.copytree(clips["edited"], tmp_path / "submission" / "DAVIS_480p" / "gold-fish" / "style")
    code, out, _ = run_vedit(monkeypatch, capsys, "--tgve", tmp_path / "submission", "--tgve-prompts",
                             shared_videos / "tgve" / "configs", "--metrics", "flicker", "--json")
    assert code == 0
    (clip,) = json.loads(out)["clips"]
    assert clip["name"] == "gold-fish/style" and clip["text"] == "Several goldfish swim in a tank, impressionist style."
