"""Quantise an exported model to INT8 (static, QDQ, per-channel weights) for CPUs with fast int8 and for
TensorRT's explicit-quantisation path.

Calibration runs frames through the fp32 model in video order. --calib takes a KITTI-STEP-layout folder
(with --split), a bag (rosbag2 folder, .mcap, .db3 or ROS 1 .bag), or "synthetic" (the default): streets from
the generator's training seed, never the evaluation sequences. Writes MODEL.int8.onnx and its model.json
(precision int8, what it was calibrated on, the fp32 model's sha256). Accuracy and speed against fp32:
`python benchmarks/int8_accuracy.py` and `vknet bench --precisions fp32 int8`.

(This command lives beside the ROS tools because it reads bags; the quantisation itself is
vknet_model/quantize.py.)

Examples:
  vknet quantize --model deploy/r50.onnx                                  # synthetic calibration, 64 frames
  vknet quantize --model deploy/r50.onnx --calib data/kitti_step --split train --frames 64
  vknet quantize --model deploy/r50.onnx --calib bags/drive5 --out deploy/r50_drive5.int8.onnx
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SEQUENCE_FRAMES = 8  # calibration frames per video: enough feedback of kernels, several streets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="fp32 .onnx export (with its model.json); default: the bundled")
    parser.add_argument("--calib", default="synthetic",
                        help="calibration data: synthetic (default), a KITTI-STEP-layout folder, or a bag")
    parser.add_argument("--split", default="train", help="split of a KITTI-STEP folder (default train)")
    parser.add_argument("--frames", type=int, default=64, help="calibration frames (default 64)")
    parser.add_argument("--method", default="percentile", choices=("percentile", "minmax"),
                        help="activation ranges: the calibration frames' 99.999th percentile (default) or min-max")
    parser.add_argument("--out", type=Path, help="output .onnx (default: MODEL.int8.onnx beside the model)")


def _synthetic(frames: int, height: int, width: int) -> Iterator[list[np.ndarray]]:
    from vknet_data.synth import SynthConfig, SyntheticScene
    from vknet_data.synth_stream import TRAIN_SCENE_SEED

    cfg = SynthConfig(frames=SEQUENCE_FRAMES, height=height, width=width)
    for scene in range((frames + SEQUENCE_FRAMES - 1) // SEQUENCE_FRAMES):
        count = min(SEQUENCE_FRAMES, frames - scene * SEQUENCE_FRAMES)
        street = SyntheticScene(TRAIN_SCENE_SEED, scene, cfg)
        yield [street.frame(t)[0] for t in range(count)]


def _kitti_step(root: Path, split: str, frames: int) -> Iterator[list[np.ndarray]]:
    from vknet_data.datasets import kitti_step_sequences, read_rgb

    sequences = kitti_step_sequences(root, split)
    per_sequence = max(1, min(SEQUENCE_FRAMES, frames // len(sequences) or 1))
    left = frames
    for sequence in sequences:  # the first frames of every video, spread over as many videos as it takes
        if left <= 0:
            return
        take = min(per_sequence, left, len(sequence))
        left -= take
        yield [read_rgb(path) for path in sequence.images[:take]]


def _bag(path: Path, frames: int) -> Iterator[list[np.ndarray]]:
    from vknet_ros.bags import BagReader

    video: list[np.ndarray] = []
    sequence = None
    for taken, frame in enumerate(BagReader(path).frames()):
        if taken >= frames:
            break
        if frame.sequence != sequence and video:
            yield video
            video = []
        sequence = frame.sequence
        video.append(frame.image)
    if video:
        yield video


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vknet_data.datasets import DatasetError
    from vknet_model.bundled import resolve_model
    from vknet_model.contract import ContractError, contract_path_for
    from vknet_model.quantize import QuantizeError, int8_path_for, quantize_model

    if args.frames < 1:
        print("vknet quantize: --frames must be at least 1", file=sys.stderr)
        return 2
    try:
        model = resolve_model(args.model, prefer_onnx=True, backend="onnxruntime")
        if model.suffix != ".onnx":
            raise QuantizeError(f"{model} is not an .onnx export: run `vknet export` first")
        out = args.out or int8_path_for(model)
        if out.suffix != ".onnx":
            raise QuantizeError(f"--out must end in .onnx, got {out}")
        calib = Path(args.calib)
        if args.calib == "synthetic":
            source = _synthetic(args.frames, 375, 1242)  # KITTI-size streets, letterboxed like camera frames
            what = "synthetic streets (the generator's training seed)"
        elif calib.is_dir() and (calib / "images").is_dir():
            source, what = _kitti_step(calib, args.split, args.frames), f"KITTI-STEP {calib} split {args.split}"
        elif calib.exists():
            source, what = _bag(calib, args.frames), f"bag {calib}"
        else:
            raise QuantizeError(f"--calib {args.calib}: no such folder or bag (or use 'synthetic')")
        with tqdm(total=args.frames, unit="frame", desc="calibration") as bar:
            quantized = quantize_model(model, out, source, calibration=what, method=args.method, on_frame=bar.update)
    except (QuantizeError, ContractError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"vknet quantize: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # e.g. beside the bundled model in a read-only installation
        print(f"vknet quantize: cannot write {exc.filename}: choose a writable --out", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {contract_path_for(out)}: precision "
          f"{quantized.precision}, calibrated on {quantized.calibration}")
    return 0
