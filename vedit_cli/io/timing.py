"""Exact rational frame rates from decoded timestamps (pure functions)."""

from __future__ import annotations

from fractions import Fraction

FALLBACK_FPS = Fraction(25)


def frame_rate_from_timestamps(timestamps: list[int], time_base: Fraction, header_fps: Fraction | None,
                               durations: list[int] | None = None) -> tuple[Fraction, bool]:
    """(fps, is_cfr): exact for constant intervals, snapped to n or n*1000/1001 when a coarse time base rounds
    them (WebM's 1 ms), exact from one constant frame duration that spans the clip exactly (an edit list can
    reorder packet timestamps, not durations), else the average rate (frames - 1) / span of a variable-rate clip."""
    timestamps = sorted(timestamps)
    span = timestamps[-1] - timestamps[0] if timestamps else 0
    if len(timestamps) < 2 or span <= 0:
        return header_fps or FALLBACK_FPS, True
    intervals = [later - earlier for earlier, later in zip(timestamps, timestamps[1:])]
    average = Fraction(len(intervals)) / (span * time_base)
    if min(intervals) == max(intervals):
        return 1 / (intervals[0] * time_base), True
    if max(intervals) - min(intervals) <= 1:
        snapped = _snap_to_standard_rate(average, len(intervals), span * time_base, time_base)
        if snapped is not None:
            return snapped, True
    if _constant_duration_spans(durations, len(intervals), span):
        return 1 / (durations[0] * time_base), True
    return average.limit_denominator(1001), False


def _constant_duration_spans(durations: list[int] | None, interval_count: int, span: int) -> bool:
    """Every frame lasts the same number of ticks, and the clip spans exactly that many per interval."""
    return bool(durations) and durations[0] > 0 and len(set(durations)) == 1 and durations[0] * interval_count == span


def _snap_to_standard_rate(average: Fraction, interval_count: int, span_seconds: Fraction,
                           time_base: Fraction) -> Fraction | None:
    """The integer or NTSC (x1000/1001) rate whose ideal span is within one tick of the measured span."""
    candidates = (Fraction(round(average)), Fraction(round(average * Fraction(1001, 1000)) * 1000, 1001))
    for candidate in candidates:
        if candidate > 0 and abs(interval_count / candidate - span_seconds) <= time_base:
            return candidate
    return None
