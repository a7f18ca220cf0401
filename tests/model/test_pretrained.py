"""ImageNet backbone weights: a torchvision ResNet state dict loads into our backbone and gives torchvision's
features; files that do not fit are refused whole, with what differs."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from vknet_model.backbone import ResNet
from vknet_model.pretrained import PretrainedError, load_torchvision_resnet, torchvision_to_backbone_key


def _torchvision():  # type: ignore[no-untyped-def]
    """torchvision's models without its compiled ops: PyPI's torchvision 0.28 (the release for torch 2.13) is a
    CUDA build whose C extension cannot load beside the CPU torch, and its import then fails registering
    meta kernels for those ops. The ResNet classes are plain Python over torch and need none of them."""
    if "torchvision" not in sys.modules:
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    return pytest.importorskip("torchvision.models", reason="torchvision is not installed (requirements.txt)")


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine terms (a fresh model's are 0/1 and would hide a mix-up)."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    return model.eval()


def _torchvision_features(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    features = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        features.append(x)
    return features


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_backbone_from_a_torchvision_state_dict_gives_torchvision_features(depth: int, tmp_path: Path) -> None:
    models = _torchvision()
    torch.manual_seed(depth)
    reference = _randomised(getattr(models, f"resnet{depth}")(weights=None))
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNet(depth=depth, width=64, norm="frozen_bn")
    report = load_torchvision_resnet(backbone, path)
    assert report.skipped == ("fc.weight", "fc.bias")
    assert report.tensors == len(backbone.state_dict())
    assert report.parameters == sum(p.numel() for p in backbone.parameters())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours = backbone.eval()(x)
        theirs = _torchvision_features(reference, x)
    assert [f.shape for f in ours] == [f.shape for f in theirs]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_wrapped_and_dataparallel_state_dicts_load(tmp_path: Path) -> None:
    models = _torchvision()
    state = models.resnet18(weights=None).state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, path)
    assert load_torchvision_resnet(ResNet(depth=18, norm="bn"), path).tensors == len(state) - 2


def test_mismatched_files_are_refused_whole(tmp_path: Path) -> None:
    models = _torchvision()
    r18 = tmp_path / "resnet18.pth"
    torch.save(models.resnet18(weights=None).state_dict(), r18)
    backbone = ResNet(depth=50, norm="frozen_bn")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(PretrainedError, match=r"does not fit this backbone \(ResNet-50 .*missing.*another shape"):
        load_torchvision_resnet(backbone, r18)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items()), "nothing loaded in part"
    with pytest.raises(PretrainedError, match=r"of another shape.*backbone_width: 64"):
        load_torchvision_resnet(ResNet(depth=18, width=16, norm="bn"), r18)
    with pytest.raises(PretrainedError, match=r"GroupNorm.*frozen_bn"):
        load_torchvision_resnet(ResNet(depth=18, norm="gn"), r18)


def test_unreadable_and_foreign_files_are_refused(tmp_path: Path) -> None:
    backbone = ResNet(depth=18, norm="frozen_bn")
    with pytest.raises(PretrainedError, match="not found"):
        load_torchvision_resnet(backbone, tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(PretrainedError, match="not a readable torch file"):
        load_torchvision_resnet(backbone, corrupt)
    foreign = tmp_path / "foreign.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    with pytest.raises(PretrainedError, match="not a torchvision ResNet layer"):
        load_torchvision_resnet(backbone, foreign)
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(PretrainedError, match="expected a state dict"):
        load_torchvision_resnet(backbone, listed)


def test_key_mapping() -> None:
    assert torchvision_to_backbone_key("conv1.weight") == "stem.0.weight"
    assert torchvision_to_backbone_key("bn1.running_var") == "stem.1.running_var"
    assert torchvision_to_backbone_key("layer3.5.bn2.bias") == "stages.2.5.bn2.bias"
    assert torchvision_to_backbone_key("layer2.0.downsample.1.weight") == "stages.1.0.shortcut.1.weight"
