"""`--compare PREVIOUS.json`: flag rows that got slower, heavier or costlier than a previous run beyond a threshold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vedit_cli.benchmark.report import SCHEMA
from vedit_cli.errors import ConfigError, VeditError

# (label, path into a row, True when bigger is worse)
METRICS = (
    ("s/frame", ("time", "per_frame_s", "median"), True),
    ("FLOPs/frame", ("flops", "per_frame_total"), True),
    ("text FLOPs/clip", ("flops", "per_clip_total"), True),
    ("peak host RSS", ("memory", "host_peak_rss_bytes"), True),
    ("peak GPU memory", ("memory", "gpu_peak_bytes"), True),
    ("speed-up vs reference", ("speedup_vs_reference",), False),
)


class BenchmarkRegressionError(VeditError):
    """A row regressed beyond the threshold against the previous report."""


@dataclass(frozen=True)
class Regression:
    row: str
    metric: str
    previous: float
    current: float

    @property
    def change(self) -> float:
        return self.current / self.previous - 1.0

    def describe(self) -> str:
        return f"{self.row} {self.metric}: {self.previous:.4g} -> {self.current:.4g} ({self.change:+.1%})"


def load_report(path: Path) -> dict:
    """A previous `vedit benchmark --json` output, checked for its schema."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"--compare {path}: cannot read a JSON benchmark report ({error})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise ConfigError(f"--compare {path}: not a {SCHEMA} report; write one with `vedit benchmark --json > FILE`")
    return report


def find_regressions(previous: dict, current: dict, threshold: float) -> list[Regression]:
    """Rows present in both reports whose metric moved the wrong way by more than `threshold` (0.1 = 10%)."""
    previous_rows = {row["name"]: row for row in previous["rows"]}
    found = []
    for row in current["rows"]:
        before = previous_rows.get(row["name"])
        if before is None:
            continue
        for label, path, bigger_is_worse in METRICS:
            old, new = _lookup(before, path), _lookup(row, path)
            if old is None or new is None or old <= 0:
                continue
            change = new / old - 1.0
            if (change > threshold) if bigger_is_worse else (change < -threshold):
                found.append(Regression(row["name"], label, float(old), float(new)))
    return found


def comparable_settings(previous: dict, current: dict) -> list[str]:
    """Settings that differ between the two runs (a size or device change makes the comparison meaningless)."""
    keys = ("size", "frames", "device", "dtype", "random_weights", "reference_steps")
    return [f"{key}: {previous['settings'].get(key)} -> {current['settings'].get(key)}"
            for key in keys if previous["settings"].get(key) != current["settings"].get(key)]


def _lookup(row: dict, path: tuple[str, ...]):
    value = row
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
