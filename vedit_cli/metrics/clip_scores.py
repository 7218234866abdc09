"""CLIP-based scores on embeddings, with the conventions of the public TGVE evaluation (showlab/loveu-tgve-2023,
scripts/run_eval.py) and of InstructPix2Pix's directional similarity. Inputs are torch tensors [N, D]."""

from __future__ import annotations


def normalized(embeddings):
    """Unit-length rows."""
    return embeddings / embeddings.norm(dim=-1, keepdim=True)


def clip_frame_consistency(image_embeddings) -> float:
    """CLIPFrame (TGVE clip_score_frame): mean cosine over all ordered frame pairs i != j; not x100."""
    count = image_embeddings.shape[0]
    if count < 2:
        return float("nan")
    unit = normalized(image_embeddings.double())
    cosine = unit @ unit.T
    return float((cosine.sum() - cosine.diagonal().sum()) / (count * (count - 1)))


def text_frame_score(image_embeddings, text_embedding, logit_scale: float) -> float:
    """TGVE clip_score_text / pick_score: exp(logit_scale) x cosine(text, frame), mean over frames (x100 for CLIP)."""
    cosine = normalized(image_embeddings.double()) @ normalized(text_embedding.double().reshape(1, -1)).T
    return float(cosine.mean() * _exp(logit_scale))


def directional_similarity(edited_image_embeddings, source_image_embeddings, text_embedding, source_text_embedding) -> float:
    """CLIP directional similarity (InstructPix2Pix; Gal et al. 2022): cosine between the change of each frame
    (edited_i - source_i) and the change of caption (output - source), on unit embeddings, mean over frames."""
    image_change = normalized(edited_image_embeddings.double()) - normalized(source_image_embeddings.double())
    text_change = normalized(text_embedding.double().reshape(1, -1)) - normalized(source_text_embedding.double().reshape(1, -1))
    return float((normalized(image_change) @ normalized(text_change).T).mean())


def _exp(logit_scale: float) -> float:
    import math

    return math.exp(float(logit_scale))
