"""Thresholds for CI (--min/--max METRIC=VALUE), per-metric means over clips, and the report dict `--json` prints."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vedit_cli.errors import EvaluationError
from vedit_cli.metrics.names import CONVENTIONS, FRAME_PREPARATION, METRIC_NAMES


@dataclass(frozen=True)
class Threshold:
    metric: str
    bound: str  # "min" or "max"
    value: float

    def failure(self, result: dict) -> str | None:
        """One line when the clip misses this bound (an unavailable or failed metric misses it too)."""
        if result.get("error"):
            return f"{result['name']}: {self.metric} not computed ({result['error']})"
        value = result["metrics"].get(self.metric)
        if value is None:
            reason = result["unavailable"].get(self.metric, "not computed")
            return f"{result['name']}: {self.metric} unavailable ({reason}), needed for --{self.bound} {self.metric}={self.value:g}"
        if (self.bound == "min" and value < self.value) or (self.bound == "max" and value > self.value):
            sign = "<" if self.bound == "min" else ">"
            return f"{result['name']}: {self.metric} {value:.6g} {sign} {self.bound} {self.value:g}"
        return None


def parse_thresholds(minimums: list[str], maximums: list[str]) -> list[Threshold]:
    """'clip_frame=0.9' -> Threshold; malformed text or an unknown metric is an EvaluationError."""
    return [_parse(text, "min") for text in minimums or []] + [_parse(text, "max") for text in maximums or []]


def _parse(text: str, bound: str) -> Threshold:
    metric, separator, number = text.partition("=")
    metric = metric.strip()
    if not separator or metric not in METRIC_NAMES:
        raise EvaluationError(f"--{bound} {text!r}: expected METRIC=VALUE with METRIC one of {', '.join(METRIC_NAMES)}")
    try:
        value = float(number)
    except ValueError:
        raise EvaluationError(f"--{bound} {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value):
        raise EvaluationError(f"--{bound} {text!r}: the bound must be a finite number")
    return Threshold(metric, bound, value)


def threshold_failures(results: list[dict], thresholds: list[Threshold]) -> list[str]:
    """Every (clip, threshold) miss, one line each, in clip order."""
    return [line for result in results for threshold in thresholds if (line := threshold.failure(result))]


def metric_means(results: list[dict]) -> dict[str, dict]:
    """Mean of each metric over the clips that have it (TGVE reports the mean over all clips), with the count."""
    means = {}
    for metric in METRIC_NAMES:
        values = [r["metrics"][metric] for r in results if not r.get("error") and metric in r["metrics"]]
        if values:
            means[metric] = {"mean": sum(values) / len(values), "clips": len(values)}
    return means


def build_report(results: list[dict], thresholds: list[Threshold]) -> dict:
    """Everything `vedit evaluate --json` prints: clips, means, conventions, failures."""
    shown = [m for m in METRIC_NAMES if any(m in r.get("metrics", {}) or m in r.get("unavailable", {}) for r in results)]
    return {
        "clips": results,
        "mean": metric_means(results),
        "conventions": {metric: CONVENTIONS[metric] for metric in shown},
        "frame_preparation": FRAME_PREPARATION,
        "thresholds": [{"metric": t.metric, "bound": t.bound, "value": t.value} for t in thresholds],
        "threshold_failures": threshold_failures(results, thresholds),
        "errors": [f"{r['name']}: {r['error']}" for r in results if r.get("error")],
    }
