"""Generate synthetic KITTI-STEP sequences (images + panoptic PNGs + calibration) for training and tests.

Street scenes seen from a panning camera: cars and people of the same class move in both directions, cross,
occlude each other, enter and leave the frame; some sequences hold a crowd region (person, instance 0).
Output is the official KITTI-STEP layout, so every vknet tool reads it like the real dataset:

  DIR/images/<split>/<seq:04d>/<frame:06d>.png
  DIR/panoptic_maps/<split>/<seq:04d>/<frame:06d>.png   (R = class, G = instance // 256, B = instance % 256)
  DIR/calib/<split>/<seq:04d>.txt

A sequence depends only on (--seed, its index), so `--first-sequence` regenerates any subset exactly.

Example (train and held-out validation, different sequence indices):
  vknet synth --out data/synth --split train --sequences 40 --frames 30 --seed 0
  vknet synth --out data/synth --split val --sequences 10 --frames 30 --seed 0 --first-sequence 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write into")
    parser.add_argument("--sequences", type=int, default=10, help="number of sequences (default 10)")
    parser.add_argument("--frames", type=int, default=50, help="frames per sequence (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", default="train", help="split folder name (default train)")
    parser.add_argument("--first-sequence", type=int, default=0, help="index of the first sequence (default 0)")
    parser.add_argument("--height", type=int, default=375, help="image height (default 375, KITTI)")
    parser.add_argument("--width", type=int, default=1242, help="image width (default 1242, KITTI)")
    parser.add_argument("--depth", action="store_true",
                        help="also write depth/<split>/<seq>/<frame>.png: 16-bit millimetres, 0 = none (KITTI's "
                             "depth convention), registered to the images")


def run(args: argparse.Namespace) -> int:
    from vknet_data.synth import SynthConfig, write_sequences

    if args.sequences < 1 or args.frames < 1:
        print("error: --sequences and --frames must be >= 1")
        return 2
    if args.height < 64 or args.width < 128:
        print("error: images must be at least 128x64")
        return 2
    cfg = SynthConfig(height=args.height, width=args.width, frames=args.frames)
    start = time.perf_counter()
    folders = write_sequences(args.out, sequences=args.sequences, seed=args.seed, split=args.split,
                              first_sequence=args.first_sequence, cfg=cfg, depth=args.depth)
    elapsed = time.perf_counter() - start
    total = args.sequences * args.frames
    print(f"wrote {len(folders)} sequences x {args.frames} frames ({args.width}x{args.height}) to {args.out} "
          f"split {args.split} in {elapsed:.1f} s ({total / elapsed:.1f} frames/s)")
    return 0
