"""The network alone on the CPU: ONNX Runtime and OpenVINO, fp32 and int8, side by side in one process.

For each model (the bundled export; ``--config r50`` adds a random-weight R50 exported at 384x1248) the fp32
graph is quantised with ``vknet_model.quantize`` (16 synthetic calibration frames), then every engine runs the
same input in turn, in interleaved blocks (so that the machine's drifts hit them alike), with 2 threads:
ONNX Runtime fp32 and int8 (the QDQ graph), and, where the ``openvino`` package is installed, OpenVINO on
the same two files with fp32 inference precision set explicitly (its CPU default is bf16 where the CPU has
it, which moves the outputs). Reported: network p50 per engine and its speed-up over ONNX Runtime fp32, the
CPU and its int8/bf16 flags. OpenVINO is not a shipped backend: this is how that was decided.

Usage: python benchmarks/cpu_engines.py [--config r50] [--runs 20] [--block 5] [--json benchmarks/cpu_engines.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vknet_model.machine import cpu_flags, describe_cpu


def _feeds(contract: Any) -> dict[str, np.ndarray]:
    from vknet_data.synth import SynthConfig, render_sequence
    from vknet_model.preprocess import letterbox

    image = letterbox(render_sequence(0, 2000, SynthConfig(frames=1))[0][0], contract.input_size)[0]
    post = contract.config.postprocess
    return {"image": image, "prev_kernels": np.zeros(contract.inputs[1].shape, np.float32),
            "use_prev": np.zeros(1, np.float32),
            "thresholds": np.asarray([post.instance_score_thr, post.overlap_thr, post.mask_thr], np.float32)}


def _engines(fp32: Path, int8: Path, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    engines: dict[str, Any] = {}
    for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        engines[name] = lambda feeds, s=session: s.run(None, feeds)
    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        core = ov.Core()
        for name, path in (("openvino fp32", fp32), ("openvino int8", int8)):
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                             "INFERENCE_NUM_THREADS": threads,
                                                             "PERFORMANCE_HINT": "LATENCY"})
            request = compiled.create_infer_request()
            engines[name] = lambda feeds, r=request: r.infer(feeds)
    return engines


def measure(fp32: Path, runs: int, block: int, threads: int) -> dict[str, Any]:
    from vknet_data.synth import SynthConfig, SyntheticScene
    from vknet_data.synth_stream import TRAIN_SCENE_SEED
    from vknet_model.contract import ModelContract, contract_path_for
    from vknet_model.quantize import int8_path_for, quantize_model

    contract = ModelContract.load(contract_path_for(fp32))
    int8 = int8_path_for(fp32)
    cfg = SynthConfig(frames=8)
    quantize_model(fp32, int8, [[SyntheticScene(TRAIN_SCENE_SEED, s, cfg).frame(t)[0] for t in range(8)]
                                for s in range(2)], calibration="synthetic training streets (cpu_engines)")
    feeds = _feeds(contract)
    engines = _engines(fp32, int8, threads)
    for run in engines.values():  # warm-up
        for _ in range(2):
            run(feeds)
    times: dict[str, list[float]] = {name: [] for name in engines}
    while min(len(t) for t in times.values()) < runs:
        for name, run in engines.items():
            run(feeds)  # the first run after a switch is not timed (the other engine's threads wind down)
            for _ in range(block):
                start = time.perf_counter()
                run(feeds)
                times[name].append(1e3 * (time.perf_counter() - start))
    base = float(np.median(times["onnxruntime fp32"]))
    return {"model": str(fp32), "input": list(contract.input_size),
            "engines": {name: {"p50_ms": float(np.median(t)), "speedup_over_onnxruntime_fp32": base / np.median(t)}
                        for name, t in times.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="*", default=[], help="also random-weight models of these configs")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per engine (default 20)")
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/cpu_engines.json"))
    args = parser.parse_args(argv)
    import torch

    from vknet_model.bundled import BUNDLED_ONNX
    from vknet_model.config import resolve_config
    from vknet_model.contract import contract_path_for
    from vknet_model.export import export_onnx
    from vknet_model.network import build_frame_net

    work = Path(tempfile.mkdtemp(prefix="vknet_cpu_engines_"))
    models = [work / "bundled.onnx"]
    models[0].write_bytes(BUNDLED_ONNX.read_bytes())
    contract_path_for(models[0]).write_text(contract_path_for(BUNDLED_ONNX).read_text())
    for name in args.config:
        torch.manual_seed(0)
        path = work / f"{name}.onnx"
        export_onnx(build_frame_net(resolve_config(name)).eval(), resolve_config(name), path)
        models.append(path)
    results = [measure(model, args.runs, args.block, args.threads) for model in models]
    print(f"\nCPU: {describe_cpu()}")
    print(f"{'model':14s} {'engine':18s} {'p50 ms':>8s} {'vs ORT fp32':>11s}")
    for result in results:
        for engine, row in result["engines"].items():
            print(f"{Path(result['model']).stem:14s} {engine:18s} {row['p50_ms']:8.1f} "
                  f"{row['speedup_over_onnxruntime_fp32']:10.2f}x")
    record = {"cpu_flags": cpu_flags(), "threads": args.threads, "results": results}
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
