"""Segmentation and Tracking Quality (STQ, Weber et al. 2021), the KITTI-STEP video panoptic metric.

STQ = sqrt(AQ * SQ). The semantics are those of deeplab2's numpy ``STQuality``
(``evaluation/numpy/segmentation_and_tracking_quality.py``), re-derived and vectorised; run side by side with
that file (@e96d6cb) on randomised sequences, every output agrees to 1e-15 (deeplab2's areas cast to float64,
as NumPy 1.x did; under NumPy 2 its AQ is computed in float32 and differs by ~1e-7):

* **Encoding.** Maps hold ``semantic * label_divisor + instance`` (deeplab2 uses a bit shift instead of a
  divisor; only the decoding differs).
* **AQ.** Per sequence, a GT track is a full panoptic id of a thing class with instance != 0; a predicted
  track is the full panoptic id of any pixel predicted as a thing class (instance 0 included). GT thing
  pixels with instance 0 are *crowd*: they are removed from the GT side and every prediction on them is
  removed from the prediction side. For each GT track g,
  ``(1/|g|) * sum_p TPA(p, g) * TPA(p, g) / (|p| + |g| - TPA(p, g))`` over predicted tracks p overlapping g,
  with areas summed over the whole sequence and no class check (a track that switches class keeps its
  TPA). AQ sums these over all sequences and divides by the total number of GT tracks (``AQ_per_seq`` divides
  by the sequence's own count); with no GT track the division is by 1e-15, i.e. AQ = 0.
* **Void in AQ.** Pixels whose GT is void are never GT track pixels, but, as in deeplab2, predicted thing
  pixels on GT void *do* count in |p| (they lower the IoU of that prediction). ``mask_gt_void=True`` drops
  GT-void pixels before accumulation instead, as Video K-Net's ``tools/eval_dstq_step.py`` does before
  calling deeplab2's code; it changes AQ only (SQ already ignores GT void).
* **SQ.** mIoU of one semantic confusion matrix over all sequences (``IoU_per_seq`` uses each sequence's own
  matrix). GT-void rows are removed; classes whose union is zero are skipped. The *column* of the void label
  is kept, as in deeplab2: when predictions contain the void label on non-void GT, that column has a
  non-zero union and enters the mean as one extra "class" with IoU 0 (reported in ``IoU_per_class`` under
  ``ignore_label`` so that the mean of that dict is exactly ``IoU``).

Deliberate differences from deeplab2: a sequence (or a whole evaluation) with no non-void GT pixel and no
prediction on non-void GT has mIoU 0.0 instead of deeplab2's 0/0 = NaN (this mirrors deeplab2's own AQ
convention and keeps logs NaN-free); labels outside ``[0, num_classes)`` other than ``ignore_label`` raise
instead of crashing or wrapping; the optional ``mask_gt_void`` switch above. Per-pixel weights (deeplab2's
PVPS extension) are not supported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vknet_eval.metrics.label_space import check_label_space

_LOG = logging.getLogger(__name__)

_EPSILON = 1e-15  # deeplab2's denominator floor: AQ of a sequence without GT tracks is 0, not NaN.
_INT64_MAX = int(np.iinfo(np.int64).max)
_COMPACT_EVERY = 64  # merge pending per-frame id counts after this many frames to bound memory on long videos

IntArray = npt.NDArray[np.int64]


class _IdCounter:
    """Streaming ``id -> pixel count`` table kept as sorted numpy arrays.

    Per-frame ``np.unique`` results are queued and merged lazily, so a frame costs one ``np.unique`` over its
    pixels and the table never needs a Python dict.
    """

    def __init__(self) -> None:
        self._ids: IntArray = np.zeros(0, dtype=np.int64)
        self._counts: IntArray = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[IntArray, IntArray]] = []

    def add(self, values: IntArray) -> None:
        """Count every element of ``values`` (any shape) once."""
        if values.size == 0:
            return
        ids, counts = np.unique(values, return_counts=True)
        self._pending.append((ids.astype(np.int64), counts.astype(np.int64)))
        if len(self._pending) >= _COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate([self._ids, *(p[0] for p in self._pending)])
        counts = np.concatenate([self._counts, *(p[1] for p in self._pending)])
        self._pending = []
        unique_ids, inverse = np.unique(ids, return_inverse=True)
        summed = np.zeros(unique_ids.shape[0], dtype=np.int64)
        np.add.at(summed, inverse.reshape(-1), counts)
        self._ids, self._counts = unique_ids.astype(np.int64), summed

    def table(self) -> tuple[IntArray, IntArray]:
        """Sorted unique ids and their total counts."""
        self._compact()
        return self._ids, self._counts


@dataclass
class _Sequence:
    """Accumulated statistics of one sequence."""

    confusion: IntArray
    length: int = 0
    gt_tracks: _IdCounter = field(default_factory=_IdCounter)
    pred_tracks: _IdCounter = field(default_factory=_IdCounter)
    intersections: _IdCounter = field(default_factory=_IdCounter)


class STQuality:
    """Streaming STQ accumulator with deeplab2 semantics (see the module docstring for every rule).

    Example:
        >>> stq = STQuality(num_classes=19, things=(11, 13))
        >>> for seq, gt, pred in frames:  # doctest: +SKIP
        ...     stq.update(gt, pred, sequence_id=seq)
        >>> stq.result()["STQ"]  # doctest: +SKIP
    """

    def __init__(self, num_classes: int, things: Collection[int], ignore_label: int = 255,
                 label_divisor: int = 1000, offset: int = 2**32, *, mask_gt_void: bool = False) -> None:
        """Configure the metric.

        Args:
            num_classes: Number of evaluated semantic classes ``0 .. num_classes - 1``.
            things: Class ids that carry track ids; only their pixels enter AQ.
            ignore_label: Void class id (GT rows removed from SQ; never a GT track).
            label_divisor: Panoptic id = semantic * label_divisor + instance.
            offset: Multiplier that joins a GT id and a predicted id into one int64 key
                (``gt * offset + pred``); must exceed every panoptic id of a thing class, and the joined key
                must fit in int64, both checked here so no silent overflow can occur.
            mask_gt_void: Drop GT-void pixels before accumulating (Video K-Net's evaluation script); affects
                only AQ. Default False = deeplab2.

        Raises:
            ValueError: On inconsistent sizes, an unknown thing class or an offset that is too small/large.
        """
        things_set = check_label_space(num_classes, things, ignore_label, label_divisor)
        max_thing_id = num_classes * label_divisor  # every thing panoptic id is below this
        if offset < max_thing_id:
            raise ValueError(f"offset {offset} is too small: it must be at least num_classes * label_divisor = "
                             f"{max_thing_id}")
        if max_thing_id * offset > _INT64_MAX:
            raise ValueError(f"offset {offset} is too large: gt_id * offset + pred_id would overflow int64")
        self._num_classes = num_classes
        self._things = things_set
        self._ignore_label = ignore_label
        self._label_divisor = label_divisor
        self._offset = offset
        self._mask_gt_void = mask_gt_void
        # Confusion-matrix layout as deeplab2: a void label outside [0, num_classes) gets its own last index.
        if ignore_label >= num_classes:
            self._size = num_classes + 1
            self._void_index = num_classes
        else:
            self._size = num_classes
            self._void_index = ignore_label
        # Lookup tables from semantic value to confusion index / thing flag (semantic values are validated).
        table_len = max(num_classes, ignore_label + 1)
        self._sem_to_index = np.arange(table_len, dtype=np.int64)
        self._sem_to_index[ignore_label] = self._void_index
        self._is_thing = np.zeros(table_len, dtype=bool)
        self._is_thing[list(things_set)] = True
        self._valid_sem = np.zeros(table_len, dtype=bool)
        self._valid_sem[:num_classes] = True
        self._valid_sem[ignore_label] = True
        self._sequences: dict[Hashable, _Sequence] = {}

    def reset(self) -> None:
        """Forget every accumulated frame."""
        self._sequences = {}

    def _semantic(self, panoptic: IntArray, name: str) -> IntArray:
        """Semantic map of ``panoptic``, raising on labels the metric cannot place."""
        semantic = panoptic // self._label_divisor
        if panoptic.size:
            if int(panoptic.min()) < 0:
                raise ValueError(f"{name} contains negative panoptic ids")
            if int(semantic.max()) >= self._valid_sem.shape[0] or not bool(self._valid_sem[semantic].all()):
                found = np.unique(semantic)
                unknown = found[(found >= self._valid_sem.shape[0]) | ~self._valid_sem[np.minimum(
                    found, self._valid_sem.shape[0] - 1)]]
                raise ValueError(f"{name} contains semantic labels {unknown.tolist()} outside [0, "
                                 f"{self._num_classes}) and != ignore_label {self._ignore_label}")
        return semantic

    def update(self, gt: npt.ArrayLike, pred: npt.ArrayLike, sequence_id: str | int = 0) -> None:
        """Accumulate one frame of one sequence.

        Args:
            gt: Integer GT panoptic map (any shape, typically [H, W]), ``semantic * label_divisor + instance``.
            pred: Integer predicted panoptic map of the same shape and encoding.
            sequence_id: Sequence the frame belongs to; AQ associates tracks only within a sequence.

        Raises:
            TypeError: If a map is not integer-typed.
            ValueError: On a shape mismatch, a negative id or an unknown semantic label.
        """
        gt_arr, pred_arr = np.asarray(gt), np.asarray(pred)
        for name, arr in (("gt", gt_arr), ("pred", pred_arr)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name} must be an integer panoptic map, got dtype {arr.dtype}")
        if gt_arr.shape != pred_arr.shape:
            raise ValueError(f"gt shape {gt_arr.shape} != pred shape {pred_arr.shape}")
        y_true = gt_arr.astype(np.int64).reshape(-1)
        y_pred = pred_arr.astype(np.int64).reshape(-1)
        sem_true = self._semantic(y_true, "gt")
        sem_pred = self._semantic(y_pred, "pred")
        if self._mask_gt_void:
            keep = sem_true != self._ignore_label
            y_true, y_pred, sem_true, sem_pred = y_true[keep], y_pred[keep], sem_true[keep], sem_pred[keep]

        seq = self._sequences.get(sequence_id)
        if seq is None:
            seq = _Sequence(confusion=np.zeros((self._size, self._size), dtype=np.int64))
            self._sequences[sequence_id] = seq
        seq.length += 1

        # Semantic confusion: rows = GT, columns = prediction, one bincount over joined indices.
        rows, cols = self._sem_to_index[sem_true], self._sem_to_index[sem_pred]
        seq.confusion += np.bincount(rows * self._size + cols, minlength=self._size**2).reshape(
            self._size, self._size)

        # Tracking statistics: crowd (GT thing, instance 0) is removed from both sides.
        gt_thing = self._is_thing[sem_true]
        crowd = gt_thing & (y_true % self._label_divisor == 0)
        gt_mask = gt_thing & ~crowd
        pred_mask = self._is_thing[sem_pred] & ~crowd
        both = gt_mask & pred_mask
        seq.gt_tracks.add(y_true[gt_mask])
        seq.pred_tracks.add(y_pred[pred_mask])
        seq.intersections.add(y_true[both] * self._offset + y_pred[both])
        _LOG.debug("STQ update: sequence %r frame %d, %d pixels", sequence_id, seq.length, y_true.size)

    def _association(self, seq: _Sequence) -> tuple[float, int]:
        """Un-normalised AQ sum of one sequence and its number of GT tracks."""
        gt_ids, gt_sizes = seq.gt_tracks.table()
        pred_ids, pred_sizes = seq.pred_tracks.table()
        keys, tpa_int = seq.intersections.table()
        if keys.size == 0:
            return 0.0, int(gt_ids.size)
        # Every intersection key names a GT track and a predicted track that both exist in the tables.
        gt_size = gt_sizes[np.searchsorted(gt_ids, keys // self._offset)].astype(np.float64)
        pred_size = pred_sizes[np.searchsorted(pred_ids, keys % self._offset)].astype(np.float64)
        tpa = tpa_int.astype(np.float64)
        iou_tracking = tpa / (pred_size + gt_size - tpa)
        return float(np.sum(tpa * iou_tracking / gt_size)), int(gt_ids.size)

    def _miou(self, confusion: IntArray) -> tuple[float, dict[int, float]]:
        """mIoU over classes with non-zero union after removing the void GT row, and the per-class IoU."""
        kept = confusion.copy()
        kept[self._void_index, :] = 0
        inter = np.diagonal(kept)
        union = kept.sum(axis=0) + kept.sum(axis=1) - inter
        present = np.flatnonzero(union)
        if present.size == 0:
            return 0.0, {}
        ious = inter[present] / union[present]
        labels = [self._ignore_label if int(i) == self._void_index else int(i) for i in present]
        return float(np.mean(ious)), dict(zip(labels, (float(v) for v in ious), strict=True))

    def result(self) -> dict[str, Any]:
        """Compute STQ over everything accumulated so far.

        Returns:
            ``STQ``, ``AQ``, ``IoU`` (= SQ, the mIoU) as floats; ``ID_per_seq`` (sequence ids in first-seen
            order) and, aligned with it, ``STQ_per_seq``, ``AQ_per_seq``, ``IoU_per_seq`` (float lists),
            ``num_tracks_per_seq`` and ``Length_per_seq`` (int lists); ``IoU_per_class`` {class: IoU} for the
            classes entering the mean (the void column under ``ignore_label``, see module docstring).
        """
        ids: list[Hashable] = list(self._sequences)
        aq_sums: list[float] = []
        num_tracks: list[int] = []
        iou_per_seq: list[float] = []
        total = np.zeros((self._size, self._size), dtype=np.int64)
        for seq in self._sequences.values():
            aq_sum, n_tracks = self._association(seq)
            aq_sums.append(aq_sum)
            num_tracks.append(n_tracks)
            iou_per_seq.append(self._miou(seq.confusion)[0])
            total += seq.confusion
        aq = math.fsum(aq_sums) / max(sum(num_tracks), _EPSILON)
        aq_per_seq = [s / max(n, _EPSILON) for s, n in zip(aq_sums, num_tracks, strict=True)]
        iou, iou_per_class = self._miou(total)
        if not iou_per_class and self._sequences:
            _LOG.warning("STQ: no non-void GT pixel accumulated; mIoU reported as 0.0")
        if sum(num_tracks) == 0 and self._sequences:
            _LOG.warning("STQ: no GT track accumulated; AQ reported as 0.0")
        return {
            "STQ": math.sqrt(aq * iou),
            "AQ": aq,
            "IoU": iou,
            "ID_per_seq": ids,
            "STQ_per_seq": [math.sqrt(a * i) for a, i in zip(aq_per_seq, iou_per_seq, strict=True)],
            "AQ_per_seq": aq_per_seq,
            "IoU_per_seq": iou_per_seq,
            "num_tracks_per_seq": num_tracks,
            "Length_per_seq": [seq.length for seq in self._sequences.values()],
            "IoU_per_class": iou_per_class,
        }
