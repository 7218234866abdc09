"""vedit benchmark command: --json schema, rows and ratios, --compare regressions and exit codes (tiny models only)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from vedit_cli import editor as base
from vedit_cli.benchmark.compare import BenchmarkRegressionError, Regression, find_regressions
from vedit_cli.commands import benchmark
from vedit_cli.errors import ConfigError

FAKE = "tests.test_benchmark:TinyStagesEditor"
FAST = ["--size", "64", "--frames", "2", "--repeats", "1", "--warmup", "0", "--dtype", "float32", "--random-weights"]


@pytest.fixture
def app(monkeypatch) -> typer.Typer:
    monkeypatch.setitem(base.BACKENDS, "tiny", FAKE)
    app = typer.Typer()
    app.callback()(lambda: None)  # keep `benchmark` a named sub-command, as in the real CLI
    benchmark.register(app)
    return app


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(app, *args: str):
    return CliRunner().invoke(app, ["benchmark", *args], env={"COLUMNS": "250"})


def test_json_report_has_the_schema_ci_reads(app):
    result = invoke(app, "--backend", "tiny", "--no-reference", "--json", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "vedit-benchmark/1" and report["skipped"] == []
    assert {"size": 64, "frames": 2, "repeats": 1, "device": "cpu", "dtype": "float32"}.items() <= report["settings"].items()
    (row,) = report["rows"]
    assert row["name"] == "tiny" and row["reference"] is False
    assert set(row["flops"]["per_frame"]) == {"encode", "unet", "decode", "other"}
    assert row["flops"]["per_frame_total"] == sum(row["flops"]["per_frame"].values())
    assert row["flops"]["per_frame_with_text"] == row["flops"]["per_frame_total"] + row["flops"]["per_clip_total"] / 2
    assert 0 < row["flops"]["unet_share"] < 1 and row["passes_per_frame"]["unet"] == 4
    assert row["params"]["total"] == sum(v for k, v in row["params"].items() if k != "total")
    timing = row["time"]
    assert timing["per_frame_s"]["samples"] == 2 and timing["frames_per_second"] == pytest.approx(1 / timing["per_frame_s"]["median"])
    assert set(timing["stages_per_frame_s"]) == {"encode", "unet", "decode"}
    assert row["memory"]["host_peak_rss_bytes"] > 0
    assert row["speedup_vs_reference"] is None  # no reference row in this run


def test_reference_row_gives_each_backend_its_speed_up(app, tiny_weights):
    result = invoke(app, "--backend", "tiny", "--weights-dir", str(tiny_weights), "--json", "--reference-steps", "2",
                    *[a for a in FAST if a != "--random-weights"])
    assert result.exit_code == 0, result.output
    reference, tiny = json.loads(result.stdout)["rows"]
    assert reference["reference"] and reference["passes_per_frame"]["unet"] == 6  # 2 steps x 3 passes
    assert set(reference["flops"]["per_clip"]) == {"text_encoder", "other"}
    assert tiny["speedup_vs_reference"] == pytest.approx(
        reference["time"]["per_frame_s"]["median"] / tiny["time"]["per_frame_s"]["median"])
    assert tiny["flops_ratio_vs_reference"] == pytest.approx(
        reference["flops"]["per_frame_total"] / tiny["flops"]["per_frame_total"])


def test_human_tables_name_every_row_and_stage(app):
    result = invoke(app, "--backend", "tiny", "--no-reference", *FAST)
    assert result.exit_code == 0, result.output
    for text in ("tiny", "FLOPs/frame", "text_encoder (clip)", "unet", "decode", "speed-up"):
        assert text in result.stdout


def _write_flops_report(app, tmp_path, name="previous.json"):
    result = invoke(app, "--backend", "tiny", "--no-reference", "--flops-only", "--json", *FAST)
    assert result.exit_code == 0, result.output
    path = tmp_path / name
    path.write_text(result.stdout)
    return path, json.loads(result.stdout)


def test_compare_passes_against_itself_and_fails_on_a_regression(app, tmp_path):
    previous, report = _write_flops_report(app, tmp_path)
    same = invoke(app, "--backend", "tiny", "--no-reference", "--flops-only", "--compare", str(previous), *FAST)
    assert same.exit_code == 0, same.output
    report["rows"][0]["flops"]["per_frame_total"] /= 2  # the previous run was twice as cheap: now a regression
    previous.write_text(json.dumps(report))
    worse = invoke(app, "--backend", "tiny", "--no-reference", "--flops-only", "--compare", str(previous), *FAST)
    assert worse.exit_code == 1
    assert isinstance(worse.exception, BenchmarkRegressionError) and "tiny FLOPs/frame" in str(worse.exception)


def test_compare_refuses_a_run_with_other_settings_or_a_non_report(app, tmp_path):
    previous, _ = _write_flops_report(app, tmp_path)
    other_size = invoke(app, "--backend", "tiny", "--no-reference", "--flops-only", "--compare", str(previous),
                        *FAST, "--size", "128")
    assert isinstance(other_size.exception, ConfigError) and "size: 64 -> 128" in str(other_size.exception)
    junk = tmp_path / "junk.json"
    junk.write_text('{"rows": []}')
    refused = invoke(app, "--backend", "tiny", "--compare", str(junk), *FAST)
    assert isinstance(refused.exception, ConfigError) and "vedit-benchmark/1" in str(refused.exception)


def test_regressions_are_judged_in_the_direction_that_hurts():
    def report(seconds: float, speedup: float) -> dict:
        return {"rows": [{"name": "movie:student", "time": {"per_frame_s": {"median": seconds}},
                          "speedup_vs_reference": speedup, "flops": {"per_frame_total": 1.0}}]}

    assert find_regressions(report(1.0, 30.0), report(0.5, 60.0), 0.1) == []  # faster: fine
    assert find_regressions(report(1.0, 30.0), report(1.05, 29.0), 0.1) == []  # within the threshold
    found = find_regressions(report(1.0, 30.0), report(1.5, 20.0), 0.1)
    assert found == [Regression("movie:student", "s/frame", 1.0, 1.5),
                     Regression("movie:student", "speed-up vs reference", 30.0, 20.0)]


def test_unknown_backend_and_bad_options_are_usage_errors(app):
    """Refused by the parser, before the reference is built: the usage line naming the option, exit 2."""
    unknown = invoke(app, "--backend", "tiny", "--backend", "nope", *FAST)
    assert unknown.exit_code == 2 and "'--backend'" in unknown.output and "'nope'" in unknown.output
    bad_mode = invoke(app, "--backend", "tiny:student", *FAST)
    assert bad_mode.exit_code == 2 and "'tiny:student'" in bad_mode.output
    zero = invoke(app, "--backend", "tiny", "--frames", "0")
    assert zero.exit_code == 2 and "'--frames'" in zero.output
