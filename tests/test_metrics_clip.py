"""CLIP-based scores: formulas on known embeddings, and tiny random CLIP models against the TGVE code path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vedit_cli.errors import WeightsMissingError
from vedit_cli.metrics import clip_scores

LN_100 = math.log(100.0)


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---- formulas on known embeddings -------------------------------------------------------------------------------

def test_clip_frame_is_mean_cosine_over_all_ordered_pairs():
    embeddings = tensor([[1, 0], [0, 1], [1, 1]])  # pair cosines: 0, 1/sqrt2, 1/sqrt2
    expected = 2 * (0 + 2 / math.sqrt(2)) / 6
    assert clip_scores.clip_frame_consistency(embeddings) == pytest.approx(expected)
    assert clip_scores.clip_frame_consistency(embeddings * tensor([[3], [0.5], [7]])) == pytest.approx(expected)


def test_clip_frame_is_not_the_consecutive_pair_mean():
    embeddings = tensor([[1, 0], [1, 0], [-1, 0]])  # consecutive: (1 + -1)/2 = 0; all pairs: (1 - 1 - 1) * 2 / 6
    assert clip_scores.clip_frame_consistency(embeddings) == pytest.approx(-1 / 3)
    assert math.isnan(clip_scores.clip_frame_consistency(tensor([[1, 0]])))


def test_text_frame_score_is_logit_scale_times_mean_cosine():
    frames = tensor([[1, 0], [0, 1], [2, 0]])
    text = tensor([1, 1])  # cosines: 1/sqrt2, 1/sqrt2, 1/sqrt2
    assert clip_scores.text_frame_score(frames, text, LN_100) == pytest.approx(100 / math.sqrt(2))
    assert clip_scores.text_frame_score(frames, tensor([0, -5]), 0.0) == pytest.approx((0 - 1 + 0) / 3)


def test_directional_similarity_on_known_directions():
    source, edited = tensor([[1, 0]]), tensor([[0, 1]])  # image change (-1, 1)
    same_text = (tensor([0, 2]), tensor([3, 0]))  # text change (-1, 1) after normalising
    assert clip_scores.directional_similarity(edited, source, *same_text) == pytest.approx(1.0)
    assert clip_scores.directional_similarity(edited, source, same_text[1], same_text[0]) == pytest.approx(-1.0)
    # frames averaged one by one: one aligned (1) and one orthogonal change (0)
    sources, edits = tensor([[1, 0, 0], [1, 0, 0]]), tensor([[0, 1, 0], [0, 0, 1]])
    text_pair = (tensor([0, 1, 0]), tensor([1, 0, 0]))
    assert clip_scores.directional_similarity(edits, sources, *text_pair) == pytest.approx((1 + 0.5) / 2)


# ---- tiny random CLIP models, loaded like the real checkpoints --------------------------------------------------

@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(4)]


def tgve_images(frames):
    from PIL import Image

    return [Image.fromarray(f).resize((480, 480)) for f in frames]  # run_eval.py: i.resize((width, height))


def features(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def test_clip_text_matches_the_tgve_logits_per_image_path(clip_weights, frames):
    from vedit_cli.metrics.clip_models import load_clip

    embedder = load_clip(clip_weights, "cpu", 480)
    ours = clip_scores.text_frame_score(embedder.embed_images(frames), embedder.embed_text("a cat on a mat"), embedder.logit_scale)
    inputs = embedder.processor(text=["a cat on a mat"], images=tgve_images(frames), return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = embedder.model(**inputs).logits_per_image.mean().item()  # TGVE clip_score_text
    assert ours == pytest.approx(reference, rel=1e-4)


def test_clip_frame_matches_a_hand_computation_on_model_embeddings(clip_weights, frames):
    from vedit_cli.metrics.clip_models import load_clip

    embedder = load_clip(clip_weights, "cpu", 480)
    inputs = embedder.processor(images=tgve_images(frames), return_tensors="pt")
    with torch.no_grad():
        image_features = features(embedder.model.get_image_features(**inputs)).numpy().astype(np.float64)
    unit = image_features / np.linalg.norm(image_features, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, 0)
    reference = cosine.sum() / (len(frames) * (len(frames) - 1))  # TGVE clip_score_frame
    assert clip_scores.clip_frame_consistency(embedder.embed_images(frames)) == pytest.approx(reference, rel=1e-5)


def test_pick_score_matches_the_tgve_formula_with_the_pickscore_processor(clip_weights, frames):
    from vedit_cli.metrics.clip_models import load_pickscore

    embedder = load_pickscore(clip_weights, "cpu", 480)
    assert embedder.logit_scale == pytest.approx(3.1)
    model, processor = embedder.model, embedder.processor
    image_inputs = processor(images=tgve_images(frames), return_tensors="pt")
    text_inputs = processor(text="a dog", padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        image_embs = features(model.get_image_features(**image_inputs))
        text_embs = features(model.get_text_features(**text_inputs))
    image_embs = image_embs / image_embs.norm(dim=-1, keepdim=True)
    text_embs = text_embs / text_embs.norm(dim=-1, keepdim=True)
    reference = (model.logit_scale.exp() * (text_embs @ image_embs.T)[0]).mean().item()
    ours = clip_scores.text_frame_score(embedder.embed_images(frames), embedder.embed_text("a dog"), embedder.logit_scale)
    assert ours == pytest.approx(reference, rel=1e-4)


def test_directional_similarity_matches_a_hand_computation(clip_weights, frames):
    from vedit_cli.metrics.clip_models import load_clip

    embedder = load_clip(clip_weights, "cpu", 480)
    edited = [255 - f for f in frames]
    e, s = embedder.embed_images(edited).double().numpy(), embedder.embed_images(frames).double().numpy()
    t1, t0 = embedder.embed_text("a red car").double().numpy(), embedder.embed_text("a car").double().numpy()
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    image_change, text_change = unit(unit(e) - unit(s)), unit(unit(t1) - unit(t0))
    reference = float((image_change @ text_change).mean())
    ours = clip_scores.directional_similarity(
        torch.from_numpy(e), torch.from_numpy(s), torch.from_numpy(t1), torch.from_numpy(t0)
    )
    assert ours == pytest.approx(reference, rel=1e-6)


def test_embeddings_are_the_same_in_batches_or_all_at_once(clip_weights, frames):
    from vedit_cli.metrics.clip_models import load_clip

    embedder = load_clip(clip_weights, "cpu", 480)
    together = embedder.embed_images(frames)
    one_by_one = torch.cat([embedder.embed_images([f]) for f in frames])
    torch.testing.assert_close(together, one_by_one, rtol=1e-4, atol=1e-5)


def test_a_folder_without_tokenizer_files_is_refused(clip_weights, tmp_path):
    """FACTS.md trap: transformers silently builds an empty (2-token) tokenizer from a folder without its files."""
    import shutil

    from vedit_cli.metrics.clip_models import ClipEmbedder

    broken = tmp_path / "clip-vit-large-patch14"
    shutil.copytree(clip_weights / "clip-vit-large-patch14", broken)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(WeightsMissingError, match=f"usable tokenizer in {broken} .*vedit download clip-vit-large-patch14"):
        ClipEmbedder(broken)


def test_missing_clip_folder_names_the_download_command(tmp_path):
    from vedit_cli.metrics.clip_models import load_clip

    with pytest.raises(WeightsMissingError, match="vedit download clip-vit-large-patch14"):
        load_clip(tmp_path, "cpu", 480)
