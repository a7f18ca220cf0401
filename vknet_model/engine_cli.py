"""Build the TensorRT engine for an exported model ahead of time (build only, no inference).

Building an engine takes minutes and happens once per GPU model and TensorRT version. Run this after
`vknet export` (for example while provisioning a robot or in a container image build) so that the first
start of the node does not stall. The engine goes to the same cache the tensorrt backend reads
($VKNET_CACHE_DIR, else $XDG_CACHE_HOME/vknet/engines, else ~/.cache/vknet/engines), keyed by the ONNX hash,
GPU, compute capability, TensorRT version, precision and input shape; a cached engine that no longer matches
(new GPU, new TensorRT, re-exported model) or is damaged is rebuilt, never used.

With --out the engine is written to that file instead, with its metadata in <out>.json. --int8 builds from the
INT8 QDQ graph `vknet quantize` wrote beside the model (MODEL.int8.onnx; explicit quantisation, no calibrator).
Needs TensorRT (tensorrt>=10,<12) and a CUDA GPU; without them use `--backend onnxruntime`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_GIB = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", type=Path, required=True, help="exported model (model.json must be next to it)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the engine to this file instead of the cache (metadata in OUT.json)")
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                        help="allow fp16 kernels (default on; TensorRT 11 needs a mixed-precision ONNX instead)")
    parser.add_argument("--int8", action="store_true",
                        help="build from MODEL.int8.onnx (from `vknet quantize`) instead of the fp32 graph")
    parser.add_argument("--workspace", type=float, default=4.0, metavar="GB",
                        help="builder workspace memory limit in GiB (default 4)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache directory (default: see above)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid engine is cached")


def run(args: argparse.Namespace) -> int:
    from vknet_model.backends.base import BackendError
    from vknet_model.backends.tensorrt_backend import TensorRTUnavailableError, prepare_engine
    from vknet_model.contract import ContractError

    if args.workspace <= 0:
        print("vknet engine: --workspace must be positive", file=sys.stderr)
        return 2
    if not args.onnx.is_file():
        print(f"vknet engine: ONNX model not found: {args.onnx} (create it with `vknet export`)", file=sys.stderr)
        return 2
    onnx = args.onnx
    if args.int8:
        from vknet_model.contract import ModelContract, contract_path_for
        from vknet_model.quantize import int8_path_for

        try:
            already = ModelContract.load(contract_path_for(onnx)).precision == "int8"
        except ContractError as exc:
            print(f"vknet engine: {exc}", file=sys.stderr)
            return 2
        onnx = onnx if already else int8_path_for(onnx)
        if not onnx.is_file():
            print(f"vknet engine: {onnx} not found: run `vknet quantize --model {args.onnx}` first", file=sys.stderr)
            return 2
    try:
        prepared = prepare_engine(onnx, fp16=args.fp16, cache_dir=args.cache_dir, engine_path=args.out,
                                  workspace_bytes=int(args.workspace * _GIB), device_index=args.device,
                                  force=args.force)
    except (TensorRTUnavailableError, ContractError) as exc:
        print(f"vknet engine: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"vknet engine: {exc}", file=sys.stderr)
        return 1
    print(f"{'built' if prepared.built else 'already cached'}: {prepared.engine_path}")
    print(f"metadata: {prepared.sidecar_path}")
    print(f"key {prepared.key.digest()}: {json.dumps(prepared.key.to_dict())}")
    return 0
