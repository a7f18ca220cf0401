"""STQ (vknet_eval.metrics.stq): hand-computed cases, deeplab2's published values, and a slow reference.

Conventions: panoptic id = semantic * 1000 + instance; num_classes = 19 with road = 0, person = 11, car = 13
(things = (11, 13)) unless a test says otherwise; void = 255.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from tests.conftest import frame, pid
from vknet_eval.metrics import STQuality

ROAD, SKY, PERSON, CAR, VOID = 0, 10, 11, 13, 255
THINGS = (PERSON, CAR)


def metric(**kwargs: Any) -> STQuality:
    return STQuality(num_classes=19, things=THINGS, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Slow reference, written directly from the definitions (per-pixel Python loops and dicts).
# --------------------------------------------------------------------------------------------------------------


def reference_stq(frames: list[tuple[Any, np.ndarray, np.ndarray]], num_classes: int, things: tuple[int, ...],
                  ignore: int = 255, divisor: int = 1000, mask_gt_void: bool = False) -> dict[str, Any]:
    """STQ from the definition; ``frames`` is a list of (sequence id, gt map, pred map) in update order."""
    conf: dict[Any, dict[tuple[int, int], int]] = {}
    gt_area: dict[Any, dict[int, int]] = {}
    pred_area: dict[Any, dict[int, int]] = {}
    tpa: dict[Any, dict[tuple[int, int], int]] = {}
    for seq, gt, pred in frames:
        for d in (conf, gt_area, pred_area, tpa):
            d.setdefault(seq, defaultdict(int))
        for y_t, y_p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
            c_t, c_p = y_t // divisor, y_p // divisor
            if mask_gt_void and c_t == ignore:
                continue
            conf[seq][(c_t, c_p)] += 1
            if c_t in things and y_t % divisor == 0:
                continue  # crowd: the pixel leaves both sides of the association term
            if c_t in things:
                gt_area[seq][y_t] += 1
            if c_p in things:
                pred_area[seq][y_p] += 1
            if c_t in things and c_p in things:
                tpa[seq][(y_t, y_p)] += 1

    def miou(counts: dict[tuple[int, int], int]) -> tuple[float, dict[int, float]]:
        labels = [*range(num_classes), ignore]
        ious = {}
        for c in labels:
            inter = counts.get((c, c), 0) if c != ignore else 0
            gt_total = sum(v for (r, _), v in counts.items() if r == c) if c != ignore else 0
            pred_total = sum(v for (r, p), v in counts.items() if p == c and r != ignore)
            union = gt_total + pred_total - inter
            if union > 0:
                ious[c] = inter / union
        return (sum(ious.values()) / len(ious) if ious else 0.0), ious

    aq_sums, n_tracks, iou_seq = [], [], []
    total: dict[tuple[int, int], int] = defaultdict(int)
    for seq in conf:
        s = 0.0
        for g, g_size in gt_area[seq].items():
            inner = 0.0
            for p, p_size in pred_area[seq].items():
                t = tpa[seq].get((g, p), 0)
                if t:
                    inner += t * t / (p_size + g_size - t)
            s += inner / g_size
        aq_sums.append(s)
        n_tracks.append(len(gt_area[seq]))
        iou_seq.append(miou(conf[seq])[0])
        for k, v in conf[seq].items():
            total[k] += v
    aq = sum(aq_sums) / max(sum(n_tracks), 1e-15)
    aq_seq = [a / max(n, 1e-15) for a, n in zip(aq_sums, n_tracks, strict=True)]
    iou, per_class = miou(total)
    return {"STQ": math.sqrt(aq * iou), "AQ": aq, "IoU": iou, "ID_per_seq": list(conf),
            "AQ_per_seq": aq_seq, "IoU_per_seq": iou_seq, "num_tracks_per_seq": n_tracks,
            "STQ_per_seq": [math.sqrt(a * i) for a, i in zip(aq_seq, iou_seq, strict=True)],
            "IoU_per_class": per_class}


def assert_close(result: dict[str, Any], expected: dict[str, Any], tol: float = 1e-9) -> None:
    for key, value in expected.items():
        if isinstance(value, float):
            assert result[key] == pytest.approx(value, abs=tol), key
        elif isinstance(value, dict):
            assert set(result[key]) == set(value), key
            for k in value:
                assert result[key][k] == pytest.approx(value[k], abs=tol), (key, k)
        elif value and isinstance(value[0], float):
            assert result[key] == pytest.approx(value, abs=tol), key
        else:
            assert result[key] == value, key


# --------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------------------

S1 = 1000  # class 1 ("sky") in deeplab2's two-class test, where class 0 is the thing "car"


@pytest.mark.parametrize(("gt", "pred", "expected"), [
    ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1], (1.0, 1.0, 1.0)),
    ([1, 1, 1, 1, 1], [1, 1, 2, 2, 2], (0.72111026, 0.52, 1.0)),
    ([1, 1, 1, 1, 1], [1, 2, 2, 2, 2], (0.82462113, 0.68, 1.0)),
    ([1, 1, 1, 1, 1], [1, 2, 3, 4, 5], (0.447213596, 0.2, 1.0)),
    ([1, 1, 1, 1, 1], [1, 2, 1, 2, 2], (0.72111026, 0.52, 1.0)),
    ([1, 1, 1, 1, 1], [S1, 1, 1, 1, 1], (0.50596443, 0.64, 0.4)),
    ([0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], (1.0, 1.0, 1.0)),
    ([0, 1, 1, 1, 1, 1], [2, 2, 2, 2, 1, 1], (0.72111026, 0.52, 1.0)),
    ([0, 1, 1, 1, 1, 1], [2, 2, S1, 1, 1, 1], (0.40824829, 0.4, 5.0 / 12.0)),
    ([S1, 1, 1, 1, 1], [1, 1, 1, 1, 1], (0.56568542, 0.8, 0.4)),
    ([S1, 1, 1, 1, 1], [2, 2, 2, 1, 1], (0.42426407, 0.45, 0.4)),
    ([S1, 1, 1, 1, 1], [2, 2, S1, 1, 1], (0.3, 0.3, 0.3)),
])
def test_deeplab2_published_examples(gt: list[int], pred: list[int], expected: tuple[float, float, float]) -> None:
    """The 1-row examples and expected (STQ, AQ, IoU) of deeplab2's numpy STQ unit test (class 0 = thing)."""
    stq = STQuality(num_classes=2, things=(0,), offset=2**24)
    stq.update(np.array([gt]), np.array([pred]), sequence_id=1)
    r = stq.result()
    assert (r["STQ"], r["AQ"], r["IoU"]) == pytest.approx(expected, abs=1e-8)
    assert r["ID_per_seq"] == [1] and r["Length_per_seq"] == [1]


