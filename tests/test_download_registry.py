"""The registry, the integrity manifest, the safetensors-only rule and the edit download policy (no network)."""

from __future__ import annotations

import json
import os
import re

import pytest

from vedit_cli.errors import DownloadError, WeightsIntegrityError, WeightsMissingError
from vedit_cli.weights.hub import download_entry, ensure_entries, entry_status
from vedit_cli.weights.integrity import (
    check_safetensors_only,
    verified_file_record,
    sha256_of,
    verify_entry,
    write_verified_record,
)
from vedit_cli.weights.registry import REGISTRY, entries_for_backend, require

PICKLE_OR_DUPLICATE = re.compile(r"\.(bin|ckpt|pt|pth|pkl|msgpack|h5|onnx)$|fp16|safety_checker|flax|tf_model")


def fake_entry_folder(weights_dir, name: str, with_manifest: bool) -> None:
    """Write the required files of `name` with small contents (and a manifest of them when asked)."""
    folder = weights_dir / name
    records = {}
    for relative in REGISTRY[name].all_required_files():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"contents of {relative}".encode())
        records[relative] = verified_file_record(folder, relative, sha256_of(path))
    if with_manifest:
        sources = [{"repo_id": s.repo_id, "revision": s.revision, "commit": "0" * 40} for s in REGISTRY[name].sources]
        write_verified_record(folder, sources, records)


def test_backends_map_to_the_entries_they_load():
    assert entries_for_backend("movie") == ["instruct-pix2pix", "taesd"]
    assert sorted(entries_for_backend("eve")) == ["animatediff-motion-adapter", "controlnet-ip2p", "sd15"]
    assert sorted(entries_for_backend("svdiff")) == ["lcm-lora-sdv1-5", "sd15", "taesd"]
    assert entries_for_backend("metrics") == ["clip-vit-large-patch14", "pickscore"]
    with pytest.raises(WeightsMissingError, match="known: .*movie"):
        entries_for_backend("nope")


@pytest.mark.parametrize("entry", [e for e in REGISTRY.values() if not e.local_only], ids=lambda e: e.name)
def test_hub_entries_pin_a_commit_or_say_main_and_fetch_only_safetensors(entry):
    from huggingface_hub.utils import filter_repo_objects

    for source in entry.sources:
        assert re.fullmatch(r"[0-9a-f]{40}", source.revision) or source.revision == "main"
        assert not [p for p in source.allow_patterns if PICKLE_OR_DUPLICATE.search(p)], source.allow_patterns
        matched = list(filter_repo_objects(source.required_files, allow_patterns=list(source.allow_patterns)))
        assert matched == list(source.required_files)  # every required file is one the download fetches
    weights = [f for f in entry.all_required_files() if f.endswith((".safetensors", ".bin", ".ckpt"))]
    assert weights and all(f.endswith(".safetensors") for f in weights)
    assert entry.size_mb > 0 and entry.licence


def test_tiny_saved_pipeline_satisfies_the_instruct_pix2pix_and_taesd_entries(tiny_weights):
    assert require("instruct-pix2pix", tiny_weights) == tiny_weights / "instruct-pix2pix"
    assert require("taesd", tiny_weights) == tiny_weights / "taesd"
    assert entry_status("taesd", tiny_weights) == "unverified"  # saved locally, no manifest


def test_edit_policy_refuses_to_download_and_names_the_exact_command(tmp_path):
    with pytest.raises(WeightsMissingError) as caught:
        ensure_entries(["instruct-pix2pix", "taesd"], tmp_path, allow_download=False)
    message = str(caught.value)
    assert f"run: vedit download instruct-pix2pix taesd --weights-dir {tmp_path}" in message
    assert "\n" not in message


