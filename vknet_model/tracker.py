"""Online kernel tracker: quasi-dense embedding association, outside the network.

Each frame's kept thing segments are matched to a memory of live tracks and of last frame's unmatched
detections ("backdrops") by the bi-softmax of embedding dot products, greedily in score order, as in
Video K-Net / QDTrack. The detections are host numpy arrays (the pipeline copies the network's small outputs
to the host once per frame, M x D floats, a few KB). A frame holds tens of detections: as ~130 tiny torch ops
the association cost 0.6-2 ms of pure per-op overhead on CPU (and would be as many kernel launches on a GPU),
as numpy it is a fraction of that.

Unlike the upstream code, every result is written back through an explicit permutation to the *input*
order of the detections, so filtering (sorting, duplicate removal) can never shift ids onto the wrong
masks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from vknet_model.config import TrackerConfig

_LOG = logging.getLogger(__name__)

_SUPPRESSED = -2  # internal id: strongly matched a track with a low score; neither a new track nor a backdrop


@dataclass(frozen=True)
class Detections:
    """Kept thing segments of one frame (M may be 0; numpy arrays).

    Attributes:
        embeddings: float [M, D] kernel association embeddings; not L2-normalised, matched by dot product.
        labels: integer [M] network class index.
        scores: float [M] in [0, 1]; thresholds are compared in this dtype.
        boxes: float [M, 4] x1, y1, x2, y2 in pixels; only used for duplicate removal.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class TrackedFrame:
    """Tracking result of one frame, aligned with the input order of its ``Detections``.

    Attributes:
        track_ids: int64 [M] track id, -1 for no track (duplicate, backdrop or suppressed detection).
        ages: int64 [M] frames since the track was created (0 on its first frame), -1 where there is no track.
        is_new: bool [M] the track was created on this frame.
        duplicate_of: int64 [M] for a duplicate, the input index of the kept detection it duplicates (the
            first of its chain of overlaps); -1 for every other detection. The same object seen twice: its
            pixels belong to that detection's track (void in the output would cost a whole class in SQ).
    """

    track_ids: np.ndarray
    ages: np.ndarray
    is_new: np.ndarray
    duplicate_of: np.ndarray


def _empty_ids() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


def _empty_rows() -> np.ndarray:
    return np.empty((0, 0), dtype=np.float32)


@dataclass
class TrackerState:
    """Everything the tracker remembers between frames (host numpy arrays).

    Row ``k`` of every ``track_*`` array describes the same track.

    Attributes:
        frame: index of the last processed frame since the last reset (-1: none yet).
        next_id: next fresh track id; survives ``reset`` so ids are never reused by one ``Tracker``.
        track_ids: int64 [T] track ids.
        track_embeddings: float32 [T, D] momentum-averaged embeddings ([0, 0] while empty).
        track_labels: int64 [T] class of the last matched detection.
        track_created: int64 [T] frame the track was created on.
        track_last_seen: int64 [T] last frame the track was matched on.
        backdrop_embeddings: float32 [B, D] embeddings of recent unmatched detections ([0, 0] while empty).
        backdrop_labels: int64 [B] their classes.
        backdrop_frames: int64 [B] frame each backdrop was stored on.
    """

    frame: int = -1
    next_id: int = 0
    track_ids: np.ndarray = field(default_factory=_empty_ids)
    track_embeddings: np.ndarray = field(default_factory=_empty_rows)
    track_labels: np.ndarray = field(default_factory=_empty_ids)
    track_created: np.ndarray = field(default_factory=_empty_ids)
    track_last_seen: np.ndarray = field(default_factory=_empty_ids)
    backdrop_embeddings: np.ndarray = field(default_factory=_empty_rows)
    backdrop_labels: np.ndarray = field(default_factory=_empty_ids)
    backdrop_frames: np.ndarray = field(default_factory=_empty_ids)

    @property
    def embed_dim(self) -> int | None:
        """Embedding width of the memory, ``None`` while it holds nothing (any width is then accepted)."""
        if self.track_ids.size:
            return int(self.track_embeddings.shape[1])
        if self.backdrop_frames.size:
            return int(self.backdrop_embeddings.shape[1])
        return None


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of float [N, 4] and [K, 4] x1, y1, x2, y2 boxes -> [N, K] in their dtype (0 for empty unions)."""
    size1 = np.maximum(boxes1[:, 2:] - boxes1[:, :2], 0)
    size2 = np.maximum(boxes2[:, 2:] - boxes2[:, :2], 0)
    area1, area2 = size1[:, 0] * size1[:, 1], size2[:, 0] * size2[:, 1]
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = np.maximum(bottom_right - top_left, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / np.maximum(union, np.finfo(union.dtype).eps)


def _append(memory: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenate [N, D] rows onto [K, D] memory; either may be an empty placeholder of the wrong width."""
    if rows.shape[0] == 0:
        return memory
    return rows if memory.shape[0] == 0 else np.concatenate((memory, rows))


