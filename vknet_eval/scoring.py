"""STQ + VPQ over streamed (ground truth, prediction) frames, with the table and JSON that the CLIs print.

`vknet eval` (PNG folders), `vknet eval-bag` (offline replay) and the replay through the live node all feed
frames here one at a time, so they score identically and none of them keeps whole sequences in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vknet_eval.metrics.stq import STQuality
from vknet_eval.metrics.vpq import VPQuality
from vknet_model.config import DataConfig

VPQ_K = (0, 5, 10, 15)



class GroundTruthError(ValueError):
    """A ground-truth map the scorer cannot use (see :meth:`PanopticScorer.check_gt`)."""

class PanopticScorer:
    """Accumulates STQ (KITTI-STEP rules) and, optionally, VPQ at k = 0, 5, 10, 15.

    Args:
        data: class names, things, void id and label divisor: the model's or the dataset's config, never a
            default (Cityscapes-VPS scored with KITTI-STEP's two thing classes counts six of its eight as stuff).
        vpq: also compute VPQ (costs a little more per frame).
        vpq_stride: frames between labelled frames (1 for KITTI-STEP, 5 for Cityscapes-VPS): a window of
            k frames spans ``k // stride + 1`` labelled frames.
    """

    def __init__(self, data: DataConfig, *, vpq: bool = True, vpq_stride: int = 1) -> None:
        if vpq_stride < 1:
            raise ValueError(f"vpq_stride must be >= 1, got {vpq_stride}")
        self.data = data
        d = self.data
        self.windows = tuple(k // vpq_stride + 1 for k in VPQ_K)
        self.stq = STQuality(d.num_classes, d.thing_ids, ignore_label=d.void_id, label_divisor=d.label_divisor)
        self.vpq = VPQuality(d.num_classes, d.thing_ids, ignore_label=d.void_id, label_divisor=d.label_divisor,
                             windows=self.windows) if vpq else None
        self._sequence: str | None = None
        self.frames = 0

    def check_gt(self, gt: np.ndarray) -> None:
        """GroundTruthError unless ``gt`` is a panoptic map of this label space: ids >= 0 whose class part is
        a class or void. :meth:`add` checks first and scores nothing on it, so a caller can skip one corrupt
        ground-truth frame and go on."""
        d = self.data
        if gt.size and int(gt.min()) < 0:
            raise GroundTruthError("ground truth holds negative panoptic ids")
        classes = np.unique(gt // d.label_divisor)
        unknown = classes[(classes >= d.num_classes) & (classes != d.void_id)]
        if unknown.size:
            raise GroundTruthError(f"ground truth holds classes {unknown[:5].tolist()} outside [0, "
                                   f"{d.num_classes}) and void {d.void_id}")

    def add(self, sequence: str, gt: np.ndarray, pred: np.ndarray) -> None:
        """Score one frame; frames of a sequence must arrive in order, sequences one after another."""
        self.check_gt(gt)
        if gt.shape != pred.shape:
            raise ValueError(f"sequence {sequence}: prediction {pred.shape} and ground truth {gt.shape} differ")
        # A prediction whose class part is no class is void, whatever its value (the node's 16UC1 output
        # writes void as 65535, which 255 * 1000 does not fit in).
        d = self.data
        not_a_class = pred // d.label_divisor >= d.num_classes
        if not_a_class.any():
            pred = np.where(not_a_class, d.void_id * d.label_divisor, pred.astype(np.int64))
        if sequence != self._sequence and self.vpq is not None:
            self.vpq.end_sequence()
        self._sequence = sequence
        self.stq.update(gt, pred, sequence)
        if self.vpq is not None:
            self.vpq.add_frame(gt, pred)
        self.frames += 1

    def add_answer(self, sequence: str, gt: np.ndarray, pred: np.ndarray | None) -> None:
        """Score a replayed frame; ``None`` (the node dropped it) counts as an empty prediction, void
        everywhere, which is what a consumer of the live topic had for that frame."""
        if pred is None:
            pred = np.full(gt.shape, self.data.void_id * self.data.label_divisor, dtype=np.int32)
        self.add(sequence, gt, pred)

    def result(self) -> dict[str, Any]:
        """``STQ``, ``AQ``, ``SQ``, ``per_sequence``, ``SQ_per_class`` and, with VPQ, ``VPQ`` and ``VPQ_per_k``."""
        if self.frames == 0:
            raise ValueError("no frames were scored")
        s = self.stq.result()
        names = self.data.class_names
        scores: dict[str, Any] = {
            "STQ": float(s["STQ"]), "AQ": float(s["AQ"]), "SQ": float(s["IoU"]), "frames": self.frames,
            "per_sequence": {str(i): {"STQ": float(q), "AQ": float(a), "SQ": float(iou)} for i, q, a, iou in
                             zip(s["ID_per_seq"], s["STQ_per_seq"], s["AQ_per_seq"], s["IoU_per_seq"], strict=True)},
            "SQ_per_class": {names[c] if c < len(names) else "void": float(v) for c, v in s["IoU_per_class"].items()},
        }
        if self.vpq is not None:
            self.vpq.end_sequence()
            self._sequence = None
            v = self.vpq.result()
            scores["VPQ"] = float(v["VPQ"])
            scores["VPQ_per_k"] = {str(k): float(v["VPQ_per_k"][n]["PQ"])
                                   for k, n in zip(VPQ_K, self.windows, strict=True)}
        return scores


def format_table(scores: dict[str, Any]) -> str:
    """The per-sequence table plus the totals, as `vknet eval` prints it."""
    lines = [f"{'sequence':<10} {'STQ':>7} {'AQ':>7} {'SQ':>7}"]
    for name, row in scores["per_sequence"].items():
        lines.append(f"{name:<10} {row['STQ']:>7.4f} {row['AQ']:>7.4f} {row['SQ']:>7.4f}")
    lines.append(f"{'all':<10} {scores['STQ']:>7.4f} {scores['AQ']:>7.4f} {scores['SQ']:>7.4f}")
    if "VPQ" in scores:
        lines.append("VPQ " + "  ".join(f"k={k}: {p:.4f}" for k, p in scores["VPQ_per_k"].items())
                     + f"  mean: {scores['VPQ']:.4f}")
    return "\n".join(lines)


def write_json(path: Path, scores: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores, indent=2) + "\n")
