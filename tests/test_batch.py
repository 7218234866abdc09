"""Job planning for `vedit edit`: argument split, folders, manifests, default names, collisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vedit_cli.editing.jobs import ClipJob, find_videos, is_vedit_output, plan_jobs, split_arguments
from vedit_cli.errors import ConfigError


def test_last_argument_is_the_prompt():
    assert split_arguments(["a.mp4", "b.mp4", "make it red"], None, None) == (["a.mp4", "b.mp4"], "make it red")


def test_prompt_option_makes_every_argument_an_input():
    assert split_arguments(["a.mp4", "b.mp4"], "x", None) == (["a.mp4", "b.mp4"], "x")


def test_a_single_argument_is_refused_with_usage():
    with pytest.raises(ConfigError, match="INPUT... PROMPT"):
        split_arguments(["a.mp4"], None, None)


def test_single_file_default_output_is_tagged_beside_it(tmp_path):
    clip = tmp_path / "clip.webm"
    clip.write_bytes(b"x")
    [job] = plan_jobs([str(clip)], "p", None, None, None)
    assert job == ClipJob(clip, "p", tmp_path / "clip.vedit.mp4")


def test_folder_is_scanned_recursively_and_mirrored(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/b.MOV", "notes.txt", ".hidden.mp4", "sub/a.vedit.mp4"):
        (tmp_path / "in" / name).write_bytes(b"x")
    jobs = plan_jobs([str(tmp_path / "in")], "p", None, tmp_path / "out", None)
    assert [(j.input_path.relative_to(tmp_path), j.output_path.relative_to(tmp_path)) for j in jobs] == [
        (Path("in/a.mp4"), Path("out/a.vedit.mp4")),
        (Path("in/sub/b.MOV"), Path("out/sub/b.vedit.mp4")),
    ]


def test_folder_default_output_dir_is_a_tagged_sibling_never_rescanned(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    [job] = plan_jobs([str(tmp_path / "in")], "p", None, None, None)
    assert job.output_path == tmp_path / "in.vedit" / "a.vedit.mp4"
    assert is_vedit_output(job.output_path)
    job.output_path.parent.mkdir()
    job.output_path.write_bytes(b"x")
    assert find_videos(tmp_path) == [tmp_path / "in" / "a.mp4"]


def test_csv_and_jsonl_manifests(tmp_path):
    (tmp_path / "m.csv").write_text("input,prompt,output\na.mp4,make it red,\nb.mp4,snow,done/b.mp4\n")
    jobs = plan_jobs([], None, None, None, tmp_path / "m.csv")
    assert jobs == [
        ClipJob(tmp_path / "a.mp4", "make it red", tmp_path / "a.vedit.mp4"),
        ClipJob(tmp_path / "b.mp4", "snow", tmp_path / "done" / "b.mp4"),
    ]
    (tmp_path / "m.jsonl").write_text(json.dumps({"input": "a.mp4", "prompt": "x"}) + "\n\n")
    assert plan_jobs([], None, None, tmp_path / "o", tmp_path / "m.jsonl") == [
        ClipJob(tmp_path / "a.mp4", "x", tmp_path / "o" / "a.vedit.mp4")
    ]


def test_bad_manifests_get_one_clear_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1 is not valid JSON"):
        plan_jobs([], None, None, None, tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("file,prompt\na.mp4,x\n")
    with pytest.raises(ConfigError, match="header row"):
        plan_jobs([], None, None, None, tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        plan_jobs([], None, None, None, tmp_path / "missing.csv")


def test_output_for_many_clips_and_shared_outputs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--output-dir"):
        plan_jobs(["a.mp4", "b.mp4"], "p", Path("o.mp4"), None, None)
    with pytest.raises(ConfigError, match="would both be written"):
        plan_jobs([str(tmp_path / "x" / "a.mp4"), str(tmp_path / "y" / "a.mp4")], "p", None, tmp_path / "o", None)
