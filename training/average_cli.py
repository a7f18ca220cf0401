"""Average the weights of several fine-tunes of one network into one checkpoint (a uniform model soup).

Train a few runs from the same checkpoint (`vknet train --init`) that differ in seed, data or a loss weight,
then average their final weights: the mean often scores above each of them (training/average.py says when it
is meaningful). The first checkpoint's config is kept, thresholds included; the output is an ordinary
checkpoint for `vknet export`, `--model` and `--init`.

Example:
  vknet average runs/ft_a/model.pt runs/ft_b/model.pt runs/ft_c/model.pt --out runs/soup.pt
  vknet export --checkpoint runs/soup.pt --out deploy/soup.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", type=Path, nargs="+",
                        help="two or more checkpoints of one network (a run's model.pt, last.pt or a weights-only "
                             "file); the first one's config and thresholds are kept")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (weights only)")


def run(args: argparse.Namespace) -> int:
    from training.average import average_checkpoints
    from vknet_model.checkpoint import CheckpointError, save_checkpoint
    from vknet_model.errors import one_line

    if args.out.resolve() in {p.resolve() for p in args.checkpoints}:
        print(f"error: --out {args.out} is one of the inputs; write the mean to a new file", file=sys.stderr)
        return 2
    try:
        cfg, net, extra = average_checkpoints(args.checkpoints)
    except CheckpointError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    save_checkpoint(args.out, net, cfg, **extra)
    print(f"wrote {args.out}: the mean of {len(args.checkpoints)} checkpoints (config of {args.checkpoints[0]}, "
          f"{cfg.hash()}; their runs trained {extra['train_seconds'] / 3600:.1f} h in all)")
    return 0
