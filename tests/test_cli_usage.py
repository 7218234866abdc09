"""One exit style for every command, through the real entry point `vedit_cli.cli:main` (sys.argv patched):
usage errors print click's usage line naming the option and exit 2; a VeditError is one line and exit 1; Ctrl-C
exits 130; a bug is "internal error" with the VEDIT_DEBUG hint. An option the backend does not use is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vedit_cli import cli
from vedit_cli.options import BACKEND_NAMES, OPTION_BACKENDS, flag_name

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example.mp4"


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `vedit ARGS` in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["vedit", *map(str, args)])
    monkeypatch.delenv("VEDIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    code = exited.value.code
    return (0 if code is None else code), captured.out, captured.err


def assert_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err
    assert "Usage: " in err or "requires an argument" in err, err
    message = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert message and all(needle in message[0] for needle in needles), err


USAGE_ERRORS = {
    "unknown option": (["edit", "x.mp4", "p", "--bogus"], ["No such option", "--bogus"]),
    "bad integer": (["edit", "x.mp4", "p", "--steps", "abc"], ["'--steps'"]),
    "out of range": (["edit", "x.mp4", "p", "--steps", "0"], ["'--steps'"]),
    "open range": (["edit", "x.mp4", "p", "--backend", "svdiff", "--strength", "0"], ["'--strength'"]),
    "bad choice": (["edit", "x.mp4", "p", "--device", "gpu"], ["'--device'", "cuda"]),
    "bad backend": (["edit", "x.mp4", "p", "--backend", "nope"], ["'--backend'", "svdiff"]),
    "bad codec": (["edit", "x.mp4", "p", "--codec", "h264"], ["'--codec'", "libx264"]),
    "missing value": (["edit", "x.mp4", "p", "--steps"], ["'--steps'", "requires an argument"]),  # no usage line: click's parser
    "missing argument": (["edit"], ["INPUT... PROMPT"]),
    "unknown command": (["edti"], ["No such command", "edit"]),
    "benchmark option": (["benchmark", "--bogus"], ["--bogus"]),
    "benchmark choice": (["benchmark", "--dtype", "float64"], ["'--dtype'"]),
    "benchmark backend": (["benchmark", "--backend", "movie:fast"], ["'--backend'", "movie:student"]),
    "evaluate option": (["evaluate", "x.mp4", "--bogus"], ["--bogus"]),
    "evaluate choice": (["evaluate", "x.mp4", "--device", "tpu"], ["'--device'"]),
    "download option": (["download", "--bogus"], ["--bogus"]),
    "download backend": (["download", "--backend", "nope"], ["'--backend'", "movie"]),
    "download missing": (["download"], ["'NAME...'", "--list"]),
    "evaluate missing": (["evaluate"], ["EDITED", "--manifest"]),
    "train missing": (["train", "pix2pix"], ["Missing"]),
}


@pytest.mark.parametrize("kind", sorted(USAGE_ERRORS))
def test_usage_errors_show_the_usage_line_and_exit_2(kind, monkeypatch, capsys):
    args, needles = USAGE_ERRORS[kind]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert_usage_error(code, err, *needles)


def test_a_user_error_is_one_line_and_exit_1(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "edit", EXAMPLE, "", "--backend", "copy",
                            "-o", tmp_path / "out.mp4", "--output-dir", tmp_path)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and any(line.startswith("vedit: error: ") for line in lines), err
    assert "internal error" not in err and "Usage:" not in err


def test_a_bug_is_an_internal_error_with_the_debug_hint(monkeypatch, capsys):
    def broken(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr("vedit_cli.options.check_options", broken)
    code, _, err = run_main(monkeypatch, capsys, "edit", "x.mp4", "p")
    assert code == 2 and "vedit: internal error: RuntimeError: boom" in err and "VEDIT_DEBUG=1" in err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr("vedit_cli.options.check_options", interrupted)
    code, _, err = run_main(monkeypatch, capsys, "edit", "x.mp4", "p")
    assert code == 130 and "interrupted" in err


# -- options checked against the backend ---------------------------------------------------------------------------

SAMPLE_VALUES = {  # one value per option in vedit_cli.options.OPTION_BACKENDS, as typed on a command line
    "steps": ["2"], "guidance_scale": ["3"], "seed": ["1"], "size": ["64"], "device": ["cpu"],
    "dtype": ["float32"], "weights_dir": ["w"], "allow_download": [], "image_guidance_scale": ["2"],
    "vae": ["tiny"], "movie_mode": ["teacher"], "anchor": [], "keyframe_interval": ["2"], "caption": ["a cat"],
    "controlnet_scale": ["0.5"], "lora_scale": ["0.5"], "window": ["8"], "overlap": ["2"], "chunk_windows": ["2"],
    "strength": ["0.3"], "svdiff_init": ["noise"], "timestep_spacing": ["trailing"],
}
UNUSED = [(option, backend) for option, users in OPTION_BACKENDS.items() for backend in BACKEND_NAMES
          if backend not in users]


def test_the_table_covers_every_model_option_and_every_backend():
    from dataclasses import fields

    from vedit_cli.config import ModelConfig
    from vedit_cli.editor import BACKENDS

    assert set(BACKEND_NAMES) == set(BACKENDS)
    assert {f.name for f in fields(ModelConfig)} - {"backend"} == set(OPTION_BACKENDS)
    assert set(SAMPLE_VALUES) == set(OPTION_BACKENDS)


@pytest.mark.parametrize("option,backend", UNUSED)
def test_an_option_the_backend_does_not_use_is_refused_in_one_line(option, backend, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "edit", "x.mp4", "p", "--backend", backend, flag_name(option),
                            *SAMPLE_VALUES[option])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    users = OPTION_BACKENDS[option]
    assert lines[0].startswith(f"vedit: error: {flag_name(option)} is used by --backend ")
    assert all(user in lines[0] for user in users) and f"not by {backend}" in lines[0]


def test_options_from_the_environment_are_not_refused(monkeypatch, capsys, tmp_path):
    """$VEDIT_WEIGHTS / $VEDIT_ALLOW_DOWNLOAD are set once for every command; copy ignores them silently."""
    monkeypatch.setenv("VEDIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("VEDIT_ALLOW_DOWNLOAD", "1")
    code, out, err = run_main(monkeypatch, capsys, "edit", EXAMPLE, "", "--backend", "copy", "-o",
                              tmp_path / "out.mp4", "--json", "--quiet")
    assert code == 0, err
    assert (tmp_path / "out.mp4").is_file()


def test_help_groups_options_into_panels_and_lists_choices(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "edit", "--help")
    assert code == 0
    for panel in ("Inputs and outputs", "Model", "movie backend", "eve backend", "svdiff backend", "Encoding",
                  "Weights"):
        assert panel in out, panel
    assert "copy|movie|eve|svdiff" in out and "auto|cpu|cuda|mps" in out and "--allow-unsafe-weights" not in out
