"""Score panoptic predictions against ground truth: STQ (KITTI-STEP) and VPQ (Cityscapes-VPS rules).

Both folders use the KITTI-STEP panoptic PNG layout (panoptic_maps/<split>/<seq>/<frame>.png, R = class,
G = instance // 256, B = instance % 256); `vknet predict` writes it, `vknet synth` writes ground truth in it.
STQ follows deeplab2 (crowd = thing pixels with instance 0, void 255, divisor 1000, things person and car).
VPQ uses windows of k = 0, 5, 10, 15 frames; --vpq-stride is the number of frames between annotated frames
(1 for KITTI-STEP, where every frame is labelled; 5 for Cityscapes-VPS), so a window spans k / stride + 1
labelled frames.

Example:
  vknet eval --gt data/synth --pred preds/tiny --split val --json preds/tiny/scores.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VPQ_K = (0, 5, 10, 15)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth root (panoptic_maps/<split>/...)")
    parser.add_argument("--pred", type=Path, required=True, help="prediction root (same layout)")
    parser.add_argument("--split", default="val", help="split (default val)")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("--vpq-stride", type=int, default=1, help="frames between labelled frames (default 1)")
    parser.add_argument("--no-vpq", action="store_true", help="STQ only (VPQ is slower)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.datasets import DatasetError, read_kitti_step_panoptic
    from vknet_model.config import DataConfig
    from vknet_model.metrics.stq import STQuality
    from vknet_model.metrics.vpq import VPQuality

    data = DataConfig()
    gt_root, pred_root = args.gt / "panoptic_maps" / args.split, args.pred / "panoptic_maps" / args.split
    for root in (gt_root, pred_root):
        if not root.is_dir():
            print(f"error: {root} does not exist", file=sys.stderr)
            return 2
    sequences = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    windows = tuple(k // args.vpq_stride + 1 for k in VPQ_K)
    stq = STQuality(data.num_classes, data.thing_ids, ignore_label=data.void_id, label_divisor=data.label_divisor)
    vpq = VPQuality(data.num_classes, data.thing_ids, ignore_label=data.void_id, label_divisor=data.label_divisor,
                    windows=windows)
    total = sum(len(list((gt_root / s).glob("*.png"))) for s in sequences)
    try:
        with tqdm(total=total, unit="frame", desc="eval") as bar:
            for name in sequences:
                gts, preds = [], []
                for gt_path in sorted((gt_root / name).glob("*.png")):
                    pred_path = pred_root / name / gt_path.name
                    if not pred_path.is_file():
                        raise DatasetError(f"prediction missing: {pred_path}")
                    gt, pred = read_kitti_step_panoptic(gt_path), read_kitti_step_panoptic(pred_path)
                    if gt.shape != pred.shape:
                        raise DatasetError(f"{pred_path}: size {pred.shape} differs from ground truth {gt.shape}")
                    stq.update(gt, pred, name)
                    if not args.no_vpq:
                        gts.append(gt)
                        preds.append(pred)
                    bar.update(1)
                if not args.no_vpq:
                    vpq.update_sequence(gts, preds)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = stq.result()
    scores: dict[str, object] = {
        "STQ": s["STQ"], "AQ": s["AQ"], "SQ": s["IoU"],
        "per_sequence": {str(i): {"STQ": q, "AQ": a, "SQ": iou} for i, q, a, iou in
                         zip(s["ID_per_seq"], s["STQ_per_seq"], s["AQ_per_seq"], s["IoU_per_seq"], strict=True)},
        "SQ_per_class": {data.class_names[c] if c < data.num_classes else "void": v
                         for c, v in s["IoU_per_class"].items()},
    }
    print(f"{'sequence':<10} {'STQ':>7} {'AQ':>7} {'SQ':>7}")
    for name, row in scores["per_sequence"].items():  # type: ignore[attr-defined]
        print(f"{name:<10} {row['STQ']:>7.4f} {row['AQ']:>7.4f} {row['SQ']:>7.4f}")
    print(f"{'all':<10} {s['STQ']:>7.4f} {s['AQ']:>7.4f} {s['IoU']:>7.4f}")
    if not args.no_vpq:
        v = vpq.result()
        scores["VPQ"] = v["VPQ"]
        scores["VPQ_per_k"] = {str(k): v["VPQ_per_k"][n]["PQ"] for k, n in zip(VPQ_K, windows, strict=True)}
        print("VPQ " + "  ".join(f"k={k}: {p:.4f}" for k, p in scores["VPQ_per_k"].items())  # type: ignore[attr-defined]
              + f"  mean: {v['VPQ']:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(scores, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
