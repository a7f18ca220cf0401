"""The one percentile convention of every latency figure vknet prints (node diagnostics, replay, bench, doctor)."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float, empty: float = float("nan")) -> float:
    """Nearest rank: the value at index ``int(q * n)`` of the sorted values (clamped), ``empty`` for none."""
    ordered = sorted(values)
    if not ordered:
        return empty
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
