"""Make a trained checkpoint the bundled model: weights-only checkpoint, ONNX export and contract, one command.

A run's checkpoint carries the run's config; the bundled model's inference settings (score thresholds,
tracker) are tuned for the bundled weights and written in ``vknet_model/configs/tiny_synth.yaml``. This
takes the *weights* (and the run's ``train`` section, the record of how they were made) from the checkpoint
and every other section from the yaml, so the bundled files never silently fall back to a run's untuned
thresholds. A checkpoint whose network does not fit the yaml's (say after ``num_stages`` grew) is refused:
edit the yaml first. Optimiser state is dropped (``last.pt`` with it is three times the size).

Usage (from the repository root)::

    python tools/bundle_model.py runs/tiny_synth_cycle4/model.pt
    # then score it (vknet_model/assets/README.md) and commit tiny_synth.{pt,onnx,json}

Use it too at the end of a sitting whose run is to become the bundled model, on that run's ``last.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.trainer import model_difference  # noqa: E402
from vknet_model.bundled import BUNDLED_MODEL  # noqa: E402
from vknet_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from vknet_model.config import ConfigError, config_from_dict, resolve_config  # noqa: E402
from vknet_model.network import build_model  # noqa: E402

_KEPT = ("step", "scenes_after", "train_seconds", "averaged_from")  # its record of its training, carried over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="trained checkpoint (a run's model.pt or last.pt)")
    parser.add_argument("--config", default="tiny_synth",
                        help="config name or YAML whose inference settings the bundle takes (default tiny_synth)")
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL,
                        help="weights-only checkpoint to write; the .onnx and .json go beside it "
                             "(default: the bundled model)")
    args = parser.parse_args(argv)
    try:
        run_cfg, net, payload = load_checkpoint(args.checkpoint)
        documented = resolve_config(args.config)
    except (CheckpointError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    expected = {k: tuple(v.shape) for k, v in build_model(documented).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if expected != found:
        print(f"error: {args.checkpoint} holds another network than {args.config} "
              f"({model_difference(run_cfg, documented) or 'no model setting named'}): edit the config first",
              file=sys.stderr)
        return 2
    values = documented.to_dict()
    values["train"] = run_cfg.to_dict()["train"]
    cfg = config_from_dict(values, source=f"{args.config} + the train section of {args.checkpoint}")
    save_checkpoint(args.out, net, cfg, **{k: payload[k] for k in _KEPT if k in payload})
    print(f"wrote {args.out} (weights of {args.checkpoint}, step {payload.get('step', '?')}; "
          f"inference settings of {args.config}; config {cfg.hash()})")
    from vknet_cli import main as vknet

    return vknet(["export", "--checkpoint", str(args.out), "--out", str(args.out.with_suffix(".onnx"))])


if __name__ == "__main__":
    sys.exit(main())
