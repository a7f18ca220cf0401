"""`vknet export` end to end: checkpoint in, ONNX + contract out, ONNX Runtime check printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vknet_cli import main
from vknet_model.checkpoint import save_checkpoint
from vknet_model.config import resolve_config
from vknet_model.contract import ModelContract
from vknet_model.network import build_model


@pytest.mark.slow
def test_export_command_writes_model_and_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, build_model(cfg), cfg)
    out = tmp_path / "deploy" / "tiny.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--height", "128", "--width",
                 "256"]) == 0
    contract = ModelContract.load(out.with_suffix(".json"))
    assert contract.input_size == (128, 256)
    assert contract.inputs[0].shape == (1, 3, 128, 256)
    printed = capsys.readouterr().out
    worst = float(re.search(r"largest float difference (\S+)", printed).group(1))  # type: ignore[union-attr]
    assert worst < 1e-4


def test_export_command_reports_a_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not a readable vknet checkpoint" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.txt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