def test_allowed_download_offline_fails_at_once_naming_entry_and_folder(tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest for every test
    with pytest.raises(DownloadError, match=f"offline.*'taesd'.*{re.escape(str(tmp_path / 'taesd'))}"):
        ensure_entries(["taesd"], tmp_path, allow_download=True)


def test_local_only_entry_says_how_it_is_produced(tmp_path):
    with pytest.raises(WeightsMissingError, match="local only"):
        ensure_entries(["movie-student"], tmp_path, allow_download=True)
    with pytest.raises(WeightsMissingError, match="cannot be downloaded"):
        download_entry("movie-student", tmp_path)


def test_verified_entry_loads_and_a_changed_file_is_refused(tmp_path):
    fake_entry_folder(tmp_path, "taesd", with_manifest=True)
    assert ensure_entries(["taesd"], tmp_path, allow_download=False) == {"taesd": tmp_path / "taesd"}
    weights = tmp_path / "taesd" / "diffusion_pytorch_model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"X" + weights.read_bytes()[1:])  # same size, different bytes
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime restored
    assert verify_entry("taesd", tmp_path) == "verified"  # the quick check trusts size + mtime
    with pytest.raises(WeightsIntegrityError, match="does not match its verified sha256"):
        verify_entry("taesd", tmp_path, full=True)
    weights.touch()  # a changed mtime makes even the quick check re-hash
    with pytest.raises(WeightsIntegrityError, match="refusing to load"):
        ensure_entries(["taesd"], tmp_path, allow_download=False)
    with pytest.raises(WeightsIntegrityError, match="refusing to load"):
        require("taesd", tmp_path)  # what backends call right before from_pretrained
    assert entry_status("taesd", tmp_path) == "corrupt"


def test_entry_verified_at_another_pin_is_outdated_and_fetched_again(tmp_path):
    fake_entry_folder(tmp_path, "taesd", with_manifest=True)
    manifest_path = tmp_path / "taesd" / ".vedit-verified.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sources"][0]["revision"] = "f" * 40
    manifest_path.write_text(json.dumps(manifest))
    assert entry_status("taesd", tmp_path) == "outdated"
    with pytest.raises(DownloadError, match="offline"):  # so `vedit download taesd` goes to the hub again
        download_entry("taesd", tmp_path)


def test_pickle_checkpoints_are_always_refused(tmp_path):
    fake_entry_folder(tmp_path, "taesd", with_manifest=False)
    (tmp_path / "taesd" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(WeightsIntegrityError, match="pickle checkpoint.*safetensors only"):
        ensure_entries(["taesd"], tmp_path, allow_download=False)
    with pytest.raises(WeightsIntegrityError, match="pickle checkpoint"):
        check_safetensors_only(tmp_path / "taesd")


def test_list_shows_every_entry_with_source_size_licence_and_status(tmp_path):
    from typer.testing import CliRunner

    from vedit_cli import cli

    cli._register_commands()
    fake_entry_folder(tmp_path, "taesd", with_manifest=True)
    fake_entry_folder(tmp_path, "sd15", with_manifest=False)
    result = CliRunner().invoke(cli.app, ["download", "--list", "--json", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)["entries"]}
    assert set(rows) == set(REGISTRY)
    assert (rows["taesd"]["status"], rows["sd15"]["status"], rows["pickscore"]["status"]) == (
        "verified", "unverified", "absent")
    assert rows["pickscore"]["sources"][1]["repo_id"] == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    text = CliRunner().invoke(cli.app, ["download", "--list", "--weights-dir", str(tmp_path)]).output
    assert "timbrooks/instruct-pix2pix@31519b5cb02a" in text and "local only" in text


def test_a_backend_name_stands_for_every_entry_it_needs():
    from vedit_cli.commands.download import _expand
    from vedit_cli.weights.registry import entries_for_backend

    assert _expand("movie") == entries_for_backend("movie") == ["instruct-pix2pix", "taesd"]
    assert _expand("taesd") == ["taesd"]
    assert _expand("bogus") == ["bogus"]  # refused later with the list of known names
