"""Scripted frames for the online tracker, each asserting the exact ids the stated algorithm implies.

Embeddings are one-hot vectors scaled by 10, so dot products are 100 (same object) or 0 (different), which
makes every softmax decisive. Boxes are disjoint unless a test wants an overlap. Note a property of the
bi-softmax used upstream: with one detection (or one memory row) the column (row) softmax is 1 everywhere,
so the similarity is at least 0.5 and the match is decided by the other softmax alone; several tests use
this on purpose and say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pytest

from vknet_model.config import TrackerConfig
from vknet_model.tracker import Detections, TrackedFrame, Tracker

DIM = 8


class Obj(NamedTuple):
    """One scripted detection."""

    emb: np.ndarray
    score: float
    label: int
    box: tuple[float, float, float, float]


def onehot(k: int, scale: float = 10.0) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[k] = scale
    return v


def obj(k: int, score: float, label: int = 0, box: tuple[float, float, float, float] | None = None) -> Obj:
    """Object ``k``: embedding ``10 * e_k`` and, unless given, a 50x50 box at x = 100 k (disjoint from others)."""
    return Obj(onehot(k), score, label, box if box is not None else (100.0 * k, 0.0, 100.0 * k + 50, 50.0))


def frame(objs: Sequence[Obj]) -> Detections:
    if not objs:
        return Detections(np.zeros((0, DIM), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                          np.zeros((0, 4), np.float32))
    return Detections(
        embeddings=np.stack([o.emb for o in objs]),
        labels=np.array([o.label for o in objs], dtype=np.int64),
        scores=np.array([o.score for o in objs], dtype=np.float32),
        boxes=np.array([o.box for o in objs], dtype=np.float32),
    )


def ids(tracker: Tracker, objs: Sequence[Obj]) -> list[int]:
    return tracker.update(frame(objs)).track_ids.tolist()


def test_first_frame_ids_follow_score_order_and_input_positions() -> None:
    tracker = Tracker(TrackerConfig())
    out = tracker.update(frame([obj(0, 0.5), obj(1, 0.9), obj(2, 0.7)]))
    # Fresh ids are handed out in score order and written back to each detection's own input position.
    assert out.track_ids.tolist() == [2, 0, 1]
    assert out.ages.tolist() == [0, 0, 0]
    assert out.is_new.tolist() == [True, True, True]
    assert out.track_ids.dtype == np.int64 and out.ages.dtype == np.int64 and out.is_new.dtype == np.bool_
    assert tracker.num_tracks == 3


def test_identity_kept_when_input_order_changes() -> None:
    tracker = Tracker(TrackerConfig())
    a, b, c = obj(0, 0.9), obj(1, 0.8), obj(2, 0.7)
    assert ids(tracker, [a, b, c]) == [0, 1, 2]
    # Other input order and other score order: ids follow the objects, not the positions.
    out = tracker.update(frame([c._replace(score=0.95), a._replace(score=0.6), b]))
    assert out.track_ids.tolist() == [2, 0, 1]
    assert out.ages.tolist() == [1, 1, 1]
    assert out.is_new.tolist() == [False, False, False]
    assert ids(tracker, [b, c, a]) == [1, 2, 0]


def test_new_object_gets_new_id_and_old_ids_unchanged() -> None:
    tracker = Tracker(TrackerConfig())
    a, b = obj(0, 0.9), obj(1, 0.8)
    assert ids(tracker, [a, b]) == [0, 1]
    # The newcomer has the best score, so it is matched first, against the whole memory.
    out = tracker.update(frame([b, obj(2, 0.95), a]))
    assert out.track_ids.tolist() == [1, 2, 0]
    assert out.is_new.tolist() == [False, True, False]
    assert out.ages.tolist() == [1, 0, 1]
    assert tracker.num_tracks == 3


def test_reappearing_within_memo_frames_keeps_its_id() -> None:
    tracker = Tracker(TrackerConfig(memo_frames=5))
    a, b, c = obj(0, 0.9), obj(1, 0.8), obj(2, 0.7)
    assert ids(tracker, [a, b, c]) == [0, 1, 2]
    for _ in range(4):  # frames 1-4: A missing for 4 < memo_frames frames
        assert ids(tracker, [c, b]) == [2, 1]
    assert tracker.num_tracks == 3
    out = tracker.update(frame([b, c, a]))
    assert out.track_ids.tolist() == [1, 2, 0]
    assert out.ages.tolist() == [5, 5, 5]


def test_reappearing_after_memo_frames_gets_a_new_id() -> None:
    tracker = Tracker(TrackerConfig(memo_frames=5))
    a, b, c = obj(0, 0.6), obj(1, 0.9), obj(2, 0.8)
    assert ids(tracker, [a, b, c]) == [2, 0, 1]
    for _ in range(4):
        assert ids(tracker, [b, c]) == [0, 1]
    assert tracker.num_tracks == 3
    assert ids(tracker, [b, c]) == [0, 1]  # frame 5: A missing for 5 frames -> forgotten
    assert tracker.num_tracks == 2
    out = tracker.update(frame([a, b, c]))
    assert out.track_ids.tolist() == [3, 0, 1]
    assert out.is_new.tolist() == [True, False, False]


@pytest.mark.parametrize(("cfg", "low_score"), [
    (TrackerConfig(), 0.25),
    (TrackerConfig(), 0.3),  # the boundary: a score equal to obj_score_thr may not take an id
    # Low score above init_score_thr: only the suppression keeps it from starting a track.
    (TrackerConfig(obj_score_thr=0.5, init_score_thr=0.35), 0.4),
])
def test_low_score_match_is_suppressed_and_does_not_refresh_the_track(cfg: TrackerConfig, low_score: float) -> None:
    tracker = Tracker(cfg)
    assert ids(tracker, [obj(0, 0.9)]) == [0]
    for _ in range(4):  # frames 1-4: only a low-score copy of A, which matches A strongly
        out = tracker.update(frame([obj(0, low_score)]))
        assert out.track_ids.tolist() == [-1]
        assert out.ages.tolist() == [-1] and out.is_new.tolist() == [False]
        assert tracker.num_tracks == 1  # no new track
    # Frame 5: had the suppressed detections refreshed A's last_seen, A would still be alive.
    assert ids(tracker, [obj(0, low_score)]) == [-1]
    assert tracker.num_tracks == 0
    assert ids(tracker, [obj(0, 0.9)]) == [1]


def test_suppressed_detection_does_not_become_a_backdrop() -> None:
    tracker = Tracker(TrackerConfig())
    a, b = obj(0, 0.9), obj(1, 0.8)
    assert ids(tracker, [a, b]) == [0, 1]
    # A low-score detection even closer to A's direction (12 e_0): suppressed by track A.
    assert ids(tracker, [Obj(onehot(0, 12.0), 0.2, 0, a.box), b]) == [-1, 1]
    # Were it stored as a backdrop, A (dot 120 with it vs 100 with the track) would match it and start a new
    # track; it is not, so A keeps its id.
    assert ids(tracker, [a, b]) == [0, 1]


@pytest.mark.parametrize(("with_cats", "expected"), [(True, [2, 1]), (False, [0, 1])])
def test_class_mask(with_cats: bool, expected: list[int]) -> None:
    tracker = Tracker(TrackerConfig(with_cats=with_cats))
    a, b = obj(0, 0.9, label=0), obj(1, 0.8, label=1)
    assert ids(tracker, [a, b]) == [0, 1]
    # A's embedding with B's class: a new track when classes must agree, A's track otherwise.
    assert ids(tracker, [a._replace(label=1), b]) == expected


def test_a_track_is_taken_by_one_detection_only() -> None:
    tracker = Tracker(TrackerConfig())
    a, b = obj(0, 0.9), obj(1, 0.8)
    assert ids(tracker, [a, b]) == [0, 1]
    # Two detections with A's embedding both reach 0.75 with A's track; the better one takes it and the
    # column is cleared, so the other starts a new track instead of sharing id 0.
    second = Obj(onehot(0), 0.85, 0, (500.0, 0.0, 550.0, 50.0))
    assert ids(tracker, [second, b, a]) == [2, 1, 0]


def test_column_softmax_keeps_a_weak_lookalike_from_stealing_a_track() -> None:
    tracker = Tracker(TrackerConfig())
    a, b = obj(0, 0.9), obj(1, 0.8)
    assert ids(tracker, [a, b]) == [0, 1]
    # X resembles A more than B (dots 30 vs 20: row softmax 0.99995 on A) and is matched first, but A's own
    # detection dominates A's column (100 vs 30), so X's bi-softmax is 0.49998 < 0.5: X starts a new track
    # and A keeps its id. A row softmax alone would hand A's id to X.
    lookalike = Obj(3 * onehot(0, 1.0) + 2 * onehot(1, 1.0), 0.95, 0, (500.0, 0.0, 550.0, 50.0))
    assert ids(tracker, [b, lookalike, a]) == [1, 2, 0]


def test_match_needs_similarity_above_threshold() -> None:
    tracker = Tracker(TrackerConfig(match_score_thr=0.5))
    assert ids(tracker, [obj(0, 0.9), obj(1, 0.8)]) == [0, 1]
    # X is orthogonal to both tracks; B is absent. X's row softmax is (0.5, 0.5) and B's column holds two
    # zeros, so X's similarity to B is exactly 0.5: not above the threshold, hence a new track.
    assert ids(tracker, [obj(0, 0.8), obj(2, 0.9)]) == [0, 2]


def test_cosine_floor_keeps_a_lone_newcomer_off_a_track() -> None:
    # One track, one detection, orthogonal embeddings: both softmaxes are over one element, the bi-softmax is 1,
    # so without a floor the newcomer takes the track; with one it starts its own.
    plain = Tracker(TrackerConfig())
    floored = Tracker(TrackerConfig(match_cosine_thr=0.5))
    for tracker in (plain, floored):
        ids(tracker, [obj(0, 0.9)])
    assert ids(plain, [obj(1, 0.9)]) == [0]
    assert ids(floored, [obj(1, 0.9)]) == [1]
    # A like embedding (cosine 0.8) still matches over the floor; at a floor of 0.9 it does not.
    alike = Obj(8 * onehot(1, 1.0) + 6 * onehot(2, 1.0), 0.9, 0, (100.0, 0.0, 150.0, 50.0))
    assert ids(floored, [alike]) == [1]
    strict = Tracker(TrackerConfig(match_cosine_thr=0.9))
    assert ids(strict, [obj(1, 0.9)]) == [0]
    assert ids(strict, [alike]) == [1]      # a new track


@pytest.mark.parametrize("reverse", [False, True])
def test_duplicate_removed_regardless_of_input_order(reverse: bool) -> None:
    tracker = Tracker(TrackerConfig())
    high = obj(0, 0.9, box=(0.0, 0.0, 100.0, 100.0))
    dup = obj(3, 0.6, box=(0.0, 0.0, 100.0, 90.0))  # IoU 0.9 with `high`
    objs = [dup, obj(1, 0.8), high, obj(2, 0.7)]  # the duplicate first, to catch misaligned ids
    expected = [-1, 1, 0, 2]
    if reverse:
        objs, expected = objs[::-1], expected[::-1]
    out = tracker.update(frame(objs))
    assert out.track_ids.tolist() == expected
    assert out.ages.tolist() == [-1 if i < 0 else 0 for i in expected]
    assert tracker.num_tracks == 3


@pytest.mark.parametrize(("score", "expected"), [
    (0.25, [0, -1]),  # score < obj_score_thr: IoU 0.5 > nms_backdrop_iou_thr 0.3 -> duplicate
    (0.5, [0, 1]),    # confident: IoU 0.5 <= nms_class_iou_thr 0.7 -> kept, starts a track
])
def test_duplicate_threshold_depends_on_score(score: float, expected: list[int]) -> None:
    tracker = Tracker(TrackerConfig(init_score_thr=0.2))  # so a kept low-score detection would start a track
    objs = [obj(0, 0.9, box=(0.0, 0.0, 100.0, 100.0)), obj(1, score, box=(0.0, 0.0, 100.0, 50.0))]
    assert ids(tracker, objs) == expected


def test_duplicates_are_compared_with_removed_detections_too() -> None:
    tracker = Tracker(TrackerConfig())
    # IoU(a, b) = IoU(b, c) = 0.82 > 0.7, IoU(a, c) = 0.67: c is removed because of b, itself removed (upstream).
    a = obj(0, 0.9, box=(0.0, 0.0, 100.0, 10.0))
    b = obj(1, 0.8, box=(10.0, 0.0, 110.0, 10.0))
    c = obj(2, 0.7, box=(20.0, 0.0, 120.0, 10.0))
    out = tracker.update(frame([c, b, a]))
    assert out.track_ids.tolist() == [-1, -1, 0]
    assert out.duplicate_of.tolist() == [2, 2, -1]  # both stand for a (input index 2), c through b
    assert tracker.num_tracks == 1


@pytest.mark.parametrize(("with_backdrop", "expected"), [(True, [1]), (False, [0])])
def test_backdrop_absorbs_a_match(with_backdrop: bool, expected: list[int]) -> None:
    tracker = Tracker(TrackerConfig())
    a, c = obj(0, 0.9), obj(1, 0.32)
    first = [a, c] if with_backdrop else [a]
    # c: unmatched, 0.3 < score <= 0.35 -> no track, kept as a backdrop.
    assert ids(tracker, first) == [0, -1][: len(first)]
    assert tracker.num_tracks == 1
    # Next frame, one confident detection with c's embedding. Without the backdrop the memory holds only A,
    # and a lone detection against a lone row scores 1 (both softmaxes are over one element), so it takes
    # A's id. With the backdrop its best row is the backdrop (id -1): it stays unmatched, and since
    # 0.9 > init_score_thr it starts a new track.
    assert ids(tracker, [obj(1, 0.9)]) == expected


@pytest.mark.parametrize(("memo_backdrop_frames", "expected"), [(1, [0]), (2, [1])])
def test_backdrops_expire_after_memo_backdrop_frames(memo_backdrop_frames: int, expected: list[int]) -> None:
    tracker = Tracker(TrackerConfig(memo_backdrop_frames=memo_backdrop_frames))
    assert ids(tracker, [obj(0, 0.9), obj(1, 0.32)]) == [0, -1]
    assert ids(tracker, [obj(0, 0.9)]) == [0]
    # Frame 2: the frame-0 backdrop is gone with memo_backdrop_frames=1 (so, as in the test above, the lone
    # detection takes A's id) and still there with 2 (it absorbs the match: a new track).
    assert ids(tracker, [obj(1, 0.9)]) == expected


def test_reset_clears_memory_but_never_reuses_ids() -> None:
    tracker = Tracker(TrackerConfig())
    a, b = obj(0, 0.9), obj(1, 0.8)
    assert ids(tracker, [a, b]) == [0, 1]
    assert ids(tracker, [a, b]) == [0, 1]
    tracker.reset()
    assert tracker.num_tracks == 0
    out = tracker.update(frame([b, a]))
    assert out.track_ids.tolist() == [3, 2]
    assert out.ages.tolist() == [0, 0]  # the frame counter restarted too
    assert out.is_new.tolist() == [True, True]


def test_empty_frames_work_and_age_tracks() -> None:
    tracker = Tracker(TrackerConfig(memo_frames=5))
    out = tracker.update(frame([]))
    assert out.track_ids.shape == out.ages.shape == out.is_new.shape == (0,)
    assert out.track_ids.dtype == np.int64 and out.is_new.dtype == np.bool_
    assert ids(tracker, [obj(0, 0.9), obj(1, 0.8)]) == [0, 1]
    for _ in range(4):
        assert ids(tracker, []) == []
    assert tracker.num_tracks == 2
    assert ids(tracker, []) == []  # fifth empty frame
    assert tracker.num_tracks == 0
    assert ids(tracker, [obj(0, 0.9)]) == [2]


def _rotated(degrees: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[0], v[1] = 10 * math.cos(math.radians(degrees)), 10 * math.sin(math.radians(degrees))
    return v


@pytest.mark.parametrize(("momentum", "expected"), [
    (0.8, [[0], [0], [0], [0]]),
    (0.2, [[0], [0], [0], [1]]),  # memory lags: the drifted object is taken for Z
])
def test_momentum_lets_a_drifting_track_keep_its_id(momentum: float, expected: list[list[int]]) -> None:
    """A rotates 15 degrees a frame from e_0 towards Z = e_1 (Z unseen after frame 0, still in memory).

    A lone detection is matched to the memory row with the largest dot product. At 60 degrees A is closer to
    Z than to its own first embedding; it keeps its id only if the memory follows it with weight 0.8 on the
    new embedding. With the weights swapped (0.2 new) the memory lags and A is mistaken for Z.
    """
    tracker = Tracker(TrackerConfig(memo_momentum=momentum))
    first = [Obj(_rotated(0), 0.9, 0, (0.0, 0.0, 50.0, 50.0)), Obj(_rotated(90), 0.8, 0, (500.0, 0.0, 550.0, 50.0))]
    assert ids(tracker, first) == [0, 1]
    got = [ids(tracker, [Obj(_rotated(15 * k), 0.9, 0, (0.0, 0.0, 50.0, 50.0))]) for k in range(1, 5)]
    assert got == expected


def test_ages_count_frames_since_creation() -> None:
    tracker = Tracker(TrackerConfig())
    a, b = obj(0, 0.9), obj(1, 0.8)
    results: list[TrackedFrame] = [tracker.update(frame(objs)) for objs in ([a], [a], [b, a], [a, b])]
    assert [r.track_ids.tolist() for r in results] == [[0], [0], [1, 0], [0, 1]]
    assert [r.ages.tolist() for r in results] == [[0], [1], [0, 2], [3, 1]]
    assert [r.is_new.tolist() for r in results] == [[True], [False], [True, False], [False, False]]


def _with(det: Detections, **changes: np.ndarray) -> Detections:
    return replace(det, **changes)


def _nan_embedding(d: Detections) -> Detections:
    emb = d.embeddings.copy()
    emb[1, 3] = float("nan")
    return _with(d, embeddings=emb)


@pytest.mark.parametrize(("corrupt", "message"), [
    (_nan_embedding, "embeddings contain NaN"),
    (lambda d: _with(d, scores=np.array([0.9, np.inf], np.float32)), "scores contain NaN or inf"),
    (lambda d: _with(d, boxes=np.full((2, 4), np.nan, np.float32)), "boxes contain NaN"),
    (lambda d: _with(d, scores=np.array([0.9, 1.5], np.float32)), r"in \[0, 1\]"),
    (lambda d: _with(d, labels=np.zeros(3, np.int64)), "disagree on M"),
    (lambda d: _with(d, boxes=np.zeros((2, 5), np.float32)), r"boxes \[M, 4\]"),
    (lambda d: _with(d, labels=np.zeros(2)), "integer"),
    (lambda d: _with(d, labels=np.zeros(2, bool)), "integer"),
    (lambda d: _with(d, embeddings=np.zeros((2, DIM + 1), np.float32)), "embedding width"),
])
def test_invalid_inputs_raise_and_leave_the_state_alone(corrupt: Callable[[Detections], Detections],
                                                        message: str) -> None:
    tracker = Tracker(TrackerConfig())
    good = frame([obj(0, 0.9), obj(1, 0.8)])
    assert tracker.update(good).track_ids.tolist() == [0, 1]
    with pytest.raises(ValueError, match=message):
        tracker.update(corrupt(good))
    out = tracker.update(good)
    assert out.track_ids.tolist() == [0, 1]
    assert out.ages.tolist() == [1, 1]  # the rejected frame did not count


def test_results_follow_any_input_permutation() -> None:
    """Random scenes: permuting a frame's detections permutes the results the same way (scores distinct)."""
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal((12, 16)) * 3).astype(np.float32)
    pool_labels = rng.integers(0, 2, 12)
    cfg = TrackerConfig()
    straight, shuffled = Tracker(cfg), Tracker(cfg)
    seen_tracks = 0
    for _ in range(12):
        members = rng.permutation(12)[:8]
        m = members.size
        centers = rng.random((m, 2), dtype=np.float32) * 200  # some boxes overlap: duplicates happen
        det = Detections(
            embeddings=pool[members] + 0.3 * rng.standard_normal((m, 16), dtype=np.float32),
            labels=pool_labels[members],
            scores=(0.1 + 0.9 * rng.permutation(m) / m).astype(np.float32),
            boxes=np.concatenate((centers - 30, centers + 30), axis=1),
        )
        perm = rng.permutation(m)
        expected = straight.update(det)
        got = shuffled.update(Detections(det.embeddings[perm], det.labels[perm], det.scores[perm], det.boxes[perm]))
        assert np.array_equal(got.track_ids, expected.track_ids[perm])
        assert np.array_equal(got.ages, expected.ages[perm])
        assert np.array_equal(got.is_new, expected.is_new[perm])
        seen_tracks += int((expected.track_ids >= 0).sum())
    assert seen_tracks > 40  # the scenes really track things


def test_scripted_scene() -> None:
    """Duplicates, identity, a new object, suppression and a backdrop over four frames."""
    tracker = Tracker(TrackerConfig())
    a, b = obj(0, 0.9, box=(0.0, 0.0, 100.0, 100.0)), obj(1, 0.8)
    dup = obj(3, 0.6, box=(0.0, 0.0, 100.0, 90.0))
    scene = [[dup, b, a, obj(2, 0.32)], [b, a, obj(4, 0.95)], [obj(1, 0.2), a, obj(4, 0.9)], [obj(2, 0.9), a]]
    assert [tracker.update(frame(objs)).track_ids.tolist() for objs in scene] == [[-1, 1, 0, -1], [1, 0, 2],
                                                                                 [-1, 0, 2], [3, 0]]
