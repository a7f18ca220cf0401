"""tools/gpu_train.py, the lent GPU's training plan, run on the CPU with a small network for a few seconds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import load_script
from tests.training.conftest import SMALL_MODEL
from vknet_model.checkpoint import load_checkpoint, read_checkpoint
from vknet_model.config import load_config


def _tool() -> object:
    return load_script("tools/gpu_train.py")


def test_the_plan_trains_by_the_clock_decays_and_returns_weights_only(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_MODEL)
    out, run = tmp_path / "out", tmp_path / "run"
    tool = _tool()
    assert tool.main(["--minutes", "0.1", "--config", str(config), "--init", "none", "--batch-size", "1",  # type: ignore[attr-defined]
                      "--workers", "0", "--device", "cpu", "--run", str(run), "--out", str(out),
                      "--val-sequences", "0"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["phase1_iters"] >= 1 and plan["final_step"] == plan["phase1_iters"] + plan["decay_iters"]
    weights = read_checkpoint(out / "tiny_synth.pt")
    assert "optimizer" not in weights and weights["step"] == plan["final_step"]
    assert list(load_checkpoint(out / "tiny_synth.pt")[0].train.lr_steps) == [plan["phase1_iters"]]
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    lrs = {int(r["step"]): float(r["lr"]) for r in rows}
    cfg = load_config(config)
    final = plan["final_step"]
    warm = min(1.0, final / cfg.train.warmup_iters)
    assert lrs[final] == pytest.approx(0.1 * warm * cfg.train.lr)  # the decay happened
    # A second plan into the same run folder is refused rather than silently resumed.
    with pytest.raises(SystemExit, match="exists"):
        tool.main(["--minutes", "0.1", "--config", str(config), "--init", "none", "--device", "cpu",  # type: ignore[attr-defined]
                   "--run", str(run), "--out", str(out)])
