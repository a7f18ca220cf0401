"""Video Panoptic Quality (VPQ, Kim et al. 2020), the Cityscapes-VPS metric, as VPSNet's ``tools/eval_vpq.py``.

For a window of ``n`` consecutive *evaluated* frames, the GT and predicted maps of those frames are joined
into one tube (VPSNet stacks them; side by side is the same for counting) and panoptic quality is computed
on the tube. Cityscapes-VPS annotates every 5th frame, so a window of ``n`` evaluated frames spans
``k = 5 * (n - 1)`` video frames: ``windows=(1, 2, 3, 4)`` are the paper's k = 0, 5, 10, 15. On data with
every frame annotated (KITTI-STEP) ``n`` frames mean ``k = n - 1``. Results are keyed by ``n``.

Replicated VPSNet behaviour (``vpq_compute_single_core`` / ``PQStat.pq_average``):

* **Windows.** Every window start ``0 .. T - n`` of a sequence (stride 1, overlapping); a sequence shorter
  than ``n`` frames contributes nothing to that window size. Per-class TP / FP / FN / IoU sums are
  accumulated over all windows of all sequences, and PQ is computed once per window size from the totals.
* **Segments** are panoptic ids (``semantic * label_divisor + instance``), so a segment is a (class, id)
  pair and the same id in two frames of a window is one tube segment. Pixels of ``ignore_label`` (GT or
  prediction) are VOID (VPSNet's id 0): no segment.
* **Crowd** (VPSNet's ``iscrowd``): a GT segment of a thing class with instance 0 (KITTI-STEP / Video K-Net
  convention). It is never matched and never an FN.
* **Match**: same class and ``IoU > 0.5`` with ``union = |p| + |g| - |p & g| - |p & VOID|``. The match is
  unique by the usual PQ argument, so no assignment step is needed.
* **FP**: an unmatched prediction is ignored when ``(|p & VOID| + |p & crowd of its class|) / |p| > 0.5``,
  ``|p|`` including its void part.
* **Per-class** ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP`` (0 without TP),
  ``RQ = TP / (TP + FP/2 + FN/2)``; the per-window-size PQ / SQ / RQ are means over the classes with
  ``TP + FP + FN > 0`` (all / things / stuff); ``VPQ`` is the mean over window sizes of that PQ.

Checked against VPSNet's ``tools/eval_vpq.py`` as released (mcahny/vps @72d59ab, which deep-copies each
frame's segment info per window): equal to 1e-14 on randomised sequences with crowd, void, id and class
switches. Segment areas are counted from the maps. An earlier revision of that file (@2696f30) merged GT
areas by ``+=`` on the shared per-frame dicts, so from 3-frame windows on a GT segment absent from a
window's first frame kept an inflated area in the next window; that aliasing is not reproduced. A set with
no class to average over gives 0.0 where VPSNet raises ZeroDivisionError. Crowd is derived from the label
encoding, not from a JSON flag; stuff segments with a non-zero instance are separate segments (encode stuff
with instance 0).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vknet_eval.metrics.label_space import check_label_space

_LOG = logging.getLogger(__name__)

_INT64_MAX = int(np.iinfo(np.int64).max)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class VPQuality:
    """Streaming VPQ accumulator over whole sequences (see the module docstring for every rule).

    Example:
        >>> vpq = VPQuality(num_classes=19, things=range(11, 19))
        >>> vpq.update_sequence(gt_frames, pred_frames)  # doctest: +SKIP
        >>> vpq.result()["VPQ"]  # doctest: +SKIP
    """

    def __init__(self, num_classes: int, things: Collection[int], ignore_label: int = 255,
                 label_divisor: int = 1000, windows: Sequence[int] = (1, 2, 3, 4)) -> None:
        """Configure the metric.

        Args:
            num_classes: Number of evaluated semantic classes ``0 .. num_classes - 1``.
            things: Thing class ids (instance 0 of these in GT is crowd; the things/stuff split).
            ignore_label: Void class id.
            label_divisor: Panoptic id = semantic * label_divisor + instance.
            windows: Window sizes in consecutive evaluated frames (n = k / 5 + 1 on Cityscapes-VPS).

        Raises:
            ValueError: On inconsistent sizes, an unknown thing class or a bad window size.
        """
        things_set = check_label_space(num_classes, things, ignore_label, label_divisor)
        if not windows or any(int(n) < 1 for n in windows) or len(set(windows)) != len(windows):
            raise ValueError(f"windows must be distinct positive frame counts, got {tuple(windows)}")
        self._num_classes = num_classes
        self._things = things_set
        self._ignore_label = ignore_label
        self._label_divisor = label_divisor
        self._windows = tuple(int(n) for n in windows)
        # Segment code: 0 = VOID, else panoptic id + 1 (< num_classes * label_divisor + 1 = self._code_base).
        self._code_base = num_classes * label_divisor + 1
        if self._code_base * self._code_base > _INT64_MAX:
            raise ValueError("num_classes * label_divisor is too large for int64 pair keys")
        self._classes = np.array([c for c in range(num_classes) if c != ignore_label], dtype=np.int64)
        self._is_thing = np.zeros(num_classes, dtype=bool)
        self._is_thing[list(things_set)] = True
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated sequence."""
        shape = (len(self._windows), self._num_classes)
        self._iou = np.zeros(shape, dtype=np.float64)
        self._tp = np.zeros(shape, dtype=np.int64)
        self._fp = np.zeros(shape, dtype=np.int64)
        self._fn = np.zeros(shape, dtype=np.int64)
        self._num_sequences = 0
        self._recent: deque[tuple[IntArray, IntArray]] = deque(maxlen=max(self._windows))
        self._stream_frames = 0

    def _codes(self, panoptic: npt.ArrayLike, name: str) -> IntArray:
        """Flattened segment codes (0 = VOID, else id + 1), raising on labels the metric cannot place."""
        arr = np.asarray(panoptic)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must be an integer panoptic map, got dtype {arr.dtype}")
        ids = arr.astype(np.int64).reshape(-1)
        if ids.size and int(ids.min()) < 0:
            raise ValueError(f"{name} contains negative panoptic ids")
        semantic = ids // self._label_divisor
        void = semantic == self._ignore_label
        unknown = ~void & (semantic >= self._num_classes)
        if bool(unknown.any()):
            raise ValueError(f"{name} contains semantic labels {np.unique(semantic[unknown]).tolist()} outside "
                             f"[0, {self._num_classes}) and != ignore_label {self._ignore_label}")
        return np.where(void, 0, ids + 1)

    def _frame_pairs(self, gt: npt.ArrayLike, pred: npt.ArrayLike, index: int) -> tuple[IntArray, IntArray]:
        """Joined (GT code, predicted code) keys of one frame and their pixel counts."""
        if np.shape(gt) != np.shape(pred):
            raise ValueError(f"frame {index}: gt shape {np.shape(gt)} != pred shape {np.shape(pred)}")
        keys = self._codes(gt, f"gt frame {index}") * self._code_base + self._codes(pred, f"pred frame {index}")
        pair_keys, counts = np.unique(keys, return_counts=True)
        return pair_keys.astype(np.int64), counts.astype(np.int64)

    def update_sequence(self, gts: Sequence[npt.ArrayLike], preds: Sequence[npt.ArrayLike]) -> None:
        """Accumulate every window of one whole sequence.

        Each frame is reduced once to its (GT segment, predicted segment) pair counts; a window's tube
        statistics are the sums of its frames' pair counts, so overlapping windows cost no extra pixel work.

        Args:
            gts: GT panoptic maps of the sequence's evaluated frames, in time order.
            preds: Predicted panoptic maps, same length, shapes and encoding; predicted ids must be
                consistent over time for tube matching (that is what VPQ measures).

        Raises:
            TypeError: If a map is not integer-typed.
            ValueError: On a length or shape mismatch, a negative id or an unknown semantic label.
        """
        if len(gts) != len(preds):
            raise ValueError(f"{len(gts)} GT frames but {len(preds)} predicted frames")
        self.end_sequence()
        for g, p in zip(gts, preds, strict=True):
            self.add_frame(g, p)
        self.end_sequence(count_empty=True)

    def add_frame(self, gt: npt.ArrayLike, pred: npt.ArrayLike) -> None:
        """Streaming form of :meth:`update_sequence`: add the next frame of the current sequence.

        Only the last ``max(windows)`` frames' pair counts are kept, so replaying a long bag needs no
        memory for whole sequences; every window is accumulated when its last frame arrives. Call
        :meth:`end_sequence` between sequences.
        """
        self._recent.append(self._frame_pairs(gt, pred, self._stream_frames))
        self._stream_frames += 1
        for w, n in enumerate(self._windows):
            if len(self._recent) >= n:
                window = list(self._recent)[-n:]
                self._accumulate(w, np.concatenate([f[0] for f in window]), np.concatenate([f[1] for f in window]))

    def end_sequence(self, count_empty: bool = False) -> None:
        """Close the streamed sequence (no window spans two sequences); a no-op when none is open."""
        if self._stream_frames or count_empty:
            self._num_sequences += 1
            _LOG.debug("VPQ: sequence %d with %d frames accumulated", self._num_sequences, self._stream_frames)
        self._recent.clear()
        self._stream_frames = 0

    def _accumulate(self, w: int, keys: IntArray, counts: IntArray) -> None:
        """Add one tube's TP / FP / FN / IoU per class to window-size slot ``w``."""
        pair_keys, inverse = np.unique(keys, return_inverse=True)
        inter = np.bincount(inverse.reshape(-1), weights=counts, minlength=pair_keys.size)
        g_code, p_code = pair_keys // self._code_base, pair_keys % self._code_base
        gt_codes, g_idx = np.unique(g_code, return_inverse=True)
        pred_codes, p_idx = np.unique(p_code, return_inverse=True)
        g_idx, p_idx = g_idx.reshape(-1), p_idx.reshape(-1)
        gt_area = np.bincount(g_idx, weights=inter, minlength=gt_codes.size)
        pred_area = np.bincount(p_idx, weights=inter, minlength=pred_codes.size)
        pred_void = np.bincount(p_idx, weights=inter * (g_code == 0), minlength=pred_codes.size)

        # Class / crowd of every segment (code 0 = VOID gets class -1 and is excluded below).
        gt_cls = np.where(gt_codes > 0, (gt_codes - 1) // self._label_divisor, -1)
        pred_cls = np.where(pred_codes > 0, (pred_codes - 1) // self._label_divisor, -1)
        gt_instance = (gt_codes - 1) % self._label_divisor
        gt_crowd = (gt_codes > 0) & self._is_thing[np.maximum(gt_cls, 0)] & (gt_instance == 0)

        pair_gt_cls, pair_pred_cls = gt_cls[g_idx], pred_cls[p_idx]
        same_class = (g_code > 0) & (p_code > 0) & (pair_gt_cls == pair_pred_cls)
        candidate = same_class & ~gt_crowd[g_idx]
        union = pred_area[p_idx] + gt_area[g_idx] - inter - pred_void[p_idx]
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=candidate)
        match = candidate & (iou > 0.5)

        nc = self._num_classes
        self._tp[w] += np.bincount(pair_gt_cls[match], minlength=nc)
        self._iou[w] += np.bincount(pair_gt_cls[match], weights=iou[match], minlength=nc)
        gt_matched = np.zeros(gt_codes.size, dtype=bool)
        gt_matched[g_idx[match]] = True
        pred_matched = np.zeros(pred_codes.size, dtype=bool)
        pred_matched[p_idx[match]] = True

        fn = (gt_codes > 0) & ~gt_crowd & ~gt_matched
        self._fn[w] += np.bincount(gt_cls[fn], minlength=nc)

        # An unmatched prediction mostly on VOID or on the crowd region of its own class is not an FP.
        on_crowd = same_class & gt_crowd[g_idx]
        ignored_area = pred_void + np.bincount(p_idx, weights=inter * on_crowd, minlength=pred_codes.size)
        mostly_ignored = np.divide(ignored_area, pred_area, out=np.zeros_like(pred_area), where=pred_area > 0) > 0.5
        fp = (pred_codes > 0) & ~pred_matched & ~mostly_ignored
        self._fp[w] += np.bincount(pred_cls[fp], minlength=nc)

    @staticmethod
    def _average(pq: FloatArray, sq: FloatArray, rq: FloatArray, present: npt.NDArray[np.bool_]) -> dict[str, Any]:
        """Mean PQ / SQ / RQ over the ``present`` classes (0.0 with none) and their number ``N``."""
        n = int(present.sum())
        if n == 0:
            return {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "N": 0}
        return {"PQ": float(pq[present].mean()), "SQ": float(sq[present].mean()),
                "RQ": float(rq[present].mean()), "N": n}

    def result(self) -> dict[str, Any]:
        """Compute VPQ over everything accumulated so far.

        Returns:
            ``VPQ``, ``VPQ_things``, ``VPQ_stuff``: means of the per-size PQ over the window sizes that had at
            least one window with a class in it (0.0 when none had).
            ``VPQ_per_k``: {n: {"PQ", "SQ", "RQ", "N", "things": {...}, "stuff": {...}}} per window size n
            (in evaluated frames; k = 5 (n - 1) on Cityscapes-VPS), N = number of classes averaged.
            ``PQ_per_class``: {n: {class: {"PQ", "SQ", "RQ", "IoU", "TP", "FP", "FN"}}} for every evaluated
            class (zeros where a class has no TP, FP or FN, as VPSNet prints them).
        """
        per_k: dict[int, dict[str, Any]] = {}
        per_class: dict[int, dict[int, dict[str, float | int]]] = {}
        classes = self._classes
        is_thing = self._is_thing[classes]
        for w, n in enumerate(self._windows):
            tp = self._tp[w, classes].astype(np.float64)
            fp = self._fp[w, classes].astype(np.float64)
            fn = self._fn[w, classes].astype(np.float64)
            iou = self._iou[w, classes]
            denom = tp + 0.5 * fp + 0.5 * fn
            present = (tp + fp + fn) > 0
            pq = np.divide(iou, denom, out=np.zeros_like(iou), where=present)
            rq = np.divide(tp, denom, out=np.zeros_like(tp), where=present)
            sq = np.divide(iou, tp, out=np.zeros_like(iou), where=tp > 0)
            entry = self._average(pq, sq, rq, present)
            entry["things"] = self._average(pq, sq, rq, present & is_thing)
            entry["stuff"] = self._average(pq, sq, rq, present & ~is_thing)
            per_k[n] = entry
            per_class[n] = {
                int(c): {"PQ": float(pq[i]), "SQ": float(sq[i]), "RQ": float(rq[i]), "IoU": float(iou[i]),
                         "TP": int(tp[i]), "FP": int(fp[i]), "FN": int(fn[i])}
                for i, c in enumerate(classes)
            }
        if self._num_sequences == 0:
            _LOG.warning("VPQ: no sequence accumulated; every score is 0.0")
        # Average over the window sizes that saw data: a sequence shorter than a window has none of that size,
        # and counting it as PQ 0 would punish short clips (VPSNet divides by zero there instead).
        evaluated = [e for e in per_k.values() if e["N"] > 0]
        count = max(1, len(evaluated))
        return {
            "VPQ": sum(e["PQ"] for e in evaluated) / count,
            "VPQ_things": sum(e["things"]["PQ"] for e in evaluated) / count,
            "VPQ_stuff": sum(e["stuff"]["PQ"] for e in evaluated) / count,
            "VPQ_per_k": per_k,
            "PQ_per_class": per_class,
        }
