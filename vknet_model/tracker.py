"""Online kernel tracker (DESIGN.md 1.3): quasi-dense embedding association outside the network.

Each frame's kept thing segments are matched to a memory of live tracks and of last frame's unmatched
detections ("backdrops") by the bi-softmax of embedding dot products, greedily in score order, as in
Video K-Net / QDTrack. The tracker is plain Python around a few small tensor ops: the similarity math runs
on the detections' device, the greedy loop on one CPU copy of the (tiny) similarity matrix.

Unlike the upstream code, every result is written back through an explicit permutation to the *input*
order of the detections, so filtering (sorting, duplicate removal) can never shift ids onto the wrong
masks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from vknet_model.config import TrackerConfig

_LOG = logging.getLogger(__name__)

_SUPPRESSED = -2  # internal id: strongly matched a track with a low score; neither a new track nor a backdrop


@dataclass(frozen=True)
class Detections:
    """Kept thing segments of one frame (M may be 0; all tensors on one device).

    Attributes:
        embeddings: float [M, D] kernel association embeddings; not L2-normalised, matched by dot product.
        labels: integer (int64) [M] network class index.
        scores: float [M] in [0, 1].
        boxes: float [M, 4] x1, y1, x2, y2 in pixels; only used for duplicate removal.
    """

    embeddings: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor


@dataclass(frozen=True)
class TrackedFrame:
    """Tracking result of one frame, aligned with the input order of its ``Detections``.

    Attributes:
        track_ids: int64 [M] track id, -1 for no track (duplicate, backdrop or suppressed detection).
        ages: int64 [M] frames since the track was created (0 on its first frame), -1 where there is no track.
        is_new: bool [M] the track was created on this frame.
    """

    track_ids: torch.Tensor
    ages: torch.Tensor
    is_new: torch.Tensor


def _empty_ids() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


def _empty_embeddings() -> torch.Tensor:
    return torch.empty(0, 0, dtype=torch.float32)


def _empty_boxes() -> torch.Tensor:
    return torch.empty(0, 4, dtype=torch.float32)


@dataclass
class TrackerState:
    """Everything the tracker remembers between frames.

    Row ``k`` of every ``track_*`` tensor describes the same track. Embeddings, labels and boxes live on the
    device of the last update (they enter the similarity math); ids and frame stamps stay on the CPU because
    only the greedy loop and the bookkeeping read them.

    Attributes:
        frame: index of the last processed frame since the last reset (-1: none yet).
        next_id: next fresh track id; survives ``reset`` so ids are never reused by one ``Tracker``.
        track_ids: int64 [T] (CPU) track ids.
        track_embeddings: float32 [T, D] momentum-averaged embeddings ([0, 0] while empty).
        track_labels: int64 [T] class of the last matched detection.
        track_boxes: float32 [T, 4] box of the last matched detection (kept for diagnostics).
        track_created: int64 [T] (CPU) frame the track was created on.
        track_last_seen: int64 [T] (CPU) last frame the track was matched on.
        backdrop_embeddings: float32 [B, D] embeddings of recent unmatched detections ([0, 0] while empty).
        backdrop_labels: int64 [B] their classes.
        backdrop_frames: int64 [B] (CPU) frame each backdrop was stored on.
    """

    frame: int = -1
    next_id: int = 0
    track_ids: torch.Tensor = field(default_factory=_empty_ids)
    track_embeddings: torch.Tensor = field(default_factory=_empty_embeddings)
    track_labels: torch.Tensor = field(default_factory=_empty_ids)
    track_boxes: torch.Tensor = field(default_factory=_empty_boxes)
    track_created: torch.Tensor = field(default_factory=_empty_ids)
    track_last_seen: torch.Tensor = field(default_factory=_empty_ids)
    backdrop_embeddings: torch.Tensor = field(default_factory=_empty_embeddings)
    backdrop_labels: torch.Tensor = field(default_factory=_empty_ids)
    backdrop_frames: torch.Tensor = field(default_factory=_empty_ids)

    @property
    def embed_dim(self) -> int | None:
        """Embedding width of the memory, ``None`` while it holds nothing (any width is then accepted)."""
        if self.track_ids.numel():
            return int(self.track_embeddings.shape[1])
        if self.backdrop_frames.numel():
            return int(self.backdrop_embeddings.shape[1])
        return None

    def to(self, device: torch.device) -> None:
        """Move the device-side memory to ``device`` (a no-op when it is already there)."""
        self.track_embeddings = self.track_embeddings.to(device)
        self.track_labels = self.track_labels.to(device)
        self.track_boxes = self.track_boxes.to(device)
        self.backdrop_embeddings = self.backdrop_embeddings.to(device)
        self.backdrop_labels = self.backdrop_labels.to(device)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of float [N, 4] and [K, 4] x1, y1, x2, y2 boxes -> float [N, K] (0 for empty unions)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).eps)


def _append(memory: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Concatenate [N, D] rows onto [K, D] memory; either may be an empty placeholder of the wrong width."""
    if rows.shape[0] == 0:
        return memory
    return rows if memory.shape[0] == 0 else torch.cat((memory, rows))