def _checked(detections: Detections, embed_dim: int | None) -> Detections:
    """The detections as float32 / int64 arrays (scores keep their float dtype); raise ValueError for
    inconsistent shapes or dtypes, non-finite values or scores outside [0, 1].

    Checked before any state changes, so a rejected frame leaves the tracker exactly as it was.
    """
    emb, labels, scores, boxes = (np.asarray(a) for a in (detections.embeddings, detections.labels,
                                                          detections.scores, detections.boxes))
    if emb.ndim != 2 or labels.ndim != 1 or scores.ndim != 1 or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"Detections need embeddings [M, D], labels [M], scores [M], boxes [M, 4]; got "
                         f"{emb.shape}, {labels.shape}, {scores.shape}, {boxes.shape}")
    m = emb.shape[0]
    if not labels.shape[0] == scores.shape[0] == boxes.shape[0] == m:
        raise ValueError(f"Detections disagree on M: embeddings {m}, labels {labels.shape[0]}, "
                         f"scores {scores.shape[0]}, boxes {boxes.shape[0]}")
    if not emb.dtype.kind == scores.dtype.kind == boxes.dtype.kind == "f":
        raise ValueError(f"embeddings, scores and boxes must be floating point; got {emb.dtype}, {scores.dtype}, "
                         f"{boxes.dtype}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array, got {labels.dtype}")
    if m and embed_dim is not None and emb.shape[1] != embed_dim:
        raise ValueError(f"embedding width {emb.shape[1]} differs from the tracker memory's {embed_dim}")
    for name, array in (("embeddings", emb), ("scores", scores), ("boxes", boxes)):
        if not np.isfinite(array).all():
            raise ValueError(f"Detections {name} contain NaN or inf")
    if m and not 0 <= scores.min() <= scores.max() <= 1:
        raise ValueError(f"Detections scores must lie in [0, 1], got min {float(scores.min())}, "
                         f"max {float(scores.max())}")
    return Detections(embeddings=emb.astype(np.float32, copy=False), labels=labels.astype(np.int64, copy=False),
                      scores=scores, boxes=boxes.astype(np.float32, copy=False))


