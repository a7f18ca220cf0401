"""Per-stage latency of the node's work for each backend, on the same frames, in one run.

Stages per frame: preprocess (letterbox), network (the exported graph: backbone to panoptic assembly at
stride 4), tracker, postprocess (full-resolution maps and objects), messages (every output message as the
node builds it when all are subscribed: panoptic 16UC1, semantic mono8 and the bgr8 overlay serialised,
tracks, markers). end_to_end = all of them. Every
backend sees the same synthetic street frames (1242x375 by default) after --warmup frames. The backends
take turns in blocks of --block frames, so that slow drifts of the machine hit them alike, and the first
frame after each switch is not timed: a backend's threads keep spinning for a while after its run, and
frame-by-frame alternation let ONNX Runtime's spinning threads take a core from the next torch forward (tiny
on 2 cores: torch 57 ms interleaved against 28 ms alone). Compare backends through the ratios printed at
the end.

Without --model a random-weight model of --config is built (and exported for ONNX Runtime), which has the
cost of a trained one; --model times a real file.

onnxruntime-int8 times the same export quantised by `vknet quantize` (calibrated here on 16 synthetic frames),
beside fp32 onnxruntime in the same run.

Examples:
  vknet bench --config tiny --json benchmarks/bench_tiny_cpu.json
  vknet bench --model vknet_model/assets/tiny_synth.pt --backends onnxruntime onnxruntime-int8
  vknet bench --config r50 --frames 50 --backends torch onnxruntime --json benchmarks/bench_r50_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vknet_model.backends import BACKEND_NAMES
from vknet_model.machine import cpu_flags, describe_cpu
from vknet_model.percentile import percentile
from vknet_ros.node_settings import TORCH_PRECISIONS

STAGES = ("preprocess", "network", "tracker", "postprocess", "messages")
INT8 = "onnxruntime-int8"  # the fp32 export quantised, on ONNX Runtime
BENCH_BACKENDS = (*BACKEND_NAMES, INT8)


def schedule(backends: list[str], frames: int, warmup: int, block: int) -> list[tuple[str, int, bool]]:
    """The run order as (backend, frame index, timed): each backend runs its warm-up frames, then the
    backends take turns in blocks of ``block`` frames until each has ``frames`` timed ones. The first frame
    after a switch to another backend is run but not timed."""
    if block < 2:
        raise ValueError(f"block must be at least 2 (got {block}): the first frame after a switch is not timed")
    order: list[tuple[str, int, bool]] = []
    done = dict.fromkeys(backends, 0)
    timed = dict.fromkeys(backends, 0)
    for name in backends:
        order += [(name, i, False) for i in range(warmup)]
        done[name] = warmup
    previous = backends[-1]
    while any(timed[name] < frames for name in backends):
        for name in backends:
            count = 0
            while count < block and timed[name] < frames:
                switched = name != previous and count == 0 and len(backends) > 1
                order.append((name, done[name], not switched))
                done[name] += 1
                timed[name] += not switched
                count += 1
                previous = name
    return order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="random weights of this config: tiny, r18, r50 or a YAML (default tiny)")
    parser.add_argument("--model", type=Path, help="a checkpoint (.pt) to time instead of random weights")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"],
                        choices=BENCH_BACKENDS, help="backends to compare (default torch and onnxruntime)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--precision", default="fp32", choices=TORCH_PRECISIONS,
                        help="torch backend: autocast precision (default fp32)")
    parser.add_argument("--cuda-graph", action="store_true", help="torch backend on CUDA: replay a CUDA graph")
    parser.add_argument("--frames", type=int, default=50, help="timed frames per backend (default 50, min 10)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first (default 5)")
    parser.add_argument("--block", type=int, default=10, help="frames a backend runs in a row (default 10)")
    parser.add_argument("--height", type=int, default=375, help="camera image height (default 375)")
    parser.add_argument("--width", type=int, default=1242, help="camera image width (default 1242)")
    parser.add_argument("--json", type=Path, help="write the results here")


def _pipelines(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from vknet_model.backends import open_backend
    from vknet_model.backends.torch_backend import TorchBackend
    from vknet_model.checkpoint import CheckpointError, load_checkpoint
    from vknet_model.config import resolve_config
    from vknet_model.export import export_onnx
    from vknet_model.network import build_frame_net, build_model
    from vknet_model.pipeline import Pipeline

    if args.model is not None:
        if args.model.suffix == ".onnx":
            raise CheckpointError(f"{args.model}: --model takes the checkpoint (.pt) of a model; the bench exports "
                                  f"it for the ONNX backends itself (the bundled one: "
                                  f"vknet_model/assets/tiny_synth.pt)")
        cfg, net, _ = load_checkpoint(args.model)
    else:
        cfg = resolve_config(args.config or "tiny")
        torch.manual_seed(0)
        net = build_model(cfg)
    frame_net = build_frame_net(cfg, net).eval()
    pipelines = {}
    for name in args.backends:
        if name == "torch":
            backend = TorchBackend(frame_net, cfg, args.device, precision=args.precision, cuda_graph=args.cuda_graph)
            pipelines[name] = Pipeline(backend, panoptic_dtype=np.uint16)
        else:
            onnx = workdir / "model.onnx"
            if not onnx.is_file():
                print(f"exporting {cfg.model.input_height}x{cfg.model.input_width} ONNX for {name} ...", flush=True)
                export_onnx(frame_net, cfg, onnx)
            if name == INT8:
                onnx = _quantized(onnx)
            backend_name = "onnxruntime" if name == INT8 else name
            pipelines[name] = Pipeline(open_backend(onnx, backend=backend_name, device=args.device),
                                       panoptic_dtype=np.uint16)
    return pipelines


def _quantized(onnx: Path) -> Path:
    """The int8 version of ``onnx`` (calibrated on 16 frames of synthetic training streets)."""
    from vknet_data.synth import SynthConfig, SyntheticScene
    from vknet_data.synth_stream import TRAIN_SCENE_SEED
    from vknet_model.quantize import int8_path_for, quantize_model

    print("quantising the export to int8 (16 calibration frames) ...", flush=True)
    cfg = SynthConfig(frames=8)
    videos = [[SyntheticScene(TRAIN_SCENE_SEED, s, cfg).frame(t)[0] for t in range(8)] for s in range(2)]
    out = int8_path_for(onnx)
    quantize_model(onnx, out, videos, calibration="synthetic training streets (vknet bench)")
    return out


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 0.5), "p90": percentile(values, 0.9)}


def _message_builder() -> Any | None:
    """Builds the node's output messages for one frame; None without ROS 2 (a GPU machine may have none)."""
    if importlib.util.find_spec("std_msgs") is None:
        return None
    from std_msgs.msg import Header

    from vknet_ros.conversions import bgr_to_serialized_image, labels_to_serialized_image
    from vknet_ros.messages import markers_msg, tracks_msg
    from vknet_ros.overlay import draw_overlay

    def build(image: Any, out: Any) -> None:
        header = Header(frame_id="camera")
        labels_to_serialized_image(out.panoptic, header, "16UC1")
        labels_to_serialized_image(out.semantic, header, "mono8")
        bgr_to_serialized_image(draw_overlay(image, out), header)
        tracks_msg(out.objects, header)
        height, width = image.shape[:2]
        markers_msg(out.objects, header, (float(width), float(width), width / 2, height / 2))

    return build


