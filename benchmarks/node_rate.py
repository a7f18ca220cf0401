"""The highest camera rate the live node keeps up with (in the style of ros2_benchmark's rate sweeps).

Plays the same synthetic bag into a freshly started node (its own process, DDS on loopback) at rising
rates and reports, per rate, frames answered and dropped and the latency percentiles; the answer is the
highest rate with < 5 % drops. Frames are KITTI-sized (1242x375 rgb8) from `vknet synth`.

Usage: python benchmarks/node_rate.py [--rates 2 5 10 15 20] [--frames 40] [--model M | --config r50]
       [--backend auto] [--all-outputs] [--json benchmarks/node_rate.json]

--config times a random-weight model of that config (seed 0, exported to ONNX first), which costs what a
trained one does: the node's overhead against a large network without training one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vknet_data.synth import SynthConfig, write_sequences
from vknet_model.bundled import resolve_model
from vknet_model.machine import describe_cpu
from vknet_ros.bags import BagReader, kitti_step_sources, write_bag
from vknet_ros.dds_env import apply_loopback_environment
from vknet_ros.node import WORKER_STAGES
from vknet_ros.replay import replay_through_node

MAX_DROP = 0.05


def _random_weight_onnx(config: str, out_dir: Path) -> Path:
    import torch

    from vknet_model.config import resolve_config
    from vknet_model.export import export_onnx
    from vknet_model.network import build_frame_net

    cfg = resolve_config(config)
    torch.manual_seed(0)
    path = out_dir / f"{config}_random.onnx"
    print(f"exporting a random-weight {config} model ({cfg.model.input_height}x{cfg.model.input_width}) ...",
          flush=True)
    export_onnx(build_frame_net(cfg).eval(), cfg, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[2.0, 5.0, 10.0, 15.0, 20.0])
    parser.add_argument("--frames", type=int, default=40, help="frames played at each rate (default 40)")
    parser.add_argument("--model", type=Path, help="default: the bundled model (ONNX)")
    parser.add_argument("--config", help="instead of --model: a random-weight model of this config (tiny, r18, r50)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/node_rate.json"))
    parser.add_argument("--all-outputs", action="store_true",
                        help="subscribe to every output (semantic, overlay, markers too), as RViz users do")
    args = parser.parse_args()
    if args.config and args.model:
        parser.error("give --model or --config, not both")
    env = apply_loopback_environment()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = _random_weight_onnx(args.config, root) if args.config else resolve_model(args.model, prefer_onnx=True)
        write_sequences(root / "data", sequences=1, seed=0, split="bench", first_sequence=2000,
                        cfg=SynthConfig(frames=args.frames), progress=False)
        write_bag(root / "bag", kitti_step_sources(root / "data", "bench"), progress=False)
        for rate in sorted(args.rates):
            report = replay_through_node(BagReader(root / "bag"), model=model, backend=args.backend,
                                         device=args.device, rate_hz=rate, work_dir=root / f"work_{rate:g}",
                                         on_answer=lambda frame, panoptic: None, progress=False,
                                         every_output=args.all_outputs)
            row = {"rate_hz": rate, "sent": report.sent, "answered": report.answered, "dropped": report.dropped,
                   "drop_fraction": report.dropped / max(report.sent, 1),
                   "latency_ms_p50": report.percentile(0.5), "latency_ms_p90": report.percentile(0.9),
                   "node_processing_ms_p50": report.node_diagnostics.get("processing_ms_p50"),
                   "node_stages_ms_p50": {s: report.node_diagnostics.get(f"{s}_ms_p50") for s in WORKER_STAGES}}
            processing, network = row["node_processing_ms_p50"], row["node_stages_ms_p50"]["network"]
            # The node's whole work per frame (decode, pipeline, publish) over its bare network forward.
            row["processing_over_network"] = float(processing) / float(network) if processing and network else None
            rows.append(row)
            print(f"{rate:6.1f} Hz: answered {report.answered}/{report.sent}, dropped {row['drop_fraction']:.1%}, "
                  f"latency p50 {row['latency_ms_p50']:.1f} ms p90 {row['latency_ms_p90']:.1f} ms, node "
                  f"processing p50 {processing} ms = {row['processing_over_network'] or 0:.2f}x the network, "
                  f"stages {row['node_stages_ms_p50']}", flush=True)
    kept = [r["rate_hz"] for r in rows if r["drop_fraction"] < MAX_DROP]
    best = max(kept) if kept else None
    described = f"random-weight {args.config} (seed 0)" if args.config else str(model)
    print(f"highest rate with < {MAX_DROP:.0%} drops: {best if best is not None else 'none of'} Hz "
          f"(model {described}, ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']})")
    result = {"machine": describe_cpu(), "date": time.strftime("%Y-%m-%d"),
              "model": described, "backend": args.backend, "device": args.device, "frames": args.frames,
              "outputs": "all" if args.all_outputs else "panoptic and tracks",
              "image": [375, 1242], "max_drop": MAX_DROP, "highest_rate_hz": best, "rates": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
