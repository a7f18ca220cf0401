"""TensorRT against ONNX Runtime on the same exported model: are the engine's outputs the network's?

For users with TensorRT and a GPU (none is available where vknet is developed, so this has not been run
against TensorRT there). Builds or loads the cached engine for --onnx, runs --frames synthetic street
frames through both backends (each feeding back its own kernels), prints the largest float difference and
the fraction of differing integer elements per output, writes JSON, and exits 1 when the candidate is out
of tolerance. `--candidate onnxruntime` compares ONNX Runtime with itself (a check of this script).

Usage: python benchmarks/tensorrt_parity.py --onnx model.onnx [--fp16] [--frames 10] [--json parity.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vknet_data.synth import SynthConfig, render_sequence
from vknet_model.backends import open_backend
from vknet_model.parity import compare_backends

# fp16 engines: kernels and embeddings drift by ~1e-2; a few argmax flips at near-ties are expected.
TOLERANCE = {"fp32": (1e-3, 0.001), "fp16": (5e-2, 0.02)}  # (max float diff, max integer mismatch fraction)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="exported model (model.json beside it)")
    parser.add_argument("--candidate", default="tensorrt", choices=("tensorrt", "onnxruntime"))
    parser.add_argument("--device", default="cuda", help="device of the candidate (default cuda)")
    parser.add_argument("--fp16", action="store_true", help="the engine was built with --fp16")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    reference = open_backend(args.onnx, backend="onnxruntime", device="cpu")
    device = args.device if args.candidate == "tensorrt" else "cpu"
    candidate = open_backend(args.onnx, backend=args.candidate, device=device)
    images = render_sequence(0, 2002, SynthConfig(frames=args.frames))[0]
    report = compare_backends(reference, candidate, images)
    precision = "fp16" if args.fp16 else "fp32"
    max_float, max_mismatch = TOLERANCE[precision]
    print(f"{args.candidate} ({precision}) vs onnxruntime (cpu, fp32) on {report.frames} frames")
    for name, diff in report.max_abs.items():
        print(f"  {name:<13} max |diff| = {diff:.3g}")
    for name, frac in report.mismatch.items():
        print(f"  {name:<13} differing elements = {frac:.3%}")
    ok = report.worst_float() <= max_float and report.worst_mismatch() <= max_mismatch
    print(f"{'PASS' if ok else 'FAIL'}: worst float {report.worst_float():.3g} (tolerance {max_float}), worst "
          f"integer mismatch {report.worst_mismatch():.3%} (tolerance {max_mismatch:.1%})")
    if args.json:
        args.json.write_text(json.dumps({"candidate": args.candidate, "precision": precision, "frames": report.frames,
                                         "max_abs": report.max_abs, "mismatch": report.mismatch, "pass": ok},
                                        indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
