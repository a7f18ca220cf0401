"""Run vknet end to end on a synthetic street sequence with the bundled model, and show the result.

Generates a held-out synthetic KITTI-STEP sequence (never used for training), runs the Pipeline on every
frame (network, panoptic assembly, kernel tracking), scores it with STQ / AQ / SQ against the sequence's
ground truth, and writes what a person can look at: an overlay strip PNG (every few frames, tracks in a
colour fixed per id with "id class" labels) and an overlay video. The last line is machine-readable:
`STQ=<value> frames=<n> dropped=<n> p50_ms=<v>` (dropped is 0 offline: every frame is processed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="checkpoint or .onnx (default: the bundled model)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--frames", type=int, default=30, help="frames in the sequence (default 30)")
    parser.add_argument("--sequence", type=int, default=2000, help="synthetic sequence index (default 2000)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from training.synth import SynthConfig, render_sequence
    from vknet_model.bundled import resolve_model
    from vknet_model.metrics.stq import STQuality
    from vknet_model.pipeline import Pipeline
    from vknet_ros.overlay import draw_overlay

    model = resolve_model(args.model)
    pipeline = Pipeline.from_model(model, backend=args.backend, device=args.device)
    print(f"model {model} on {pipeline.backend.describe()}")
    images, truth = render_sequence(0, args.sequence, SynthConfig(frames=args.frames))
    print(f"synthetic sequence {args.sequence}: {len(images)} frames {images[0].shape[1]}x{images[0].shape[0]}")
    data = pipeline.data
    metric = STQuality(data.num_classes, data.thing_ids, ignore_label=data.void_id, label_divisor=data.label_divisor)
    args.out.mkdir(parents=True, exist_ok=True)
    video_path = args.out / "overlay.mp4"
    height, width = images[0].shape[:2]
    fourcc = cv2.VideoWriter.fourcc(*"mp4v")
    video = cv2.VideoWriter(str(video_path), fourcc, 10.0, (width, height))
    strip: list[np.ndarray] = []
    latencies: list[float] = []
    tracks: set[int] = set()
    for t, (image, gt) in enumerate(zip(images, truth, strict=True)):
        start = time.perf_counter()
        result = pipeline.step(image, stamp=0.1 * t, frame_id="demo_camera")
        latencies.append(1e3 * (time.perf_counter() - start))
        metric.update(gt, result.panoptic, "demo")
        tracks.update(o.track_id for o in result.objects)
        overlay = draw_overlay(image, result.semantic, result.panoptic, result.objects)
        if video.isOpened():
            video.write(overlay[:, :, ::-1])
        if t % max(1, len(images) // 4) == 0 and len(strip) < 4:
            strip.append(overlay)
    video.release()
    strip_path = args.out / "overlay_strip.png"
    cv2.imwrite(str(strip_path), np.concatenate(strip, axis=0)[:, :, ::-1])
    scores = metric.result()
    p50 = statistics.median(latencies)
    print(f"tracks seen: {len(tracks)}; latency per frame p50 {p50:.1f} ms, max {max(latencies):.1f} ms")
    print(f"STQ {scores['STQ']:.4f}  AQ {scores['AQ']:.4f}  SQ {scores['IoU']:.4f}")
    print(f"look at: {strip_path}" + (f" and {video_path}" if video_path.exists() else ""))
    print(f"STQ={scores['STQ']:.4f} frames={len(images)} dropped=0 p50_ms={p50:.1f}")
    return 0
