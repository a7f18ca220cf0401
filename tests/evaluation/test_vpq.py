"""VPQ (vknet_eval.metrics.vpq): hand-built tubes and a slow reference written from VPSNet's definitions.

Conventions: panoptic id = semantic * 1000 + instance; num_classes = 19 with road = 0, person = 11, car = 13
(things = (11, 13)); void = 255. ``windows`` are in evaluated frames (n = 2 is Cityscapes-VPS's k = 5).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from tests.conftest import frame, pid
from vknet_eval.metrics import VPQuality

ROAD, SKY, PERSON, CAR, VOID = 0, 10, 11, 13, 255
THINGS = (PERSON, CAR)


def car_stats(result: dict[str, Any], n: int, cls: int = CAR) -> tuple[int, int, int, float]:
    c = result["PQ_per_class"][n][cls]
    return c["TP"], c["FP"], c["FN"], c["IoU"]


# --------------------------------------------------------------------------------------------------------------
# Slow reference, written from VPSNet's eval_vpq definitions with per-pixel loops and dicts.
# --------------------------------------------------------------------------------------------------------------


def reference_vpq(sequences: list[tuple[list[np.ndarray], list[np.ndarray]]], num_classes: int,
                  things: tuple[int, ...], windows: tuple[int, ...], ignore: int = 255,
                  divisor: int = 1000) -> dict[str, Any]:
    stats: dict[int, defaultdict[int, dict[str, Any]]] = {
        n: defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}) for n in windows
    }
    for n in windows:
        for gts, preds in sequences:
            for start in range(len(gts) - n + 1):
                pairs: dict[tuple[Any, Any], int] = defaultdict(int)
                gt_area: dict[int, int] = defaultdict(int)
                pred_area: dict[int, int] = defaultdict(int)
                for gt, pred in zip(gts[start:start + n], preds[start:start + n], strict=True):
                    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
                        g_key = None if g // divisor == ignore else g  # None = VOID
                        p_key = None if p // divisor == ignore else p
                        pairs[(g_key, p_key)] += 1
                        if g_key is not None:
                            gt_area[g_key] += 1
                        if p_key is not None:
                            pred_area[p_key] += 1

                def is_crowd(g: int) -> bool:
                    return g // divisor in things and g % divisor == 0

                gt_matched, pred_matched = set(), set()
                for (g, p), inter in pairs.items():
                    if g is None or p is None or is_crowd(g) or g // divisor != p // divisor:
                        continue
                    union = pred_area[p] + gt_area[g] - inter - pairs.get((None, p), 0)
                    iou = inter / union
                    if iou > 0.5:
                        stats[n][g // divisor]["tp"] += 1
                        stats[n][g // divisor]["iou"] += iou
                        gt_matched.add(g)
                        pred_matched.add(p)
                crowd_of_class = {}
                for g in gt_area:
                    if g in gt_matched:
                        continue
                    if is_crowd(g):
                        crowd_of_class[g // divisor] = g
                        continue
                    stats[n][g // divisor]["fn"] += 1
                for p, area in pred_area.items():
                    if p in pred_matched:
                        continue
                    ignored = pairs.get((None, p), 0)
                    if p // divisor in crowd_of_class:
                        ignored += pairs.get((crowd_of_class[p // divisor], p), 0)
                    if ignored / area > 0.5:
                        continue
                    stats[n][p // divisor]["fp"] += 1

    def average(n: int, subset: set[int]) -> dict[str, Any]:
        pq = sq = rq = 0.0
        count = 0
        for c in sorted(subset):
            s = stats[n][c]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            count += 1
            denom = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
            pq += s["iou"] / denom
            sq += s["iou"] / s["tp"] if s["tp"] else 0.0
            rq += s["tp"] / denom
        if count == 0:
            return {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "N": 0}
        return {"PQ": pq / count, "SQ": sq / count, "RQ": rq / count, "N": count}

    classes = {c for c in range(num_classes) if c != ignore}
    per_k = {}
    for n in windows:
        per_k[n] = average(n, classes)
        per_k[n]["things"] = average(n, classes & set(things))
        per_k[n]["stuff"] = average(n, classes - set(things))
    evaluated = [e["PQ"] for e in per_k.values() if e["N"] > 0]  # window sizes that saw data
    return {"VPQ": sum(evaluated) / max(1, len(evaluated)), "VPQ_per_k": per_k,
            "stats": {n: {c: dict(v) for c, v in stats[n].items()} for n in windows}}


# --------------------------------------------------------------------------------------------------------------
# Hand-built cases
# --------------------------------------------------------------------------------------------------------------


def test_perfect_prediction_is_one() -> None:
    c1, c2, p1, r_, s_ = pid(CAR, 1), pid(CAR, 2), pid(PERSON, 1), pid(ROAD), pid(SKY)
    gts = [frame([[s_, s_, s_, s_], [c1, c1, s_, p1], [c1, c1, r_, p1], [r_, r_, r_, r_]]),
           frame([[s_, s_, s_, s_], [s_, c1, c1, p1], [c2, c1, c1, p1], [c2, r_, r_, r_]]),
           frame([[s_, s_, s_, s_], [s_, s_, c1, c1], [c2, c2, c1, c1], [c2, c2, r_, r_]]),
           frame([[s_, s_, s_, s_], [s_, s_, s_, c1], [c2, c2, s_, c1], [c2, c2, r_, r_]])]
    # Predicted ids need not equal GT ids, only be consistent over time.
    preds = [np.where(g == c1, pid(CAR, 8), np.where(g == p1, pid(PERSON, 5), g)) for g in gts]
    vpq = VPQuality(num_classes=19, things=THINGS)
    vpq.update_sequence(gts, preds)
    r = vpq.result()
    assert r["VPQ"] == 1.0 and r["VPQ_things"] == 1.0 and r["VPQ_stuff"] == 1.0
    for n in (1, 2, 3, 4):
        entry = r["VPQ_per_k"][n]
        assert (entry["PQ"], entry["SQ"], entry["RQ"], entry["N"]) == (1.0, 1.0, 1.0, 4)
        assert entry["things"]["N"] == 2 and entry["stuff"]["N"] == 2
        # Windows slide with stride 1: a 4-frame sequence has 5 - n windows; car 2 is absent from frame 0.
        assert r["PQ_per_class"][n][ROAD]["TP"] == 5 - n
        assert r["PQ_per_class"][n][CAR]["TP"] == (5 - n) + (3 if n == 1 else 5 - n)


def tube_case(second_frame_car_pixels: int) -> dict[str, Any]:
    """Two 2x4 frames with a 4-px GT car each; the predicted car covers all 4 + 1 road px in frame 0 and
    ``second_frame_car_pixels`` of the car in frame 1 (the rest of each frame predicted road)."""
    c, p, r_ = pid(CAR, 1), pid(CAR, 3), pid(ROAD)
    gt = frame([[c, c, c, c], [r_, r_, r_, r_]])
    pred0 = frame([[p, p, p, p], [p, r_, r_, r_]])
    pred1 = frame([[p] * second_frame_car_pixels + [r_] * (4 - second_frame_car_pixels), [r_, r_, r_, r_]])
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1, 2))
    vpq.update_sequence([gt, gt.copy()], [pred0, pred1])
    return vpq.result()


def test_tube_iou_just_above_half_matches() -> None:
    """Tube (n=2): car inter 4+1 = 5, |g| 8, |p| 6 -> IoU 5/9 > 0.5: TP; road inter 3+4, |g| 8, |p| 3+7 -> 7/11.

    Per frame (n=1): frame 0 car 4/5 TP, road 3/4 TP; frame 1 car 1/4 -> FN + FP, road 4/7 TP.
    """
    r = tube_case(1)
    assert car_stats(r, 2) == (1, 0, 0, pytest.approx(5 / 9))
    assert r["PQ_per_class"][2][CAR]["PQ"] == pytest.approx(5 / 9, abs=1e-12)
    assert r["VPQ_per_k"][2]["PQ"] == pytest.approx((5 / 9 + 7 / 11) / 2, abs=1e-12)
    assert car_stats(r, 1) == (1, 1, 1, pytest.approx(0.8))
    assert r["PQ_per_class"][1][CAR]["PQ"] == pytest.approx(0.8 / 2, abs=1e-12)
    assert r["PQ_per_class"][1][CAR]["SQ"] == pytest.approx(0.8, abs=1e-12)
    assert r["PQ_per_class"][1][CAR]["RQ"] == pytest.approx(0.5, abs=1e-12)
    road_1 = (0.75 + 4 / 7) / 2
    assert r["VPQ_per_k"][1]["PQ"] == pytest.approx((0.4 + road_1) / 2, abs=1e-12)
    assert r["VPQ"] == pytest.approx(((0.4 + road_1) / 2 + (5 / 9 + 7 / 11) / 2) / 2, abs=1e-12)


def test_tube_iou_just_below_half_does_not_match() -> None:
    """Without the frame-1 pixel: tube inter 4, |g| 8, |p| 5 -> IoU 4/9 < 0.5: one FN and one FP, PQ 0."""
    r = tube_case(0)
    assert car_stats(r, 2) == (0, 1, 1, 0.0)
    assert r["PQ_per_class"][2][CAR]["PQ"] == 0.0


def test_iou_exactly_half_is_not_a_match() -> None:
    c, p, r_ = pid(CAR, 1), pid(CAR, 3), pid(ROAD)
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1,))
    vpq.update_sequence([frame([[c, c], [r_, r_]])], [frame([[p, r_], [r_, r_]])])  # inter 1, union 2
    assert car_stats(vpq.result(), 1) == (0, 1, 1, 0.0)


def test_void_overlap_leaves_the_union() -> None:
    """A prediction spilling onto void: union = |p| + |g| - inter - |p & void| = 5 + 2 - 2 - 3 = 2 -> IoU 1."""
    c, p, r_, v = pid(CAR, 1), pid(CAR, 3), pid(ROAD), pid(VOID)
    gt = frame([[c, c, v, v], [v, r_, r_, r_]])
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1,))
    vpq.update_sequence([gt], [frame([[p, p, p, p], [p, r_, r_, r_]])])
    r = vpq.result()
    assert car_stats(r, 1) == (1, 0, 0, 1.0)
    assert r["VPQ"] == 1.0


@pytest.mark.parametrize(("on_void", "is_fp"), [(3, False), (2, True)])
def test_unmatched_prediction_mostly_on_void_is_not_a_false_positive(on_void: int, is_fp: bool) -> None:
    """An unmatched 5-px person (no GT person): 3/5 on void -> ignored; 2/5 on void -> FP."""
    q, r_, v = pid(PERSON, 2), pid(ROAD), pid(VOID)
    gt = frame([[v] * on_void + [r_] * (5 - on_void), [r_] * 5])
    pred = frame([[q] * 5, [r_] * 5])
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1,))
    vpq.update_sequence([gt], [pred])
    r = vpq.result()
    assert car_stats(r, 1, PERSON) == (0, int(is_fp), 0, 0.0)
    assert r["VPQ_per_k"][1]["N"] == (2 if is_fp else 1)


def test_crowd_region_is_ignored() -> None:
    """GT car with instance 0 is crowd: never matched, never FN; a same-class prediction mostly on it is not FP,
    an other-class prediction on it is."""
    crowd, r_ = pid(CAR, 0), pid(ROAD)
    gt = frame([[crowd, crowd, crowd], [r_, r_, r_]])
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1,))
    vpq.update_sequence([gt], [frame([[pid(CAR, 5)] * 3, [r_, r_, r_]])])  # a pixel-exact "match"
    r = vpq.result()
    assert car_stats(r, 1) == (0, 0, 0, 0.0)
    assert r["VPQ_per_k"][1]["N"] == 1 and r["VPQ"] == 1.0  # only road is evaluated
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1,))
    vpq.update_sequence([gt], [frame([[pid(CAR, 5), pid(CAR, 5), pid(PERSON, 1)], [pid(CAR, 5), r_, r_]])])
    r = vpq.result()
    assert car_stats(r, 1) == (0, 0, 0, 0.0)  # car 5: 2 of 3 px on car crowd -> ignored
    assert car_stats(r, 1, PERSON) == (0, 1, 0, 0.0)  # person on car crowd -> FP
    # A stuff class with instance 0 is an ordinary segment, not crowd.
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1,))
    vpq.update_sequence([frame([[r_, r_]])], [frame([[pid(SKY), pid(SKY)]])])
    assert car_stats(vpq.result(), 1, ROAD) == (0, 0, 1, 0.0)


def test_id_switch_fails_the_tube_but_not_single_frames() -> None:
    """Car 1 in two frames; predicted as car 1 then car 2. n=1: two TPs (IoU 1). n=2: each predicted id covers
    4 of the 8 tube px -> IoU 0.5, not > 0.5: one FN, two FPs."""
    c, r_ = pid(CAR, 1), pid(ROAD)
    gt = frame([[c, c, r_], [c, c, r_]])
    vpq = VPQuality(num_classes=19, things=THINGS, windows=(1, 2))
    vpq.update_sequence([gt, gt], [gt, np.where(gt == c, pid(CAR, 2), gt)])
    r = vpq.result()
    assert car_stats(r, 1) == (2, 0, 0, 2.0)
    assert car_stats(r, 2) == (0, 2, 1, 0.0)
    assert r["VPQ_per_k"][1]["PQ"] == 1.0
    assert r["VPQ_per_k"][2]["PQ"] == pytest.approx(0.5, abs=1e-12)  # road 1, car 0
    assert r["VPQ"] == pytest.approx(0.75, abs=1e-12)
    assert r["VPQ_things"] == pytest.approx(0.5, abs=1e-12) and r["VPQ_stuff"] == 1.0


def test_short_sequences_and_empty_metric() -> None:
    """A sequence shorter than a window contributes nothing to it; nothing at all gives 0.0 everywhere."""
    vpq = VPQuality(num_classes=19, things=THINGS)
    assert vpq.result()["VPQ"] == 0.0
    gt = frame([[pid(ROAD), pid(SKY)]])
    vpq.update_sequence([gt, gt], [gt, gt])
    r = vpq.result()
    assert [r["VPQ_per_k"][n]["PQ"] for n in (1, 2, 3, 4)] == [1.0, 1.0, 0.0, 0.0]
    # Window sizes 3 and 4 saw no data: VPQ averages the sizes that did, so a short clip is not punished.
    assert r["VPQ_per_k"][3]["N"] == 0 and r["VPQ"] == 1.0
    vpq.update_sequence([], [])
    assert vpq.result()["VPQ"] == 1.0


def test_bad_inputs_raise() -> None:
    vpq = VPQuality(num_classes=19, things=THINGS)
    with pytest.raises(ValueError, match="frames"):
        vpq.update_sequence([frame([[0]])], [])
    with pytest.raises(ValueError, match="shape"):
        vpq.update_sequence([frame([[0, 0]])], [frame([[0], [0]])])
    with pytest.raises(ValueError, match=r"\[20\]"):
        vpq.update_sequence([frame([[0]])], [frame([[20_000]])])
    with pytest.raises(TypeError):
        vpq.update_sequence([np.zeros((1, 1))], [np.zeros((1, 1))])
    with pytest.raises(ValueError, match="windows"):
        VPQuality(num_classes=19, things=THINGS, windows=(0, 1))


# --------------------------------------------------------------------------------------------------------------
# Randomised agreement with the slow reference, and relabelling invariance
# --------------------------------------------------------------------------------------------------------------


def random_sequences(rng: np.random.Generator) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Random small sequences: classes 0-3 with things (1, 2), void 255, instances 0-2 (GT thing 0 = crowd).

    Predictions copy GT ids with some noise so that matches, near-misses, void spill and crowd all occur.
    """
    sequences = []
    shape = (int(rng.integers(2, 4)), int(rng.integers(2, 5)))
    for _ in range(int(rng.integers(1, 4))):
        gts, preds = [], []
        for _ in range(int(rng.integers(1, 6))):
            sem = rng.choice([0, 1, 2, 3, 255], size=shape, p=[0.25, 0.3, 0.25, 0.1, 0.1])
            gt = sem * 1000 + rng.integers(0, 3, shape) * np.isin(sem, (1, 2))
            noise = rng.choice([0, 1, 2, 3, 255], size=shape) * 1000 + rng.integers(0, 3, shape)
            pred = np.where(rng.random(shape) < 0.7, gt, noise)
            gts.append(gt)
            preds.append(pred)
        sequences.append((gts, preds))
    return sequences


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sequences = random_sequences(rng)
    vpq = VPQuality(num_classes=4, things=(1, 2), windows=(1, 2, 3, 4))
    for gts, preds in sequences:
        vpq.update_sequence(gts, preds)
    r = vpq.result()
    expected = reference_vpq(sequences, num_classes=4, things=(1, 2), windows=(1, 2, 3, 4))
    assert r["VPQ"] == pytest.approx(expected["VPQ"], abs=1e-9)
    for n in (1, 2, 3, 4):
        for split in (None, "things", "stuff"):
            got = r["VPQ_per_k"][n] if split is None else r["VPQ_per_k"][n][split]
            want = expected["VPQ_per_k"][n] if split is None else expected["VPQ_per_k"][n][split]
            for key in ("PQ", "SQ", "RQ", "N"):
                assert got[key] == pytest.approx(want[key], abs=1e-9), (n, split, key)
        for c in range(4):
            want_c = expected["stats"][n].get(c, {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
            got_c = r["PQ_per_class"][n][c]
            assert (got_c["TP"], got_c["FP"], got_c["FN"]) == (want_c["tp"], want_c["fp"], want_c["fn"])
            assert got_c["IoU"] == pytest.approx(want_c["iou"], abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_invariant_to_relabelling_predicted_ids(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    sequences = random_sequences(rng)
    perm = rng.permutation(1000)
    a = VPQuality(num_classes=4, things=(1, 2))
    b = VPQuality(num_classes=4, things=(1, 2))
    for gts, preds in sequences:
        a.update_sequence(gts, preds)
        b.update_sequence(gts, [(p // 1000) * 1000 + perm[p % 1000] for p in preds])
    ra, rb = a.result(), b.result()
    assert ra["VPQ"] == pytest.approx(rb["VPQ"], abs=1e-12)
    for n in (1, 2, 3, 4):
        for c in range(4):
            assert ra["PQ_per_class"][n][c] == pytest.approx(rb["PQ_per_class"][n][c], abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_streaming_frames_equals_whole_sequences(seed: int) -> None:
    """add_frame / end_sequence (bag replay) accumulates exactly what update_sequence does."""
    sequences = random_sequences(np.random.default_rng(300 + seed))
    whole = VPQuality(num_classes=4, things=(1, 2))
    streamed = VPQuality(num_classes=4, things=(1, 2))
    for gts, preds in sequences:
        whole.update_sequence(gts, preds)
        for gt, pred in zip(gts, preds, strict=True):
            streamed.add_frame(gt, pred)
        streamed.end_sequence()
    a, b = whole.result(), streamed.result()
    assert a["VPQ"] == pytest.approx(b["VPQ"], abs=1e-12)
    for n in (1, 2, 3, 4):
        for c in range(4):
            assert a["PQ_per_class"][n][c] == pytest.approx(b["PQ_per_class"][n][c], abs=1e-12)
