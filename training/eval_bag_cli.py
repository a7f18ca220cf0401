"""Replay a bag through the Pipeline offline (every frame, in order) and score it: STQ / AQ / SQ and VPQ.

The bag needs a ground-truth panoptic topic (`vknet bag --from-kitti-step` writes /ground_truth/panoptic).
Sequences are split where the Pipeline resets its tracker (frame_id change, time going back, a gap over
reset_gap_s), exactly as the live node does. A damaged bag is reported and its readable frames are scored.
Without --model the bundled model is used.

Example:
  vknet bag --from-kitti-step data/synth --split val --out bags/synth_val
  vknet eval-bag --bag bags/synth_val --json results/synth_val.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", type=Path, required=True, help="rosbag2 folder (mcap/sqlite3) or ROS 1 .bag")
    parser.add_argument("--model", type=Path, help="checkpoint (.pt) or exported .onnx (default: the bundled model)")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("--image-topic", help="camera topic (default: /camera/image_raw or the only image topic)")
    parser.add_argument("--gt-topic", help="ground-truth topic (default /ground_truth/panoptic)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--vpq-stride", type=int, default=1, help="frames between labelled frames (default 1)")
    parser.add_argument("--no-vpq", action="store_true", help="STQ only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.bags import BagError, BagReader
    from training.scoring import PanopticScorer, format_table, write_json
    from vknet_model.backends import BackendError
    from vknet_model.bundled import resolve_model
    from vknet_model.checkpoint import CheckpointError
    from vknet_model.contract import ContractError
    from vknet_model.pipeline import Pipeline

    try:
        pipeline = Pipeline.from_model(resolve_model(args.model), backend=args.backend, device=args.device)
        reader = BagReader(args.bag, image_topic=args.image_topic, gt_topic=args.gt_topic,
                           reset_gap_s=pipeline.tracker_config.reset_gap_s)
    except (FileNotFoundError, BackendError, CheckpointError, ContractError, BagError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scorer = PanopticScorer(pipeline.data, vpq=not args.no_vpq, vpq_stride=args.vpq_stride)
    latencies = []
    try:
        with tqdm(unit="frame", desc="eval-bag", disable=args.no_progress) as bar:
            for frame in reader.frames():
                if frame.panoptic is None:
                    if reader.report.gt_topic is None:
                        raise BagError(f"{args.bag} has no ground-truth topic (expected /ground_truth/panoptic; "
                                       f"name it with --gt-topic): nothing to score against")
                    continue
                start = time.perf_counter()
                result = pipeline.step(frame.image, stamp=frame.stamp_s, frame_id=frame.frame_id)
                latencies.append(time.perf_counter() - start)
                scorer.add(frame.sequence, frame.panoptic, result.panoptic)
                bar.update(1)
        scores = scorer.result()
    except (BagError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = reader.report
    scores["bag"] = {"path": str(args.bag), "image_topic": report.image_topic, "gt_topic": report.gt_topic,
                     "frames": report.frames, "frames_without_gt": report.frames_without_gt,
                     "undecodable": report.undecodable, "damage": report.damage}
    ms = sorted(1000 * t for t in latencies)
    scores["pipeline_ms_p50"] = ms[len(ms) // 2]
    print(format_table(scores))
    print(f"{scorer.frames} frames in {len(report.sequences)} sequence(s), pipeline p50 {ms[len(ms) // 2]:.1f} ms, "
          f"backend {pipeline.backend.describe()}")
    if report.frames_without_gt or report.undecodable:
        print(f"skipped: {report.frames_without_gt} frame(s) without ground truth, {report.undecodable} undecodable")
    if report.damage:
        print(f"warning: the bag is damaged ({report.damage}); the {report.frames} readable frames were scored",
              file=sys.stderr)
    if args.json:
        write_json(args.json, scores)
        print(f"wrote {args.json}")
    return 0
