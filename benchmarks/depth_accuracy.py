"""3D position and velocity errors of tracked things on held-out synthetic sequences with depth.

The bundled model (ONNX Runtime, as the node runs it) segments and tracks each frame; the node's placer
(:class:`vknet_model.depth3d.Placer`) places each tracked thing from the synthetic depth (16-bit millimetres,
as a camera sends it) and filters its velocity; :class:`vknet_eval.placement.PlacementScorer` compares with
the ground truth. Held-out sequences are the evaluation's (seed 0, sequences 1000+), never trained on.

Usage: python benchmarks/depth_accuracy.py [--sequences 10] [--frames 20] [--json benchmarks/depth_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vknet_model.machine import describe_cpu

FPS = 10.0  # KITTI's frame rate: the stamps the frames get


def run(sequences: int, frames: int) -> dict[str, object]:
    from tqdm import tqdm

    from vknet_data.synth import SynthConfig, SyntheticScene, depth_to_png_mm
    from vknet_eval.placement import PlacementScorer, PredictedThing
    from vknet_model.backends import open_backend
    from vknet_model.bundled import BUNDLED_ONNX
    from vknet_model.depth3d import Placer, depth_in_metres
    from vknet_model.pipeline import Pipeline

    cfg = SynthConfig(frames=frames)
    k = (cfg.focal, cfg.focal, cfg.width / 2, cfg.height / 2)
    backend = open_backend(BUNDLED_ONNX, backend="onnxruntime")
    scorer = PlacementScorer()
    place_ms: list[float] = []
    restarts = 0
    with tqdm(total=sequences * frames, unit="frame", desc="depth accuracy") as bar:
        for sequence in range(1000, 1000 + sequences):
            scene = SyntheticScene(0, sequence, cfg)
            pipeline = Pipeline(backend, panoptic_dtype=np.uint16)
            placer = Placer(pipeline.label_divisor)
            for t in range(frames):
                image, gt_panoptic, gt_depth = scene.frame_with_depth(t)
                # What a depth camera sends: millimetres in 16 bits, 0 where there is no depth (the sky).
                millimetres = depth_to_png_mm(gt_depth)
                result = pipeline.step(image, stamp=t / FPS, frame_id="camera")
                start = time.perf_counter()
                placed = placer.place_frame(result, depth_in_metres(millimetres, "16UC1"), k, t / FPS)
                place_ms.append(1e3 * (time.perf_counter() - start))
                by_track = {p.track_id: p for p in placed}
                things = []
                for o in result.objects:
                    p = by_track[o.track_id]
                    things.append(PredictedThing(o.track_id, o.class_id * 1000 + o.instance,
                                                 p.placement.position if p.placement else None, p.velocity,
                                                 p.motion_frames))
                scorer.add_frame(result.panoptic, things, gt_panoptic, gt_depth, k, scene.velocities_m_s(t, FPS))
                bar.update()
            restarts += placer.motion.restarts
    summary: dict[str, object] = dict(scorer.summary())
    summary["place_ms_median"] = float(np.median(place_ms))
    summary["motion_filter_restarts"] = restarts
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=10, help="held-out sequences 1000.. (default 10)")
    parser.add_argument("--frames", type=int, default=20, help="frames per sequence (default 20)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/depth_accuracy.json"))
    args = parser.parse_args(argv)
    summary = run(args.sequences, args.frames)
    print(f"\n{'measure':36s} value")
    for name, value in summary.items():
        print(f"{name:36s} {value:.3f}" if isinstance(value, float) else f"{name:36s} {value}")
    record = {"cpu": describe_cpu(), "python": sys.version.split()[0],
              "sequences": args.sequences, "frames": args.frames, "summary": summary}
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
