"""Train Video K-Net on KITTI-STEP-layout data (real KITTI-STEP, or `vknet synth` output).

Trains on frame pairs (a key frame and a reference frame 1-2 frames away, re-drawn every iteration) with
the K-Net losses on both frames plus the tracking losses, AdamW (backbone lr x0.25), linear warm-up, step
decay, gradient clipping and mixed precision on GPUs. Writes into --out:

  last.pt        checkpoint every train.checkpoint_every iterations (resumed automatically)
  model.pt       the final weights (what `vknet export` and `--model` take); with train.ema_decay > 0 the
                 moving average of the weights, which validation scores (the raw weights as raw_* columns)
  metrics.csv    loss components, learning rate and gradient norm every train.log_every iterations
  val.csv        STQ / AQ / SQ on the validation split every train.val_every iterations

One GPU or CPU:  vknet train --config r50 --data /data/kitti-step --out runs/r50 --backbone-weights resnet50.pth
Synthetic:       vknet train --config tiny_synth --synthetic --out runs/tiny   (fresh scenes every pair)
Several GPUs:    torchrun --nproc_per_node 8 -m vknet_cli train --config r50 --data ... --out ...
(several nodes: add torchrun's --nnodes/--node_rank/--rdzv_endpoint; train.batch_size is per process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="built-in config name (tiny, r18, r50) or a YAML path")
    parser.add_argument("--data", type=Path, help="dataset root in the KITTI-STEP layout (with --synthetic: "
                        "optional, only its validation split is read)")
    parser.add_argument("--synthetic", action="store_true",
                        help="train on synthetic scenes generated on the fly, never the same scene twice; without "
                             "--data, validation scenes are generated into OUT/validation")
    parser.add_argument("--backbone-weights", type=Path,
                        help="ImageNet weights for the backbone: a torchvision ResNet-18/34/50 state dict (.pth), "
                             "e.g. torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V2').state_dict(), "
                             "'resnet50.pth'); needs model.backbone_width 64 and a BatchNorm backbone_norm")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints and logs)")
    parser.add_argument("--split", default="train", help="training split folder (default train)")
    parser.add_argument("--val-split", default="val", help="validation split ('' to skip; default val)")
    parser.add_argument("--val-sequences", type=int, default=0, help="validate on the first N sequences (0: all)")
    parser.add_argument("--iters", type=int, help="override train.iters")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing out/last.pt")
    parser.add_argument("--init", type=Path,
                        help="start from this checkpoint's weights (fine-tuning); the config may have more "
                             "num_stages, more num_proposals or twice its backbone_width, which grows the network "
                             "from them (training/grow.py)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop after this many minutes of training, with OUT/last.pt written: the same command "
                             "resumes (for sittings, and lent GPUs with a time budget)")
    parser.add_argument("--workers", type=int, help="override train.workers (data-loading processes per GPU/process)")


def run(args: argparse.Namespace) -> int:
    from training.trainer import RunOptions, train
    from vknet_data.datasets import DatasetError
    from vknet_model.checkpoint import CheckpointError
    from vknet_model.config import ConfigError, resolve_config
    from vknet_model.errors import one_line
    from vknet_model.pretrained import PretrainedError

    if args.time_limit is not None and args.time_limit <= 0:
        print("error: --time-limit is in minutes and must be positive", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print("error: --workers must be 0 (load in the training process) or more", file=sys.stderr)
        return 2
    if args.data is None and not args.synthetic:
        print("error: give --data (a KITTI-STEP-layout folder) or --synthetic", file=sys.stderr)
        return 2
    try:
        cfg = resolve_config(args.config)
        opts = RunOptions(data=args.data, out=args.out, synthetic=args.synthetic,
                          backbone_weights=args.backbone_weights, split=args.split,
                          val_split=args.val_split or None, val_sequences=args.val_sequences, iters=args.iters,
                          device=args.device, resume=not args.no_resume, init=args.init,
                          progress=not args.no_progress,
                          time_limit_s=None if args.time_limit is None else 60.0 * args.time_limit,
                          workers=args.workers)
        final = train(cfg, opts)
    except (ConfigError, DatasetError, CheckpointError, PretrainedError, RuntimeError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"trained model: {final}" if final.name == "model.pt" else f"stopped at the time limit: {final}")
    return 0
