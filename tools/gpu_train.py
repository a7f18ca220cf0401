"""Continue training the bundled model on a lent GPU inside its time budget, as one command.

A lent GPU comes for minutes (15 a task, start-up and every other check included), so the run is planned
by the clock rather than by an iteration count:

1. ``--minutes`` x (1 - ``--decay-fraction``) at the config's learning rate (warm-up first), from
   ``--init`` (default: the bundled weights) on fresh synthetic scenes past the ones those weights saw;
2. the rest at lr x0.1, for as many iterations as phase 1's measured rate fits in it, ending with a
   validation on held-out scenes;
3. ``$OUT`` (or ``--out``) receives ``tiny_synth.pt`` (weights only: the device returns files of at most
   16 MiB, and last.pt with its optimiser state is larger), ``metrics.csv``, ``val.csv`` and ``plan.json``.

On the device, from the repository root (``make gpu-wheels`` here, carry ``build/gpu_wheels``)::

    python -m pip install -q --no-index --find-links build/gpu_wheels pyyaml tqdm
    PYTHONPATH=$PWD python tools/gpu_train.py --minutes 7

Back here, score the returned weights on the held-out set before they replace the bundled ones
(vknet_model/assets/README.md has the commands). ``--device cpu`` runs the same plan on the CPU, which is
how the tests check it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.trainer import RunOptions, train  # noqa: E402
from vknet_model.bundled import BUNDLED_MODEL  # noqa: E402
from vknet_model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from vknet_model.config import VKNetConfig, config_from_dict, resolve_config  # noqa: E402


def _with_train(cfg: VKNetConfig, **changes: object) -> VKNetConfig:
    values = cfg.to_dict()
    values["train"].update(changes)
    return config_from_dict(values, source="tools/gpu_train.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=7.0, help="training time in all (default 7)")
    parser.add_argument("--decay-fraction", type=float, default=0.25,
                        help="share of the time spent at lr x0.1 at the end (default 0.25)")
    parser.add_argument("--config", default="tiny_synth", help="config name or YAML (default tiny_synth)")
    parser.add_argument("--init", type=Path, default=BUNDLED_MODEL,
                        help="weights to continue from (default: the bundled model); 'none' starts from scratch")
    parser.add_argument("--batch-size", type=int, default=16, help="frame pairs per iteration (default 16)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2),
                        help="scene-generating data workers (default: all cores but two)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "gpu_train", help="run folder (default runs/)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")),
                        help="where the returned files go (default $OUT)")
    parser.add_argument("--val-sequences", type=int, default=2,
                        help="held-out sequences scored at the end (default 2; 0: no validation)")
    args = parser.parse_args(argv)
    if not (args.minutes > 0 and 0 < args.decay_fraction < 1 and args.batch_size > 0):
        parser.error("--minutes and --batch-size must be positive and --decay-fraction in (0, 1)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    init = None if str(args.init) == "none" else args.init
    base = resolve_config(args.config)
    if init is not None and load_checkpoint(init)[0].model != base.model:
        parser.error(f"{init} was not trained with the {args.config} network")
    args.out.mkdir(parents=True, exist_ok=True)
    last = args.run / "last.pt"
    if last.exists():
        raise SystemExit(f"{last} exists: give another --run (this plan starts a run, it does not resume one)")

    # Phase 1: the config's lr, no decay, no validation (every second trains), stopped by the clock.
    phase1_s = 60.0 * args.minutes * (1 - args.decay_fraction)
    cfg1 = _with_train(base, batch_size=args.batch_size, iters=10**9, lr_steps=[], val_every=0,
                       checkpoint_every=10**9)
    started = time.perf_counter()
    train(cfg1, RunOptions(data=None, out=args.run, synthetic=True, init=init, device=args.device,
                           time_limit_s=phase1_s, workers=args.workers, val_split=None, progress=False))
    phase1_wall = time.perf_counter() - started
    step = int(read_checkpoint(last)["step"])

    # Phase 2: lr x0.1 from here, for the iterations phase 1's rate fits in the rest of the time.
    phase2_s = 60.0 * args.minutes - phase1_wall
    rate = step / phase1_wall
    decay_iters = max(1, int(0.9 * rate * phase2_s))
    cfg2 = _with_train(cfg1, iters=step + decay_iters, lr_steps=[step], checkpoint_every=max(1, decay_iters // 4))
    final = train(cfg2, RunOptions(data=None, out=args.run, synthetic=True, init=init, device=args.device,
                                   time_limit_s=phase2_s + 60.0, workers=args.workers,
                                   val_split="val" if args.val_sequences else None,
                                   val_sequences=args.val_sequences, progress=False))
    _, net, payload = load_checkpoint(final)
    weights = args.out / "tiny_synth.pt"
    save_checkpoint(weights, net, cfg2, step=payload["step"], scenes_after=payload.get("scenes_after"))
    for name in ("metrics.csv", "val.csv"):
        if (args.run / name).is_file():
            shutil.copy(args.run / name, args.out / name)
    plan = {"minutes": args.minutes, "device": args.device, "batch_size": args.batch_size, "workers": args.workers,
            "init": str(init), "phase1_iters": step, "phase1_s": round(phase1_wall, 1),
            "iters_per_s": round(rate, 3), "decay_iters": decay_iters, "final_step": int(payload["step"]),
            "total_s": round(time.perf_counter() - started, 1), "weights": weights.name}
    (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(json.dumps(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
