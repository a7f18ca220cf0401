"""A picture of the 3D output: the overlay of a held-out synthetic street beside the node's 3D markers seen
from above, as RViz shows them. Frames of the street and its depth (16-bit millimetres, as a depth camera
sends them) go through the bundled model, the node's 3D placer and the node's marker builder; the PNG holds
the overlay (left) and the bird's-eye view of the markers (right) of each frame asked for, one row each.

Examples:
  vknet view3d --out view3d.png
  vknet view3d --sequence 1003 --frames 12 --rows 4 10 --range 30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vknet_model.backends import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="checkpoint or .onnx (default: the bundled model)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--sequence", type=int, default=1000, help="held-out synthetic sequence (default 1000)")
    parser.add_argument("--frames", type=int, default=10, help="frames run through (default 10)")
    parser.add_argument("--rows", type=int, nargs="+", help="frames drawn (default: the last)")
    parser.add_argument("--range", type=float, default=20.0, dest="range_m", help="metres shown ahead (default 20)")
    parser.add_argument("--out", type=Path, default=Path("view3d.png"))


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from std_msgs.msg import Header

    from vknet_data.synth import SynthConfig, SyntheticScene, depth_to_png_mm
    from vknet_model.bundled import resolve_model
    from vknet_model.depth3d import Placer, depth_in_metres
    from vknet_model.pipeline import Pipeline
    from vknet_ros.marker_view import draw_top_view
    from vknet_ros.messages import markers_msg
    from vknet_ros.overlay import draw_overlay

    rows = args.rows or [args.frames - 1]
    if args.frames < 1 or any(not 0 <= r < args.frames for r in rows):
        print(f"vknet view3d: --rows must be frames in 0..{args.frames - 1}", file=sys.stderr)
        return 2
    cfg = SynthConfig(frames=args.frames)
    k = (cfg.focal, cfg.focal, cfg.width / 2, cfg.height / 2)
    pipeline = Pipeline.from_model(resolve_model(args.model, prefer_onnx=True, backend=args.backend),
                                   backend=args.backend)
    placer = Placer(pipeline.label_divisor)
    scene = SyntheticScene(0, args.sequence, cfg)
    fov = ((0 - k[2]) / k[0], (cfg.width - k[2]) / k[0])
    pictures = []
    for t in range(args.frames):
        image, _, depth = scene.frame_with_depth(t)
        millimetres = depth_to_png_mm(depth)  # what a depth camera sends
        result = pipeline.step(image, stamp=t / 10.0, frame_id="camera")
        placed = placer.place_frame(result, depth_in_metres(millimetres, "16UC1"), k, t / 10.0)
        if t not in rows:
            continue
        markers = markers_msg(result.objects, Header(frame_id="camera"), k, {p.track_id: p for p in placed})
        overlay = draw_overlay(image, result, label_divisor=pipeline.label_divisor)
        top = draw_top_view(markers, cfg.height, cfg.height * 2, range_m=args.range_m, horizontal_fov=fov)
        cv2.putText(overlay, f"frame {t}", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        pictures.append(np.concatenate([overlay, top], axis=1))
        placed_count = sum(p.placement is not None for p in placed)
        print(f"frame {t}: {len(result.objects)} tracked, {placed_count} placed: " + ", ".join(
            f"{o.track_id} {o.class_name} at {p.placement.position[2]:.1f} m" for o, p in zip(result.objects, placed,
                                                                                              strict=True)
            if p.placement is not None))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), np.concatenate(pictures, axis=0)):
        print(f"vknet view3d: could not write {args.out}", file=sys.stderr)
        return 1
    print(f"written {args.out}")
    return 0
