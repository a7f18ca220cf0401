"""Run the Pipeline over a KITTI-STEP-layout folder and write panoptic predictions in the same layout.

Every sequence starts with a fresh tracker. Predictions go to PRED/panoptic_maps/<split>/<seq>/<frame>.png
(R = class, G = instance // 256, B = instance % 256), which `vknet eval --gt DATA --pred PRED --model MODEL` scores.
Without --model the bundled model is used.

Example:
  vknet predict --data data/synth --split val --out preds/tiny
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from vknet_model.backends import BACKENDS, PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path,
                        help="checkpoint (.pt) or exported .onnx (default: the bundled model; on the CPU its ONNX "
                             "export, which the node runs and which is faster there, on CUDA its checkpoint)")
    parser.add_argument("--data", type=Path, required=True, help="KITTI-STEP-layout root (images/<split>/...)")
    parser.add_argument("--split", default="val", help="split to predict (default val)")
    parser.add_argument("--out", type=Path, required=True, help="prediction root to write")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto (as the model file is), fp32, int8 (MODEL.int8.onnx from `vknet quantize`) or bf16")


def run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from vknet_data.datasets import DatasetError
    from vknet_data.panoptic_png import encode_panoptic_png
    from vknet_eval.evaluate import predict_sequence
    from vknet_model.backends import BackendError
    from vknet_model.bundled import resolve_model
    from vknet_model.checkpoint import CheckpointError
    from vknet_model.contract import ContractError
    from vknet_model.pipeline import Pipeline

    try:
        model = resolve_model(args.model, backend=args.backend,
                              prefer_onnx=args.precision == "int8" or not args.device.startswith("cuda"))
        pipeline = Pipeline.from_model(model, backend=args.backend, device=args.device, precision=args.precision)
        from vknet_data.datasets import kitti_step_sequences

        sequences = kitti_step_sequences(args.data, args.split, pipeline.data.label_divisor)
    except (FileNotFoundError, BackendError, CheckpointError, ContractError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frames = sum(len(s) for s in sequences)
    start = time.perf_counter()
    written: list[str] = []
    # Each sequence is written into a hidden folder and renamed when complete: a failure leaves only whole
    # sequences, never one cut short that `vknet eval` would score as if it were all there.
    with tqdm(total=frames, unit="frame", desc="predict") as bar:
        for sequence in sequences:
            folder = args.out / "panoptic_maps" / args.split / sequence.name
            staging = folder.with_name(f".{sequence.name}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.mkdir(parents=True)
                for image_path, panoptic in zip(sequence.images, predict_sequence(pipeline, sequence), strict=True):
                    png = encode_panoptic_png(panoptic, pipeline.data.label_divisor)
                    if not cv2.imwrite(str(staging / image_path.name), png[:, :, ::-1]):
                        raise OSError(f"cannot write {staging / image_path.name}")
                    bar.update(1)
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
            except (DatasetError, OSError) as exc:
                shutil.rmtree(staging, ignore_errors=True)
                print(f"error: {exc}\n{len(written)} of {len(sequences)} sequences were written whole "
                      f"({', '.join(written) or 'none'}); sequence {sequence.name} was not kept", file=sys.stderr)
                return 2
            written.append(sequence.name)
    elapsed = time.perf_counter() - start
    print(f"wrote {frames} predictions of {len(sequences)} sequences to {args.out} ({frames / elapsed:.1f} frames/s, "
          f"backend {pipeline.backend.describe()})")
    return 0
