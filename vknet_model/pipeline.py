"""The framework-free per-frame pipeline the ROS node, evaluation and benchmarks call.

image (any size, RGB uint8) -> letterbox -> backend (network + panoptic assembly) -> tracker -> panoptic and
semantic maps at the input resolution plus a list of tracked objects. The pipeline owns all temporal state
(previous kernels, tracker memory, instance numbers) and is the only place that decides when to reset it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from vknet_model.backends import Backend, open_backend
from vknet_model.config import DataConfig, PostprocessConfig, TrackerConfig
from vknet_model.network import VKNetOutput, threshold_tensor
from vknet_model.preprocess import Letterbox, letterbox
from vknet_model.resets import video_break
from vknet_model.tracker import Detections, TrackedFrame, Tracker

_LOG = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A frame the pipeline could not process; the pipeline state stays usable."""


@dataclass(frozen=True)
class TrackedObjectInfo:
    """One tracked thing in one frame, in camera pixels (the ROS message mirrors these fields).

    Attributes:
        track_id: unique for the pipeline's lifetime, never reused.
        instance: number written in the panoptic image, 1 <= instance < label_divisor, unique among live tracks.
        box: x1, y1, x2, y2.
        centroid: x, y of the mask's centre of mass.
        age: frames since the track was created (0 on its first frame).
    """

    track_id: int
    instance: int
    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]
    mask_area: int
    centroid: tuple[float, float]
    age: int


@dataclass
class FrameResult:
    """Outputs of one frame at the input image's resolution.

    Attributes:
        panoptic: [H, W] in the pipeline's ``panoptic_dtype`` (int32 by default), class_id * label_divisor +
            instance (instance 0 for stuff and untracked pixels).
        objects: tracked things visible in this frame.
        class_cells: uint8 dataset class (void 255) per cell of the letterboxed network input at the model's
            merge stride (padding included, e.g. [96, 312] for a 384x1248 input at stride 4), what
            ``semantic`` is made of.
        panoptic_cells: ``panoptic`` per cell, before upsampling (the overlay is coloured per cell).
        upsample: brings a merge-stride map [Hm, Wm, ...] to [H, W, ...] (nearest cell); its second argument,
            a slice of output rows, gives a band of it.
        reset_reason: why the temporal state was reset before this frame ("" if it was not).
        timings_ms: per-stage wall time.
    """

    panoptic: np.ndarray
    objects: list[TrackedObjectInfo]
    class_cells: np.ndarray
    panoptic_cells: np.ndarray
    upsample: Callable[..., np.ndarray] = field(repr=False)
    reset_reason: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    @functools.cached_property
    def semantic(self) -> np.ndarray:
        """uint8 [H, W] dataset class ids, built on first use: a node nobody listens to for it skips the work."""
        return self.upsample(self.class_cells)


class InstancePool:
    """Maps live track ids to instance numbers in [1, max_instance], reusing numbers of dead tracks.

    Track ids grow forever; the number written into the image must stay below the label divisor, and two
    live tracks must never share one. A number is freed once its track has been unseen for ``hold_frames``
    frames (the tracker forgets the track then too, so it can never come back under that number).
    """

    def __init__(self, max_instance: int, hold_frames: int) -> None:
        self.max_instance = max_instance
        self.hold_frames = hold_frames
        self._by_track: dict[int, tuple[int, int]] = {}  # track id -> (instance, last frame seen)

    def clear(self) -> None:
        self._by_track.clear()

    def assign(self, track_ids: list[int], frame: int) -> list[int]:
        """Instance numbers for the tracks seen on ``frame`` (in the same order)."""
        expired = [t for t, (_, seen) in self._by_track.items() if frame - seen >= self.hold_frames]
        for track in expired:
            del self._by_track[track]
        used = {inst for inst, _ in self._by_track.values()}
        free = (i for i in range(1, self.max_instance + 1) if i not in used)
        out = []
        for track in track_ids:
            if track not in self._by_track:
                instance = next(free, None)
                if instance is None:
                    raise PipelineError(f"more than {self.max_instance} live tracks: raise the label divisor")
                self._by_track[track] = (instance, frame)
            instance = self._by_track[track][0]
            self._by_track[track] = (instance, frame)
            out.append(instance)
        return out


