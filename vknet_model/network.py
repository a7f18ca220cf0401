"""The Video K-Net network and its deployable per-frame form.

``VKNet`` maps normalised-on-the-inside images to every stage's predictions (what training needs).
``FrameNet`` wraps it for deployment: uint8 image + previous kernels in, panoptic slots, kernels,
embeddings and boxes out, all static shapes. Both return the same thing in train and eval mode; the
temporal state (previous kernels) goes in and comes out as tensors and lives outside the network.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vknet_model.backbone import ResNet
from vknet_model.config import PostprocessConfig, VKNetConfig
from vknet_model.kernel_head import EmbeddingHead, InitialKernels, KernelLinking, KernelUpdateStage
from vknet_model.neck import FPN, SemanticFPN
from vknet_model.panoptic import assemble_panoptic

# ImageNet statistics in 0..255 units: normalisation happens inside the network so that every backend
# (torch, ONNX Runtime, TensorRT) takes the same raw image and nobody forgets it.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class KernelOutputs(NamedTuple):
    """Everything training needs, for a batch.

    Attributes:
        cls_logits: per update stage, float [B, N, K].
        mask_logits: initial masks then one per stage (S + 1 entries), float [B, N, H/s, W/s] at the mask
            stride s (``model.mask_stride``).
        sem_logits: float [B, K, H/s, W/s] semantic head.
        kernels: float [B, N, C] final kernels (the next frame's ``prev_kernels``).
        embeddings: float [B, N_p, E] association embeddings of the thing proposals.
    """

    cls_logits: list[torch.Tensor]
    mask_logits: list[torch.Tensor]
    sem_logits: torch.Tensor
    kernels: torch.Tensor
    embeddings: torch.Tensor


class VKNetOutput(NamedTuple):
    """One frame's deployable outputs (the exported graph's outputs, in this order).

    Attributes:
        cls_scores: float32 [N, K] sigmoid class scores.
        slot_map: int32 [H/m, W/m] kept slot per pixel at the merge stride m, -1 where none.
        semantic_map: int32 [H/m, W/m] network class per pixel.
        slot_scores: float32 [N].
        slot_labels: int32 [N] network class.
        slot_keep: bool [N].
        slot_areas: int32 [N] pixels at the merge stride.
        boxes: float32 [N, 4] x1, y1, x2, y2 in network-input pixels.
        kernels: float32 [1, N, C] final kernels, fed back as ``prev_kernels``.
        embeddings: float32 [N_p, E] thing association embeddings.
    """

    cls_scores: torch.Tensor
    slot_map: torch.Tensor
    semantic_map: torch.Tensor
    slot_scores: torch.Tensor
    slot_labels: torch.Tensor
    slot_keep: torch.Tensor
    slot_areas: torch.Tensor
    boxes: torch.Tensor
    kernels: torch.Tensor
    embeddings: torch.Tensor


OUTPUT_NAMES: tuple[str, ...] = VKNetOutput._fields
INPUT_NAMES: tuple[str, ...] = ("image", "prev_kernels", "use_prev", "thresholds")


class VKNet(nn.Module):
    """Backbone -> FPN -> semantic FPN -> initial kernels -> S update stages (+ KL, embeddings).

    Its output shapes are read off the modules it is built from: :attr:`num_kernels` (N) from the initial
    kernels, :attr:`mask_stride` from the semantic FPN, whose input strides are the backbone's.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, *, backbone: ResNet, fpn: FPN, semantic_fpn: SemanticFPN, initial: InitialKernels,
                 stages: nn.ModuleList, linking: KernelLinking, embedding: EmbeddingHead, num_proposals: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.semantic_fpn = semantic_fpn
        self.initial = initial
        self.stages = stages
        self.linking = linking
        self.embedding = embedding
        self.num_proposals = num_proposals
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_kernels(self) -> int:
        """N: thing proposals, then one kernel per stuff class (``prev_kernels`` and ``kernels`` are [B, N, C])."""
        return self.initial.num_kernels

    @property
    def mask_stride(self) -> int:
        """Stride of the mask and semantic logits relative to the input image."""
        return self.semantic_fpn.out_stride

    def forward(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor) -> KernelOutputs:
        """
        Args:
            image: float [B, 3, H, W] RGB in 0..255 (H, W multiples of 32).
            prev_kernels: float [B, N, C] previous frame's final kernels (anything when use_prev is 0).
            use_prev: float [B] 1.0 if ``prev_kernels`` belong to the previous frame of this video, else 0.0.
        """
        x = (image - self.pixel_mean) / self.pixel_std
        loc, sem = self.semantic_fpn(self.fpn(self.backbone(x)))
        kernels, masks, sem_logits = self.initial(loc, sem)
        features = loc + sem
        gate = use_prev.reshape(-1, 1, 1).to(features.dtype)
        cls_list, mask_list = [], [masks]
        for stage in self.stages:
            cls_logits, masks, kernels = stage(features, kernels, masks, prev_kernels, gate)
            cls_list.append(cls_logits)
            mask_list.append(masks)
        things = kernels[:, : self.num_proposals]
        embeddings = self.embedding(self.linking(things, prev_kernels, gate))
        return KernelOutputs(cls_list, mask_list, sem_logits, kernels, embeddings)


