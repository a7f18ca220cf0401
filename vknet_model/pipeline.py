"""The framework-free per-frame pipeline the ROS node, evaluation and benchmarks call.

image (any size, RGB uint8) -> letterbox -> backend (network + panoptic assembly) -> tracker -> panoptic and
semantic maps at the input resolution plus a list of tracked objects. The pipeline owns all temporal state
(previous kernels, tracker memory, instance numbers) and is the only place that decides when to reset it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vknet_model.backends import Backend, open_backend
from vknet_model.config import DataConfig, PostprocessConfig, TrackerConfig
from vknet_model.network import VKNetOutput, threshold_tensor
from vknet_model.preprocess import Letterbox, letterbox
from vknet_model.tracker import Detections, Tracker

_LOG = logging.getLogger(__name__)
MERGE_STRIDE = 4


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
    frames_since_seen: int = 0


@dataclass
class FrameResult:
    """Outputs of one frame at the input image's resolution.

    Attributes:
        panoptic: int32 [H, W], class_id * label_divisor + instance (instance 0 for stuff and untracked pixels).
        semantic: uint8 [H, W] dataset class ids.
        objects: tracked things visible in this frame.
        reset_reason: why the temporal state was reset before this frame ("" if it was not).
        timings_ms: per-stage wall time.
    """

    panoptic: np.ndarray
    semantic: np.ndarray
    objects: list[TrackedObjectInfo]
    reset_reason: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)


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
    """Per input size: the letterbox plus index and weight tables to bring stride-4 maps back exactly."""

    def __init__(self, box: Letterbox) -> None:
        self.box = box
        self.rows, self.cols = box.grid_indices(MERGE_STRIDE)
        h4, w4 = box.target[0] // MERGE_STRIDE, box.target[1] // MERGE_STRIDE
        row_count = np.bincount(self.rows, minlength=h4).astype(np.float64)          # source rows per cell row
        col_count = np.bincount(self.cols, minlength=w4).astype(np.float64)
        row_ysum = np.bincount(self.rows, weights=np.arange(box.source[0]), minlength=h4)
        col_xsum = np.bincount(self.cols, weights=np.arange(box.source[1]), minlength=w4)
        # Per stride-4 cell: source pixels it covers and the sums of their x and y (for exact centroids).
        self.cell_area = (row_count[:, None] * col_count[None, :]).ravel()
        self.cell_x = (row_count[:, None] * col_xsum[None, :]).ravel()
        self.cell_y = (row_ysum[:, None] * col_count[None, :]).ravel()

    def upsample(self, cells: np.ndarray) -> np.ndarray:
        """[H4, W4] -> [H, W] nearest neighbour: columns on the small map, then whole rows (about 10x faster than
        one 2-D fancy index at KITTI size)."""
        return cells.take(self.cols, axis=1).take(self.rows, axis=0)


class Pipeline:
    """Stateful per-frame inference: call :meth:`step` once per camera frame, in time order.

    Args:
        backend: a loaded backend (its contract carries the class names and input size).
        postprocess: assembly thresholds (``None``: the ones the model was trained with).
        tracker: tracker thresholds (``None``: the model's config).
        label_divisor: divisor of the panoptic output (``None``: the dataset's, 1000 for KITTI-STEP); instance
            numbers stay below it.
    """

    def __init__(self, backend: Backend, *, postprocess: PostprocessConfig | None = None,
                 tracker: TrackerConfig | None = None, label_divisor: int | None = None) -> None:
        self.backend = backend
        config = backend.contract.config
        self.data: DataConfig = config.data
        self.tracker_config = tracker or config.tracker
        self.tracker = Tracker(self.tracker_config)
        self.label_divisor = label_divisor or self.data.label_divisor
        if self.label_divisor < 2:
            raise ValueError(f"label_divisor must be >= 2, got {self.label_divisor}")
        self.instances = InstancePool(self.label_divisor - 1, self.tracker_config.memo_frames)
        self.num_proposals = config.model.num_proposals
        self._net_to_dataset = np.asarray(self.data.net_to_dataset, dtype=np.int64)
        self._input_size = backend.contract.input_size
        self.set_postprocess(postprocess or config.postprocess)
        self._geometry: _Geometry | None = None
        self._prev_kernels = backend.initial_kernels()
        self._frame = -1
        self._last_stamp: float | None = None
        self._last_frame_id: str | None = None
        self._pending_reset = "start"

    @classmethod
    def from_model(cls, model_path: str | Path, *, backend: str = "auto", device: str = "cpu") -> Pipeline:
        return cls(open_backend(model_path, backend=backend, device=device))

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
        no_prev = torch.zeros(1, device=self.backend.device)
        for _ in range(runs):
            self.backend.infer(blank, self.backend.initial_kernels(), no_prev, self._thresholds)
        return 1e3 * (time.perf_counter() - start)

    def reset(self, reason: str = "requested") -> None:
        """Forget the video so far (tracks, previous kernels); track ids keep increasing."""
        self._pending_reset = reason

    def _reset_reason(self, stamp: float | None, frame_id: str) -> str:
        if self._pending_reset:
            return self._pending_reset
        if self._last_frame_id is not None and frame_id != self._last_frame_id:
            return f"frame_id changed ({self._last_frame_id!r} -> {frame_id!r})"
        if stamp is not None and self._last_stamp is not None:
            if stamp < self._last_stamp:
                return f"time jumped back by {self._last_stamp - stamp:.3f} s"
            if stamp - self._last_stamp > self.tracker_config.reset_gap_s:
                return f"gap of {stamp - self._last_stamp:.3f} s > {self.tracker_config.reset_gap_s} s"
        return ""

    def step(self, image: np.ndarray, *, stamp: float | None = None, frame_id: str = "") -> FrameResult:
        """Process one RGB uint8 [H, W, 3] frame taken at ``stamp`` seconds by camera ``frame_id``.

        Raises:
            ValueError: the image is not a non-empty uint8 RGB array (state unchanged).
            PipelineError: the network produced non-finite values (state reset, next frame starts afresh).
        """
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        network_input, box = letterbox(image, self._input_size)
        if self._geometry is None or self._geometry.box != box:
            self._geometry = _Geometry(box)
        geometry = self._geometry
        reason = self._reset_reason(stamp, frame_id)
        if reason:
            self.tracker.reset()
            self.instances.clear()
            self._frame = -1
            self._pending_reset = ""
            _LOG.info("tracker reset: %s", reason)
        use_prev = torch.tensor([0.0 if reason else 1.0], device=self.backend.device)
        image_tensor = torch.from_numpy(network_input).to(self.backend.device)
        t1 = time.perf_counter()
        out = self.backend.infer(image_tensor, self._prev_kernels, use_prev, self._thresholds)
        t2 = time.perf_counter()
        if not (bool(torch.isfinite(out.kernels).all()) and bool(torch.isfinite(out.embeddings).all())):
            self._pending_reset = "non-finite network output"
            raise PipelineError("the network produced NaN/inf values; the tracker will restart on the next frame")
        self._prev_kernels = out.kernels
        self._frame += 1
        self._last_stamp, self._last_frame_id = stamp, frame_id

        keep = out.slot_keep[: self.num_proposals]
        thing_slots = torch.nonzero(keep).flatten()  # kept thing proposals, in slot order
        detections = Detections(
            embeddings=out.embeddings[thing_slots].float(),
            labels=out.slot_labels[thing_slots].long(),
            scores=out.slot_scores[thing_slots].float(),
            boxes=out.boxes[thing_slots].float(),
        )
        tracked = self.tracker.update(detections)
        t3 = time.perf_counter()

        result = self._assemble(out, thing_slots.cpu().numpy(), tracked.track_ids.cpu().numpy(),
                                tracked.ages.cpu().numpy(), geometry)
        t4 = time.perf_counter()
        timings.update(preprocess=1e3 * (t1 - t0), network=1e3 * (t2 - t1), tracker=1e3 * (t3 - t2),
                       postprocess=1e3 * (t4 - t3), total=1e3 * (t4 - t0))
        result.reset_reason = reason
        result.timings_ms = timings
        return result

    def _assemble(self, out: VKNetOutput, thing_slots: np.ndarray, track_ids: np.ndarray, ages: np.ndarray,
                  geometry: _Geometry) -> FrameResult:
        slot_map = out.slot_map.cpu().numpy()                     # [H4, W4] int32, -1 = none
        semantic_cells = out.semantic_map.cpu().numpy()           # [H4, W4] network classes
        labels = out.slot_labels.cpu().numpy().astype(np.int64)   # [N]
        scores = out.slot_scores.cpu().numpy()
        boxes = out.boxes.cpu().numpy()
        n = labels.shape[0]
        divisor = self.label_divisor

        tracked = track_ids >= 0
        slots = thing_slots[tracked]
        instances = self.instances.assign([int(t) for t in track_ids[tracked]], self._frame)
        slot_instance = np.zeros(n, dtype=np.int64)
        slot_instance[slots] = instances
        slot_class = self._net_to_dataset[labels]
        claimed = slot_map >= 0
        safe = np.where(claimed, slot_map, 0)
        class_cells = np.where(claimed, slot_class[safe], self._net_to_dataset[semantic_cells])
        panoptic_cells = class_cells * divisor + np.where(claimed, slot_instance[safe], 0)
        # Both maps are built per stride-4 cell and only then brought to camera resolution.
        panoptic = geometry.upsample(panoptic_cells.astype(np.int32))
        semantic = geometry.upsample(class_cells.astype(np.uint8))

        index = slot_map.ravel().astype(np.int64) + 1            # 0 = unclaimed
        area = np.bincount(index, weights=geometry.cell_area, minlength=n + 1)[1:]
        sum_x = np.bincount(index, weights=geometry.cell_x, minlength=n + 1)[1:]
        sum_y = np.bincount(index, weights=geometry.cell_y, minlength=n + 1)[1:]
        source_boxes = geometry.box.boxes_to_source(boxes[slots]) if len(slots) else np.zeros((0, 4))
        objects = []
        for j, (slot, instance) in enumerate(zip(slots, instances, strict=True)):
            pixels = area[slot]
            class_id = int(slot_class[slot])
            objects.append(TrackedObjectInfo(
                track_id=int(track_ids[tracked][j]), instance=instance, class_id=class_id,
                class_name=self.data.class_names[class_id], score=float(scores[slot]),
                box=tuple(float(v) for v in source_boxes[j]),  # type: ignore[arg-type]
                mask_area=round(float(pixels)),
                centroid=(float(sum_x[slot] / pixels), float(sum_y[slot] / pixels)) if pixels else (0.0, 0.0),
                age=int(ages[tracked][j]),
            ))
        return FrameResult(panoptic=panoptic, semantic=semantic, objects=objects)