def test_perfect_prediction_is_one() -> None:
    c1, c2, p1 = pid(CAR, 1), pid(CAR, 2), pid(PERSON, 7)
    r_, s_ = pid(ROAD), pid(SKY)
    frames = [frame([[s_, s_, s_, s_], [c1, c1, s_, p1], [c1, c1, r_, p1], [r_, r_, r_, r_]]),
              frame([[s_, s_, s_, s_], [s_, c1, c1, p1], [c2, c1, c1, p1], [c2, r_, r_, r_]]),
              frame([[s_, s_, s_, s_], [s_, s_, c1, c1], [c2, c2, c1, c1], [c2, c2, r_, r_]])]
    stq = metric()
    for f in frames:
        stq.update(f, f.copy(), sequence_id="seq")
    r = stq.result()
    assert (r["STQ"], r["AQ"], r["IoU"]) == (1.0, 1.0, 1.0)
    assert r["num_tracks_per_seq"] == [3] and r["Length_per_seq"] == [3]
    assert r["IoU_per_class"] == {ROAD: 1.0, SKY: 1.0, PERSON: 1.0, CAR: 1.0}


def test_id_switch_mid_sequence() -> None:
    """One car of 4 px per frame over 4 frames; the prediction switches id after frame 1.

    |g| = 16; p1 and p2 each cover 8 px of it (TPA 8, |p| 8) so IoU_tracking = 8 / 16 for both:
    AQ = (1/16) * (8 * 0.5 + 8 * 0.5) = 0.5. Semantics are perfect, so STQ = sqrt(0.5).
    """
    g, r_ = pid(CAR, 1), pid(ROAD)
    gt = frame([[g, g, r_], [g, g, r_]])
    stq = metric()
    for t in range(4):
        pred = np.where(gt == g, pid(CAR, 1 if t < 2 else 2), gt)
        stq.update(gt, pred, sequence_id=0)
    r = stq.result()
    assert r["AQ"] == pytest.approx(0.5, abs=1e-12)
    assert r["IoU"] == 1.0
    assert r["STQ"] == pytest.approx(math.sqrt(0.5), abs=1e-12)


