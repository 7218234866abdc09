"""evaluate_clip over frame folders with tiny CLIP weights; manifests, TGVE prompt files, thresholds."""

from __future__ import annotations

import json

import pytest

from vedit_cli.errors import EvaluationError, InputVideoError
from vedit_cli.metrics.evaluation import evaluate_clip
from vedit_cli.metrics.report import build_report, parse_thresholds, threshold_failures
from tests.test_metrics_temporal import smooth_texture, translated_clip, with_flicker


def write_frames(folder, frames):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    source = translated_clip(smooth_texture(0), frames=5)
    edited = translated_clip(smooth_texture(1), frames=5)
    return {
        "source": write_frames(root / "source", source),
        "edited": write_frames(root / "edited", edited),
        "flickering": write_frames(root / "flickering", with_flicker(edited, 16)),
        "short": write_frames(root / "short", edited[:3]),
    }


def test_all_metrics_of_one_clip_from_frame_folders(clips, clip_weights):
    from vedit_cli.metrics.clip_models import load_clip, load_pickscore
    from vedit_cli.metrics.clip_scores import clip_frame_consistency, text_frame_score
    from vedit_cli.metrics.frames import iter_frames

    result = evaluate_clip(clips["edited"], clips["source"], prompt="make it red", caption="a red texture",
                           source_caption="a texture", weights_dir=clip_weights)
    values = result["metrics"]
    assert set(values) == {"warp_error", "flicker", "clip_frame", "clip_text", "clip_direction", "pick_score"}
    assert set(result["unavailable"]) == {"viclip_direction", "viclip_output"}
    assert result["frames"] == 5 and result["text_from"] == "caption"
    assert values["warp_error"] < 2e-4
    frames = list(iter_frames(clips["edited"]))
    clip = load_clip(clip_weights, "cpu", 480)
    assert values["clip_frame"] == pytest.approx(clip_frame_consistency(clip.embed_images(frames)), rel=1e-6)
    assert values["clip_text"] == pytest.approx(
        text_frame_score(clip.embed_images(frames), clip.embed_text("a red texture"), clip.logit_scale), rel=1e-6)
    pick = load_pickscore(clip_weights, "cpu", 480)
    assert values["pick_score"] == pytest.approx(
        text_frame_score(pick.embed_images(frames), pick.embed_text("a red texture"), pick.logit_scale), rel=1e-6)


def test_batches_do_not_change_the_scores(clips, clip_weights):
    from vedit_cli.config import EvaluateConfig

    whole = evaluate_clip(clips["edited"], prompt="x", metrics=["clip_frame", "pick_score"], weights_dir=clip_weights)
    batched = evaluate_clip(clips["edited"], prompt="x", metrics=["clip_frame", "pick_score"], weights_dir=clip_weights,
                            config=EvaluateConfig(batch_size=2))
    for metric in ("clip_frame", "pick_score"):
        assert batched["metrics"][metric] == pytest.approx(whole["metrics"][metric], rel=1e-4)


def test_flickering_edit_scores_worse_on_the_temporal_metrics(clips):
    steady = evaluate_clip(clips["edited"], clips["source"], metrics=["warp_error", "flicker"])
    shaky = evaluate_clip(clips["flickering"], clips["source"], metrics=["warp_error", "flicker"])
    assert shaky["metrics"]["warp_error"] > 100 * steady["metrics"]["warp_error"]
    assert shaky["metrics"]["flicker"] > steady["metrics"]["flicker"]


def test_default_run_reports_what_it_cannot_compute_and_why(clips, tmp_path):
    result = evaluate_clip(clips["edited"], weights_dir=tmp_path)  # no source, no text, no weights
    assert set(result["metrics"]) == {"flicker"}
    assert "source" in result["unavailable"]["warp_error"]
    assert "--caption" in result["unavailable"]["clip_text"]
    assert "vedit download clip-vit-large-patch14" in result["unavailable"]["clip_frame"]
    assert "trust_remote_code" in result["unavailable"]["viclip_output"]


def test_explicitly_asked_metrics_fail_loudly(clips, tmp_path):
    from vedit_cli.errors import WeightsMissingError

    with pytest.raises(EvaluationError, match="warp_error cannot be computed"):
        evaluate_clip(clips["edited"], metrics=["warp_error"])
    with pytest.raises(WeightsMissingError):
        evaluate_clip(clips["edited"], metrics=["clip_frame"], weights_dir=tmp_path)
    with pytest.raises(EvaluationError, match="unknown metric"):
        evaluate_clip(clips["edited"], metrics=["fvd"])


