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
    assert main(["eval", "--gt", str(gt_root), "--pred", str(gt_root), "--config", "tiny", "--json", str(out)]) == 0
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
    assert main(["eval", "--gt", str(gt_root), "--pred", str(pred), "--config", "tiny", "--json", str(out),
                 "--no-vpq"]) == 0
    scores = json.loads(out.read_text())
    assert scores["SQ"] == 1.0
    assert scores["per_sequence"]["0001"]["AQ"] == 1.0
    assert scores["per_sequence"]["0000"]["AQ"] < 0.9


def test_missing_prediction_is_reported(gt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(gt_root / "panoptic_maps", pred / "panoptic_maps")
    (pred / "panoptic_maps/val/0001/000003.png").unlink()
    assert main(["eval", "--gt", str(gt_root), "--pred", str(pred), "--config", "tiny"]) == 2
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
    assert main(["eval", "--gt", str(gt_root), "--pred", str(out), "--model", str(checkpoint), "--no-vpq"]) == 0


def test_predict_without_model_needs_the_bundled_one_or_says_so(gt_root: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_model.bundled import BUNDLED_MODEL

    code = main(["predict", "--data", str(gt_root), "--out", str(tmp_path / "p")])
    if BUNDLED_MODEL.is_file():
        assert code == 0
        assert "backend onnxruntime" in capsys.readouterr().out  # on the CPU, the export the node runs
    else:
        assert code == 2 and "bundled model" in capsys.readouterr().err


def test_the_label_space_comes_from_the_config_never_a_default(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Cityscapes-VPS tracks 8 thing classes: a truck and a bus whose ids switch mid-sequence lower AQ only when
    they are scored as things; under KITTI-STEP's (person, car) they would be stuff and AQ would not see them."""
    gt_dir, pred_dir = tmp_path / "gt/panoptic_maps/val/0000", tmp_path / "pred/panoptic_maps/val/0000"
    for d in (gt_dir, pred_dir):
        d.mkdir(parents=True)
    for t in range(4):
        gt = np.zeros((8, 12), np.int64)                        # road
        gt[:4, :4] = 14 * 1000 + 1                               # truck 1
        gt[4:, 6:10] = 15 * 1000 + 2                             # bus 2
        gt[:3, 8:] = 11 * 1000 + 3                               # person 3
        pred = gt.copy()
        if t >= 2:                                               # the truck and the bus change ids
            pred[gt == 14001] = 14009
            pred[gt == 15002] = 15008
        cv2.imwrite(str(gt_dir / f"{t:06d}.png"), encode_panoptic_png(gt)[:, :, ::-1])
        cv2.imwrite(str(pred_dir / f"{t:06d}.png"), encode_panoptic_png(pred)[:, :, ::-1])
    common = ["eval", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--no-vpq", "--json"]
    assert main([*common, str(tmp_path / "vps.json"), "--config", "cityscapes_vps"]) == 0
    assert "things [11, 12, 13, 14, 15, 16, 17, 18]" in capsys.readouterr().out
    assert main([*common, str(tmp_path / "kitti.json"), "--config", "tiny"]) == 0
    vps, kitti = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("vps", "kitti"))
    assert kitti["AQ"] == 1.0                          # only the person is a track there: a perfect one
    assert vps["AQ"] < 0.8                             # the truck and bus id switches count
    assert vps["SQ"] == kitti["SQ"] == 1.0
    with pytest.raises(SystemExit):                    # no label space given: refused, not defaulted
        main(common[:-1])


def test_predict_keeps_only_whole_sequences_when_an_image_is_corrupt(gt_root: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(gt_root, data)
    (data / "images/val/0001/000003.png").write_bytes(b"not a png")
    out = tmp_path / "pred"
    assert main(["predict", "--data", str(data), "--out", str(out)]) == 2  # the bundled model
    err = capsys.readouterr().err
    assert "cannot read image" in err and "1 of 2 sequences were written whole (0000)" in err
    assert sorted(p.name for p in (out / "panoptic_maps/val").iterdir()) == ["0000"]  # 0001 had 3 of 5 PNGs left
    assert len(list((out / "panoptic_maps/val/0000").iterdir())) == 5
