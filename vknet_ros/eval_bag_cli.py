"""Replay a bag through the Pipeline offline (every frame, in order) and score it: STQ / AQ / SQ and VPQ.

The bag needs a ground-truth panoptic topic (`vknet bag --from-kitti-step` writes /ground_truth/panoptic).
Sequences are split where the Pipeline resets its tracker (frame_id change, time going back, a gap over
reset_gap_s), exactly as the live node does. A damaged bag is reported (frames lost, unpaired, undecodable or
unreadable are counted with where they were; a damaged mcap chunk is skipped and reading goes on) and its
readable frames are scored.
Without --model the bundled model is used.

With --through-node the bag is played over DDS into the live node (started as its own process, loopback
only) and its published panoptic images are scored: with --rate 0 (default) each frame is sent when the
previous answer arrived, so the scores equal the offline ones; with --rate R frames go out at R Hz like a
camera, frames the node skipped are scored as empty predictions, and drops and latency are reported.

Examples:
  vknet bag --from-kitti-step data/synth --split val --out bags/synth_val
  vknet eval-bag --bag bags/synth_val --json results/synth_val.json
  vknet eval-bag --bag bags/synth_val --through-node --rate 10 --json results/synth_val_node.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from vknet_eval.scoring import PanopticScorer
    from vknet_model.pipeline import Pipeline
    from vknet_ros.bags import BagFrame, BagReader
    from vknet_ros.replay import ReplayReport


from vknet_model.backends import BACKENDS, PRECISIONS
from vknet_model.percentile import percentile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", type=Path, required=True, help="rosbag2 folder (mcap/sqlite3) or ROS 1 .bag")
    parser.add_argument("--model", type=Path, help="checkpoint (.pt) or exported .onnx (default: the bundled model)")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("--image-topic", help="camera topic (default: /camera/image_raw or the only image topic)")
    parser.add_argument("--gt-topic", help="ground-truth topic (default /ground_truth/panoptic)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto (as the model file is), fp32, int8 (MODEL.int8.onnx from `vknet quantize`) or bf16")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--vpq-stride", type=int, default=1, help="frames between labelled frames (default 1)")
    parser.add_argument("--no-vpq", action="store_true", help="STQ only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--through-node", action="store_true", help="replay over DDS through the live node")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="with --through-node: frames per second, 0 = as fast as the node keeps up (default)")
    parser.add_argument("--work-dir", type=Path, default=Path("replay_out"),
                        help="with --through-node: where the node's log goes (default replay_out)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vknet_eval.scoring import PanopticScorer, format_table, write_json
    from vknet_model.backends import BackendError
    from vknet_model.bundled import resolve_model
    from vknet_model.checkpoint import CheckpointError
    from vknet_model.config import ConfigError
    from vknet_model.contract import ContractError, model_config
    from vknet_model.pipeline import Pipeline
    from vknet_ros.bags import BagError, BagReader
    from vknet_ros.replay import ReplayError

    pipeline: Pipeline | None = None
    try:
        # Through the node, the node process loads the model: here only its config is needed.
        model = resolve_model(args.model, prefer_onnx=args.through_node or args.precision == "int8",
                              backend=args.backend)
        if args.through_node:
            config = model_config(model)
            data, reset_gap_s = config.data, config.tracker.reset_gap_s
        else:
            pipeline = Pipeline.from_model(model, backend=args.backend, device=args.device, precision=args.precision)
            data, reset_gap_s = pipeline.data, pipeline.tracker_config.reset_gap_s
        reader = BagReader(args.bag, image_topic=args.image_topic, gt_topic=args.gt_topic, reset_gap_s=reset_gap_s)
    except (FileNotFoundError, BackendError, CheckpointError, ConfigError, ContractError, BagError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scorer = PanopticScorer(data, vpq=not args.no_vpq, vpq_stride=args.vpq_stride)
    latencies: list[float] = []
    track_ids: set[int] = set()
    bad_gt: list[str] = []  # ground-truth frames that could not be scored, as "stamp: why"
    replay = None
    try:
        if pipeline is None:
            replay = _through_node(args, reader, model, scorer, bad_gt)
            latencies = [ms / 1e3 for ms in replay.latencies_ms]
        else:
            with tqdm(unit="frame", desc="eval-bag", disable=args.no_progress) as bar:
                for frame in reader.frames():
                    # Every frame goes through the tracker, labelled or not; the labelled ones are scored.
                    start = time.perf_counter()
                    result = pipeline.step(frame.image, stamp=frame.stamp_s, frame_id=frame.frame_id)
                    latencies.append(time.perf_counter() - start)
                    track_ids.update(o.track_id for o in result.objects)
                    if frame.panoptic is not None:
                        _score(frame, frame.panoptic, result.panoptic, scorer, reader, bad_gt)
                    bar.update(1)
        if reader.report.frames == 0 and reader.report.problems():
            raise BagError(f"no frame could be read from {args.bag}: {'; '.join(reader.report.problems())}")
        predict_only = reader.report.gt_topic is None
        scores: dict[str, Any] = {"predictions_only": True} if predict_only else scorer.result()
    except (BagError, ValueError, ReplayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = reader.report
    scores["bag"] = {"path": str(args.bag), "image_topic": report.image_topic, "gt_topic": report.gt_topic,
                     "frames": report.frames, "frames_without_gt": report.frames_without_gt,
                     "undecodable": report.undecodable, "unreadable": report.unreadable,
                     "gt_without_image": report.gt_without_image, "lost_images": report.lost_images,
                     "skipped": report.skipped, "damage": report.damage}
    p50 = percentile((1000 * t for t in latencies), 0.5)
    if predict_only:
        print(f"{args.bag} has no ground-truth topic (name one with --gt-topic to score): {report.frames} frames "
              f"predicted, no scores")
        if pipeline is not None:
            scores["tracks"] = len(track_ids)
            print(f"{len(track_ids)} tracks started")
    else:
        print(format_table(scores))
    if replay is not None:
        from vknet_ros.replay import describe

        scores["replay"] = {"mode": "lockstep" if not args.rate else f"{args.rate} Hz", "sent": replay.sent,
                            "answered": replay.answered, "dropped": replay.dropped,
                            "latency_ms_p50": replay.percentile(0.5), "latency_ms_p90": replay.percentile(0.9),
                            "node_diagnostics": replay.node_diagnostics}
        print(describe(replay, scores["replay"]["mode"]))
    elif pipeline is not None:
        scores["pipeline_ms_p50"] = p50
        print(f"{report.frames} frames ({scorer.frames} scored) in {len(report.sequences)} sequence(s), pipeline "
              f"p50 {p50:.1f} ms, backend {pipeline.backend.describe()}")
    if bad_gt:
        scores["bag"]["corrupt_gt"] = len(bad_gt)
        print(f"warning: {len(bad_gt)} ground-truth frame(s) on {report.gt_topic} could not be scored and were "
              f"skipped, first: {bad_gt[0]}", file=sys.stderr)
    if args.json:
        write_json(args.json, scores)
        print(f"wrote {args.json}")
    return 0


def _score(frame: BagFrame, gt: np.ndarray, pred: np.ndarray | None, scorer: PanopticScorer, reader: BagReader,
           bad_gt: list[str]) -> None:
    """Score ``frame`` (``pred`` None: the node dropped it); a corrupt ground truth is noted and skipped (one
    such frame had ended the whole run, naming neither its stamp nor its topic)."""
    from vknet_eval.scoring import GroundTruthError

    try:
        scorer.add_answer(frame.sequence, gt, pred)
    except GroundTruthError as exc:
        bad_gt.append(f"stamp {frame.stamp_ns} ns on {reader.report.gt_topic}: {exc}")


def _through_node(args: argparse.Namespace, reader: BagReader, model: Path,
                  scorer: PanopticScorer, bad_gt: list[str]) -> ReplayReport:
    from vknet_ros.dds_env import apply_loopback_environment
    from vknet_ros.replay import replay_through_node

    env = apply_loopback_environment()
    print(f"replaying {args.bag} through the node (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, loopback only)")

    def on_answer(frame: BagFrame, panoptic: np.ndarray | None) -> None:
        if frame.panoptic is not None:
            _score(frame, frame.panoptic, panoptic, scorer, reader, bad_gt)

    return replay_through_node(reader, model=model, backend=args.backend, device=args.device, precision=args.precision,
                               rate_hz=args.rate or None, work_dir=args.work_dir, on_answer=on_answer,
                               progress=not args.no_progress)