class _Geometry:
    """Per input size: the letterbox plus index and weight tables to bring merge-stride maps back exactly."""

    def __init__(self, box: Letterbox, stride: int) -> None:
        self.box = box
        self.rows, self.cols = box.grid_indices(stride)
        h4, w4 = box.target[0] // stride, box.target[1] // stride
        row_count = np.bincount(self.rows, minlength=h4).astype(np.float64)          # source rows per cell row
        col_count = np.bincount(self.cols, minlength=w4).astype(np.float64)
        row_ysum = np.bincount(self.rows, weights=np.arange(box.source[0]), minlength=h4)
        col_xsum = np.bincount(self.cols, weights=np.arange(box.source[1]), minlength=w4)
        # Per cell: source pixels it covers and the sums of their x and y (for exact centroids).
        self.cell_area = (row_count[:, None] * col_count[None, :]).ravel()
        self.cell_x = (row_count[:, None] * col_xsum[None, :]).ravel()
        self.cell_y = (row_ysum[:, None] * col_count[None, :]).ravel()

    def upsample(self, cells: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """[Hm, Wm, ...] -> [H, W, ...] nearest neighbour: columns on the small map, then whole rows (about 10x
        faster than one 2-D fancy index at KITTI size). ``rows`` picks a band of the output rows."""
        return cells.take(self.cols, axis=1).take(self.rows[rows], axis=0)


class Pipeline:
    """Stateful per-frame inference: call :meth:`step` once per camera frame, in time order.

    Args:
        backend: a loaded backend (its contract carries the class names and input size).
        postprocess: assembly thresholds (``None``: the ones the model was trained with).
        tracker: tracker thresholds (``None``: the model's config).
        label_divisor: divisor of the panoptic output (``None``: the dataset's, 1000 for KITTI-STEP); instance
            numbers stay below it.
        panoptic_dtype: integer dtype of ``FrameResult.panoptic``. The node asks for the dtype of its message
            encoding (uint16 for 16UC1), so the map is built once in the form it is sent, with no conversion or
            range check per frame; every id must fit, which is checked here.
        track_ids: (offset, stride) of the track ids reported: the tracker's k-th track is reported as
            ``offset + stride * k``. A node serving n cameras gives camera i (i, n), so that no track id is
            ever shared between cameras.
    """

    def __init__(self, backend: Backend, *, postprocess: PostprocessConfig | None = None,
                 tracker: TrackerConfig | None = None, label_divisor: int | None = None,
                 panoptic_dtype: npt.DTypeLike = np.int32, track_ids: tuple[int, int] = (0, 1)) -> None:
        self.backend = backend
        self.id_offset, self.id_stride = track_ids
        if self.id_stride < 1 or not 0 <= self.id_offset < self.id_stride:
            raise ValueError(f"track_ids (offset, stride) must have 0 <= offset < stride, got {track_ids}")
        config = backend.contract.config
        self.data: DataConfig = config.data
        self.tracker_config = tracker or config.tracker
        self.tracker = Tracker(self.tracker_config)
        self.label_divisor = label_divisor or self.data.label_divisor
        if self.label_divisor < 2:
            raise ValueError(f"label_divisor must be >= 2, got {self.label_divisor}")
        self.panoptic_dtype = np.dtype(panoptic_dtype)
        if not np.issubdtype(self.panoptic_dtype, np.integer):
            raise ValueError(f"panoptic_dtype must be an integer dtype, got {self.panoptic_dtype}")
        largest_id = self.data.num_classes * self.label_divisor - 1
        dtype_max = int(np.iinfo(self.panoptic_dtype).max)
        if largest_id > dtype_max:
            raise ValueError(f"panoptic ids reach {largest_id} ({self.data.num_classes} classes x label_divisor "
                             f"{self.label_divisor}), more than {self.panoptic_dtype} holds")
        # Void is void_id * label_divisor (KITTI-STEP's 255000) where the dtype holds it, else the dtype's largest
        # value (65535 in 16UC1); either way its class part is no class, which is how every reader tells void.
        self.void_panoptic = min(self.data.void_id * self.label_divisor, dtype_max)
        self.instances = InstancePool(self.label_divisor - 1, self.tracker_config.memo_frames)
        self.num_proposals = config.model.num_proposals
        self._merge_stride = config.model.merge_stride
        # Network class -> dataset class, with the assembly's void code (K) last.
        self._net_to_dataset = np.asarray((*self.data.net_to_dataset, self.data.void_id), dtype=np.int64)
        self._input_size = backend.contract.input_size
        self.set_postprocess(postprocess or config.postprocess)
        self._geometry: _Geometry | None = None
        # The network input is written into one buffer, reused frame after frame (every backend copies or
        # consumes it before infer returns).
        self._network_input = np.empty((1, 3, *self._input_size), dtype=np.uint8)
        self._use_prev = {flag: torch.tensor([float(flag)], device=backend.device) for flag in (False, True)}
        self._prev_kernels = backend.initial_kernels()
        self._frame = -1
        self._last_stamp: float | None = None
        self._last_frame_id: str | None = None
        self._pending_reset = "start"

    @classmethod
    def from_model(cls, model_path: str | Path, *, backend: str = "auto", device: str = "cpu",
                   precision: str = "auto") -> Pipeline:
        return cls(open_backend(model_path, backend=backend, device=device, precision=precision))

    def set_postprocess(self, postprocess: PostprocessConfig) -> None:
        """Change the assembly thresholds from the next frame on (they are a graph input)."""
        for name in ("instance_score_thr", "overlap_thr", "mask_thr"):
            value = getattr(postprocess, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.postprocess = postprocess
        self._thresholds = threshold_tensor(postprocess, self.backend.device)

    def set_tracker_config(self, tracker: TrackerConfig) -> None:
        """Change the tracker thresholds from the next frame on; live tracks are kept."""
        self.tracker_config = tracker
        self.tracker.cfg = tracker

    def warm_up(self, runs: int = 2) -> float:
        """Run the network ``runs`` times on a blank input and return the milliseconds that took.

        The first forwards of a fresh session are several times slower (allocations, kernel selection): a live
        node warms up on configure so that the camera's first frames are not the ones dropped. Temporal state
        is not touched.
        """
        start = time.perf_counter()
        blank = torch.zeros((1, 3, *self._input_size), dtype=torch.uint8, device=self.backend.device)
        for _ in range(runs):
            self.backend.infer(blank, self.backend.initial_kernels(), self._use_prev[False], self._thresholds)
        return 1e3 * (time.perf_counter() - start)

    def reset(self, reason: str = "requested") -> None:
        """Forget the video so far (tracks, previous kernels); track ids keep increasing."""
        self._pending_reset = reason

    def _reset_reason(self, stamp: float | None, frame_id: str) -> str:
        if self._pending_reset:
            return self._pending_reset
        return video_break(self._last_stamp, self._last_frame_id, stamp, frame_id, self.tracker_config.reset_gap_s)

    def step(self, image: np.ndarray, *, stamp: float | None = None, frame_id: str = "",
             channel_order: str = "rgb") -> FrameResult:
        """Process one uint8 [H, W, 3] frame taken at ``stamp`` seconds by camera ``frame_id``.

        ``channel_order`` "bgr" takes a BGR frame as it is (the swap is folded into the network input's copy).

        Raises:
            ValueError: the image is not a non-empty uint8 RGB array (state unchanged).
            PipelineError: the network produced non-finite values (state reset, next frame starts afresh).
        """
        t0 = time.perf_counter()
        network_input, box = letterbox(image, self._input_size, out=self._network_input, channel_order=channel_order)
        if self._geometry is None or self._geometry.box != box:
            self._geometry = _Geometry(box, self._merge_stride)
        geometry = self._geometry
        reason = self._reset_reason(stamp, frame_id)
        if reason:
            self.tracker.reset()
            self.instances.clear()
            self._frame = -1
            self._pending_reset = ""
            _LOG.debug("tracker reset: %s", reason)  # callers report resets (the node counts and logs them)
        image_tensor = torch.from_numpy(network_input).to(self.backend.device)
        t1 = time.perf_counter()
        out = self.backend.infer(image_tensor, self._prev_kernels, self._use_prev[not reason], self._thresholds)
        if self.backend.device.type == "cuda":
            # The network's time is the GPU's, not its launch's (the host copy below would wait anyway).
            torch.cuda.synchronize(self.backend.device)
        t2 = time.perf_counter()
        # The small outputs go to the host once (on a GPU: a few hundred KB); all later work is numpy.
        host = _HostOutputs.of(out)
        if not (_all_finite(out.kernels) and np.isfinite(host.embeddings).all()):
            self._pending_reset = "non-finite network output"
            raise PipelineError("the network produced NaN/inf values; the tracker will restart on the next frame")
        self._prev_kernels = out.kernels
        self._frame += 1
        self._last_stamp, self._last_frame_id = stamp, frame_id

        thing_slots = np.flatnonzero(host.slot_keep[: self.num_proposals])  # kept thing proposals, in slot order
        tracked = self.tracker.update(Detections(
            embeddings=host.embeddings[thing_slots], labels=host.slot_labels[thing_slots],
            scores=host.slot_scores[thing_slots], boxes=host.boxes[thing_slots]))
        t3 = time.perf_counter()

        result = self._assemble(host, thing_slots, tracked, geometry)
        t4 = time.perf_counter()
        result.reset_reason = reason
        result.timings_ms = {"preprocess": 1e3 * (t1 - t0), "network": 1e3 * (t2 - t1), "tracker": 1e3 * (t3 - t2),
                             "postprocess": 1e3 * (t4 - t3), "total": 1e3 * (t4 - t0)}
        return result

    def _assemble(self, out: _HostOutputs, thing_slots: np.ndarray, tracking: TrackedFrame,
                  geometry: _Geometry) -> FrameResult:
        labels = out.slot_labels.astype(np.int64)                 # [N]
        n = labels.shape[0]
        track_ids, ages = tracking.track_ids, tracking.ages
        slot_map, boxes = _merge_duplicates(out.slot_map, out.boxes, thing_slots, tracking)  # -1 = unclaimed

        tracked = track_ids >= 0
        slots = thing_slots[tracked]
        live_ids = (track_ids[tracked] * self.id_stride + self.id_offset).tolist()
        live_ages = ages[tracked].tolist()
        instances = self.instances.assign(live_ids, self._frame)
        slot_instance = np.zeros(n, dtype=np.int64)
        slot_instance[slots] = instances
        slot_class = self._net_to_dataset[labels]
        # A kept thing the tracker gave no id (too weak to start a track, where a user set init_score_thr
        # above instance_score_thr; duplicates were merged above) is void: a thing pixel never goes out as
        # instance 0, which reads as a crowd region.
        untracked = np.zeros(n, dtype=bool)
        untracked[thing_slots[~tracked]] = True
        slot_class = np.where(untracked, self.data.void_id, slot_class)
        claimed = slot_map >= 0
        # Per-slot lookups indexed by the slot map directly: its -1 (unclaimed) reads the last slot, whose value
        # np.where then replaces (class) or zeroes (instance).
        class_cells = np.where(claimed, slot_class[slot_map], self._net_to_dataset[out.semantic_map])
        panoptic_cells = np.where(class_cells == self.data.void_id, self.void_panoptic,
                                  class_cells * self.label_divisor + np.where(claimed, slot_instance[slot_map], 0)
                                  ).astype(self.panoptic_dtype)
        # The map is built per cell and only then brought to camera resolution.
        panoptic = geometry.upsample(panoptic_cells)

        index = slot_map.ravel().astype(np.int64) + 1            # 0 = unclaimed
        area = np.bincount(index, weights=geometry.cell_area, minlength=n + 1)[1:]
        sum_x = np.bincount(index, weights=geometry.cell_x, minlength=n + 1)[1:]
        sum_y = np.bincount(index, weights=geometry.cell_y, minlength=n + 1)[1:]
        source_boxes = geometry.box.boxes_to_source(boxes[slots]).tolist() if len(slots) else []
        objects = []
        for slot, track_id, age, instance, box in zip(slots.tolist(), live_ids, live_ages, instances, source_boxes,
                                                      strict=True):
            pixels = float(area[slot])
            class_id = int(slot_class[slot])
            objects.append(TrackedObjectInfo(
                track_id=track_id, instance=instance, class_id=class_id,
                class_name=self.data.class_names[class_id], score=float(out.slot_scores[slot]),
                box=tuple(box),  # type: ignore[arg-type]
                mask_area=round(pixels),
                centroid=(float(sum_x[slot] / pixels), float(sum_y[slot] / pixels)) if pixels else (0.0, 0.0),
                age=age,
            ))
        return FrameResult(panoptic=panoptic, objects=objects, class_cells=class_cells.astype(np.uint8),
                           panoptic_cells=panoptic_cells, upsample=geometry.upsample)


def _merge_duplicates(slot_map: np.ndarray, boxes: np.ndarray, thing_slots: np.ndarray,
                      tracking: TrackedFrame) -> tuple[np.ndarray, np.ndarray]:
    """``slot_map`` and ``boxes`` with each duplicate thing's cells given to the tracked detection it duplicates
    (whose box then covers both).

    The tracker calls a detection a duplicate when it overlaps a better one of the same object; its own
    cells would otherwise have no track id and go out as void, and a void label on labelled pixels enters
    STQ's SQ as one more class with IoU 0 (deeplab2's rule: 11 of 300 held-out frames cost SQ 0.09).
    """
    dup = np.flatnonzero(tracking.duplicate_of >= 0)
    dup = dup[tracking.track_ids[tracking.duplicate_of[dup]] >= 0]
    if not dup.size:
        return slot_map, boxes
    source, target = thing_slots[dup], thing_slots[tracking.duplicate_of[dup]]
    remap = np.arange(-1, boxes.shape[0], dtype=slot_map.dtype)  # slot v (or -1, unclaimed) at index v + 1
    remap[source + 1] = target
    merged = boxes.copy()
    for s, t in zip(source.tolist(), target.tolist(), strict=True):
        merged[t, :2] = np.minimum(merged[t, :2], boxes[s, :2])
        merged[t, 2:] = np.maximum(merged[t, 2:], boxes[s, 2:])
    return remap[slot_map + 1], merged


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN/inf in ``tensor``: numpy on the host (torch's per-op overhead is most of the cost on small arrays
    there), one reduction where it lives otherwise (no copy of the kernels, which stay on the device)."""
    if tensor.device.type == "cpu":
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(torch.isfinite(tensor).all())


@dataclass(frozen=True)
class _HostOutputs:
    """The network outputs the tracker and the assembly read, as host arrays (see ``VKNetOutput``)."""

    slot_map: np.ndarray
    semantic_map: np.ndarray
    slot_scores: np.ndarray
    slot_labels: np.ndarray
    slot_keep: np.ndarray
    boxes: np.ndarray
    embeddings: np.ndarray

    @staticmethod
    def of(out: VKNetOutput) -> _HostOutputs:
        return _HostOutputs(**{name: getattr(out, name).cpu().numpy() for name in _HostOutputs.__dataclass_fields__})
