"""Averaging fine-tunes into one checkpoint (training/average.py) and `vknet average`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.average import average_checkpoints
from vknet_cli import main as vknet
from vknet_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vknet_model.config import VKNetConfig, config_from_dict, resolve_config
from vknet_model.network import build_model


def _small(proposals: int = 4, instance_thr: float = 0.3, norm: str = "gn") -> VKNetConfig:
    values = resolve_config("tiny").to_dict()
    values["model"].update(backbone_norm=norm, backbone_width=8, channels=16, num_proposals=proposals, num_stages=2,
                           num_heads=2, ffn_dim=32, embed_dim=8, norm_groups=4, input_height=64, input_width=128)
    values["postprocess"]["instance_score_thr"] = instance_thr
    return config_from_dict(values)


def _save(path: Path, seed: int, cfg: VKNetConfig, **extra: object) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = build_model(cfg)
    save_checkpoint(path, net, cfg, **extra)
    return net.state_dict()


def test_the_mean_is_the_mean_of_every_weight_and_the_first_config_is_kept(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.pt", 0, _small(instance_thr=0.3), step=100, scenes_after=5000, train_seconds=10.0)
    b = _save(tmp_path / "b.pt", 1, _small(instance_thr=0.6), step=300, scenes_after=9000, train_seconds=20.0)
    c = _save(tmp_path / "c.pt", 2, _small(instance_thr=0.6), step=200, scenes_after=7000, train_seconds=30.0)
    cfg, net, extra = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"])
    assert cfg.postprocess.instance_score_thr == 0.3  # the first file's thresholds
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, (a[key] + b[key] + c[key]) / 3, rtol=0, atol=1e-6)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the ingredients really differ
    assert extra["step"] == 300 and extra["scenes_after"] == 9000 and extra["train_seconds"] == 60.0
    assert extra["averaged_from"] == [str(tmp_path / n) for n in ("a.pt", "b.pt", "c.pt")]


def test_batchnorm_statistics_are_averaged_and_its_batch_counter_is_the_first_files(tmp_path: Path) -> None:
    cfg = _small(norm="bn")
    nets = []
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        net = build_model(cfg)
        for key, value in net.state_dict().items():  # distinct running statistics and batch counts per file
            if key.endswith("running_mean"):
                value.normal_()
            elif key.endswith("num_batches_tracked"):
                value.fill_(100 * (seed + 1))
        save_checkpoint(tmp_path / name, net, cfg)
        nets.append(net.state_dict())
    mean = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])[1].state_dict()
    stats = [k for k in mean if k.endswith("running_mean")]
    counters = [k for k in mean if k.endswith("num_batches_tracked")]
    assert stats and counters
    for key in stats:
        torch.testing.assert_close(mean[key], (nets[0][key] + nets[1][key]) / 2)
    assert all(int(mean[key]) == 100 for key in counters)


def test_a_checkpoint_without_a_scene_record_is_bounded_from_its_step(tmp_path: Path) -> None:
    _save(tmp_path / "a.pt", 0, _small(), step=100, scenes_after=500)
    _save(tmp_path / "b.pt", 1, _small(), step=40_000)  # written before scenes_after was stored
    extra = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])[2]
    assert extra["scenes_after"] > 40_000


def test_another_network_or_a_single_file_is_refused(tmp_path: Path) -> None:
    _save(tmp_path / "a.pt", 0, _small(proposals=4))
    _save(tmp_path / "b.pt", 1, _small(proposals=8))
    with pytest.raises(CheckpointError, match="num_proposals"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([tmp_path / "a.pt"])
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "broken.pt"])


def test_the_command_writes_a_loadable_checkpoint_and_refuses_to_overwrite_an_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _save(tmp_path / "a.pt", 0, _small(), step=10, train_seconds=3600.0)
    b = _save(tmp_path / "b.pt", 1, _small(), step=20, train_seconds=3600.0)
    out = tmp_path / "soup" / "mean.pt"
    assert vknet(["average", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(out)]) == 0
    assert "mean of 2 checkpoints" in capsys.readouterr().out
    _, net, payload = load_checkpoint(out)
    key = next(iter(a))
    torch.testing.assert_close(net.state_dict()[key], (a[key] + b[key]) / 2)
    assert payload["step"] == 20 and payload["train_seconds"] == 7200.0
    before = (tmp_path / "a.pt").read_bytes()
    assert vknet(["average", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "a.pt")]) == 2
    assert "one of the inputs" in capsys.readouterr().err
    assert (tmp_path / "a.pt").read_bytes() == before
    assert vknet(["average", str(tmp_path / "a.pt"), str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
