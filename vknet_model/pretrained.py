"""ImageNet weights for the backbone, read from the file users already have: a torchvision ResNet state dict.

``torch.save(torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict(), "resnet50.pth")`` (or the
``.pth`` that torchvision's download cache holds) is the usual form. Our backbone keeps torchvision's layer
names under another tree, so the mapping is one rename per tensor; anything that does not fit (another
depth, a width other than 64, a GroupNorm backbone, a detection checkpoint) is refused with what differs,
never loaded in part.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from vknet_model.backbone import ResNet
from vknet_model.errors import VKNetError

_LOG = logging.getLogger(__name__)
# torchvision ResNet layers that the feature extractor has no use for.
_CLASSIFIER = ("fc.weight", "fc.bias")


class PretrainedError(VKNetError, ValueError):
    """A weights file that cannot be loaded into the backbone; the message says what differs."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_torchvision_resnet` loaded."""

    path: Path
    tensors: int        # tensors copied into the backbone
    parameters: int     # scalar weights among them (running statistics excluded)
    skipped: tuple[str, ...]  # source keys that have no place in a feature extractor (the classifier)

    def summary(self) -> str:
        return (f"loaded {self.tensors} tensors ({self.parameters / 1e6:.2f} M parameters) from {self.path} "
                f"into the backbone; skipped {', '.join(self.skipped) or 'nothing'}")


def torchvision_to_backbone_key(key: str) -> str:
    """torchvision ResNet key -> our ResNet's (``layer2.0.downsample.1.weight`` -> ``stages.1.0.shortcut.1.weight``)."""
    if key.startswith("conv1."):
        return "stem.0." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "stem.1." + key[len("bn1."):]
    match = re.fullmatch(r"layer([1-4])\.(\d+)\.(.+)", key)
    if match is None:
        raise PretrainedError(f"key {key!r} is not a torchvision ResNet layer")
    stage, block, rest = int(match[1]) - 1, match[2], match[3]
    rest = re.sub(r"^downsample\.", "shortcut.", rest)
    return f"stages.{stage}.{block}.{rest}"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedError(f"backbone weights not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PretrainedError(f"{path} is not a readable torch file (truncated, or a full pickled model rather "
                              f"than a state dict?): {exc.__class__.__name__}") from exc
    if isinstance(payload, dict) and not any(isinstance(v, torch.Tensor) for v in payload.values()):
        for wrapper in ("state_dict", "model"):  # checkpoints that wrap the state dict
            if isinstance(payload.get(wrapper), dict):
                payload = payload[wrapper]
                break
    if not isinstance(payload, dict) or not payload or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise PretrainedError(f"{path}: expected a state dict (names -> tensors) of a torchvision ResNet")
    return payload


def load_torchvision_resnet(backbone: ResNet, path: str | Path) -> LoadReport:
    """Copy a torchvision ResNet-18/34/50 state dict into ``backbone`` (all of it, or nothing).

    Raises:
        PretrainedError: unreadable file, a GroupNorm backbone, or tensors missing, extra or of another shape.
    """
    path = Path(path)
    if backbone.norm == "gn":
        raise PretrainedError("ImageNet ResNet weights come with BatchNorm layers; this backbone uses GroupNorm "
                              "(model.backbone_norm: gn): set model.backbone_norm to frozen_bn")
    source = _read_state_dict(path)
    target = backbone.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    skipped = []
    for key, tensor in source.items():
        key = key.removeprefix("module.")  # saved from a DataParallel wrapper
        if key in _CLASSIFIER:
            skipped.append(key)
            continue
        try:
            renamed[torchvision_to_backbone_key(key)] = tensor
        except PretrainedError as exc:
            raise PretrainedError(f"{path}: {exc}; is this a torchvision ResNet state dict?") from None
    missing = sorted(set(target) - set(renamed))
    extra = sorted(set(renamed) - set(target))
    shapes = [f"{k} {tuple(renamed[k].shape)} vs {tuple(target[k].shape)}"
              for k in sorted(set(target) & set(renamed)) if renamed[k].shape != target[k].shape]
    if missing or extra or shapes:
        what = f"ResNet-{backbone.depth} of stem width {backbone.width}"
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            details.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if shapes:
            details.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
        raise PretrainedError(f"{path} does not fit this backbone ({what}): {'; '.join(details)}. ImageNet "
                              f"weights need model.backbone_width: 64 and the file's depth "
                              f"(model.backbone_depth)")
    backbone.load_state_dict(renamed, strict=True)
    parameters = sum(t.numel() for k, t in renamed.items() if not k.endswith(("running_mean", "running_var",
                                                                             "num_batches_tracked")))
    report = LoadReport(path=path, tensors=len(renamed), parameters=parameters, skipped=tuple(skipped))
    _LOG.info("%s", report.summary())
    return report
