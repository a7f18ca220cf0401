"""Parameters, GMACs and CPU forward time (PyTorch eager vs ONNX Runtime) of the built-in configs.

Usage: python benchmarks/model_cost.py [--configs tiny r18 r50] [--height 384 --width 1248] [--runs 10]
       [--json benchmarks/model_cost.json]

GMACs are counted by torch.utils.flop_counter (matmul/conv FLOPs / 2) for the whole per-frame network,
panoptic assembly included, at one fixed input size for every config so they compare directly. Times are
medians of --runs forwards after 2 warm-up runs, torch and ONNX Runtime interleaved in one process on the
same inputs, so their ratio is robust to machine noise; the absolute numbers are this machine's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vknet_model.backends.onnxruntime_backend import OnnxRuntimeBackend
from vknet_model.config import config_from_dict, resolve_config
from vknet_model.contract import contract_for
from vknet_model.export import export_onnx
from vknet_model.machine import describe_cpu
from vknet_model.network import build_frame_net, threshold_tensor

BLOCKS = ("backbone", "fpn", "semantic_fpn", "initial", "stages", "linking", "embedding")


def _gmacs(frame_net: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[float, dict[str, float]]:
    counter = FlopCounterMode(display=False, depth=4)
    with torch.inference_mode(), counter:
        frame_net(*inputs)
    per_module = counter.get_flop_counts()
    blocks = {}
    for block in BLOCKS:
        # A ModuleList is never called itself: its cost is the sum of its numbered children.
        prefix = f"FrameNet.net.{block}"
        keys = [prefix] if prefix in per_module else [k for k in per_module if k.rsplit(".", 1)[0] == prefix]
        blocks[block] = sum(sum(per_module[k].values()) for k in keys) / 2e9
    return counter.get_total_flops() / 2e9, blocks


def _median_ms(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def _time_both(frame_net: torch.nn.Module, ort_backend: OnnxRuntimeBackend, inputs: tuple[torch.Tensor, ...],
               runs: int) -> tuple[float, float]:
    with torch.inference_mode():
        torch_ms = _median_ms(lambda: frame_net(*inputs), runs)
    return torch_ms, _median_ms(lambda: ort_backend.infer(*inputs), runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "r18", "r50"])
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=1248)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-time", action="store_true", help="parameters and GMACs only")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/model_cost.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    rows = []
    for name in args.configs:
        base = resolve_config(name)
        model = dataclasses.replace(base.model, input_height=args.height, input_width=args.width)
        cfg = config_from_dict(dataclasses.replace(base, model=model).to_dict())
        frame_net = build_frame_net(cfg).eval()
        spec = contract_for(cfg).inputs
        inputs = (torch.randint(0, 256, spec[0].shape, dtype=torch.uint8), torch.randn(spec[1].shape),
                  torch.ones(1), threshold_tensor(cfg.postprocess))
        params = sum(p.numel() for p in frame_net.parameters()) / 1e6
        total, blocks = _gmacs(frame_net, inputs)
        row = {"config": name, "params_m": round(params, 3), "gmacs": round(total, 2),
               "gmacs_by_block": {k: round(v, 2) for k, v in blocks.items()}}
        if not args.no_time:
            with tempfile.TemporaryDirectory() as tmp:
                onnx_path = Path(tmp) / f"{name}.onnx"
                export_onnx(frame_net, cfg, onnx_path)
                torch_ms, ort_ms = _time_both(frame_net, OnnxRuntimeBackend(onnx_path), inputs, args.runs)
            row.update(torch_ms=round(torch_ms, 1), onnxruntime_ms=round(ort_ms, 1),
                       onnxruntime_speedup=round(torch_ms / ort_ms, 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'config':<6} {'params':>8} {'GMACs':>7}  {'backbone':>8} {'fpn':>6} {'semfpn':>6} {'stages':>6}"
          + ("" if args.no_time else f" {'torch ms':>9} {'ort ms':>8} {'ort x':>6}"))
    for r in rows:
        b = r["gmacs_by_block"]
        line = (f"{r['config']:<6} {r['params_m']:>7.2f}M {r['gmacs']:>7.2f}  {b['backbone']:>8.2f} {b['fpn']:>6.2f} "
                f"{b['semantic_fpn']:>6.2f} {b['stages']:>6.2f}")
        if not args.no_time:
            line += f" {r['torch_ms']:>9.1f} {r['onnxruntime_ms']:>8.1f} {r['onnxruntime_speedup']:>6.2f}"
        print(line)
    result = {"machine": describe_cpu(),
              "torch": torch.__version__, "input": [args.height, args.width], "runs": args.runs,
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
