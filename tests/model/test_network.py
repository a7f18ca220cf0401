"""The per-frame network: static shapes that match its contract, and the temporal inputs' semantics."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vknet_model.backbone import ResNet
from vknet_model.config import resolve_config
from vknet_model.contract import contract_for
from vknet_model.neck import SemanticFPN
from vknet_model.network import build_frame_net, build_model, threshold_tensor


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    return cfg, build_frame_net(cfg).eval()


def _inputs(cfg, seed: int, use_prev: float = 0.0):  # type: ignore[no-untyped-def]
    spec = contract_for(cfg).inputs
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, spec[0].shape, dtype=torch.uint8, generator=g)
    return image, torch.randn(spec[1].shape, generator=g), torch.tensor([use_prev]), threshold_tensor(cfg.postprocess)


def test_outputs_match_the_contract(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg, net = tiny
    with torch.inference_mode():
        out = net(*_inputs(cfg, 0))
    for spec, tensor in zip(contract_for(cfg).outputs, out, strict=True):
        assert tuple(tensor.shape) == spec.shape, spec.name
        assert str(tensor.dtype).removeprefix("torch.") == spec.dtype, spec.name
    assert out._fields == tuple(s.name for s in contract_for(cfg).outputs)


def test_previous_kernels_matter_only_when_use_prev_is_set(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg, net = tiny
    image, prev_a, _, thr = _inputs(cfg, 1)
    prev_b = torch.randn_like(prev_a)
    with torch.inference_mode():
        a0, b0 = net(image, prev_a, torch.zeros(1), thr), net(image, prev_b, torch.zeros(1), thr)
        a1, b1 = net(image, prev_a, torch.ones(1), thr), net(image, prev_b, torch.ones(1), thr)
    assert torch.equal(a0.embeddings, b0.embeddings)
    assert not torch.allclose(a1.embeddings, b1.embeddings)
    # Kernel linking feeds only the embeddings: segmentation is the same whatever the previous frame was.
    assert torch.equal(a1.slot_map, b1.slot_map) and torch.equal(a1.kernels, b1.kernels)


def test_kernel_fusion_makes_segmentation_temporal() -> None:
    base = resolve_config("tiny")
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, kernel_fusion=True))
    torch.manual_seed(0)
    net = build_frame_net(cfg).eval()
    image, prev_a, _, thr = _inputs(cfg, 2)
    with torch.inference_mode():
        a = net(image, prev_a, torch.ones(1), thr)
        b = net(image, torch.randn_like(prev_a), torch.ones(1), thr)
        c = net(image, torch.randn_like(prev_a), torch.zeros(1), thr)
        d = net(image, prev_a, torch.zeros(1), thr)
    assert not torch.allclose(a.kernels, b.kernels)
    assert torch.equal(c.kernels, d.kernels)


def test_batch_forward_matches_single_images() -> None:
    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    images = torch.rand(2, 3, 64, 128) * 255
    prev = torch.randn(2, 37, 64)
    with torch.inference_mode():
        both = net(images, prev, torch.tensor([1.0, 0.0]))
        first = net(images[:1], prev[:1], torch.tensor([1.0]))
    torch.testing.assert_close(both.cls_logits[-1][:1], first.cls_logits[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both.embeddings[:1], first.embeddings, atol=1e-4, rtol=1e-4)
    assert len(both.mask_logits) == cfg.model.num_stages + 1 and both.sem_logits.shape == (2, 19, 8, 16)


@pytest.mark.parametrize("mask_stride", [4, 8])
def test_kernel_count_and_mask_stride_are_read_off_the_built_modules(mask_stride: int) -> None:
    base = resolve_config("tiny")
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, mask_stride=mask_stride))
    net = build_model(cfg).eval()
    assert net.num_kernels == cfg.num_kernels == 37  # the tiny config: 20 proposals + 17 stuff classes
    assert net.mask_stride == mask_stride
    with torch.inference_mode():
        out = net(torch.rand(1, 3, 64, 128) * 255, torch.zeros(1, net.num_kernels, cfg.model.channels),
                  torch.zeros(1))
    assert out.mask_logits[-1].shape == (1, 37, 64 // mask_stride, 128 // mask_stride)
    assert out.kernels.shape == (1, 37, cfg.model.channels)


def test_semantic_fpn_takes_only_a_stride_of_the_pyramid() -> None:
    with pytest.raises(ValueError, match=r"P2's or P3's stride \(4, 8\), got 16"):
        SemanticFPN(channels=8, groups=4, in_strides=ResNet.strides, out_stride=16)
