"""How well tracked things are placed in 3D: position and velocity errors against ground truth.

A predicted thing is matched to the ground-truth thing its mask overlaps most (IoU >= 0.5, one-to-one as in
panoptic quality). The reference position is the median back-projection of the ground-truth mask over the
ground-truth depth (the same estimator on perfect inputs), so the error is what segmentation and depth noise
cost, in percent of the thing's range. Velocities are scored on moving things (ground truth faster than
``moving_m_s``) once their velocity rests on ``settle_frames`` positions, away from the image's side borders
(a thing cut by the border has a mask centre that lags its motion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vknet_model.depth3d import Intrinsics, place
from vknet_model.percentile import percentile

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class PredictedThing:
    """One tracked thing of a frame: its id in the predicted panoptic map, and its 3D output (None: unplaced)."""

    track_id: int
    panoptic_id: int
    position: Vector | None
    velocity: Vector
    motion_frames: int  # positions its velocity rests on (TrackPlacement.motion_frames)


@dataclass
class PlacementScorer:
    min_iou: float = 0.5
    moving_m_s: float = 0.5
    settle_frames: int = 5
    position_errors_pct: list[float] = field(default_factory=list)
    velocity_errors_m_s: list[float] = field(default_factory=list)
    velocity_sign_right: int = 0
    velocity_sign_total: int = 0
    matched: int = 0
    unmatched: int = 0
    unplaced: int = 0

    def add_frame(self, predicted_panoptic: np.ndarray, things: Sequence[PredictedThing], gt_panoptic: np.ndarray,
                  gt_depth_m: np.ndarray, k: Intrinsics, gt_velocities: Mapping[int, Vector]) -> None:
        """One frame: the predicted map and things, the ground-truth panoptic map (ids of ``gt_velocities``
        are its things), its depth (metres, NaN invalid) and the camera's intrinsics."""
        matches = _match(predicted_panoptic, gt_panoptic, [t.panoptic_id for t in things], set(gt_velocities),
                         self.min_iou)
        width = gt_panoptic.shape[1]
        for thing in things:
            gt_id = matches.get(thing.panoptic_id)
            if thing.position is None:
                self.unplaced += 1
                continue
            if gt_id is None:
                self.unmatched += 1
                continue
            gt_mask = gt_panoptic == gt_id
            reference = place(gt_mask, gt_depth_m, k, erosion_px=0, min_pixels=1)
            if reference is None:
                continue
            self.matched += 1
            truth = np.asarray(reference.position)
            self.position_errors_pct.append(
                float(100 * np.linalg.norm(np.asarray(thing.position) - truth) / np.linalg.norm(truth)))
            gt_velocity = np.asarray(gt_velocities[gt_id])
            on_border = bool(gt_mask[:, [0, width - 1]].any())
            if (thing.motion_frames >= self.settle_frames and not on_border
                    and np.linalg.norm(gt_velocity) > self.moving_m_s):
                velocity = np.asarray(thing.velocity)
                self.velocity_errors_m_s.append(float(np.linalg.norm(velocity - gt_velocity)))
                self.velocity_sign_total += 1
                self.velocity_sign_right += int(float(velocity @ gt_velocity) > 0)  # the direction within 90 deg

    def summary(self) -> dict[str, float | int]:
        return {
            "matched": self.matched, "unmatched": self.unmatched, "unplaced": self.unplaced,
            "position_error_pct_median": percentile(self.position_errors_pct, 0.5, float("nan")),
            "position_error_pct_p90": percentile(self.position_errors_pct, 0.9, float("nan")),
            "velocity_scored": self.velocity_sign_total,
            "velocity_direction_right_pct": (100 * self.velocity_sign_right / self.velocity_sign_total
                                             if self.velocity_sign_total else float("nan")),
            "velocity_error_m_s_median": percentile(self.velocity_errors_m_s, 0.5, float("nan")),
            "velocity_error_m_s_p90": percentile(self.velocity_errors_m_s, 0.9, float("nan")),
        }


def _match(predicted: np.ndarray, truth: np.ndarray, predicted_ids: Sequence[int], truth_ids: set[int],
           min_iou: float) -> dict[int, int]:
    """Predicted id -> ground-truth id for pairs with IoU >= ``min_iou`` (above 0.5 a pair is unique)."""
    if not predicted_ids or not truth_ids:
        return {}
    p = predicted.astype(np.int64).ravel()
    t = truth.astype(np.int64).ravel()
    pairs, overlap = np.unique(p * (1 << 32) + t, return_counts=True)
    p_ids, p_area = np.unique(p, return_counts=True)
    t_ids, t_area = np.unique(t, return_counts=True)
    p_size = dict(zip(p_ids.tolist(), p_area.tolist(), strict=True))
    t_size = dict(zip(t_ids.tolist(), t_area.tolist(), strict=True))
    wanted = set(predicted_ids)
    out: dict[int, int] = {}
    for key, inter in zip(pairs.tolist(), overlap.tolist(), strict=True):
        pid, tid = key >> 32, key & 0xFFFFFFFF
        if pid in wanted and tid in truth_ids:
            iou = inter / (p_size[pid] + t_size[tid] - inter)
            if iou >= min_iou:
                out[pid] = tid
    return out