def test_class_switch_of_one_track() -> None:
    """A car predicted as car 5 in frame 0 and as person 5 in frame 1: two predicted tracks (full-id keys).

    AQ: |g| = 4, each predicted track has TPA 2 and |p| 2 -> IoU_tracking 0.5 -> (1/4)(2*0.5 + 2*0.5) = 0.5.
    TPA counts regardless of class. SQ: road 8/8, car 2/4, person 0/2 -> mIoU = 1.5 / 3 = 0.5. STQ = 0.5.
    """
    g, r_ = pid(CAR, 1), pid(ROAD)
    gt = frame([[g, g, r_], [r_, r_, r_]])
    stq = metric()
    stq.update(gt, np.where(gt == g, pid(CAR, 5), gt), "s")
    stq.update(gt, np.where(gt == g, pid(PERSON, 5), gt), "s")
    r = stq.result()
    assert r["AQ"] == pytest.approx(0.5, abs=1e-12)
    assert r["IoU"] == pytest.approx(0.5, abs=1e-12)
    assert r["IoU_per_class"] == pytest.approx({ROAD: 1.0, CAR: 0.5, PERSON: 0.0})
    assert r["STQ"] == pytest.approx(0.5, abs=1e-12)


def test_crowd_is_removed_from_both_sides_of_aq_but_not_from_sq() -> None:
    """GT car pixels with instance 0 are crowd: whatever track is predicted there, AQ is unaffected."""
    g, crowd, r_ = pid(CAR, 1), pid(CAR, 0), pid(ROAD)
    gt = frame([[g, g, crowd], [r_, r_, r_]])
    results = []
    for spill in (pid(CAR, 7), pid(CAR, 9), pid(PERSON, 3)):
        stq = metric()
        stq.update(gt, frame([[pid(CAR, 7), pid(CAR, 7), spill], [r_, r_, r_]]))
        results.append(stq.result())
    # Track 7 covers the car exactly once the crowd pixel is dropped; car 9 / person 3 only on crowd: no track.
    assert [r["AQ"] for r in results] == [1.0, 1.0, 1.0]
    assert [r["num_tracks_per_seq"] for r in results] == [[1], [1], [1]]  # crowd is not a GT track
    # SQ still sees the crowd pixel as "car": the person prediction there costs car 2/3 and person 0/1.
    assert results[0]["IoU"] == 1.0 and results[1]["IoU"] == 1.0
    assert results[2]["IoU_per_class"] == pytest.approx({ROAD: 1.0, CAR: 2 / 3, PERSON: 0.0})


def test_predictions_on_void() -> None:
    """GT void rows leave SQ; stuff predicted on void leaves AQ; a thing track on void enlarges |p| (deeplab2).

    Track on void: |p| = 3, TPA = 2, |g| = 2 -> AQ = (1/2) * 2 * 2/3 = 2/3. With ``mask_gt_void`` (Video K-Net's
    script) the void pixel is dropped before accumulation and AQ = 1.
    """
    g, r_, v = pid(CAR, 1), pid(ROAD), pid(VOID)
    gt = frame([[g, g, v], [r_, r_, r_]])
    for pred_on_void in (pid(ROAD), pid(SKY), pid(VOID), pid(VOID, 4)):
        stq = metric()
        stq.update(gt, frame([[g, g, pred_on_void], [r_, r_, r_]]))
        r = stq.result()
        assert (r["STQ"], r["AQ"], r["IoU"]) == (1.0, 1.0, 1.0)
        assert set(r["IoU_per_class"]) == {ROAD, CAR}
    spill = frame([[g, g, g], [r_, r_, r_]])
    default, masked = metric(), metric(mask_gt_void=True)
    default.update(gt, spill)
    masked.update(gt, spill)
    rd, rm = default.result(), masked.result()
    assert rd["IoU"] == 1.0 and rm["IoU"] == 1.0
    assert rd["AQ"] == pytest.approx(2 / 3, abs=1e-12)
    assert rd["STQ"] == pytest.approx(math.sqrt(2 / 3), abs=1e-12)
    assert rm["AQ"] == 1.0