def _duplicate_parents(scores: np.ndarray, boxes: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """For each detection overlapping a higher-scoring one (a duplicate), the kept detection it stands for.

    Args:
        scores: [M] sorted descending.
        boxes: float32 [M, 4] in the same order.

    Returns:
        int64 [M] sorted position of the duplicated kept detection, -1 for kept detections. As upstream, a
        detection is compared with *every* higher-scoring one, duplicates included, which makes the rule a
        single masked comparison instead of a sequential NMS; a duplicate of a duplicate points at the kept
        one at the start of the chain. Low-score detections (< obj_score_thr) use the stricter backdrop IoU
        threshold.
    """
    if scores.size == 0:
        return _empty_ids()
    ious = box_iou(boxes, boxes)
    # Thresholds in the IoUs' precision, so 0.3 means the same as on the tensor side.
    thr = np.where(scores < cfg.obj_score_thr, cfg.nms_backdrop_iou_thr, cfg.nms_class_iou_thr).astype(ious.dtype)
    higher = np.tri(scores.shape[0], k=-1, dtype=bool)  # [i, j]: j < i
    overlaps = (ious > thr[:, None]) & higher
    parents = np.where(overlaps.any(axis=1), overlaps.argmax(axis=1), -1)  # the highest-scoring overlap
    for i in np.flatnonzero(parents >= 0):  # ascending: a parent's own parent is final before its children
        if parents[parents[i]] >= 0:
            parents[i] = parents[parents[i]]
    return parents


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of float [N, D] and [K, D] rows -> [N, K] (0 against a zero row)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.finfo(a.dtype).tiny)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), np.finfo(b.dtype).tiny)
    return a @ b.T


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
        return int(self._state.track_ids.size)

    def reset(self) -> None:
        """Forget tracks, backdrops and the frame counter; keep the id counter so ids are never reused."""
        self._state = TrackerState(next_id=self._state.next_id)

    def update(self, detections: Detections) -> TrackedFrame:
        """Associate one frame's detections with the memory and update it.

        Args:
            detections: this frame's kept thing segments, any order.

        Returns:
            Track ids, ages and new-track flags in the input order.

        Raises:
            ValueError: inconsistent shapes or non-finite values (the state is then left unchanged).
        """
        st, cfg = self._state, self.cfg
        det = _checked(detections, st.embed_dim)
        st.frame += 1
        frame = st.frame
        m = det.scores.shape[0]

        # 1. Score order (stable: equal scores keep their input order), duplicate removal, score thresholds.
        # Thresholds compare in the scores' own dtype, so 0.3 means the same on every path.
        order = np.argsort(-det.scores, kind="stable")          # [M] sorted position -> input index
        scores = det.scores[order]
        parents = _duplicate_parents(scores, det.boxes[order], cfg)          # [M] sorted positions, -1 kept
        valid = np.flatnonzero(parents < 0)                                  # [V] positions in sorted order
        can_take = scores[valid] > cfg.obj_score_thr            # [V] may take a track's id
        can_start = scores[valid] > cfg.init_score_thr          # [V] may start a track
        src = order[valid]                                      # [V] input indices of valid detections
        emb, labels = det.embeddings[src], det.labels[src]
        v = valid.size

        # 2. Bi-softmax similarity to tracks + backdrops, greedy matching.
        memory_ids = np.concatenate((st.track_ids, np.full(st.backdrop_frames.size, -1, dtype=np.int64)))
        ids = np.full(v, -1, dtype=np.int64)
        rows = np.full(v, -1, dtype=np.int64)
        if v and memory_ids.size:
            memory = _append(st.track_embeddings, st.backdrop_embeddings)                # [R, D]
            feats = emb @ memory.T                                                      # [V, R]
            sim = (_softmax(feats, axis=1) + _softmax(feats, axis=0)) / 2
            if cfg.with_cats:
                memory_labels = np.concatenate((st.track_labels, st.backdrop_labels))
                sim *= labels[:, None] == memory_labels[None, :]
            if cfg.match_cosine_thr > 0:
                sim *= _cosine(emb, memory) > cfg.match_cosine_thr
            ids, rows = _greedy_match(sim, memory_ids, can_take, cfg.match_score_thr)

        # 3. New tracks for confident unmatched detections, in score order.
        new = (ids == -1) & can_start
        num_new = int(new.sum())
        ids[new] = np.arange(st.next_id, st.next_id + num_new)
        st.next_id += num_new
        matched = rows >= 0
        ages = np.full(v, -1, dtype=np.int64)
        ages[matched] = frame - st.track_created[rows[matched]]
        ages[new] = 0

        # 4. Memory: momentum update of matched tracks, append new ones, replace backdrops, forget stale tracks.
        if matched.any():
            track_rows = rows[matched]
            momentum = cfg.memo_momentum
            st.track_embeddings[track_rows] = ((1 - momentum) * st.track_embeddings[track_rows]
                                               + momentum * emb[matched])
            st.track_labels[track_rows] = labels[matched]
            st.track_last_seen[track_rows] = frame
        if num_new:
            stamp = np.full(num_new, frame, dtype=np.int64)
            st.track_ids = np.concatenate((st.track_ids, ids[new]))
            st.track_embeddings = _append(st.track_embeddings, emb[new])
            st.track_labels = np.concatenate((st.track_labels, labels[new]))
            st.track_created = np.concatenate((st.track_created, stamp))
            st.track_last_seen = np.concatenate((st.track_last_seen, stamp))
        self._store_backdrops(ids == -1, emb, labels, frame)
        keep = frame - st.track_last_seen < cfg.memo_frames
        if not keep.all():
            self._keep_tracks(keep)

        # 5. Back to input order: out[order[k]] = sorted[k].
        track_ids = np.full(m, -1, dtype=np.int64)
        track_ids[src] = np.where(ids >= 0, ids, -1)
        track_ages = np.full(m, -1, dtype=np.int64)
        track_ages[src] = ages
        is_new = np.zeros(m, dtype=bool)
        is_new[src] = new
        duplicate_of = np.full(m, -1, dtype=np.int64)
        duplicate_of[order] = np.where(parents >= 0, order[parents], -1)
        _LOG.debug("frame %d: %d detections, %d duplicates, %d matched, %d new, %d tracks, %d backdrops", frame, m,
                   m - v, int(matched.sum()), num_new, self.num_tracks, st.backdrop_frames.size)
        return TrackedFrame(track_ids=track_ids, ages=track_ages, is_new=is_new, duplicate_of=duplicate_of)

    def _store_backdrops(self, unmatched: np.ndarray, emb: np.ndarray, labels: np.ndarray, frame: int) -> None:
        """Keep this frame's unmatched valid detections as backdrops; drop those ``memo_backdrop_frames`` old.

        Backdrops are memory rows without an id: a later detection that matches one best is thereby kept from
        being matched to a real track it merely resembles.

        Args:
            unmatched: bool [V] final id -1 (not suppressed, not duplicates: those never reach here).
            emb: float32 [V, D]; labels: int64 [V], valid detections in score order.
        """
        st = self._state
        fresh = frame - st.backdrop_frames < self.cfg.memo_backdrop_frames
        if not fresh.all():
            st.backdrop_embeddings = st.backdrop_embeddings[fresh]
            st.backdrop_labels = st.backdrop_labels[fresh]
            st.backdrop_frames = st.backdrop_frames[fresh]
        if self.cfg.memo_backdrop_frames <= 0 or not unmatched.any():
            return
        st.backdrop_embeddings = _append(st.backdrop_embeddings, emb[unmatched])
        st.backdrop_labels = np.concatenate((st.backdrop_labels, labels[unmatched]))
        st.backdrop_frames = np.concatenate((st.backdrop_frames, np.full(int(unmatched.sum()), frame, dtype=np.int64)))

    def _keep_tracks(self, keep: np.ndarray) -> None:
        """Keep only the tracks where bool [T] ``keep`` is True."""
        st = self._state
        st.track_ids = st.track_ids[keep]
        st.track_created = st.track_created[keep]
        st.track_last_seen = st.track_last_seen[keep]
        st.track_embeddings = st.track_embeddings[keep]
        st.track_labels = st.track_labels[keep]
