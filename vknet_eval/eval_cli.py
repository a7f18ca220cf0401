"""Score panoptic predictions against ground truth: STQ (KITTI-STEP) and VPQ (Cityscapes-VPS rules).

Both folders use the KITTI-STEP panoptic PNG layout (panoptic_maps/<split>/<seq>/<frame>.png, R = class,
G = instance // 256, B = instance % 256); `vknet predict` writes it, `vknet synth` writes ground truth in it.
The label space (classes, thing classes, void, divisor) comes from --config (a built-in name such as
tiny_synth or cityscapes_vps, or a YAML file) or from --model (the config stored in a checkpoint or in an
exported model's model.json): there is no default, because scoring with another dataset's thing classes
silently counts the rest as stuff. STQ follows deeplab2 (crowd = thing pixels with instance 0).
VPQ uses windows of k = 0, 5, 10, 15 frames; --vpq-stride is the number of frames between annotated frames
(1 for KITTI-STEP, where every frame is labelled; 5 for Cityscapes-VPS), so a window spans k / stride + 1
labelled frames.

Example:
  vknet eval --gt data/synth --pred preds/tiny --split val --config tiny_synth --json preds/tiny/scores.json
  vknet eval --gt /data/cityscapes-vps-step --pred preds/r50 --model runs/r50/model.pt --vpq-stride 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth root (panoptic_maps/<split>/...)")
    parser.add_argument("--pred", type=Path, required=True, help="prediction root (same layout)")
    parser.add_argument("--split", default="val", help="split (default val)")
    space = parser.add_mutually_exclusive_group(required=True)
    space.add_argument("--config", help="label space from this config: a built-in name or a YAML path")
    space.add_argument("--model", type=Path, help="label space from this model's config (.pt or .onnx)")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("--vpq-stride", type=int, default=1, help="frames between labelled frames (default 1)")
    parser.add_argument("--no-vpq", action="store_true", help="STQ only (VPQ is slower)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vknet_data.datasets import DatasetError, read_kitti_step_panoptic
    from vknet_eval.scoring import PanopticScorer, format_table, write_json
    from vknet_model.checkpoint import CheckpointError
    from vknet_model.config import ConfigError, resolve_config
    from vknet_model.contract import ContractError, model_config

    try:
        data = resolve_config(args.config).data if args.config else model_config(args.model).data
    except (ConfigError, CheckpointError, ContractError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    gt_root, pred_root = args.gt / "panoptic_maps" / args.split, args.pred / "panoptic_maps" / args.split
    for root in (gt_root, pred_root):
        if not root.is_dir():
            print(f"error: {root} does not exist", file=sys.stderr)
            return 2
    sequences = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    scorer = PanopticScorer(data, vpq=not args.no_vpq, vpq_stride=args.vpq_stride)
    print(f"label space {data.name}: {data.num_classes} classes, things {list(data.thing_ids)}")
    total = sum(len(list((gt_root / s).glob("*.png"))) for s in sequences)
    try:
        with tqdm(total=total, unit="frame", desc="eval") as bar:
            for name in sequences:
                for gt_path in sorted((gt_root / name).glob("*.png")):
                    pred_path = pred_root / name / gt_path.name
                    if not pred_path.is_file():
                        raise DatasetError(f"prediction missing: {pred_path}")
                    gt, pred = read_kitti_step_panoptic(gt_path), read_kitti_step_panoptic(pred_path)
                    if gt.shape != pred.shape:
                        raise DatasetError(f"{pred_path}: size {pred.shape} differs from ground truth {gt.shape}")
                    scorer.add(name, gt, pred)
                    bar.update(1)
        scores = scorer.result()
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(scores))
    if args.json:
        write_json(args.json, scores)
        print(f"wrote {args.json}")
    return 0