def test_void_label_in_prediction_counts_as_one_extra_class_in_miou() -> None:
    """deeplab2 keeps the void *column*: void predicted on road is a road FN and a zero-IoU "class"."""
    g, r_, v = pid(CAR, 1), pid(ROAD), pid(VOID)
    gt = frame([[g, g, r_], [r_, r_, r_]])
    stq = metric()
    stq.update(gt, frame([[g, g, r_], [r_, r_, v]]))
    r = stq.result()
    assert r["IoU_per_class"] == pytest.approx({ROAD: 0.75, CAR: 1.0, VOID: 0.0})
    assert r["IoU"] == pytest.approx((0.75 + 1.0 + 0.0) / 3, abs=1e-12)
    assert r["AQ"] == 1.0


def test_classes_absent_from_gt_and_prediction_are_skipped() -> None:
    """Only classes with a non-zero union enter mIoU; a class predicted but absent from GT enters with IoU 0."""
    r_, s_ = pid(ROAD), pid(SKY)
    gt = frame([[s_, s_, s_], [r_, r_, r_]])
    stq = metric()
    stq.update(gt, gt.copy())
    assert stq.result()["IoU"] == 1.0  # 2 of 19 classes present: mean over those 2
    stq = metric()
    stq.update(gt, frame([[s_, s_, pid(7)], [r_, r_, r_]]))
    r = stq.result()
    assert r["IoU_per_class"] == pytest.approx({ROAD: 1.0, SKY: 2 / 3, 7: 0.0})
    assert r["IoU"] == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-12)


def test_no_gt_tracks_and_empty_sequences() -> None:
    """No GT track -> AQ 0 (deeplab2's 1e-15 floor); all-void GT -> mIoU 0.0 (deeplab2: NaN); 0-px frames ok."""
    r_, s_, v = pid(ROAD), pid(SKY), pid(VOID)
    stq = metric()
    assert stq.result()["STQ"] == 0.0 and stq.result()["ID_per_seq"] == []
    stq.update(frame([[r_, s_]]), frame([[r_, pid(CAR, 1)]]), sequence_id="stuff_only")
    stq.update(frame([[v, v]]), frame([[r_, pid(CAR, 2)]]), sequence_id="all_void")
    stq.update(np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64), sequence_id="zero_pixels")
    r = stq.result()
    assert r["ID_per_seq"] == ["stuff_only", "all_void", "zero_pixels"]
    assert r["num_tracks_per_seq"] == [0, 0, 0]
    assert r["AQ_per_seq"] == [0.0, 0.0, 0.0] and r["AQ"] == 0.0 and r["STQ"] == 0.0
    assert r["IoU_per_seq"] == pytest.approx([(1.0 + 0.0 + 0.0) / 3, 0.0, 0.0])  # road 1, sky 0/1, car 0/1
    assert r["IoU"] == pytest.approx(1 / 3)
    assert r["STQ_per_seq"] == [0.0, 0.0, 0.0]
    assert r["Length_per_seq"] == [1, 1, 1]


def test_multi_sequence_accumulation() -> None:
    """AQ = sum of per-sequence AQ sums / total GT tracks; SQ from one confusion matrix, not a mean of means.

    Sequence a: one track, perfect (sum 1). Sequence b: one track with an id switch (sum 0.5, as above) and
    the road half predicted as sky. Sequence c: two perfect tracks (sum 2). AQ = 3.5 / 4.
    """
    c1, c2, r_, s_ = pid(CAR, 1), pid(CAR, 2), pid(ROAD), pid(SKY)
    gt_a = frame([[c1, c1, r_], [c1, c1, r_]])
    gt_c = frame([[c1, c2, r_], [c1, c2, r_]])
    stq = metric()
    stq.update(gt_a, gt_a, "a")
    for t in range(4):  # interleaved updates of different sequences
        pred = np.where(gt_a == c1, pid(CAR, 1 if t < 2 else 2), s_)
        stq.update(gt_a, pred, "b")
        if t == 1:
            stq.update(gt_c, gt_c, "c")
    r = stq.result()
    assert r["ID_per_seq"] == ["a", "b", "c"]
    assert r["num_tracks_per_seq"] == [1, 1, 2]
    assert r["AQ_per_seq"] == pytest.approx([1.0, 0.5, 1.0], abs=1e-12)
    assert r["AQ"] == pytest.approx(3.5 / 4, abs=1e-12)
    # b: car 16/16, road 0/8, sky 0/8 -> 1/3. Total: car 1, road 4/12, sky 0/8 -> 4/9 (mean of per-seq: 7/9).
    assert r["IoU_per_seq"] == pytest.approx([1.0, 1 / 3, 1.0], abs=1e-12)
    assert r["IoU"] == pytest.approx((1 + 4 / 12 + 0) / 3, abs=1e-12)
    assert r["STQ"] == pytest.approx(math.sqrt(3.5 / 4 * 4 / 9), abs=1e-12)


