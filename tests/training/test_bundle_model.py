"""tools/bundle_model.py: a run's weights with the documented inference settings, exported; a misfit refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import load_script
from vknet_model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from vknet_model.config import VKNetConfig, config_from_dict, resolve_config
from vknet_model.contract import model_config
from vknet_model.network import build_model


def _small(stages: int, thresholds: float) -> VKNetConfig:
    values = resolve_config("tiny").to_dict()
    values["model"].update(backbone_width=8, channels=16, num_proposals=4, num_stages=stages, num_heads=2,
                           ffn_dim=32, embed_dim=8, norm_groups=4, input_height=64, input_width=128)
    values["postprocess"]["instance_score_thr"] = thresholds
    values["tracker"]["match_score_thr"] = thresholds
    values["train"]["iters"] = 1234
    return config_from_dict(values)


def test_the_bundle_takes_the_weights_from_the_run_and_the_settings_from_the_config(tmp_path: Path) -> None:
    tool = load_script("tools/bundle_model.py")
    torch.manual_seed(0)
    run = tmp_path / "last.pt"
    net = build_model(_small(2, 0.5))
    save_checkpoint(run, net, _small(2, 0.5), step=77, scenes_after=900, optimizer={"state": "large"})
    documented = _small(2, 0.3).to_dict()
    documented["train"]["iters"] = 5
    config = tmp_path / "bundled.yaml"
    config.write_text(yaml.safe_dump(documented))
    out = tmp_path / "bundle" / "m.pt"
    assert tool.main([str(run), "--config", str(config), "--out", str(out)]) == 0
    cfg, bundled, payload = load_checkpoint(out)
    assert cfg.postprocess.instance_score_thr == 0.3 and cfg.tracker.match_score_thr == 0.3   # the config's
    assert cfg.train.iters == 1234                                                            # the run's record
    assert (payload["step"], payload["scenes_after"]) == (77, 900) and "optimizer" not in read_checkpoint(out)
    for key, value in net.state_dict().items():
        assert torch.equal(bundled.state_dict()[key], value), key
    assert model_config(out.with_suffix(".onnx")).tracker.match_score_thr == 0.3  # exported with its contract


def test_a_network_that_does_not_fit_the_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_script("tools/bundle_model.py")
    run = tmp_path / "model.pt"
    save_checkpoint(run, build_model(_small(3, 0.5)), _small(3, 0.5), step=1)
    config = tmp_path / "bundled.yaml"
    config.write_text(yaml.safe_dump(_small(2, 0.3).to_dict()))
    out = tmp_path / "m.pt"
    assert tool.main([str(run), "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds another network" in err and "num_stages" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not out.with_suffix(".onnx").exists()
