"""The main job on a fresh machine: a synthetic street sequence through the live ROS 2 node, scored and drawn.

Steps: generate a held-out synthetic KITTI-STEP sequence (never used for training), write it as a rosbag2
(camera, camera_info, ground truth), start the vknet node as its own process with the bundled model, play
the bag into it over DDS (loopback only), record its panoptic and overlay outputs, score STQ / AQ / SQ and
VPQ, and write an overlay strip PNG and an overlay video a person can look at. The last line is
machine-readable: `STQ=<value> frames=<n> dropped=<n> p50_ms=<v>` (p50_ms: image published -> panoptic
received, through DDS and the node).

With --video FILE the same node runs on any video you have (no labels, so no scores): every frame goes
through the node and the overlay video is written.

Examples:
  vknet demo
  vknet demo --rate 10            # like a 10 Hz camera: frames the node cannot keep up with are dropped
  vknet demo --video drive.mp4 --out demo_video
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vknet_model.backends import BACKENDS
from vknet_ros.bags import BagFrame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="checkpoint or .onnx (default: the bundled model)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--frames", type=int, default=30, help="frames in the synthetic sequence (default 30)")
    parser.add_argument("--sequence", type=int, default=2000, help="synthetic sequence index (default 2000)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="frames per second into the node; 0 = as fast as it keeps up (default)")
    parser.add_argument("--video", type=Path, help="run on this video file instead (overlay only, no scores)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")


class VideoFrames:
    """A video file as replayable frames (stamps from its frame rate), for the node."""

    def __init__(self, path: Path) -> None:
        import cv2

        self.path = path
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise FileNotFoundError(f"cannot open video {path} (missing or not a video OpenCV can read)")
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
        self._count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()

    def frame_count(self) -> int | None:
        """From the container's header (0 or negative where the format does not say)."""
        return self._count if self._count > 0 else None

    def frames(self) -> Iterator[BagFrame]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            stamp = round(1e9 * (1.0 + index / self.fps))
            yield BagFrame("video", index, stamp, "camera", np.ascontiguousarray(bgr[:, :, ::-1]), None)
            index += 1
        capture.release()


class OverlayRecorder:
    """Writes the node's overlay images to a video and keeps four of them for a PNG strip."""

    def __init__(self, out: Path, every: int, fps: float) -> None:
        self.video_path, self.strip_path = out / "overlay.mp4", out / "overlay_strip.png"
        self.every, self.count, self.fps = max(1, every), 0, fps
        self.strip: list[np.ndarray] = []
        self._video: Any = None

    def __call__(self, rgb: np.ndarray) -> None:
        import cv2

        if self._video is None:
            height, width = rgb.shape[:2]
            self._video = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps,
                                          (width, height))
        if self._video.isOpened():
            self._video.write(rgb[:, :, ::-1])
        if self.count % self.every == 0 and len(self.strip) < 4:
            self.strip.append(rgb)
        self.count += 1

    def close(self) -> list[Path]:
        import cv2

        written = []
        if self._video is not None:
            self._video.release()
            if self.video_path.is_file():
                written.append(self.video_path)
        if self.strip:
            cv2.imwrite(str(self.strip_path), np.concatenate(self.strip, axis=0)[:, :, ::-1])
            written.append(self.strip_path)
        return written


def run(args: argparse.Namespace) -> int:
    from vknet_data.synth import SynthConfig, write_sequences
    from vknet_eval.scoring import PanopticScorer, format_table
    from vknet_model.backends import BackendError, open_backend
    from vknet_model.bundled import resolve_model
    from vknet_model.checkpoint import CheckpointError
    from vknet_model.config import ConfigError
    from vknet_model.contract import ContractError, model_config
    from vknet_ros.bags import BagReader, kitti_step_sources, write_bag
    from vknet_ros.dds_env import apply_loopback_environment
    from vknet_ros.replay import ReplayError, describe, replay_through_node

    try:
        model = resolve_model(args.model, prefer_onnx=True, backend=args.backend)
        data = model_config(model).data  # scored in the model's own label space
        # Loaded once here, so that a model the node cannot run fails before any bag is written.
        open_backend(model, backend=args.backend, device=args.device)
        video = VideoFrames(args.video) if args.video is not None else None
    except (FileNotFoundError, CheckpointError, ConfigError, ContractError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = apply_loopback_environment()
    scorer = PanopticScorer(data)
    source: VideoFrames | BagReader
    if video is not None:
        source = video
        print(f"video {args.video} at {video.fps:.1f} fps")
        recorder = OverlayRecorder(args.out, every=25, fps=video.fps)  # plays at the source's speed
    else:
        cfg = SynthConfig(frames=args.frames)
        data_dir, bag_dir = args.out / "data", args.out / "bag"
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(bag_dir, ignore_errors=True)
        write_sequences(data_dir, sequences=1, seed=0, split="demo", first_sequence=args.sequence, cfg=cfg,
                        progress=False)
        report = write_bag(bag_dir, kitti_step_sources(data_dir, "demo"), progress=False)
        print(f"synthetic sequence {args.sequence} ({args.frames} frames {cfg.width}x{cfg.height}, held out from "
              f"training) -> {bag_dir} ({report.bytes / 1e6:.0f} MB)")
        source = BagReader(bag_dir)
        recorder = OverlayRecorder(args.out, every=max(1, args.frames // 4), fps=args.rate or 10.0)
    print(f"node: model {model}, backend {args.backend}, DDS loopback ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}")

    def on_answer(frame: BagFrame, panoptic: np.ndarray | None) -> None:
        if frame.panoptic is not None:
            scorer.add_answer(frame.sequence, frame.panoptic, panoptic)

    mode = f"{args.rate} Hz" if args.rate else "lockstep"
    try:
        replay = replay_through_node(source, model=model, backend=args.backend, device=args.device,
                                     rate_hz=args.rate or None, work_dir=args.out, on_answer=on_answer,
                                     on_overlay=recorder)
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        written = recorder.close()
    print(describe(replay, mode))
    print("look at: " + " and ".join(str(p) for p in written) + f" (node log: {args.out / 'node.log'})")
    p50 = replay.percentile(0.5)
    if args.video is not None:
        print(f"frames={replay.sent} dropped={replay.dropped} p50_ms={p50:.1f}")
        return 0
    scores = scorer.result()
    print(format_table(scores))
    print(f"STQ={scores['STQ']:.4f} frames={replay.sent} dropped={replay.dropped} p50_ms={p50:.1f}")
    return 0