def threshold_tensor(postprocess: PostprocessConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``thresholds`` graph input: float32 [3] = (instance_score_thr, overlap_thr, mask_thr)."""
    values = (postprocess.instance_score_thr, postprocess.overlap_thr, postprocess.mask_thr)
    return torch.tensor(values, dtype=torch.float32, device=device)


class FrameNet(nn.Module):
    """The per-frame deployable network: a pure function of static-shape tensors (batch 1).

    The assembly thresholds are an input rather than constants so that a running node can change them
    (ROS parameters) without re-exporting the ONNX file or rebuilding a TensorRT engine.
    """

    def __init__(self, *, net: VKNet, num_thing_classes: int, merge_stride: int,
                 vote_score_power: float = 1.0) -> None:
        super().__init__()
        if net.mask_stride % merge_stride:
            raise ValueError(f"merge_stride {merge_stride} must divide the network's mask stride {net.mask_stride}")
        self.net = net
        self.num_thing_classes = num_thing_classes
        self.merge_stride = merge_stride
        self.vote_score_power = vote_score_power

    def forward(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor,
                thresholds: torch.Tensor) -> VKNetOutput:
        """
        Args:
            image: uint8 (or float 0..255) [1, 3, H, W] RGB at the network input size.
            prev_kernels: float32 [1, N, C].
            use_prev: float32 [1], 1.0 when ``prev_kernels`` come from the previous frame.
            thresholds: float32 [3] (instance_score_thr, overlap_thr, mask_thr), see :func:`threshold_tensor`.
        """
        out = self.net(image.to(torch.float32), prev_kernels, use_prev)
        # The assembly and every output are float32 whatever precision the network ran in (autocast): thresholds
        # and argmax ties must not depend on it. None of the assembly's ops is on autocast's reduced-precision
        # lists, so on float32 inputs it runs in float32. In float32 these casts are no-ops.
        cls_scores = out.cls_logits[-1][0].float().sigmoid()
        slots = assemble_panoptic(
            cls_scores, out.mask_logits[-1][0].float(), out.sem_logits[0].float(),
            num_proposals=self.net.num_proposals, num_thing_classes=self.num_thing_classes,
            instance_score_thr=thresholds[0], overlap_thr=thresholds[1], mask_thr=thresholds[2],
            mask_stride=self.net.mask_stride, upsample=self.net.mask_stride // self.merge_stride,
            score_power=self.vote_score_power,
        )
        return VKNetOutput(cls_scores, slots.slot_map, slots.semantic_map, slots.scores, slots.labels, slots.keep,
                           slots.areas, slots.boxes, out.kernels.float(), out.embeddings[0].float())


def build_model(cfg: VKNetConfig) -> VKNet:
    """Wire the network from the config; every module takes explicit keyword arguments."""
    m = cfg.model
    backbone = ResNet(depth=m.backbone_depth, width=m.backbone_width, norm=m.backbone_norm)
    fpn = FPN(in_channels=backbone.out_channels, strides=backbone.strides, channels=m.channels, groups=m.norm_groups)
    num_classes = cfg.data.num_classes
    return VKNet(
        backbone=backbone,
        fpn=fpn,
        semantic_fpn=SemanticFPN(channels=m.channels, groups=m.norm_groups, in_strides=fpn.strides,
                                 out_stride=m.mask_stride),
        initial=InitialKernels(channels=m.channels, num_proposals=m.num_proposals, num_classes=num_classes,
                               num_thing_classes=cfg.data.num_things),
        stages=nn.ModuleList(
            KernelUpdateStage(channels=m.channels, heads=m.num_heads, ffn_dim=m.ffn_dim, num_classes=num_classes,
                              kernel_fusion=m.kernel_fusion and index == m.num_stages - 1)
            for index in range(m.num_stages)
        ),
        linking=KernelLinking(channels=m.channels, heads=m.num_heads, ffn_dim=m.ffn_dim),
        embedding=EmbeddingHead(channels=m.channels, embed_dim=m.embed_dim),
        num_proposals=m.num_proposals,
    )


def build_frame_net(cfg: VKNetConfig, net: VKNet | None = None) -> FrameNet:
    """The deployable per-frame network around ``net`` (a fresh one when None)."""
    return FrameNet(net=net if net is not None else build_model(cfg), num_thing_classes=cfg.data.num_things,
                    merge_stride=cfg.model.merge_stride, vote_score_power=cfg.model.vote_score_power)
