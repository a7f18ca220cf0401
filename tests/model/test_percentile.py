"""The nearest-rank percentile behind every latency figure."""

from __future__ import annotations

import math

from vknet_model.percentile import percentile


def test_nearest_rank_on_unsorted_input() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.9) == 5.0   # index int(4.5) = 4
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 5.0   # clamped to the last value
    assert percentile(iter([7.0, 8.0]), 0.5) == 8.0  # upper median, as the CLIs print it


def test_empty_input_gives_the_fallback() -> None:
    assert math.isnan(percentile([], 0.5))
    assert percentile([], 0.9, empty=0.0) == 0.0
