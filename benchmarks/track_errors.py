"""Where STQ's association quality (AQ) is lost, per ground-truth track: missed pixels, ids split over a track,
or ids that also cover other things.

AQ is the mean over ground-truth tracks g of ``sum_p TPA(p, g) x IoU(p, g) / |g|`` over every predicted id p
(pixels summed over the whole sequence): a track counts the same whatever its size, and an id loses as much
for covering something else as for missing part of g. Per track this reports:

* coverage: share of g's pixels under any predicted thing id (1 - missed);
* dominance: share of the covered pixels under g's main id (the one with most of g); 1 = one id throughout;
* purity: share of the main id's pixels that lie on g; the rest is split into other things *in frames where
  g is present* (a segment over two neighbours, or ids swapped between them), other things *in frames
  without g* (the id went on to another object), and stuff or void (segment bleeding, false positives);
* oracle_aq: the AQ the same per-frame segments would reach under a perfect tracker, each frame's segment
  taking the id of the track it overlaps most. aq -> oracle_aq is what better association can still win;
  oracle_aq -> 1 is lost to the segments themselves (misses, merges, bleeding).

Model errors (benchmarks/model_errors.py) say which things are found in each frame; this says what the ids
do over a sequence, which is what AQ scores.

Usage: python benchmarks/track_errors.py [--model M] [--data HELD_OUT] [--json benchmarks/track_errors.json]
Without --data the held-out set of vknet_model/assets/README.md is generated (seed 0, sequences 1000-, 30 frames).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from vknet_model.machine import describe_cpu

AREA_BINS = (0, 1500, 4000, 15000)        # mean pixels a frame over the track's frames; the last bin is open
_KEY_SHIFT = 1 << 16                      # above -1 - class for any 8-bit class id
FIELDS = ("aq", "oracle_aq", "coverage", "dominance", "purity", "other_things_same_frames",
          "other_things_other_frames", "stuff_or_void", "ids")


class SequenceTally:
    """Pixel counts of one sequence by (ground-truth key, predicted thing id, frame).

    The ground-truth key is the panoptic id of a thing track, or ``-1 - class`` for every other pixel (stuff,
    void, crowd). As in STQ, predicted pixels on crowd regions are not counted.
    """

    def __init__(self, thing_classes: tuple[int, ...], label_divisor: int) -> None:
        self._things = np.asarray(thing_classes)
        self._div = label_divisor
        self._frame = 0
        self.counts: dict[tuple[int, int, int], int] = defaultdict(int)
        self.gt_frames: dict[int, dict[int, int]] = defaultdict(dict)   # track -> {frame: pixels}

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: int [H, W] ground-truth and predicted panoptic maps (class x divisor + instance)."""
        gt, pred = gt.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
        gt_thing = np.isin(gt // self._div, self._things)
        instance = gt % self._div != 0
        key = np.where(gt_thing & instance, gt, -1 - gt // self._div)
        for track, pixels in zip(*np.unique(key[key >= 0], return_counts=True), strict=True):
            self.gt_frames[int(track)][self._frame] = int(pixels)
        counted = np.isin(pred // self._div, self._things) & ~(gt_thing & ~instance)
        # One int64 per pixel (the key shifted to >= 0, the predicted id in the low 32 bits): a flat unique.
        joint, pixels = np.unique((key[counted] + _KEY_SHIFT) << 32 | pred[counted], return_counts=True)
        for code, n in zip(joint.tolist(), pixels.tolist(), strict=True):
            self.counts[((code >> 32) - _KEY_SHIFT, code & 0xFFFFFFFF, self._frame)] += n
        self._frame += 1

    def _oracle_aq(self) -> dict[int, float]:
        """Per track, AQ after relabelling each (id, frame) segment with the track it overlaps most."""
        best: dict[tuple[int, int], tuple[int, int]] = {}                      # (p, frame) -> (px, key)
        for (g, p, frame), n in self.counts.items():
            if g >= 0 and n > best.get((p, frame), (0, -1))[0]:
                best[(p, frame)] = (n, g)
        size: dict[tuple[int, ...], int] = defaultdict(int)
        overlap: dict[int, dict[tuple[int, ...], int]] = defaultdict(lambda: defaultdict(int))
        for (g, p, frame), n in self.counts.items():
            label = (best[(p, frame)][1],) if (p, frame) in best else (-1, p, frame)   # no thing: its own id
            size[label] += n
            if g >= 0:
                overlap[g][label] += n
        return {g: _track_aq(overlap[g], size, sum(frames.values())) for g, frames in self.gt_frames.items()}

    def tracks(self) -> list[dict[str, float]]:
        """Per ground-truth track: its mean area, frames and the fields of ``FIELDS``."""
        oracle = self._oracle_aq()
        pred_size: dict[int, int] = defaultdict(int)
        overlap: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))      # g -> p -> TPA
        cells: dict[int, list[tuple[int, int, int]]] = defaultdict(list)               # p -> (key, frame, px)
        for (g, p, frame), n in self.counts.items():
            pred_size[p] += n
            cells[p].append((g, frame, n))
            if g >= 0:
                overlap[g][p] += n
        rows = []
        for g, frames in self.gt_frames.items():
            size = sum(frames.values())
            ids = overlap.get(g, {})
            covered = sum(ids.values())
            row = {"area": size / len(frames), "frames": float(len(frames)), "coverage": covered / size,
                   "ids": float(len(ids)), "oracle_aq": oracle[g],
                   "aq": _track_aq(ids, pred_size, size)}
            if ids:
                main = max(ids, key=lambda p: ids[p])
                spread = {"same": 0, "other": 0, "stuff": 0}
                for h, frame, n in cells[main]:
                    if h != g:
                        spread["stuff" if h < 0 else "same" if frame in frames else "other"] += n
                row.update(dominance=ids[main] / covered, purity=ids[main] / pred_size[main],
                           other_things_same_frames=spread["same"] / pred_size[main],
                           other_things_other_frames=spread["other"] / pred_size[main],
                           stuff_or_void=spread["stuff"] / pred_size[main])
            else:
                row.update(dominance=0.0, purity=0.0, other_things_same_frames=0.0,
                           other_things_other_frames=0.0, stuff_or_void=0.0)
            rows.append(row)
        return rows


def _track_aq(overlap: Mapping[Any, int], pred_size: Mapping[Any, int], size: int) -> float:
    """AQ of one track of ``size`` pixels: sum over ids p of TPA(p) x IoU(p) / size (``overlap``: p -> TPA)."""
    return sum(t * t / (pred_size[p] + size - t) for p, t in overlap.items()) / size


def summarise(rows: list[dict[str, float]]) -> dict[str, object]:
    """Mean of each field over all tracks and per area bin (tracks count equally, as in AQ)."""
    def mean(sel: list[dict[str, float]]) -> dict[str, float]:
        return {"tracks": len(sel), **{f: round(float(np.mean([r[f] for r in sel])), 4) for f in FIELDS}}

    bins = []
    for lo, hi in zip(AREA_BINS, (*AREA_BINS[1:], None), strict=True):
        sel = [r for r in rows if r["area"] >= lo and (hi is None or r["area"] < hi)]
        if sel:
            bins.append({"area_px": [lo, hi], **mean(sel)})
    return {"overall": mean(rows) if rows else {"tracks": 0}, "by_area": bins}


def run(model: Path | None, data: Path) -> dict[str, object]:
    from vknet_data.datasets import kitti_step_sequences, read_rgb
    from vknet_eval.evaluate import FRAME_PERIOD_S
    from vknet_model.bundled import resolve_model
    from vknet_model.pipeline import Pipeline

    model = resolve_model(model, prefer_onnx=True)
    pipeline = Pipeline.from_model(model)
    start = time.perf_counter()
    rows: list[dict[str, float]] = []
    sequences = kitti_step_sequences(data, "val", pipeline.data.label_divisor)
    for sequence in sequences:
        pipeline.reset(f"sequence {sequence.name}")
        tally = SequenceTally(pipeline.data.thing_ids, pipeline.label_divisor)
        for t, (image, label) in enumerate(zip(sequence.images, sequence.labels, strict=True)):
            result = pipeline.step(read_rgb(image), stamp=t * FRAME_PERIOD_S, frame_id=sequence.name)
            tally.add(label(), result.panoptic)
        rows.extend(tally.tracks())
        print(f"{sequence.name}: {len(tally.gt_frames)} tracks", flush=True)
    return {"model": str(model), "data": str(data), "sequences": len(sequences), **summarise(rows),
            "seconds": round(time.perf_counter() - start, 1), "machine": describe_cpu(),
            "date": time.strftime("%Y-%m-%d")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file (default: the bundled ONNX model)")
    parser.add_argument("--data", type=Path, help="held-out KITTI-STEP-layout root (split val); default: generated")
    parser.add_argument("--sequences", type=int, default=10, help="sequences to generate without --data")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/track_errors.json"))
    args = parser.parse_args()
    from vknet_data.synth import held_out_or

    with held_out_or(args.data, sequences=args.sequences, progress=True) as data:
        result = run(args.model, data)
    short = {"oracle_aq": "oracle ids aq", "other_things_same_frames": "things, same t",
             "other_things_other_frames": "things, other t",
             "stuff_or_void": "stuff/void"}
    print(f"{'mean px':<12}" + "".join(f"{short.get(f, f):>16}" for f in ("tracks", *FIELDS)))
    by_area = cast(list[dict[str, Any]], result["by_area"])
    overall = cast(dict[str, Any], result["overall"])
    for row in [*by_area, {"area_px": ["all", None], **overall}]:
        lo, hi = row["area_px"]
        span = f"{lo}-{hi}" if hi is not None else f"{lo}+" if lo != "all" else "all"
        print(f"{span:<12}" + "".join(f"{row[f]:>16}" for f in ("tracks", *FIELDS)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
