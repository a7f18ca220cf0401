"""Kernels: initial proposals, iterative kernel update stages, kernel linking/fusion and embeddings.

Every mask and every pooled feature is a MatMul over the flattened mask feature map (kernel size 1),
so the graph has no einsum and no per-sample convolution and exports to ONNX/TensorRT as plain MatMuls.
Shapes use B (batch), N (kernels), K (classes), C (channels), H, W (mask feature size, stride 8 or 4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with explicit MatMuls (exports as MatMul/Softmax, nothing fused)."""

    def __init__(self, *, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """query [B, Nq, C], memory [B, Nm, C] -> [B, Nq, C]."""
        b, nq, c = query.shape
        nm = memory.shape[1]
        d = c // self.heads
        # [B, N, C] -> [B, heads, N, d]
        q = self.q(query).reshape(b, nq, self.heads, d).transpose(1, 2)
        k = self.k(memory).reshape(b, nm, self.heads, d).transpose(1, 2)
        v = self.v(memory).reshape(b, nm, self.heads, d).transpose(1, 2)
        weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) / math.sqrt(d), dim=-1)  # [B, h, Nq, Nm]
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, nq, c)
        return self.out(out)


class AttentionBlock(nn.Module):
    """Post-LN transformer block: attention (self or cross) + residual + LN, FFN + residual + LN."""

    def __init__(self, *, channels: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(channels=channels, heads=heads)
        self.attention_norm = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, channels))
        self.ffn_norm = nn.LayerNorm(channels)

    def forward(self, query: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """query [B, N, C]; ``memory`` [B, M, C] for cross-attention, None for self-attention."""
        x = self.attention_norm(query + self.attention(query, query if memory is None else memory))
        return self.ffn_norm(x + self.ffn(x))


class KernelUpdator(nn.Module):
    """Adaptive kernel update (K-Net): gate how much of the kernel and of its group feature to keep.

    K -> [P_in, P_out], F -> [X_in, X_out]; G = X_in * P_in;
    G_F = sigmoid(LN(Linear(G))), G_K = sigmoid(LN(Linear(G)));
    K' = G_K * LN(P_out) + G_F * LN(X_out); out = ReLU(LN(Linear(K'))).
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(channels, 2 * channels)  # F -> [X_in, X_out]
        self.kernel_proj = nn.Linear(channels, 2 * channels)   # K -> [P_in, P_out]
        self.feature_gate = nn.Linear(channels, channels)
        self.kernel_gate = nn.Linear(channels, channels)
        self.feature_gate_norm = nn.LayerNorm(channels)
        self.kernel_gate_norm = nn.LayerNorm(channels)
        self.feature_out_norm = nn.LayerNorm(channels)
        self.kernel_out_norm = nn.LayerNorm(channels)
        self.out = nn.Linear(channels, channels)
        self.out_norm = nn.LayerNorm(channels)

    def forward(self, features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """features F [B, N, C] (group features), kernels K [B, N, C] -> updated kernels [B, N, C]."""
        x_in, x_out = self.feature_proj(features).chunk(2, dim=-1)
        p_in, p_out = self.kernel_proj(kernels).chunk(2, dim=-1)
        gate = x_in * p_in
        g_f = torch.sigmoid(self.feature_gate_norm(self.feature_gate(gate)))
        g_k = torch.sigmoid(self.kernel_gate_norm(self.kernel_gate(gate)))
        updated = g_k * self.kernel_out_norm(p_out) + g_f * self.feature_out_norm(x_out)
        return F.relu(self.out_norm(self.out(updated)))


def group_features(mask_logits: torch.Tensor, flat_features: torch.Tensor) -> torch.Tensor:
    """Mean feature under each kernel's binarised mask.

    Args:
        mask_logits: [B, N, HW] mask logits; a pixel belongs to a mask where sigmoid > 0.5, i.e. logit > 0.
        flat_features: [B, C, HW].

    Returns:
        [B, N, C]. Dividing by the mask area (allowed by the method) keeps the values in fp16 range.
    """
    hard = (mask_logits > 0.0).to(flat_features.dtype)           # [B, N, HW]
    area = hard.sum(dim=-1, keepdim=True).clamp(min=1.0)          # [B, N, 1]
    return torch.matmul(hard, flat_features.transpose(1, 2)) / area  # [B, N, HW] @ [B, HW, C]


def _mlp_norm_relu(channels: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    for _ in range(layers):
        modules += [nn.Linear(channels, channels, bias=False), nn.LayerNorm(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


class KernelUpdateStage(nn.Module):
    """One iteration: assemble group features, update kernels, let kernels interact, predict classes and masks.

    With ``kernel_fusion`` (Video K-Net's KF, used in the last stage) the previous frame's kernels are first
    updated by the current group features and cross-attended by the current kernels.
    """

    def __init__(self, *, channels: int, heads: int, ffn_dim: int, num_classes: int, kernel_fusion: bool) -> None:
        super().__init__()
        self.feat_transform = nn.Conv2d(channels, channels, 1)
        self.updator = KernelUpdator(channels=channels)
        self.interaction = AttentionBlock(channels=channels, heads=heads, ffn_dim=ffn_dim)
        self.cls_fcs = _mlp_norm_relu(channels, 1)
        self.fc_cls = nn.Linear(channels, num_classes)
        self.mask_fcs = _mlp_norm_relu(channels, 1)
        self.fc_mask = nn.Linear(channels, channels)
        self.fusion_updator = KernelUpdator(channels=channels) if kernel_fusion else None
        self.fusion = AttentionBlock(channels=channels, heads=heads, ffn_dim=ffn_dim) if kernel_fusion else None
        prior = 0.01  # sigmoid classification starts at this probability (focal-loss convention)
        nn.init.constant_(self.fc_cls.bias, -math.log((1 - prior) / prior))

    def forward(self, x: torch.Tensor, kernels: torch.Tensor, mask_logits: torch.Tensor,
                prev_kernels: torch.Tensor, use_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            x: [B, C, H, W] mask features.
            kernels: [B, N, C] kernels from the previous stage.
            mask_logits: [B, N, H, W] masks from the previous stage.
            prev_kernels: [B, N, C] final kernels of the previous frame (used by kernel fusion only).
            use_prev: [B, 1, 1] 1.0 where the previous frame is valid, else 0.0.

        Returns:
            cls_logits [B, N, K], mask_logits [B, N, H, W], kernels [B, N, C].
        """
        b, c, h, w = x.shape
        flat = self.feat_transform(x).reshape(b, c, h * w)                    # [B, C, HW]
        groups = group_features(mask_logits.reshape(b, -1, h * w), flat)     # [B, N, C]
        if self.fusion is not None and self.fusion_updator is not None:
            fused_prev = self.fusion_updator(groups, prev_kernels)
            fused = self.fusion(kernels, fused_prev)
            kernels = use_prev * fused + (1.0 - use_prev) * kernels
        kernels = self.interaction(self.updator(groups, kernels))
        cls_logits = self.fc_cls(self.cls_fcs(kernels))
        dynamic = self.fc_mask(self.mask_fcs(kernels))                          # [B, N, C]
        new_masks = torch.matmul(dynamic, flat).reshape(b, -1, h, w)           # [B, N, HW] -> [B, N, H, W]
        return cls_logits, new_masks, kernels


class InitialKernels(nn.Module):
    """Thing proposals (a 1x1 conv on the localisation map) and stuff kernels (rows of ``conv_seg``).

    Each thing kernel starts as its learned weight plus the mean feature under its own initial mask (K-Net's
    ``proposal_feats_with_obj``): the first update stage then starts from a kernel that already describes
    what it found in this image, not from the same vector in every image. Returns kernels ordered
    [N_p proposals, S stuff] to match the class order (things first, then stuff).
    """

    def __init__(self, *, channels: int, num_proposals: int, num_classes: int, num_thing_classes: int) -> None:
        super().__init__()
        self.num_thing_classes = num_thing_classes
        self.num_kernels = num_proposals + num_classes - num_thing_classes  # N: output rows of forward
        self.proposals = nn.Conv2d(channels, num_proposals, 1, bias=False)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.proposals.weight, std=1.0)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.constant_(self.conv_seg.bias, 0.0)  # type: ignore[arg-type]  # conv_seg has a bias

    def forward(self, loc: torch.Tensor, sem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """loc, sem [B, C, H, W] -> kernels [B, N, C], mask_logits [B, N, H, W], sem_logits [B, K, H, W]."""
        b, c, h, w = loc.shape
        sem_logits = self.conv_seg(sem)
        thing_masks = self.proposals(loc)                                        # [B, N_p, H, W]
        pooled = group_features(thing_masks.reshape(b, -1, h * w), (loc + sem).reshape(b, c, h * w))
        things = self.proposals.weight.flatten(1).unsqueeze(0) + pooled          # [B, N_p, C]
        stuff = self.conv_seg.weight.flatten(1)[self.num_thing_classes:].unsqueeze(0).expand(b, -1, -1)
        masks = torch.cat((thing_masks, sem_logits[:, self.num_thing_classes:]), dim=1)
        return torch.cat((things, stuff), dim=1), masks, sem_logits


class KernelLinking(nn.Module):
    """Video K-Net's KL: current kernels cross-attend to the previous frame's kernels (embeddings only)."""

    def __init__(self, *, channels: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.block = AttentionBlock(channels=channels, heads=heads, ffn_dim=ffn_dim)

    def forward(self, kernels: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor) -> torch.Tensor:
        """kernels [B, Nq, C], prev_kernels [B, N, C], use_prev [B, 1, 1] -> [B, Nq, C]; frame 0 keeps raw kernels."""
        return use_prev * self.block(kernels, prev_kernels) + (1.0 - use_prev) * kernels


class EmbeddingHead(nn.Module):
    """Kernel association embedding: Linear-LN-ReLU, Linear, 2x (Linear + ReLU), Linear. Not L2-normalised."""

    def __init__(self, *, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_mlp_norm_relu(channels, 1), nn.Linear(channels, channels),
            nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, embed_dim),
        )

    def forward(self, kernels: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, N, embed_dim]."""
        return self.layers(kernels)