def test_frame_count_mismatch_and_missing_inputs_are_user_errors(clips, tmp_path):
    with pytest.raises(EvaluationError, match="differ in length"):
        evaluate_clip(clips["short"], clips["source"], metrics=["warp_error"])
    with pytest.raises(InputVideoError, match="no such file"):
        evaluate_clip(tmp_path / "nope.mp4", metrics=["flicker"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputVideoError, match="holds no frames"):
        evaluate_clip(tmp_path / "empty", metrics=["flicker"])


# ---- thresholds and report ---------------------------------------------------------------------------------------

def fake_result(name, **values):
    return {"name": name, "metrics": values, "unavailable": {"pick_score": "no weights"}}


def test_thresholds_fail_each_clip_that_misses_a_bound():
    thresholds = parse_thresholds(["clip_frame=0.9"], ["warp_error=0.01"])
    results = [fake_result("good", clip_frame=0.95, warp_error=0.001), fake_result("bad", clip_frame=0.8, warp_error=0.02)]
    failures = threshold_failures(results, thresholds)
    assert failures == ["bad: clip_frame 0.8 < min 0.9", "bad: warp_error 0.02 > max 0.01"]
    assert "unavailable (no weights)" in threshold_failures(results, parse_thresholds(["pick_score=20"], []))[0]


@pytest.mark.parametrize("text", ["clip_frame", "clip_frame=abc", "fvd=1", "clip_frame=nan"])
def test_malformed_thresholds_are_evaluation_errors(text):
    with pytest.raises(EvaluationError):
        parse_thresholds([text], [])


def test_report_means_and_conventions():
    report = build_report([fake_result("a", flicker=2.0), fake_result("b", flicker=4.0, clip_frame=0.9)], [])
    assert report["mean"]["flicker"] == {"mean": 3.0, "clips": 2}
    assert report["mean"]["clip_frame"] == {"mean": 0.9, "clips": 1}
    assert "ALL ordered frame pairs" in report["conventions"]["clip_frame"]
    assert "x100" in report["conventions"]["pick_score"]


# ---- manifests and TGVE files ------------------------------------------------------------------------------------

def test_csv_and_jsonl_manifests_resolve_paths_next_to_the_manifest(tmp_path):
    from vedit_cli.metrics.manifest import read_manifest

    (tmp_path / "m.csv").write_text("edited,source,caption,source_caption\nout/a.mp4,in/a.mp4,a red car,a car\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"output": "/abs/b.mp4", "instruction": "make it red"}) + "\n\n")
    first = read_manifest(tmp_path / "m.csv")[0]
    assert first.edited == tmp_path / "out/a.mp4" and first.source == tmp_path / "in/a.mp4"
    assert (first.caption, first.source_caption, first.prompt) == ("a red car", "a car", None)
    second = read_manifest(tmp_path / "m.jsonl")[0]
    assert str(second.edited) == "/abs/b.mp4" and second.prompt == "make it red" and second.source is None
    (tmp_path / "bad.csv").write_text("edited,colour\nx.mp4,red\n")
    with pytest.raises(EvaluationError, match="unknown column"):
        read_manifest(tmp_path / "bad.csv")


def test_tgve_prompt_files_agree_and_merge(shared_videos):
    from vedit_cli.metrics.tgve import read_tgve_prompts

    tgve = shared_videos / "tgve"
    from_configs = read_tgve_prompts([tgve / "configs"])
    from_csv = read_tgve_prompts([tgve / "tgve_prompts_from_configs.csv"])
    assert len(from_configs) == len(from_csv) == 76
    assert from_configs["gold-fish"].edited_captions == from_csv["gold-fish"].edited_captions
    assert from_configs["gold-fish"].caption == "Several goldfish swim in a tank."
    merged = read_tgve_prompts([tgve / "tgve_prompts_from_configs.csv", tgve / "loveu_tgve_edit_prompt_dict.json"])
    assert merged["gold-fish"].instructions["object"] == "change goldfish to sharks."
    assert merged["gold-fish"].edited_captions["object"] == "Several sharks swim in a tank."


def test_tgve_submission_layouts_are_found(tmp_path, shared_videos, clips):
    import shutil

    from vedit_cli.metrics.tgve import read_tgve_prompts, tgve_clips

    videos = read_tgve_prompts([shared_videos / "tgve" / "tgve_prompts_from_configs.csv"])
    submission = tmp_path / "submission"
    shutil.copytree(clips["edited"], submission / "DAVIS_480p" / "gold-fish" / "style")  # official layout
    (submission / "miami-surf").mkdir(parents=True)
    (submission / "miami-surf" / "object.mp4").write_bytes(b"")  # flat layout
    found = {c.name: c for c in tgve_clips(submission, videos, shared_videos / "tgve" / "videos")}
    assert set(found) == {"gold-fish/style", "miami-surf/object"}
    assert found["gold-fish/style"].caption == "Several goldfish swim in a tank, impressionist style."
    assert found["gold-fish/style"].source == shared_videos / "tgve" / "videos" / "gold-fish.mp4"
    assert found["gold-fish/style"].source_caption == "Several goldfish swim in a tank."