def run(args: argparse.Namespace) -> int:
    from vknet_data.synth import SynthConfig, render_sequence

    if (args.precision != "fp32" or args.cuda_graph) and set(args.backends) != {"torch"}:
        print(f"note: --precision {args.precision}{' --cuda-graph' if args.cuda_graph else ''} applies to the "
              f"torch backend only; the others run as their files or engines are built", flush=True)
    build_messages = _message_builder()
    if build_messages is None:
        print("ROS 2 messages are not installed: the messages stage is not timed", flush=True)
    if args.frames < 10:
        print("error: --frames must be at least 10", file=sys.stderr)
        return 2
    if args.config and args.model:
        print("error: give --config (random weights of a config) or --model (a checkpoint), not both: a checkpoint "
              "carries its own config", file=sys.stderr)
        return 2
    try:
        order = schedule(list(dict.fromkeys(args.backends)), args.frames, args.warmup, args.block)  # as _pipelines keys
    except ValueError as exc:
        print(f"error: --{exc}", file=sys.stderr)
        return 2
    images, _ = render_sequence(0, 2000, SynthConfig(frames=min(args.frames + args.warmup, 60), height=args.height,
                                                     width=args.width))
    from vknet_model.backends import BackendError
    from vknet_model.checkpoint import CheckpointError
    from vknet_model.quantize import QuantizeError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            pipelines = _pipelines(args, Path(tmp))
        except (BackendError, CheckpointError, QuantizeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        times: dict[str, dict[str, list[float]]] = {b: {s: [] for s in (*STAGES, "end_to_end")} for b in pipelines}
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for name, t, timed in order:
            pipeline = pipelines[name]
            start = time.perf_counter()
            image = images[t % len(images)]
            out = pipeline.step(image, stamp=0.1 * t, frame_id="camera")
            msg_start = time.perf_counter()
            if build_messages is not None:
                build_messages(image, out)
            done = time.perf_counter()
            if timed:
                series = times[name]
                for stage in ("preprocess", "network", "tracker", "postprocess"):
                    series[stage].append(out.timings_ms[stage])
                if build_messages is not None:
                    series["messages"].append(1e3 * (done - msg_start))
                series["end_to_end"].append(1e3 * (done - start))
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = args.model.name if args.model else args.config or "tiny"
    rows: list[dict[str, Any]] = []
    for name, pipeline in pipelines.items():
        stats = {stage: _stats(v) for stage, v in times[name].items() if v}
        rows.append({
            "backend": name, "config": config, "device": args.device, "describe": pipeline.backend.describe(),
            "frames": args.frames, "image": [args.height, args.width],
            "network_ms_p50": stats["network"]["p50"], "end_to_end_ms_p50": stats["end_to_end"]["p50"],
            "stages_ms": stats,
        })
    print(f"{'backend':<16} " + " ".join(f"{s:>12}" for s in (*STAGES, "end_to_end")) + "   (ms p50 / p90)")
    for row in rows:
        cells = [f"{row['stages_ms'][s]['p50']:6.1f}/{row['stages_ms'][s]['p90']:<5.1f}" if s in row["stages_ms"]
                 else "-" for s in (*STAGES, "end_to_end")]
        print(f"{row['backend']:<16} " + " ".join(f"{c:>12}" for c in cells))
    result: dict[str, Any] = {
        "machine": describe_cpu(), "date": time.strftime("%Y-%m-%d"),
        "config": config, "device": args.device, "frames": args.frames, "warmup": args.warmup,
        "peak_rss_mb": peak_rss, "rss_before_timing_mb": rss_before, "results": rows,
    }
    if args.device.startswith("cuda"):
        import torch

        result["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(args.device) / 2**20
        print(f"peak CUDA memory allocated {result['peak_cuda_allocated_mb']:.0f} MB")
    by_name = {r["backend"]: r for r in rows}
    if "torch" in by_name and "onnxruntime" in by_name:
        ratio = {k: by_name["torch"][k] / by_name["onnxruntime"][k] for k in ("network_ms_p50", "end_to_end_ms_p50")}
        result["onnxruntime_speedup_over_torch"] = ratio
        print(f"onnxruntime vs torch: network {ratio['network_ms_p50']:.2f}x, end to end "
              f"{ratio['end_to_end_ms_p50']:.2f}x faster")
    if INT8 in by_name and "onnxruntime" in by_name:
        ratio = {k: by_name["onnxruntime"][k] / by_name[INT8][k] for k in ("network_ms_p50", "end_to_end_ms_p50")}
        result["int8_speedup_over_fp32_onnxruntime"] = ratio
        result["cpu_flags"] = cpu_flags()
        print(f"int8 vs fp32 onnxruntime: network {ratio['network_ms_p50']:.2f}x, end to end "
              f"{ratio['end_to_end_ms_p50']:.2f}x faster (CPU int8/bf16 flags: {', '.join(cpu_flags()) or 'none'})")
    for row in rows:
        overhead = row["end_to_end_ms_p50"] / row["network_ms_p50"]
        row["end_to_end_over_network"] = overhead
        print(f"{row['backend']}: end to end / network = {overhead:.2f}x")
    print(f"peak RSS of this process {peak_rss:.0f} MB (all backends loaded together)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
