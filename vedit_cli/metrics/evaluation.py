"""evaluate_clip: every metric of one edited clip in a single streaming pass over its frames (and its source's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vedit_cli.config import EvaluateConfig
from vedit_cli.errors import EvaluationError, WeightsMissingError
from vedit_cli.metrics import clip_scores
from vedit_cli.metrics.names import (CLIP_METRICS, METRIC_NAMES, PICKSCORE_METRICS, REFERENCE_METRICS, VICLIP_METRICS,
                                     VICLIP_UNAVAILABLE)
from vedit_cli.metrics.reference import ReferenceMeter
from vedit_cli.metrics.temporal import FlickerMeter, WarpErrorMeter, paired_frames

UNDEFINED_REASON = "not defined for this clip: fewer than 2 frames (or, for warp_error, every pixel occluded)"


@dataclass(frozen=True)
class ClipToEvaluate:
    """One edited clip and what it is judged against; `caption` describes the edited video, `prompt` is the edit
    instruction (used as the text only when no caption is given), `source_caption` describes the source."""

    edited: Path
    source: Path | None = None
    prompt: str | None = None
    caption: str | None = None
    source_caption: str | None = None
    name: str | None = None
    reference: Path | None = None  # ground truth of the edit: PSNR and SSIM per frame

    @property
    def text(self) -> str | None:
        return self.caption or self.prompt


def missing_input(metric: str, clip: ClipToEvaluate) -> str | None:
    """Why `metric` cannot be computed from the inputs given, or None when it can."""
    if metric in VICLIP_METRICS:
        return VICLIP_UNAVAILABLE
    if metric in REFERENCE_METRICS and clip.reference is None:
        return "needs a reference clip (--reference)"
    if metric == "warp_error" and clip.source is None:
        return "needs the source clip (--source)"
    if metric in ("clip_text", "pick_score") and not clip.text:
        return "needs a caption of the edited video (--caption) or the edit prompt (--prompt)"
    if metric == "clip_direction" and (clip.source is None or not clip.caption or not clip.source_caption):
        return "needs --source, --caption (edited video) and --source-caption"
    return None


class MetricModels:
    """CLIP and PickScore embedders, loaded once and shared by every clip of a batch."""

    def __init__(self, config: EvaluateConfig):
        from vedit_cli.weights.registry import resolve_weights_dir

        self.config = config
        self.weights_dir = resolve_weights_dir(config.weights_dir)
        self._loaded: dict[str, object] = {}

    def get(self, which: str):
        """'clip' or 'pickscore'; raises WeightsMissingError (kept, so a batch does not retry every clip)."""
        if which not in self._loaded:
            from vedit_cli.metrics import clip_models

            loader = clip_models.load_clip if which == "clip" else clip_models.load_pickscore
            from vedit_cli.hardware import resolve_device

            device = resolve_device(self.config.device).type
            try:
                self._loaded[which] = loader(self.weights_dir, device, self.config.frame_size)
            except WeightsMissingError as error:
                self._loaded[which] = error
        loaded = self._loaded[which]
        if isinstance(loaded, WeightsMissingError):
            raise loaded
        return loaded


@dataclass
class _Plan:
    metrics: list[str]
    unavailable: dict[str, str] = field(default_factory=dict)
    embedders: dict[str, object] = field(default_factory=dict)  # 'clip' / 'pickscore' -> ClipEmbedder


def plan_metrics(clip: ClipToEvaluate, requested: tuple[str, ...] | None, models: MetricModels) -> _Plan:
    """Decide what runs. Asked for explicitly: a missing input or checkpoint is an error. By default: reported
    as unavailable with its reason, and the rest still runs."""
    explicit = requested is not None
    plan = _Plan(metrics=[])
    for metric in requested or METRIC_NAMES:
        if metric not in METRIC_NAMES:
            raise EvaluationError(f"unknown metric {metric!r}; choose from {', '.join(METRIC_NAMES)}")
        if not explicit and metric in REFERENCE_METRICS and clip.reference is None:
            continue  # by default only with a reference: not listed as unavailable on every run without one
        reason = missing_input(metric, clip) or _load_embedder(metric, models, plan, explicit)
        if reason and explicit:
            raise EvaluationError(f"{metric} cannot be computed for {clip.edited}: {reason}")
        if reason:
            plan.unavailable[metric] = reason
        else:
            plan.metrics.append(metric)
    return plan


def _load_embedder(metric: str, models: MetricModels, plan: _Plan, explicit: bool) -> str | None:
    which = "clip" if metric in CLIP_METRICS else "pickscore" if metric in PICKSCORE_METRICS else None
    if which is None or which in plan.embedders:
        return None
    try:
        plan.embedders[which] = models.get(which)
    except WeightsMissingError as error:
        if explicit:
            raise
        return str(error)
    return None


class _FrameStream:
    """One pass over (source, edited) frames feeding the temporal meters and the CLIP batches."""

    def __init__(self, plan: _Plan, batch_size: int):
        self.plan, self.batch_size = plan, batch_size
        self.warp = WarpErrorMeter() if "warp_error" in plan.metrics else None
        self.flicker = FlickerMeter() if "flicker" in plan.metrics else None
        self.reference = ReferenceMeter() if REFERENCE_METRICS & set(plan.metrics) else None
        self.keep_source = "clip_direction" in plan.metrics
        self.edited_batch, self.source_batch = [], []
        self.embeddings = {key: [] for key in ("clip", "pickscore", "clip_source")}
        self.frame_count = 0

    def add(self, source, edited) -> None:
        self.frame_count += 1
        if self.warp is not None:
            self.warp.add(source, edited)
        if self.flicker is not None:
            self.flicker.add(edited)
        if self.plan.embedders:
            self.edited_batch.append(edited)
            if self.keep_source:
                self.source_batch.append(source)
            if len(self.edited_batch) >= self.batch_size:
                self.flush()

    def flush(self) -> None:
        """Embed the pending frames; only embeddings stay in memory."""
        if not self.edited_batch:
            return
        for which, embedder in self.plan.embedders.items():
            self.embeddings[which].append(embedder.embed_images(self.edited_batch))
        if self.keep_source:
            self.embeddings["clip_source"].append(self.plan.embedders["clip"].embed_images(self.source_batch))
        self.edited_batch, self.source_batch = [], []

    def stacked(self, key: str):
        import torch

        return torch.cat(self.embeddings[key]) if self.embeddings[key] else None


def _run_stream(clip: ClipToEvaluate, plan: _Plan, batch_size: int) -> _FrameStream:
    from vedit_cli.metrics.frames import iter_frames

    stream = _FrameStream(plan, batch_size)
    edited_frames = iter_frames(clip.edited)
    if stream.reference is not None:
        edited_frames = _feeding_reference(stream.reference, iter_frames(clip.reference), edited_frames)
    needs_source = "warp_error" in plan.metrics or "clip_direction" in plan.metrics
    if needs_source:
        pairs = paired_frames(iter_frames(clip.source), edited_frames)
    else:
        pairs = ((None, frame) for frame in edited_frames)
    for source, edited in pairs:
        stream.add(source, edited)
    stream.flush()
    return stream


def _feeding_reference(meter, reference_frames, edited_frames):
    """The edited frames, each scored against its reference frame on the way."""
    from vedit_cli.metrics.reference import reference_pairs

    for reference, edited in reference_pairs(reference_frames, edited_frames):
        meter.add(reference, edited)
        yield edited


def _scores(clip: ClipToEvaluate, plan: _Plan, stream: _FrameStream) -> dict[str, float | None]:
    """Apply the formulas of clip_scores / temporal to what the stream gathered."""
    values: dict[str, float | None] = {}
    clip_model, pick_model = plan.embedders.get("clip"), plan.embedders.get("pickscore")
    for metric in plan.metrics:
        if metric == "warp_error":
            values[metric] = stream.warp.result()
        elif metric == "flicker":
            values[metric] = stream.flicker.result()
        elif metric in REFERENCE_METRICS:
            values[metric] = stream.reference.result(metric)
        elif metric == "clip_frame":
            values[metric] = clip_scores.clip_frame_consistency(stream.stacked("clip"))
        elif metric == "clip_text":
            text = clip_model.embed_text(clip.text)
            values[metric] = clip_scores.text_frame_score(stream.stacked("clip"), text, clip_model.logit_scale)
        elif metric == "pick_score":
            text = pick_model.embed_text(clip.text)
            values[metric] = clip_scores.text_frame_score(stream.stacked("pickscore"), text, pick_model.logit_scale)
        elif metric == "clip_direction":
            values[metric] = clip_scores.directional_similarity(
                stream.stacked("clip"), stream.stacked("clip_source"),
                clip_model.embed_text(clip.caption), clip_model.embed_text(clip.source_caption),
            )
    return {name: (None if value is None or value != value else value) for name, value in values.items()}


def evaluate(clip: ClipToEvaluate, config: EvaluateConfig | None = None, models: MetricModels | None = None) -> dict:
    """All requested metrics of one clip: {'metrics': {name: value}, 'unavailable': {name: reason}, ...}."""
    config = (config or EvaluateConfig()).validate()
    models = models or MetricModels(config)
    # 1. decide which metrics run (and load their models once)
    plan = plan_metrics(clip, config.metrics, models)
    # 2. one streaming pass over the frames
    stream = _run_stream(clip, plan, config.batch_size)
    # 3. formulas on the gathered embeddings and meters
    values = _scores(clip, plan, stream)
    unavailable = dict(plan.unavailable)
    unavailable.update({name: UNDEFINED_REASON for name, value in values.items() if value is None})
    result = {
        "name": clip.name or Path(clip.edited).stem,
        "edited": str(clip.edited),
        "source": str(clip.source) if clip.source else None,
        "text": clip.text,
        "text_from": "caption" if clip.caption else "prompt" if clip.prompt else None,
        "frames": stream.frame_count,
        "metrics": {name: value for name, value in values.items() if value is not None},
        "unavailable": unavailable,
    }
    if stream.reference is not None:
        result["reference"] = str(clip.reference)
        result["per_frame"] = {name: values for name, values in stream.reference.per_frame.items()
                               if name in plan.metrics}
    return result


def evaluate_clip(edited_path, source_path=None, prompt=None, caption=None, metrics=None, weights_dir=None, *,
                  source_caption=None, config: EvaluateConfig | None = None, models: MetricModels | None = None) -> dict:
    """Library entry point (`vedit edit --evaluate` chains it): see `evaluate` for the returned dict."""
    from dataclasses import replace

    config = config or EvaluateConfig()
    config = replace(config, metrics=tuple(metrics) if metrics is not None else config.metrics,
                     weights_dir=weights_dir if weights_dir is not None else config.weights_dir)
    clip = ClipToEvaluate(Path(edited_path), Path(source_path) if source_path else None, prompt, caption, source_caption)
    return evaluate(clip, config, models)
