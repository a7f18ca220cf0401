"""benchmarks/track_errors.py: per-track coverage, id splits and impurity on a hand sequence, and its AQ against
the STQ metric's own."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from tests.conftest import load_script
from vknet_eval.metrics.stq import STQuality


def _module() -> ModuleType:
    return load_script("benchmarks/track_errors.py")


def _sequence() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three 4x10 frames of stuff (class 7): car A (13001) in frames 0-1, car B (13002) in frames 0 and 2.

    Id 13005 follows A, bleeds onto 4 stuff pixels in frame 1, ignores a crowd pixel there, and in frame 2,
    A gone, lands on 12 of B's 16 pixels. Id 13006 has B in frame 0.
    """
    frames = []
    for t in range(3):
        gt = np.full((4, 10), 7000, dtype=np.int64)
        pred = gt.copy()
        if t < 2:
            gt[:, 0:4] = 13001
            pred[:, 0:4] = 13005
        if t != 1:
            gt[:, 6:10] = 13002
        if t == 0:
            pred[:, 6:10] = 13006
        if t == 1:
            pred[:, 4] = 13005          # bleeding onto stuff
            gt[0, 5], pred[0, 5] = 11000, 13005   # a crowd pixel: not counted
        if t == 2:
            pred[:, 6:9] = 13005
        frames.append((gt, pred))
    return frames


def test_tracks_split_impurity_by_where_the_id_went() -> None:
    te = _module()
    tally = te.SequenceTally((11, 13), 1000)
    for gt, pred in _sequence():
        tally.add(gt, pred)
    a, b = sorted(tally.tracks(), key=lambda r: r["coverage"], reverse=True)  # A, then B
    # A: always covered by 13005 (48 pixels: 32 on A, 4 on stuff, 12 on B in a frame without A).
    assert a["coverage"] == 1 and a["dominance"] == 1 and a["ids"] == 1
    assert a["purity"] == pytest.approx(32 / 48)
    assert a["stuff_or_void"] == pytest.approx(4 / 48)
    assert a["other_things_other_frames"] == pytest.approx(12 / 48)
    assert a["other_things_same_frames"] == 0
    assert a["aq"] == pytest.approx(32 / 48)
    assert a["area"] == 16 and a["frames"] == 2
    # B: 16 pixels under 13006, 12 under 13005, 4 missed.
    assert b["coverage"] == pytest.approx(28 / 32) and b["ids"] == 2
    assert b["dominance"] == pytest.approx(16 / 28) and b["purity"] == 1
    assert b["aq"] == pytest.approx((16 * 16 / 32 + 12 * 12 / (48 + 32 - 12)) / 32)
    # A perfect tracker on the same segments: 13005 keeps A in frames 0-1 (36 px, 32 on A) and joins 13006
    # as B's id in frame 2 (28 px, all on B).
    assert a["oracle_aq"] == pytest.approx(32 / 36)
    assert b["oracle_aq"] == pytest.approx(28 * 28 / (28 + 32 - 28) / 32)


def test_mean_track_aq_is_the_stq_metric_aq() -> None:
    te = _module()
    tally = te.SequenceTally((11, 13), 1000)
    stq = STQuality(num_classes=19, things=(11, 13))
    for gt, pred in _sequence():
        tally.add(gt, pred)
        stq.update(gt, pred)
    summary = te.summarise(tally.tracks())
    assert summary["overall"]["tracks"] == 2
    assert summary["overall"]["aq"] == pytest.approx(stq.result()["AQ"], abs=1e-4)
    assert [b["tracks"] for b in summary["by_area"]] == [2]     # both of 16 px: the smallest bin
