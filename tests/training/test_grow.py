"""Growing a trained network to more update stages, a wider backbone or more proposals (training/grow.py),
directly and through ``--init``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.grow import PROPOSAL_NOISE, copy_sources, grow_into
from training.trainer import RunOptions, train
from vknet_model.backbone import group_count
from vknet_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vknet_model.config import VKNetConfig, config_from_dict, resolve_config
from vknet_model.network import build_model


def _small(stages: int, channels: int = 32, width: int = 8, norm: str = "gn", proposals: int = 4) -> VKNetConfig:
    values = resolve_config("tiny").to_dict()
    values["model"].update(backbone_width=width, backbone_norm=norm, channels=channels, num_proposals=proposals,
                           num_stages=stages, num_heads=2, ffn_dim=32, embed_dim=8, norm_groups=4,
                           input_height=64, input_width=128,
                           kernel_fusion=True)  # the last stage carries fusion: the mapping must keep it last
    return config_from_dict(values)


def _one_iteration(cfg: VKNetConfig) -> dict[str, Any]:
    """``cfg`` as plain values with a train section that runs one tiny iteration."""
    values = cfg.to_dict()
    values["train"].update(crop=[64, 128], input_scale=0.5, scale_range=[0.9, 1.1], iters=1, warmup_iters=1,
                           lr_steps=[], batch_size=1, val_every=0, workers=0)
    return values


def _train_from(values: dict[str, Any], init: Path, out: Path) -> VKNetConfig:
    """Train ``values`` one iteration from ``init``; the config of the checkpoint it writes."""
    train(config_from_dict(values), RunOptions(data=None, out=out, synthetic=True, iters=1, val_split=None,
                                               progress=False, init=init))
    return load_checkpoint(out / "model.pt")[0]


def test_the_old_stages_land_where_the_mapping_says() -> None:
    torch.manual_seed(0)
    old, new = build_model(_small(2)), build_model(_small(4))
    report = grow_into(new, old)
    assert (report.old_stages, report.new_stages, report.copied) == (2, 4, (1, 2))
    assert "grew 2 -> 4" in report.summary()
    old_sd, new_sd = old.state_dict(), new.state_dict()
    for key, value in old_sd.items():
        if not key.startswith("stages."):
            assert torch.equal(new_sd[key], value), key
    for rest in (k[len("stages.0."):] for k in old_sd if k.startswith("stages.0.")):
        assert torch.equal(new_sd[f"stages.0.{rest}"], old_sd[f"stages.0.{rest}"])
    last = {k[len("stages.1."):]: v for k, v in old_sd.items() if k.startswith("stages.1.")}
    assert any(k.startswith("fusion.") for k in last)  # the old last stage has kernel fusion ...
    for rest, value in last.items():
        assert torch.equal(new_sd[f"stages.3.{rest}"], value)  # ... and stays last with it
        for middle in (1, 2):
            key = f"stages.{middle}.{rest}"
            if rest.startswith(("fusion.", "fusion_updator.")):
                assert key not in new_sd  # middle stages have no fusion blocks
            else:
                assert torch.equal(new_sd[key], value)


def test_growing_refuses_fewer_stages_or_another_width() -> None:
    with pytest.raises(ValueError, match="more update stages"):
        grow_into(build_model(_small(2)), build_model(_small(2)))
    with pytest.raises(ValueError, match="differ beyond their number of stages"):
        grow_into(build_model(_small(3, channels=16)), build_model(_small(2)))


@pytest.mark.parametrize("channels", [8, 16, 128])
def test_each_narrow_channel_is_copied_twice_and_groups_keep_their_members(channels: int) -> None:
    sources = copy_sources(channels)
    assert sorted(sources.tolist()) == sorted(2 * list(range(channels)))
    narrow_groups, wide_groups = group_count(channels), group_count(2 * channels)
    narrow_group = sources // (channels // narrow_groups)
    for g, members in enumerate(narrow_group.view(wide_groups, -1)):
        assert set(members.tolist()) == {g % narrow_groups}  # a wide group copies one narrow group


@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_a_backbone_twice_as_wide_computes_the_same_features(norm: str) -> None:
    torch.manual_seed(0)
    old, new = build_model(_small(2, norm=norm)), build_model(_small(3, width=16, norm=norm))
    for module in old.modules():  # non-trivial norm parameters and statistics, as after training
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.BatchNorm2d)):
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    report = grow_into(new, old, noise=0.0)
    assert (report.old_width, report.new_width, report.new_stages) == (8, 16, 3)
    assert "widened the backbone 8 -> 16" in report.summary() and "grew 2 -> 3" in report.summary()
    old.eval(), new.eval()
    image = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        narrow, wide = old.fpn(old.backbone(image)), new.fpn(new.backbone(image))
        for a, b in zip(narrow, wide, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        # With the default noise the copies differ (else they would train as one) but the outputs stay close.
        grow_into(new, old)
        noisy = new.fpn(new.backbone(image))
        convs = [m for m in new.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
        first = convs[0].weight
        assert not torch.equal(first[:8], first[8:])
        for a, b in zip(narrow, noisy, strict=True):
            assert 0 < float((a - b).abs().max()) < 0.1 * float(a.abs().max())


def test_widening_refuses_other_factors() -> None:
    with pytest.raises(ValueError, match="twice its width"):
        grow_into(build_model(_small(2, width=24)), build_model(_small(2)))


def test_init_from_a_shallower_checkpoint_grows_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from vknet_cli import main

    torch.manual_seed(0)
    shallow = tmp_path / "shallow.pt"
    save_checkpoint(shallow, build_model(_small(2)), _small(2), step=0)
    deeper = tmp_path / "deeper.yaml"
    values = _one_iteration(_small(3))
    import yaml

    deeper.write_text(yaml.safe_dump(values))
    caplog.set_level("INFO")
    assert _train_from(values, shallow, tmp_path / "run").model.num_stages == 3
    assert "grew 2 -> 3 update stages" in caplog.text
    # The other way round (more stages into fewer) stays one clear refusal.
    deep = tmp_path / "deep.pt"
    save_checkpoint(deep, build_model(_small(3)), _small(3), step=0)
    values["model"]["num_stages"] = 2
    deeper.write_text(yaml.safe_dump(values))
    code = main(["train", "--config", str(deeper), "--synthetic", "--out", str(tmp_path / "back"),
                 "--init", str(deep), "--iters", "1", "--no-progress"])
    assert code == 2


@pytest.mark.parametrize(("grown", "log", "refused", "refusal"), [
    # Three times as wide has no function-keeping mapping: refused before any training.
    ({"backbone_width": 16}, "widened the backbone 8 -> 16 channels", {"backbone_width": 24},
     "half the backbone_width"),
    ({"num_proposals": 8}, "4 -> 8 thing proposals", {"num_proposals": 2}, "fewer num_proposals"),
])
def test_init_from_a_smaller_checkpoint_grows_it(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 grown: dict[str, int], log: str, refused: dict[str, int],
                                                 refusal: str) -> None:
    torch.manual_seed(0)
    small = tmp_path / "small.pt"
    save_checkpoint(small, build_model(_small(2)), _small(2), step=0)
    values = _one_iteration(_small(2))
    values["model"].update(grown)
    caplog.set_level("INFO")
    trained = _train_from(values, small, tmp_path / "run").model
    assert all(getattr(trained, key) == value for key, value in grown.items())
    assert log in caplog.text
    values["model"].update(refused)
    with pytest.raises(CheckpointError, match=refusal):
        _train_from(values, small, tmp_path / "refused")


def test_new_proposals_are_noisy_twins_of_the_old_ones() -> None:
    torch.manual_seed(0)
    old, new = build_model(_small(2)), build_model(_small(2, proposals=7))
    report = grow_into(new, old)
    assert (report.old_proposals, report.new_proposals) == (4, 7)
    assert "4 -> 7 thing proposals" in report.summary()
    before, after = old.initial.proposals.weight.detach(), new.initial.proposals.weight.detach()
    assert torch.equal(after[:4], before)  # the trained proposals are kept as they were
    twins = after[4:] - before[:3]  # proposal 4 + j twins proposal j
    assert float(twins.abs().max()) > 0  # twins differ, else they would train as one ...
    assert float(twins.std()) == pytest.approx(PROPOSAL_NOISE * float(before.std()), rel=0.3)  # ... by the noise
    old_sd, new_sd = old.state_dict(), new.state_dict()
    assert all(torch.equal(new_sd[k], v) for k, v in old_sd.items() if k != "initial.proposals.weight")
    with pytest.raises(ValueError, match="more thing proposals than its 7"):
        grow_into(build_model(_small(2, proposals=5)), new)
