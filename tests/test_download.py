"""End to end: `vedit download` against a loopback fake hub (tests/hub_server.py), real huggingface_hub code.

Each run is a subprocess because huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE when it is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.hub_server import FakeRepo, HubState, serve

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "diffusion_pytorch_model.safetensors"

DRIVER = textwrap.dedent('''
    import json, sys
    from vedit_cli.weights.registry import HubSource, WeightsEntry, register
    spec = json.loads(sys.argv[1])
    extra = tuple(HubSource(**source) for source in spec.pop("extra_sources", []))
    register(WeightsEntry(**{key: tuple(v) if isinstance(v, list) else v for key, v in spec.items()},
                          extra_sources=extra))
    if sys.argv[2] == "ensure":
        import os
        from vedit_cli.weights.hub import ensure_entries
        from vedit_cli.errors import VeditError
        try:
            found = ensure_entries([spec["name"]], sys.argv[3], allow_download=os.environ.get("VEDIT_ALLOW_DOWNLOAD") == "1")
        except VeditError as error:
            print(f"vedit: error: {error}", file=sys.stderr); sys.exit(1)
        print(json.dumps({name: str(path) for name, path in found.items()}))
    else:
        from vedit_cli.cli import main
        sys.argv = ["vedit", *sys.argv[2:]]
        main()
''')


def tiny_safetensors(side: int = 256, seed: int = 0) -> bytes:
    """A real safetensors file holding one random float32 [side, side] tensor."""
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    return save({"decoder.weight": rng.standard_normal((side, side)).astype(np.float32)})


def tiny_repo(repo_id: str = "vedit-test/tiny-taesd", side: int = 256) -> FakeRepo:
    return FakeRepo(repo_id, {
        "config.json": json.dumps({"_class_name": "AutoencoderTiny", "latent_channels": 4}).encode(),
        WEIGHTS: tiny_safetensors(side),
        "diffusion_pytorch_model.bin": b"pickle copy that must never be fetched",
        "README.md": b"---\nlicense: mit\n---\n",
    })


def entry_spec(repo: FakeRepo, revision: str | None = None, name: str = "tiny-taesd") -> dict:
    return {"name": name, "repo_id": repo.repo_id, "revision": revision or repo.commit,
            "allow_patterns": ["config.json", WEIGHTS], "required_files": ["config.json", WEIGHTS],
            "size_mb": 1, "licence": "test", "used_by": ["test"]}


@pytest.fixture()
def hub():
    state = HubState()
    server, endpoint = serve(state)
    yield state, endpoint
    server.shutdown()


def run_vedit(spec: dict, args: list[str], endpoint: str, tmp_path: Path, **env_overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO_ROOT),
           "HF_HUB_DISABLE_XET": "1", **env_overrides}
    env.pop("VEDIT_WEIGHTS", None)
    command = [sys.executable, "-c", DRIVER, json.dumps(spec), *args]
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def one_error_line(stderr: str) -> str:
    """The run ended with exactly one `vedit: error:` line, and it is the last line."""
    lines = stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("vedit:")] == lines[-1:], stderr
    assert lines[-1].startswith("vedit: error: "), stderr
    return lines[-1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fresh_download_fetches_only_safetensors_verifies_and_records_manifest(hub, tmp_path):
    state, endpoint = hub
    repo = state.add(tiny_repo())
    weights = tmp_path / "weights"
    result = run_vedit(entry_spec(repo, "main"), ["download", "tiny-taesd", "--weights-dir", str(weights), "--json"],
                       endpoint, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["results"][0]
    assert report["status"] == "downloaded" and report["commits"] == [repo.commit]
    folder = weights / "tiny-taesd"
    assert (folder / WEIGHTS).read_bytes() == repo.files[WEIGHTS]
    assert not (folder / "diffusion_pytorch_model.bin").exists() and not (folder / "README.md").exists()
    assert state.gets("diffusion_pytorch_model.bin") == []
    manifest = json.loads((folder / ".vedit-verified.json").read_text())
    assert manifest["files"][WEIGHTS]["sha256"] == sha256(repo.files[WEIGHTS])
    assert manifest["sources"][0]["commit"] == repo.commit and manifest["sources"][0]["revision"] == "main"

    again = run_vedit(entry_spec(repo, "main"), ["download", "tiny-taesd", "--weights-dir", str(weights), "--json"],
                      endpoint, tmp_path)
    assert json.loads(again.stdout)["results"][0]["status"] == "present"
    assert len(state.gets(WEIGHTS)) == 1  # a verified entry is not fetched again


def test_cut_transfer_resumes_with_a_range_request(hub, tmp_path):
    state, endpoint = hub
    # huggingface_hub writes in 10 MiB chunks and resumes from the last whole chunk: 21 MB, cut at half, resumes at 10 MiB
    repo = state.add(tiny_repo(side=2304))
    state.cut_once.add(WEIGHTS)
    weights = tmp_path / "weights"
    result = run_vedit(entry_spec(repo), ["download", "tiny-taesd", "--weights-dir", str(weights)], endpoint, tmp_path)
    assert result.returncode == 0, result.stderr
    attempts = state.gets(WEIGHTS)
    assert len(attempts) == 2
    assert attempts[0][2] == "" and attempts[1][2].startswith("bytes=")
    resumed_from = int(attempts[1][2].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from < len(repo.files[WEIGHTS])
    assert sha256((weights / "tiny-taesd" / WEIGHTS).read_bytes()) == sha256(repo.files[WEIGHTS])


def test_corrupted_file_is_refused_deleted_and_fetched_again_on_the_next_run(hub, tmp_path):
    state, endpoint = hub
    repo = state.add(tiny_repo())
    state.corrupt.add(WEIGHTS)
    weights = tmp_path / "weights"
    args = ["download", "tiny-taesd", "--weights-dir", str(weights)]
    result = run_vedit(entry_spec(repo), args, endpoint, tmp_path)
    assert result.returncode == 1
    error = one_error_line(result.stderr)  # above it: the size announcement and the progress bar
    assert "does not match the hub's checksum" in error and WEIGHTS in error
    folder = weights / "tiny-taesd"
    assert not (folder / WEIGHTS).exists() and not (folder / ".vedit-verified.json").exists()

    state.corrupt.clear()
    fixed = run_vedit(entry_spec(repo), args, endpoint, tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert sha256((folder / WEIGHTS).read_bytes()) == sha256(repo.files[WEIGHTS])
    assert len(state.gets("config.json")) == 1  # the file that was fine is kept, not fetched twice


def test_offline_fails_fast_with_one_line_naming_the_entry_and_folder(hub, tmp_path):
    state, endpoint = hub
    repo = state.add(tiny_repo())
    weights = tmp_path / "weights"
    started = time.monotonic()
    result = run_vedit(entry_spec(repo), ["download", "tiny-taesd", "--weights-dir", str(weights)], endpoint, tmp_path,
                       HF_HUB_OFFLINE="1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1 and elapsed < 10
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "offline" in result.stderr and str(weights / "tiny-taesd") in result.stderr
    assert state.requests == []


def test_unreachable_hub_fails_fast_with_one_line(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    spec = entry_spec(FakeRepo("vedit-test/tiny-taesd", {"config.json": b"{}"}))
    started = time.monotonic()
    result = run_vedit(spec, ["download", "tiny-taesd", "--weights-dir", str(tmp_path / "w")], closed, tmp_path)
    assert result.returncode == 1 and time.monotonic() - started < 10
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "cannot reach the hub" in result.stderr and "tiny-taesd" in result.stderr


def test_repo_without_safetensors_is_refused_before_any_transfer(hub, tmp_path):
    state, endpoint = hub
    repo = state.add(FakeRepo("vedit-test/pickle-only", {"config.json": b"{}", "pytorch_model.bin": b"x" * 64}))
    spec = {**entry_spec(repo), "allow_patterns": ["config.json", "model.safetensors"],
            "required_files": ["config.json", "model.safetensors"]}
    result = run_vedit(spec, ["download", "tiny-taesd", "--weights-dir", str(tmp_path / "w")], endpoint, tmp_path)
    assert result.returncode == 1 and "has no model.safetensors" in result.stderr
    assert not [r for r in state.requests if "/resolve/" in r[1]]


def test_entry_from_two_repositories_lands_in_one_folder(hub, tmp_path):
    state, endpoint = hub
    weights_repo = state.add(tiny_repo("vedit-test/scorer"))
    processor = state.add(FakeRepo("vedit-test/processor", {"preprocessor_config.json": b'{"crop_size": 224}',
                                                             "tokenizer.json": b'{"model": {}}'}))
    spec = {**entry_spec(weights_repo, name="tiny-scorer"),
            "extra_sources": [{"repo_id": processor.repo_id, "revision": "main", "subfolder": "processor",
                               "allow_patterns": ["*.json"], "required_files": ["preprocessor_config.json"]}]}
    weights = tmp_path / "weights"
    result = run_vedit(spec, ["download", "tiny-scorer", "--weights-dir", str(weights), "--json"], endpoint, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["commits"] == [weights_repo.commit, processor.commit]
    manifest = json.loads((weights / "tiny-scorer" / ".vedit-verified.json").read_text())
    assert set(manifest["files"]) == {"config.json", WEIGHTS, "processor/preprocessor_config.json",
                                      "processor/tokenizer.json"}


def test_edit_policy_never_downloads_unless_allowed(hub, tmp_path):
    state, endpoint = hub
    repo = state.add(tiny_repo())
    weights = tmp_path / "weights"
    refused = run_vedit(entry_spec(repo), ["ensure", str(weights)], endpoint, tmp_path)
    assert refused.returncode == 1 and state.requests == []
    assert f"run: vedit download tiny-taesd --weights-dir {weights}" in refused.stderr

    allowed = run_vedit(entry_spec(repo), ["ensure", str(weights)], endpoint, tmp_path, VEDIT_ALLOW_DOWNLOAD="1")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout) == {"tiny-taesd": str(weights / "tiny-taesd")}
    assert (weights / "tiny-taesd" / ".vedit-verified.json").is_file()


def test_hub_that_never_answers_fails_within_ten_seconds(tmp_path):
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never sends a byte
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        spec = entry_spec(FakeRepo("vedit-test/tiny-taesd", {"config.json": b"{}"}))
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = run_vedit(spec, ["download", "tiny-taesd", "--weights-dir", str(tmp_path / "w")], endpoint, tmp_path)
        elapsed = time.monotonic() - started
    assert result.returncode == 1 and elapsed < 10, (elapsed, result.stderr)
    assert "cannot reach the hub" in one_error_line(result.stderr)
