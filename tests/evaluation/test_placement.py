"""The 3D placement score: matching by mask, position error against the ground-truth mask's placement, and
velocity direction only where it is meaningful."""

from __future__ import annotations

import numpy as np
import pytest

from vknet_eval.placement import PlacementScorer, PredictedThing

K = (100.0, 100.0, 50.0, 25.0)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((50, 100), np.int32)
    gt[10:30, 20:40] = 13001  # a car at 10 m
    gt[10:30, 60:70] = 11001  # a person at 5 m
    depth = np.full((50, 100), 30.0, np.float32)
    depth[gt == 13001] = 10.0
    depth[gt == 11001] = 5.0
    return gt, depth


def test_positions_are_scored_against_the_ground_truth_masks_placement() -> None:
    gt, depth = _scene()
    predicted = gt.copy()
    predicted[predicted == 13001] = 13005  # its own instance numbers
    car_truth = ((29.5 - 50) / 100 * 10, (19.5 - 25) / 100 * 10, 10.0)
    off = (car_truth[0] + 0.1, car_truth[1], 10.0)  # 10 cm off at ~10.3 m
    scorer = PlacementScorer()
    scorer.add_frame(predicted, [PredictedThing(1, 13005, off, (0.0, 0.0, 0.0), 1),
                                 PredictedThing(2, 11001, None, (0.0, 0.0, 0.0), 0),
                                 PredictedThing(3, 11002, (0.0, 0.0, 4.0), (0.0, 0.0, 0.0), 1)],  # no such mask
                     gt, depth, K, {13001: (0.0, 0.0, 0.0), 11001: (0.0, 0.0, 0.0)})
    summary = scorer.summary()
    assert (summary["matched"], summary["unplaced"], summary["unmatched"]) == (1, 1, 1)
    assert summary["position_error_pct_median"] == pytest.approx(100 * 0.1 / np.linalg.norm(car_truth), rel=1e-3)
    assert summary["velocity_scored"] == 0  # nothing moves


def test_velocity_direction_is_scored_on_settled_moving_things_away_from_the_border() -> None:
    gt, depth = _scene()
    scorer = PlacementScorer(settle_frames=3)
    truth = {13001: (-2.0, 0.0, 0.0), 11001: (1.0, 0.0, 0.0)}
    position = (-1.0, -0.5, 10.0)
    for frames, velocity in ((2, (-2.0, 0.0, 0.0)), (3, (-1.5, 0.1, 0.0)), (5, (2.0, 0.0, 0.0))):
        scorer.add_frame(gt, [PredictedThing(1, 13001, position, velocity, frames)], gt, depth, K, truth)
    summary = scorer.summary()
    assert summary["velocity_scored"] == 2  # the first had too few positions
    assert summary["velocity_direction_right_pct"] == 50.0
    assert scorer.velocity_errors_m_s == pytest.approx([np.hypot(0.5, 0.1), 4.0])
    border = gt.copy()
    border[10:30, 0:5] = 13001  # the car now also touches the left border
    scorer.add_frame(border, [PredictedThing(1, 13001, position, (-2.0, 0.0, 0.0), 9)], border, depth, K, truth)
    assert scorer.summary()["velocity_scored"] == 2
