"""`vknet predict` and `vknet eval` on small synthetic data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vknet_cli import main
from vknet_data.datasets import read_kitti_step_panoptic
from vknet_data.panoptic_png import encode_panoptic_png
from vknet_data.synth import SynthConfig, write_sequences
from vknet_model.checkpoint import save_checkpoint
from vknet_model.config import resolve_config
from vknet_model.network import build_model


@pytest.fixture(scope="module")
def gt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gt")
    write_sequences(root, sequences=2, seed=1, split="val", cfg=SynthConfig(height=96, width=320, frames=5),
                    progress=False)
    return root


def test_ground_truth_scores_perfectly(gt_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    assert main(["eval", "--gt", str(gt_root), "--pred", str(gt_root), "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores["STQ"] == scores["AQ"] == scores["SQ"] == 1.0
    assert scores["VPQ"] == 1.0 and set(scores["VPQ_per_k"]) == {"0", "5", "10", "15"}
    assert set(scores["per_sequence"]) == {"0000", "0001"}


def test_an_id_switch_lowers_aq_only(gt_root: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(gt_root / "panoptic_maps", pred / "panoptic_maps")
    frames = sorted((pred / "panoptic_maps/val/0000").glob("*.png"))
    for path in frames[2:]:  # from frame 2 on, every thing instance gets a new id
        panoptic = read_kitti_step_panoptic(path)
        things = (panoptic % 1000 > 0) & np.isin(panoptic // 1000, (11, 13))
        panoptic[things] += 500
        cv2.imwrite(str(path), encode_panoptic_png(panoptic)[:, :, ::-1])
    out = tmp_path / "scores.json"
    assert main(["eval", "--gt", str(gt_root), "--pred", str(pred), "--json", str(out), "--no-vpq"]) == 0
    scores = json.loads(out.read_text())
    assert scores["SQ"] == 1.0
    assert scores["per_sequence"]["0001"]["AQ"] == 1.0
    assert scores["per_sequence"]["0000"]["AQ"] < 0.9


def test_missing_prediction_is_reported(gt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(gt_root / "panoptic_maps", pred / "panoptic_maps")
    (pred / "panoptic_maps/val/0001/000003.png").unlink()
    assert main(["eval", "--gt", str(gt_root), "--pred", str(pred)]) == 2
    assert "prediction missing" in capsys.readouterr().err


def test_predict_writes_every_frame_in_the_layout(gt_root: Path, tmp_path: Path) -> None:
    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, build_model(cfg), cfg)
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(checkpoint), "--data", str(gt_root), "--out", str(out)]) == 0
    for seq in ("0000", "0001"):
        written = sorted(p.name for p in (out / "panoptic_maps/val" / seq).glob("*.png"))
        assert written == [f"{t:06d}.png" for t in range(5)]
        assert read_kitti_step_panoptic(out / "panoptic_maps/val" / seq / "000000.png").shape == (96, 320)
    assert main(["eval", "--gt", str(gt_root), "--pred", str(out), "--no-vpq"]) == 0


def test_predict_without_model_needs_the_bundled_one_or_says_so(gt_root: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_model.bundled import BUNDLED_MODEL

    code = main(["predict", "--data", str(gt_root), "--out", str(tmp_path / "p")])
    if BUNDLED_MODEL.is_file():
        assert code == 0
    else:
        assert code == 2 and "bundled model" in capsys.readouterr().err
