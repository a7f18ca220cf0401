"""Panoptic assembly as a static-shape tensor function (DESIGN.md 1.1), exported inside the graph.

Thing score = max over thing classes, stuff score = its own class. Every pixel goes to the kernel with the
highest ``score * sigmoid(mask)``; things below ``instance_score_thr`` take part in no vote; a segment is
kept when the pixels it won inside its own mask (sigmoid >= mask_thr) are at least ``overlap_thr`` of that
mask. Pixels no kept segment claims take the semantic head's class. Because the vote is one argmax, the
result does not depend on the order segments are visited in, which is what makes it vectorisable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PanopticSlots(NamedTuple):
    """Per-kernel ("slot") results of the assembly at stride 4.

    Attributes:
        slot_map: int32 [H4, W4], index of the kept slot owning each pixel, -1 where none does.
        semantic_map: int32 [H4, W4], network class per pixel (the owner's label, else the semantic head's).
        scores: float32 [N], slot scores.
        labels: int32 [N], slot network classes.
        keep: bool [N], slot kept.
        areas: int32 [N], pixels owned at stride 4.
        boxes: float32 [N, 4], x1, y1, x2, y2 of the owned pixels in network-input pixels (0 if empty).
    """

    slot_map: torch.Tensor
    semantic_map: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    keep: torch.Tensor
    areas: torch.Tensor
    boxes: torch.Tensor


def slot_scores_and_labels(cls_scores: torch.Tensor, *, num_proposals: int,
                           num_thing_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cls_scores [N, K] (sigmoid) -> scores [N], labels int64 [N] (proposals: best thing class; stuff: own)."""
    thing_scores, thing_labels = cls_scores[:num_proposals, :num_thing_classes].max(dim=1)
    num_stuff = cls_scores.shape[0] - num_proposals
    stuff_labels = torch.arange(num_stuff, device=cls_scores.device) + num_thing_classes
    # A gather rather than torch.diagonal, which exports with a data-dependent output length.
    stuff_scores = cls_scores[num_proposals:].gather(1, stuff_labels[:, None])[:, 0]
    return torch.cat((thing_scores, stuff_scores)), torch.cat((thing_labels, stuff_labels))


def assemble_panoptic(cls_scores: torch.Tensor, mask_logits: torch.Tensor, sem_logits: torch.Tensor, *,
                      num_proposals: int, num_thing_classes: int, instance_score_thr: float | torch.Tensor,
                      overlap_thr: float | torch.Tensor, mask_thr: float | torch.Tensor, mask_stride: int = 8,
                      upsample: int = 2) -> PanopticSlots:
    """Merge kernel predictions of one image into a panoptic slot map.

    Args:
        cls_scores: float [N, K] sigmoid class scores; rows [0, num_proposals) are thing proposals, the
            rest one stuff kernel per stuff class in class order.
        mask_logits: float [N, h, w] mask logits at ``mask_stride`` (8).
        sem_logits: float [K, h, w] semantic head logits at ``mask_stride``.
        instance_score_thr, overlap_thr, mask_thr: floats or 0-d tensors (tensors keep them run-time inputs
            of the exported graph, so they can change without re-exporting).
        upsample: factor from the mask resolution to the merge resolution (2: stride 8 -> 4). Merging at
            stride 4 and upsampling the int slot map later is far cheaper than N full-resolution masks.
    """
    n = cls_scores.shape[0]
    masks = F.interpolate(mask_logits[None], scale_factor=float(upsample), mode="bilinear",
                          align_corners=False)[0].sigmoid()                       # [N, H4, W4]
    semantic = F.interpolate(sem_logits[None], scale_factor=float(upsample), mode="bilinear",
                             align_corners=False)[0].argmax(dim=0)                # [H4, W4]
    scores, labels = slot_scores_and_labels(cls_scores, num_proposals=num_proposals,
                                            num_thing_classes=num_thing_classes)
    slot_ids = torch.arange(n, device=cls_scores.device)
    votes = (slot_ids >= num_proposals) | (scores >= instance_score_thr)          # [N]
    prob = torch.where(votes[:, None, None], scores[:, None, None] * masks, torch.full_like(masks, -1.0))
    owner = prob.argmax(dim=0)                                                    # [H4, W4]
    own_mask = masks >= mask_thr                                                  # [N, H4, W4]
    won = (owner[None] == slot_ids[:, None, None]) & own_mask                     # [N, H4, W4]
    won_area = won.sum(dim=(1, 2))
    own_area = own_mask.sum(dim=(1, 2))
    keep = votes & (won_area > 0) & (won_area.to(masks.dtype) >= overlap_thr * own_area.to(masks.dtype))
    owned = won & keep[:, None, None]                                             # [N, H4, W4], disjoint
    claimed = owned.any(dim=0)
    slot_map = torch.where(claimed, owner, torch.full_like(owner, -1))
    semantic_map = torch.where(claimed, labels[owner], semantic)
    return PanopticSlots(
        slot_map=slot_map.to(torch.int32),
        semantic_map=semantic_map.to(torch.int32),
        scores=scores,
        labels=labels.to(torch.int32),
        keep=keep,
        areas=owned.sum(dim=(1, 2)).to(torch.int32),
        boxes=_boxes(owned, stride=mask_stride // upsample),
    )


def _boxes(owned: torch.Tensor, *, stride: int) -> torch.Tensor:
    """owned bool [N, H, W] -> float [N, 4] x1, y1, x2, y2 in pixels of ``stride``-scaled cells; 0 if empty."""
    h, w = owned.shape[1:]
    cols = owned.any(dim=1)                                                       # [N, W]
    rows = owned.any(dim=2)                                                       # [N, H]
    xs = torch.arange(w, device=owned.device)
    ys = torch.arange(h, device=owned.device)
    x1 = torch.where(cols, xs, w).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1) + 1
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1) + 1
    boxes = torch.stack((x1, y1, x2, y2), dim=1).to(torch.float32) * stride
    return torch.where(cols.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))
