"""Panoptic assembly as a static-shape tensor function, the last step of the exported graph.

Thing score = max over thing classes, stuff score = its own class. The mask probabilities are upsampled
bilinearly from the mask stride to the merge stride before the vote. Every pixel goes to the kernel with the
highest ``score ** score_power * sigmoid(mask)`` (power 1 upstream); things below ``instance_score_thr`` take
part in no vote; a segment is kept when the pixels it won inside its own mask (sigmoid >= mask_thr) are at least
``overlap_thr`` of that mask. Pixels no kept segment claims take the semantic head's class when that is stuff;
where it is a thing class they go to the kept thing segment that scores best there (if its mask reaches half of
``mask_thr``), else to the semantic head's best stuff class: a thing pixel never carries a thing class without
an instance, and the assembly never outputs void. Because every vote is one argmax, the result does not depend
on the order segments are visited in, which is what makes it vectorisable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PanopticSlots(NamedTuple):
    """Per-kernel ("slot") results of the assembly at the merge stride.

    Attributes:
        slot_map: int32 [Hm, Wm], index of the kept slot owning each pixel, -1 where none does.
        semantic_map: int32 [Hm, Wm], network class per pixel (the owner's label, else the semantic head's
            stuff class).
        scores: float32 [N], slot scores.
        labels: int32 [N], slot network classes.
        keep: bool [N], slot kept.
        areas: int32 [N], pixels owned at the merge stride.
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
                      overlap_thr: float | torch.Tensor, mask_thr: float | torch.Tensor, mask_stride: int,
                      upsample: int, score_power: float = 1.0) -> PanopticSlots:
    """Merge kernel predictions of one image into a panoptic slot map.

    Args:
        cls_scores: float [N, K] sigmoid class scores; rows [0, num_proposals) are thing proposals, the
            rest one stuff kernel per stuff class in class order.
        mask_logits: float [N, h, w] mask logits at ``mask_stride`` (the network's ``VKNet.mask_stride``).
        sem_logits: float [K, h, w] semantic head logits at ``mask_stride``.
        instance_score_thr, overlap_thr, mask_thr: floats or 0-d tensors (tensors keep them run-time inputs
            of the exported graph, so they can change without re-exporting).
        upsample: factor from the mask resolution to the merge resolution (4: stride 8 -> 2). The slot map
            is brought to camera resolution once, later, instead of N full-resolution masks.
        score_power: the vote weighs ``score ** score_power``: below 1 a confident mask holds its pixels
            against a higher-scoring neighbour's weaker mask (the bundled model: 0.5).

    Written for speed on a CPU as much as for export: every [N, Hm, Wm] pass costs a few milliseconds at
    384x1248 and stride 2, so argmax over the kernel axis (slow in PyTorch along a leading axis) is a max
    plus a first-index tie-break, and nothing is computed twice.
    """
    n = cls_scores.shape[0]
    masks = mask_logits.sigmoid()[None]                     # upsampled as probabilities, as upstream
    sem = sem_logits[None]
    if upsample != 1:
        masks = F.interpolate(masks, scale_factor=float(upsample), mode="bilinear", align_corners=False)
        sem = F.interpolate(sem, scale_factor=float(upsample), mode="bilinear", align_corners=False)
    masks = masks[0]                                                              # [N, Hm, Wm]
    # The semantic head's best stuff class, and whether a thing class beats it (ties to the thing, the lower
    # index, as an argmax over all classes would): one argmax over the stuff channels serves both uses.
    stuff_semantic = _argmax0(sem[0, num_thing_classes:]) + num_thing_classes    # [Hm, Wm]
    thing_pixel = sem[0, :num_thing_classes].amax(dim=0) >= sem[0, num_thing_classes:].amax(dim=0)
    semantic = torch.where(thing_pixel, _argmax0(sem[0, :num_thing_classes]), stuff_semantic)
    scores, labels = slot_scores_and_labels(cls_scores, num_proposals=num_proposals,
                                            num_thing_classes=num_thing_classes)
    slot_ids = torch.arange(n, device=cls_scores.device)
    is_thing = slot_ids < num_proposals
    votes = ~is_thing | (scores >= instance_score_thr)                            # [N]
    # Non-voters weigh -1 x mask <= 0, below any voter with a mask there.
    vote_weight = scores if score_power == 1.0 else scores ** score_power
    weighted = torch.where(votes, vote_weight, -torch.ones_like(scores))[:, None, None] * masks
    owner = _argmax0(weighted)                                                    # [Hm, Wm]
    own_mask = masks >= mask_thr                                                  # [N, Hm, Wm]
    owner_mask = masks.gather(0, owner[None])[0] >= mask_thr                      # owner's own mask there
    won = (owner[None] == slot_ids[:, None, None]) & owner_mask[None]             # [N, Hm, Wm]
    won_area = won.to(masks.dtype).sum(dim=(1, 2))
    own_area = own_mask.to(masks.dtype).sum(dim=(1, 2))
    keep = votes & (won_area > 0) & (won_area >= overlap_thr * own_area)
    claimed = owner_mask & keep[owner]
    # Unclaimed pixels the semantic head calls a thing: the best kept thing segment there, else (below) stuff.
    if num_proposals:
        kept_things = (keep & is_thing)[:num_proposals]
        thing_weighted = torch.where(kept_things, scores[:num_proposals],
                                     -torch.ones_like(scores[:num_proposals]))[:, None, None] * masks[:num_proposals]
        fill_owner = _argmax0(thing_weighted)
        fill_mask = masks[:num_proposals].gather(0, fill_owner[None])[0]
        fill = ~claimed & thing_pixel & kept_things[fill_owner] & (fill_mask >= 0.5 * mask_thr)
    else:  # no proposals at all (only in hand-built inputs)
        fill_owner, fill = owner, torch.zeros_like(claimed)
    slot_map = torch.where(claimed, owner, torch.where(fill, fill_owner, torch.full_like(owner, -1)))
    # A thing pixel no kept thing reaches takes the semantic head's best *stuff* class: never a thing class
    # without an instance, and never void, which deeplab2's SQ counts as one more class of IoU 0 for the
    # whole evaluation once a single pixel of it is predicted.
    semantic_map = torch.where(claimed | fill, labels[slot_map.clamp(min=0)],
                               torch.where(thing_pixel, stuff_semantic, semantic))
    # Owned pixels as float once: sums and maxima of float run several times faster in ONNX Runtime than the
    # int64 that reductions of a bool become.
    owned = (slot_map[None] == slot_ids[:, None, None]).to(masks.dtype)           # [N, Hm, Wm], disjoint
    return PanopticSlots(
        slot_map=slot_map.to(torch.int32),
        semantic_map=semantic_map.to(torch.int32),
        scores=scores,
        labels=labels.to(torch.int32),
        keep=keep,
        areas=owned.sum(dim=(1, 2)).to(torch.int32),
        boxes=_boxes(owned, stride=mask_stride // upsample),
    )


def _argmax0(x: torch.Tensor) -> torch.Tensor:
    """argmax over the leading axis of [N, H, W] (first index on ties), int64 [H, W].

    Eager PyTorch's argmax along a leading axis is several times slower on a CPU than a max, an equality and
    a max of descending ranks, so eager runs those; the exported graph keeps one ArgMax, which ONNX Runtime
    runs 5x faster than the three (0.4 vs 1.9 ms at [37, 96, 312]). Both take the first index on ties.
    """
    if torch.compiler.is_exporting():
        return x.argmax(dim=0)
    n = x.shape[0]
    best = x.amax(dim=0, keepdim=True)
    rank = torch.arange(n, 0, -1, device=x.device, dtype=x.dtype)[:, None, None]   # n .. 1
    return n - ((x == best).to(x.dtype) * rank).amax(dim=0).to(torch.int64)


def _boxes(owned: torch.Tensor, *, stride: int) -> torch.Tensor:
    """owned 0/1 float [N, H, W] -> float [N, 4] x1, y1, x2, y2 in pixels of ``stride``-scaled cells; 0 if empty."""
    h, w = owned.shape[1:]
    cols = owned.amax(dim=1) > 0                                                  # [N, W]
    rows = owned.amax(dim=2) > 0                                                  # [N, H]
    xs = torch.arange(w, device=owned.device)
    ys = torch.arange(h, device=owned.device)
    x1 = torch.where(cols, xs, w).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1) + 1
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1) + 1
    boxes = torch.stack((x1, y1, x2, y2), dim=1).to(torch.float32) * stride
    return torch.where(cols.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))