def test_large_ids_do_not_overflow() -> None:
    """Full-range ids with the default offset 2**32 (keys up to ~8e13) and an offset that would overflow."""
    g, p = pid(18, 999), pid(18, 998)
    stq = STQuality(num_classes=19, things=(18,))
    stq.update(frame([[g, g], [pid(17), pid(17)]]), frame([[p, p], [pid(17), pid(17)]]))
    assert stq.result()["STQ"] == 1.0
    with pytest.raises(ValueError, match="too large"):
        STQuality(num_classes=19, things=(18,), offset=2**60)
    with pytest.raises(ValueError, match="too small"):
        STQuality(num_classes=19, things=(18,), offset=1000)


def test_bad_inputs_raise() -> None:
    stq = metric()
    with pytest.raises(ValueError, match="shape"):
        stq.update(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64))
    with pytest.raises(TypeError):
        stq.update(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[19\]"):
        stq.update(np.zeros((1, 2), np.int64), np.array([[0, 19_000]]))
    with pytest.raises(ValueError, match="negative"):
        stq.update(np.array([[-1, 0]]), np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="thing classes"):
        STQuality(num_classes=19, things=(19,))


# --------------------------------------------------------------------------------------------------------------
# Randomised agreement with the slow reference, and relabelling invariance
# --------------------------------------------------------------------------------------------------------------


def random_frames(rng: np.random.Generator, num_seqs: int) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """Small random sequences: classes 0-3 with things (1, 2), void 255, instances 0-3 (0 = crowd in GT)."""
    frames = []
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)))
    for s in range(num_seqs):
        for _ in range(int(rng.integers(1, 5))):
            sem_t = rng.choice([0, 1, 2, 3, 255], size=shape, p=[0.2, 0.3, 0.3, 0.1, 0.1])
            sem_p = np.where(rng.random(shape) < 0.6, sem_t, rng.choice([0, 1, 2, 3, 255], size=shape))
            frames.append((f"s{s}", sem_t * 1000 + rng.integers(0, 4, shape), sem_p * 1000 + rng.integers(0, 4, shape)))
    order = rng.permutation(len(frames))  # interleave sequences
    return [frames[i] for i in order]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("mask_gt_void", [False, True])
def test_agrees_with_slow_reference(seed: int, mask_gt_void: bool) -> None:
    rng = np.random.default_rng(seed)
    frames = random_frames(rng, num_seqs=int(rng.integers(1, 4)))
    stq = STQuality(num_classes=4, things=(1, 2), mask_gt_void=mask_gt_void)
    for seq, gt, pred in frames:
        stq.update(gt, pred, seq)
    expected = reference_stq(frames, num_classes=4, things=(1, 2), mask_gt_void=mask_gt_void)
    assert_close(stq.result(), expected)


@pytest.mark.parametrize("seed", range(5))
def test_invariant_to_relabelling_predicted_ids(seed: int) -> None:
    """A bijection of predicted instance ids (per class, 0 included) leaves every output unchanged."""
    rng = np.random.default_rng(100 + seed)
    frames = random_frames(rng, num_seqs=2)
    perm = rng.permutation(1000)
    a, b = STQuality(num_classes=4, things=(1, 2)), STQuality(num_classes=4, things=(1, 2))
    for seq, gt, pred in frames:
        a.update(gt, pred, seq)
        b.update(gt, (pred // 1000) * 1000 + perm[pred % 1000], seq)
    ra, rb = a.result(), b.result()
    assert ra["ID_per_seq"] == rb["ID_per_seq"]
    for key in ("STQ", "AQ", "IoU"):
        assert ra[key] == pytest.approx(rb[key], abs=1e-12)
    for key in ("STQ_per_seq", "AQ_per_seq", "IoU_per_seq"):
        assert ra[key] == pytest.approx(rb[key], abs=1e-12)