def _validate(detections: Detections, embed_dim: int | None) -> None:
    """Raise ValueError for inconsistent shapes, dtypes or devices, non-finite values or scores outside [0, 1].

    Checked before any state changes, so a rejected frame leaves the tracker exactly as it was.
    """
    emb, labels, scores, boxes = detections.embeddings, detections.labels, detections.scores, detections.boxes
    if emb.ndim != 2 or labels.ndim != 1 or scores.ndim != 1 or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"Detections need embeddings [M, D], labels [M], scores [M], boxes [M, 4]; got "
                         f"{tuple(emb.shape)}, {tuple(labels.shape)}, {tuple(scores.shape)}, {tuple(boxes.shape)}")
    m = emb.shape[0]
    if not labels.shape[0] == scores.shape[0] == boxes.shape[0] == m:
        raise ValueError(f"Detections disagree on M: embeddings {m}, labels {labels.shape[0]}, "
                         f"scores {scores.shape[0]}, boxes {boxes.shape[0]}")
    if not (emb.dtype.is_floating_point and scores.dtype.is_floating_point and boxes.dtype.is_floating_point):
        raise ValueError(f"embeddings, scores and boxes must be floating point; got {emb.dtype}, {scores.dtype}, "
                         f"{boxes.dtype}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if len({emb.device, labels.device, scores.device, boxes.device}) != 1:
        raise ValueError("Detections tensors must share one device")
    if m == 0:
        return
    if embed_dim is not None and emb.shape[1] != embed_dim:
        raise ValueError(f"embedding width {emb.shape[1]} differs from the tracker memory's {embed_dim}")
    # One host sync for all checks; the specific message is only worked out on failure.
    ok = (torch.isfinite(emb).all() & torch.isfinite(scores).all() & torch.isfinite(boxes).all()
          & (scores >= 0).all() & (scores <= 1).all())
    if bool(ok):
        return
    for name, tensor in (("embeddings", emb), ("scores", scores), ("boxes", boxes)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"Detections {name} contain NaN or inf")
    raise ValueError(f"Detections scores must lie in [0, 1], got min {float(scores.min())}, max {float(scores.max())}")


def _duplicates(scores: torch.Tensor, boxes: torch.Tensor, cfg: TrackerConfig) -> torch.Tensor:
    """Mark detections overlapping any higher-scoring one.

    Args:
        scores: float [M] sorted descending.
        boxes: float [M, 4] in the same order.

    Returns:
        bool [M], True for duplicates. As upstream, a detection is compared with *every* higher-scoring one,
        duplicates included, which makes the rule a single masked comparison instead of a sequential NMS.
        Low-score detections (< obj_score_thr) use the stricter backdrop IoU threshold.
    """
    m = scores.shape[0]
    ious = box_iou(boxes, boxes)
    thr = torch.where(scores < cfg.obj_score_thr, cfg.nms_backdrop_iou_thr, cfg.nms_class_iou_thr)
    higher = torch.ones(m, m, dtype=torch.bool, device=scores.device).tril(diagonal=-1)  # [i, j]: j < i
    return ((ious > thr.to(ious.dtype)[:, None]) & higher).any(dim=1)


def _greedy_match(sim: np.ndarray, memory_ids: np.ndarray, can_take: np.ndarray,
                  match_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Assign memory rows to detections greedily, best-scored detection first.

    Args:
        sim: float32 [V, R] bi-softmax similarity (modified in place: taken track columns are zeroed).
        memory_ids: int64 [R] track id per memory row, -1 for backdrops.
        can_take: bool [V] detection score > obj_score_thr, so it may take a track's id.
        match_thr: similarity a match must exceed.

    Returns:
        ids: int64 [V] matched track id, -1 unmatched (or best match a backdrop), -2 suppressed.
        rows: int64 [V] memory row of each matched track, -1 elsewhere.
    """
    v = sim.shape[0]
    ids = np.full(v, -1, dtype=np.int64)
    rows = np.full(v, -1, dtype=np.int64)
    thr = sim.dtype.type(match_thr)  # compare in the matrix's precision, like the tensor-side thresholds
    for i in range(v):
        r = int(sim[i].argmax())
        if not sim[i, r] > thr or memory_ids[r] < 0:
            continue
        if can_take[i]:
            ids[i], rows[i] = memory_ids[r], r
            sim[:i, r] = 0  # no other detection may take this track
            sim[i + 1:, r] = 0
        else:
            ids[i] = _SUPPRESSED
    return ids, rows


class Tracker:
    """Quasi-dense embedding tracker of Video K-Net; all state lives in one ``TrackerState``.

    Args:
        cfg: thresholds and memory lengths.
    """

    def __init__(self, cfg: TrackerConfig) -> None:
        self.cfg = cfg
        self._state = TrackerState()

    @property
    def num_tracks(self) -> int:
        """Live tracks in memory."""
        return int(self._state.track_ids.numel())

    def reset(self) -> None:
        """Forget tracks, backdrops and the frame counter; keep the id counter so ids are never reused."""
        self._state = TrackerState(next_id=self._state.next_id)

    def update(self, detections: Detections) -> TrackedFrame:
        """Associate one frame's detections with the memory and update it.

        Args:
            detections: this frame's kept thing segments, any order, any device.

        Returns:
            Track ids, ages and new-track flags in the input order, on the input device.

        Raises:
            ValueError: inconsistent shapes or non-finite values (the state is then left unchanged).
        """
        st, cfg = self._state, self.cfg
        _validate(detections, st.embed_dim)
        device = detections.scores.device
        st.frame += 1
        frame = st.frame
        st.to(device)
        m = detections.scores.shape[0]

        # 1. Score order, duplicate removal and score thresholds (on device), then one small CPU copy. The
        # thresholds are compared in the scores' own dtype so 0.3 means the same on every path.
        order = torch.sort(detections.scores, descending=True, stable=True).indices  # [M] sorted -> input index
        scores = detections.scores[order]
        dup = _duplicates(scores, detections.boxes[order].float(), cfg)
        packed = torch.stack((order, dup.long(), (scores > cfg.obj_score_thr).long(),
                              (scores > cfg.init_score_thr).long())).cpu()     # [4, M] int64
        order_cpu = packed[0]
        valid_cpu = torch.nonzero(packed[1] == 0).flatten()      # [V] positions in sorted order
        can_take = packed[2, valid_cpu].bool().numpy()           # [V] score > obj_score_thr
        can_start = packed[3, valid_cpu].bool().numpy()          # [V] score > init_score_thr
        src = order_cpu[valid_cpu].to(device)                    # [V] input indices of valid detections
        emb = detections.embeddings[src].float()                 # [V, D]
        labels = detections.labels[src].long()                   # [V]
        boxes = detections.boxes[src].float()                    # [V, 4]
        v = int(valid_cpu.numel())

        # 2. Bi-softmax similarity to tracks + backdrops (on device), greedy matching (on CPU).
        memory_ids = torch.cat((st.track_ids, torch.full((st.backdrop_frames.shape[0],), -1, dtype=torch.int64)))
        ids = np.full(v, -1, dtype=np.int64)
        rows = np.full(v, -1, dtype=np.int64)
        if v and memory_ids.numel():
            memory_emb = _append(st.track_embeddings, st.backdrop_embeddings)   # [R, D]
            memory_labels = torch.cat((st.track_labels, st.backdrop_labels))    # [R]
            feats = emb @ memory_emb.T                                          # [V, R]
            sim = (feats.softmax(dim=1) + feats.softmax(dim=0)) / 2
            if cfg.with_cats:
                sim = sim * (labels[:, None] == memory_labels[None, :]).to(sim.dtype)
            ids, rows = _greedy_match(sim.cpu().numpy(), memory_ids.numpy(), can_take, cfg.match_score_thr)

        # 3. New tracks for confident unmatched detections, in score order.
        new = (ids == -1) & can_start
        num_new = int(new.sum())
        ids[new] = np.arange(st.next_id, st.next_id + num_new)
        st.next_id += num_new
        matched = rows >= 0
        ages = np.full(v, -1, dtype=np.int64)
        ages[matched] = frame - st.track_created.numpy()[rows[matched]]
        ages[new] = 0

        # 4. Memory: momentum update of matched tracks, append new ones, replace backdrops, forget stale tracks.
        if matched.any():
            det_pos = torch.from_numpy(np.nonzero(matched)[0]).to(device)
            track_rows = torch.from_numpy(rows[matched])
            track_rows_dev = track_rows.to(device)
            momentum = cfg.memo_momentum
            st.track_embeddings[track_rows_dev] = ((1 - momentum) * st.track_embeddings[track_rows_dev]
                                                   + momentum * emb[det_pos])
            st.track_labels[track_rows_dev] = labels[det_pos]
            st.track_boxes[track_rows_dev] = boxes[det_pos]
            st.track_last_seen[track_rows] = frame
        if num_new:
            new_pos = torch.from_numpy(np.nonzero(new)[0]).to(device)
            st.track_ids = torch.cat((st.track_ids, torch.from_numpy(ids[new])))
            st.track_embeddings = _append(st.track_embeddings, emb[new_pos])
            st.track_labels = torch.cat((st.track_labels, labels[new_pos]))
            st.track_boxes = torch.cat((st.track_boxes, boxes[new_pos]))
            stamp = torch.full((num_new,), frame, dtype=torch.int64)
            st.track_created = torch.cat((st.track_created, stamp))
            st.track_last_seen = torch.cat((st.track_last_seen, stamp))
        self._store_backdrops(ids == -1, emb, labels, frame)
        keep = frame - st.track_last_seen < cfg.memo_frames
        if not bool(keep.all()):
            self._keep_tracks(keep)

        # 5. Back to input order, out[:, order[k]] = sorted[:, k], and one copy to the device.
        results = torch.full((3, m), -1, dtype=torch.int64)     # rows: track id, age, is_new
        results[2] = 0
        results[:, valid_cpu] = torch.from_numpy(np.stack((np.where(ids >= 0, ids, -1), ages, new)))
        out = torch.empty_like(results)
        out[:, order_cpu] = results
        out = out.to(device)
        _LOG.debug("frame %d: %d detections, %d duplicates, %d matched, %d new, %d tracks, %d backdrops", frame, m,
                   m - v, int(matched.sum()), num_new, self.num_tracks, st.backdrop_frames.numel())
        return TrackedFrame(track_ids=out[0], ages=out[1], is_new=out[2].bool())

    def _store_backdrops(self, unmatched: np.ndarray, emb: torch.Tensor, labels: torch.Tensor, frame: int) -> None:
        """Keep this frame's unmatched valid detections as backdrops; drop those ``memo_backdrop_frames`` old.

        Backdrops are memory rows without an id: a later detection that matches one best is thereby kept from
        being matched to a real track it merely resembles.

        Args:
            unmatched: bool [V] final id -1 (not suppressed, not duplicates: those never reach here).
            emb: float32 [V, D]; labels: int64 [V], valid detections in score order.
        """
        st = self._state
        fresh = frame - st.backdrop_frames < self.cfg.memo_backdrop_frames
        if not bool(fresh.all()):
            fresh_dev = fresh.to(st.backdrop_labels.device)
            st.backdrop_embeddings = st.backdrop_embeddings[fresh_dev]
            st.backdrop_labels = st.backdrop_labels[fresh_dev]
            st.backdrop_frames = st.backdrop_frames[fresh]
        if self.cfg.memo_backdrop_frames <= 0 or not unmatched.any():
            return
        pos = torch.from_numpy(np.nonzero(unmatched)[0]).to(emb.device)
        st.backdrop_embeddings = _append(st.backdrop_embeddings, emb[pos])
        st.backdrop_labels = torch.cat((st.backdrop_labels, labels[pos]))
        st.backdrop_frames = torch.cat((st.backdrop_frames, torch.full((pos.numel(),), frame, dtype=torch.int64)))

    def _keep_tracks(self, keep: torch.Tensor) -> None:
        """Keep only the tracks where bool [T] (CPU) ``keep`` is True."""
        st = self._state
        keep_dev = keep.to(st.track_labels.device)
        st.track_ids = st.track_ids[keep]
        st.track_created = st.track_created[keep]
        st.track_last_seen = st.track_last_seen[keep]
        st.track_embeddings = st.track_embeddings[keep_dev]
        st.track_labels = st.track_labels[keep_dev]
        st.track_boxes = st.track_boxes[keep_dev]
