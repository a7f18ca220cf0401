"""Export a trained checkpoint to ONNX for ONNX Runtime and TensorRT.

Writes MODEL.onnx and its contract MODEL.json (inputs/outputs, input size, class names, config hash). The
graph has static shapes; --height/--width pick the network input size (multiples of 32; camera images
of any size are letterboxed to it at run time). After export the ONNX model is run once in ONNX Runtime
next to PyTorch on the same random input and the largest difference per output is printed.

Example:
  vknet export --checkpoint runs/r50/model.pt --out deploy/r50.onnx --height 384 --width 1248
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx path (the .json goes beside it)")
    parser.add_argument("--height", type=int, help="network input height (default: the checkpoint's)")
    parser.add_argument("--width", type=int, help="network input width (default: the checkpoint's)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the config's, >= 17)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")


def run(args: argparse.Namespace) -> int:
    import torch

    from vknet_model.backends.onnxruntime_backend import OnnxRuntimeBackend
    from vknet_model.checkpoint import CheckpointError, load_checkpoint
    from vknet_model.config import ConfigError, config_from_dict
    from vknet_model.export import ExportError, export_onnx
    from vknet_model.network import build_frame_net, threshold_tensor

    if args.out.suffix != ".onnx":
        print(f"error: --out must end in .onnx, got {args.out}", file=sys.stderr)
        return 2
    try:
        cfg, net, _ = load_checkpoint(args.checkpoint)
        if args.height or args.width:
            model = dataclasses.replace(cfg.model, input_height=args.height or cfg.model.input_height,
                                        input_width=args.width or cfg.model.input_width)
            cfg = config_from_dict(dataclasses.replace(cfg, model=model).to_dict())
        frame_net = build_frame_net(cfg, net)
        contract = export_onnx(frame_net, cfg, args.out, opset=args.opset)
    except (CheckpointError, ConfigError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    h, w = contract.input_size
    print(f"exported {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, input {h}x{w}, opset {contract.opset}, "
          f"config {cfg.hash()})")
    if args.no_check:
        return 0
    backend = OnnxRuntimeBackend(args.out)
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, contract.inputs[0].shape, dtype=torch.uint8, generator=generator)
    prev = torch.randn(contract.inputs[1].shape, generator=generator)
    inputs = (image, prev, torch.ones(1), threshold_tensor(cfg.postprocess))
    with torch.inference_mode():
        reference = frame_net.eval()(*inputs)
    result = backend.infer(*inputs)
    worst = 0.0
    for name, a, b in zip(reference._fields, reference, result, strict=True):
        diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        worst = max(worst, diff) if a.is_floating_point() else worst
        print(f"  {name:<13} max |torch - onnxruntime| = {diff:.3g}")
    print(f"check: largest float difference {worst:.3g}")
    return 0
