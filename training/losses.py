"""Video K-Net training losses: K-Net's panoptic losses on both frames of a pair plus the tracking losses.

Shapes: B images, N = N_p thing proposals followed by S stuff kernels, K = T thing + S stuff network classes
(things first), h x w the loss resolution, G ground-truth thing instances of one image.

As upstream K-Net, the network's stride-8 mask and semantic logits are upsampled bilinearly to the loss
resolution (``train.loss_stride``, 4 by default) before matching and losses, and compared with soft targets
(area fractions), so small and thin objects are learned rather than rounded away.

What is computed, per frame (key and reference) of a training pair:

* Initial kernels (``mask_logits[0]``): mask BCE x1 and dice x4 on the matched thing proposals and the stuff
  kernels of the stuff classes present, a rank CE x0.1 over the N_p thing proposals' initial masks (as
  upstream; stuff pixels are the semantic loss's), and a semantic CE x1 on
  ``sem_logits`` (void = 255 ignored).
* Every update stage s (``cls_logits[s-1]``, ``mask_logits[s]``): sigmoid focal x2 on the class logits of all
  kernels, mask BCE x1 and dice x4 on the positive kernels.
* Positives: Hungarian-matched thing proposals (:mod:`training.matcher`) and stuff kernel i iff stuff class
  T + i is present (stuff kernels are never matched: kernel N_p + i is class T + i by construction).

and once per pair, on the final stage's matches, QDTrack's multi-positive cross-entropy x0.25 and L2 loss on
cosine similarity x1.0 over the association embeddings.

Optionally (``loss.vote`` > 0; not K-Net) a vote CE on the final stage: per pixel, softmax cross-entropy over
all kernels of ``p log score + log sigmoid(mask)``, i.e. of the panoptic assembly's vote ``score ** p x mask``,
against the kernel that should own the pixel (see :func:`vote_targets`). The mask and class losses train each
kernel alone; a small thing whose own kernel is right still loses its pixels when a neighbour's higher score
times a leaking mask outvotes it, and only a loss on the vote itself sees that.

Decisions (each also documented where it is implemented):

* Matching per stage: as K-Net does by default (``post_assign=False``), update stage s
  is matched with the *detached predictions of stage s-1*: the first update stage with the initial masks and
  no class term (the initial kernels have no classifier), later stages with the previous stage's masks and
  class logits. The initial-kernel losses are matched with the initial masks. ``match_previous_stage=False``
  switches to matching each stage with its own detached predictions (K-Net's ``post_assign=True``).
  The tracking loss uses a separate match of the final stage's own detached predictions, as Video K-Net's
  tracking assigner does, so its positives are the kernels that produce the final segments.
* Classification weights (K-Net panoptic): a thing proposal is classified over the thing classes only (its
  stuff logits get no loss: the panoptic assembly never reads them); stuff kernel i only on its own class
  T + i (target 1 iff the class is present). Unmatched proposals have all-zero targets.
* Normalisation (K-Net, over the batch): focal = sum over weighted elements / number of positives (matched
  things + present stuff, at least 1); mask BCE = mean over the pixels of all positive masks; dice = mean over
  positive masks; rank and semantic CE = mean over the labelled pixels. Each head (initial, every update stage)
  is a separate term and the terms are *summed* over stages as in K-Net, whose loss weights assume that sum
  (``stage_reduction="mean"`` averages the update stages instead). The key and reference frames' K-Net
  losses are averaged, so a pair weighs as much as one K-Net image and the tracking weights keep their meaning.
* Tracking losses are averaged over the B image pairs (QDTrack divides by the number of pairs; a pair with no
  positive contributes 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.matcher import DICE_EPS, match
from vknet_model.config import DataConfig, LossWeights
from vknet_model.network import KernelOutputs
from vknet_model.panoptic import slot_scores_and_labels

IGNORE_INDEX = 255  # void label of the semantic target, ignored by the semantic CE
_RANK_IGNORE = -1   # rank targets are kernel indices, which can exceed 255 with many proposals


# ----------------------------------------------------------------------------------------------------------------
# Elementary losses
# ----------------------------------------------------------------------------------------------------------------

def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise sigmoid focal loss (RetinaNet; mmdet's ``py_sigmoid_focal_loss``), no reduction.

    With ``p = sigmoid(x)`` and a target ``t`` in [0, 1]:
    ``FL = a(t) * |t - p|^gamma * BCE(x, t)``, ``a(t) = alpha`` where ``t > 0`` else ``1 - alpha``,
    ``BCE(x, t) = -t log p - (1 - t) log(1 - p)`` (computed from logits, stable for any x). For t in {0, 1}
    this is exactly RetinaNet's focal loss; a soft t (a positive's mask IoU, ``train.cls_target: iou``) makes
    it the quality focal loss of GFL (Li et al. 2020), which is minimal at ``p = t``.

    Args:
        logits: float [...].
        targets: float or bool [...], same shape.
        alpha: weight of positives (1 - alpha for negatives).
        gamma: focusing exponent; down-weights well-classified elements.

    Returns:
        float32 [...] per-element losses.
    """
    x = logits.float()
    t = targets.float()
    p = x.sigmoid()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    weight = torch.where(t > 0, alpha, 1.0 - alpha)
    return weight * (t - p).abs().pow(gamma) * bce


def mask_iou(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of each predicted mask (sigmoid > 0.5) with its target (>= 0.5), float32 [M]; 0 when both are empty.

    Args:
        mask_logits: float [M, ...].
        targets: bool/float [M, ...] (soft area fractions are binarised at one half).
    """
    pred = mask_logits.flatten(1) > 0.0
    gt = targets.flatten(1) >= 0.5
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return inter / union.clamp(min=1.0)


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor, *, eps: float = DICE_EPS) -> torch.Tensor:
    """K-Net's dice loss per mask: ``1 - 2 sum(p t) / (sum(p^2) + sum(t^2) + 2 eps)``, ``p = sigmoid(x)``.

    The squared denominator (V-Net form) is K-Net's; eps is added to each of the two sums (1e-3), which keeps
    an empty target with an empty prediction at a loss of ~1 rather than 0/0.

    Args:
        mask_logits: float [M, ...] mask logits.
        targets: bool/float [M, ...] target masks, same shape.
        eps: denominator epsilon.

    Returns:
        float32 [M].
    """
    p = mask_logits.float().flatten(1).sigmoid()
    t = targets.float().flatten(1)
    inter = (p * t).sum(1)
    return 1.0 - 2.0 * inter / ((p * p).sum(1) + (t * t).sum(1) + 2.0 * eps)


def mask_bce_loss(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel sigmoid binary cross-entropy of each mask.

    ``BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x) = -t log p - (1 - t) log(1 - p)``, averaged over
    the pixels of each mask (so that every mask weighs the same whatever its resolution).

    Args:
        mask_logits: float [M, ...].
        targets: bool/float [M, ...].

    Returns:
        float32 [M].
    """
    x = mask_logits.float().flatten(1)
    t = targets.float().flatten(1)
    return F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1)


Reduction = Literal["mean", "sum"]


def _pixel_ce(logits: torch.Tensor, target: torch.Tensor, ignore: int, reduction: Reduction) -> torch.Tensor:
    """Per-pixel softmax CE of [C, h, w] logits against a [h, w] index map; "mean" is over the pixels not
    ``ignore`` (0 when there are none), so an empty target gives no gradient instead of NaN."""
    total = F.cross_entropy(logits.float()[None], target[None], ignore_index=ignore, reduction="sum")
    if reduction == "sum":
        return total
    return total / (target != ignore).sum().clamp(min=1)


def rank_loss(mask_logits: torch.Tensor, owner: torch.Tensor, *, reduction: Reduction = "mean") -> torch.Tensor:
    """K-Net's rank loss: per pixel, softmax cross-entropy over the thing proposals' initial mask logits.

    The target of a pixel is the index of the proposal that owns it (see :func:`rank_targets`); pixels that
    nobody owns (-1) are ignored. It teaches the initial proposals to compete for an object's pixels, so
    that two proposals do not start on the same object.

    Args:
        mask_logits: float [N_p, h, w] mask logits of the thing proposals.
        owner: long [h, w] proposal index per pixel, -1 where ignored.
        reduction: "mean" over owned pixels (0 when none) or "sum".

    Returns:
        float32 scalar.
    """
    return _pixel_ce(mask_logits, owner, _RANK_IGNORE, reduction)


def rank_targets(thing_masks: torch.Tensor, pred_idx: torch.Tensor, gt_idx: torch.Tensor) -> torch.Tensor:
    """Owner map of the rank loss: matched proposal ``pred_idx[k]`` owns the cells where instance ``gt_idx[k]``
    covers more than half (upstream K-Net ranks the thing proposals only; stuff is the semantic loss's).

    Args:
        thing_masks: float [G, h, w] soft instance masks (area fractions; at most one exceeds 0.5 per cell).
        pred_idx, gt_idx: long [M] a matching (:func:`training.matcher.match`).

    Returns:
        long [h, w]: proposal index, -1 for cells owned by nobody (stuff, void, crowd, unmatched instances).
    """
    owner = torch.full(thing_masks.shape[-2:], _RANK_IGNORE, dtype=torch.long, device=thing_masks.device)
    for p, g in zip(pred_idx.tolist(), gt_idx.tolist(), strict=True):
        owner[thing_masks[g] > 0.5] = p
    return owner


def vote_targets(thing_masks: torch.Tensor, semantic: torch.Tensor, pred_idx: torch.Tensor, gt_idx: torch.Tensor,
                 *, num_proposals: int, num_thing_classes: int) -> torch.Tensor:
    """Owner map of the vote loss: the kernel the assembly should give each cell.

    Stuff cells (``semantic`` of a stuff class) go to that class's stuff kernel, cells more than half covered
    by a matched instance to its proposal. Thing cells no matched instance covers by half (crowd, boundaries
    shared by several things) and void are ignored.

    Args:
        thing_masks: float [G, h, w] soft instance masks.
        semantic: long [h, w] network class per cell, 255 = void.
        pred_idx, gt_idx: long [M] a matching.
        num_proposals, num_thing_classes: N_p and T (stuff kernel i is kernel N_p + i, class T + i).

    Returns:
        long [h, w] kernel index, -1 where ignored.
    """
    owner = rank_targets(thing_masks, pred_idx, gt_idx)  # matched things first, as the rank loss owns them
    is_stuff = (semantic >= num_thing_classes) & (semantic != IGNORE_INDEX) & (owner == _RANK_IGNORE)
    return torch.where(is_stuff, semantic - num_thing_classes + num_proposals, owner)


def vote_logits(cls_logits: torch.Tensor, mask_logits: torch.Tensor, *, num_proposals: int, num_thing_classes: int,
                power: float) -> torch.Tensor:
    """The assembly's vote as logits over kernels: ``power * log(score) + log sigmoid(mask)``, float [N, h, w].

    A kernel's score is what the assembly reads (:func:`vknet_model.panoptic.slot_scores_and_labels`): a thing
    proposal's best thing-class probability, stuff kernel i's probability of its own class T + i.

    Args:
        cls_logits: float [N, K] class logits of the final stage.
        mask_logits: float [N, h, w] its mask logits.
        num_proposals, num_thing_classes: N_p and T.
        power: ``model.vote_score_power``.
    """
    # The assembly's slot scores read on logits: max and gather commute with the monotonic sigmoid.
    score_logits = slot_scores_and_labels(cls_logits, num_proposals=num_proposals,
                                          num_thing_classes=num_thing_classes)[0]
    return power * F.logsigmoid(score_logits.float())[:, None, None] + F.logsigmoid(mask_logits.float())


def vote_loss(vote: torch.Tensor, owner: torch.Tensor, *, reduction: Reduction = "mean") -> torch.Tensor:
    """Pixel CE of the assembly's vote (:func:`vote_logits`) against ``owner`` (:func:`vote_targets`, -1
    ignored); "mean" is over owned cells (0 when none), "sum" their sum. float32 scalar."""
    return _pixel_ce(vote, owner, _RANK_IGNORE, reduction)


def thing_vote_loss(vote: torch.Tensor, owner: torch.Tensor, *, num_proposals: int) -> tuple[torch.Tensor, int]:
    """Vote CE with every thing weighed alike: per thing proposal that owns cells, the mean CE over its own
    cells; returns their sum and how many there are.

    :func:`vote_loss`'s mean over cells is ruled by the road, the sky and large cars; a small thing outvoted
    by its neighbour costs it little, yet STQ counts that thing's track as much as any other.
    """
    things = (owner >= 0) & (owner < num_proposals)
    if not bool(things.any()):
        return vote.sum() * 0.0, 0
    index = owner[things]
    ce = F.cross_entropy(vote.permute(1, 2, 0)[things], index, reduction="none")   # [cells]
    sums = torch.zeros(num_proposals, dtype=ce.dtype, device=ce.device).index_add(0, index, ce)
    counts = torch.bincount(index, minlength=num_proposals)
    present = counts > 0
    return (sums[present] / counts[present]).sum(), int(present.sum())


def semantic_ce_loss(sem_logits: torch.Tensor, semantic: torch.Tensor, *,
                     reduction: Reduction = "mean") -> torch.Tensor:
    """Softmax cross-entropy of the semantic head, void (255) ignored.

    Args:
        sem_logits: float [K, h, w].
        semantic: long [h, w] network class per pixel, 255 = ignore.
        reduction: "mean" over labelled pixels (0 when none) or "sum".

    Returns:
        float32 scalar.
    """
    return _pixel_ce(sem_logits, semantic, IGNORE_INDEX, reduction)


def multi_positive_ce_loss(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """QDTrack's multi-positive cross-entropy over embedding similarities.

    For each key row r with at least one positive:
    ``L_r = log(1 + sum_{i in pos(r)} sum_{j in neg(r)} exp(s_rj - s_ri))``, which is the softmax CE of each
    positive against all negatives, combined so that several positives do not compete with each other.

    Args:
        similarity: float [M_k, M_r] key-to-reference similarities (embedding dot products).
        positives: bool [M_k, M_r] same identity.

    Returns:
        float32 scalar: mean of L_r over rows with a positive; 0 (attached to the graph) when there is none.
    """
    rows = positives.any(1)
    if not bool(rows.any()):
        return similarity.sum() * 0.0
    s = similarity.float()[rows]                               # [R, M_r]
    pos = positives[rows]
    diff = s[:, None, :] - s[:, :, None]                       # [R, i, j] = s_j - s_i
    valid = pos[:, :, None] & ~pos[:, None, :]                 # i positive, j negative
    diff = diff.masked_fill(~valid, float("-inf")).flatten(1)
    diff = torch.cat((diff, diff.new_zeros(diff.shape[0], 1)), dim=1)  # the "1 +" term
    return torch.logsumexp(diff, dim=1).mean()


def cosine_l2_loss(cosine: torch.Tensor, positives: torch.Tensor, *, pos_margin: float = 0.0,
                   neg_margin: float = 0.1, neg_pos_ub: int = 3) -> torch.Tensor:
    """QDTrack's auxiliary L2 loss on cosine similarity, with hard negative mining.

    Positive pairs: ``(clamp(c - pos_margin, 0, 1) - 1)^2``; negative pairs: ``clamp(c - neg_margin, 0, 1)^2``
    (a negative below the margin costs nothing). Only the ``neg_pos_ub * num_pos`` hardest negatives (largest
    loss) are kept, so at most 3 negatives per positive; with no positive no negative is kept. The loss is the
    mean over the positives and kept negatives. (QDTrack mines only when ``num_neg / (num_pos + 1) > ub``; we
    always apply the cap "at most ub per positive", so the negatives' share of the loss does not jump when
    their count crosses QDTrack's threshold. ``neg_pos_ub <= 0`` keeps all.)

    Args:
        cosine: float [M_k, M_r] cosine similarities.
        positives: bool [M_k, M_r].
        pos_margin, neg_margin: margins (QDTrack: 0 and 0.1).
        neg_pos_ub: negatives kept per positive.

    Returns:
        float32 scalar; 0 (attached to the graph) when nothing is kept.
    """
    c = cosine.float()
    pos_loss = (torch.clamp(c[positives] - pos_margin, 0.0, 1.0) - 1.0).pow(2)
    neg_loss = torch.clamp(c[~positives] - neg_margin, 0.0, 1.0).pow(2)
    num_pos = pos_loss.numel()
    if neg_pos_ub > 0:
        keep = min(neg_loss.numel(), neg_pos_ub * num_pos)
        neg_loss = neg_loss[torch.topk(neg_loss.detach(), keep).indices]
    count = num_pos + neg_loss.numel()
    if count == 0:
        return c.sum() * 0.0
    return (pos_loss.sum() + neg_loss.sum()) / count


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class FrameTargets:
    """Training targets of one image, at the loss resolution (``train.loss_stride``).

    Attributes:
        thing_labels: long [G] network class of each thing instance (< num_things).
        thing_masks: float [G, h, w] soft instance masks: the area fraction of each cell the instance covers.
        thing_ids: long [G] track identity of each instance (the dataset panoptic id
            ``class * label_divisor + instance``); equal ids in the key and reference frames are the same object.
        stuff_masks: float [S, h, w] soft masks, one per stuff class in network order (class T + i), all zero
            when absent.
        semantic: long [h, w] network class per pixel, 255 = void (ignored).
    """

    thing_labels: torch.Tensor
    thing_masks: torch.Tensor
    thing_ids: torch.Tensor
    stuff_masks: torch.Tensor
    semantic: torch.Tensor

    @property
    def stuff_present(self) -> torch.Tensor:
        """bool [S]: stuff classes covering at least half a cell in all."""
        return self.stuff_masks.flatten(1).sum(1) >= 0.5

    def to(self, device: torch.device | str) -> FrameTargets:
        """A copy on ``device`` (no copy for tensors already there)."""
        return FrameTargets(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


def targets_from_panoptic(panoptic: np.ndarray | torch.Tensor, data_cfg: DataConfig,
                          mask_size: tuple[int, int]) -> FrameTargets:
    """Build one image's targets from a dataset panoptic map.

    Decisions:

    * Classes: ``class = id // label_divisor`` is a dataset class id, mapped to the network class by the
      inverse of ``data_cfg.net_to_dataset`` (things first); any id that is not a class (255) is void.
    * Thing instances are the segments of a thing class with ``instance > 0``; their track id is the full
      panoptic id. ``instance == 0`` of a thing class is *crowd*: it is no thing target (no kernel learns it,
      the rank loss ignores it, proposals covering it are penalised like on background) but keeps its class
      in ``semantic``. Void is ignored by every loss (255 in ``semantic``, in no mask).
    * Down-sampling to ``mask_size`` (upstream K-Net: bilinearly downsampled soft masks): the full-resolution
      pixels are split into h x w cells (pixel row y goes to cell row ``y * h // H``, likewise for columns:
      exact area averaging when H, W are multiples of h, w) and each segment's area fraction per cell is its
      *soft* target there. Every instance with at least one pixel is kept, however small: a thin or distant
      object still has a target (its fractions) instead of vanishing under a majority vote.
      ``semantic`` is the class (void included) with the largest fraction, ties to the lower network class,
      void last. A stuff class is present when its fractions add up to at least half a cell.

    Args:
        panoptic: int [H, W] panoptic ids ``class * label_divisor + instance`` (numpy or torch).
        data_cfg: the label space.
        mask_size: (h, w) of the loss resolution.

    Returns:
        CPU :class:`FrameTargets`.
    """
    if isinstance(panoptic, torch.Tensor):
        pan = panoptic.detach().to(device="cpu", dtype=torch.long)
    else:  # numpy, any integer dtype (uint16 has no torch counterpart on every version: widen first)
        pan = torch.from_numpy(np.asarray(panoptic).astype(np.int64))
    if pan.dim() != 2:
        raise ValueError(f"panoptic map must be [H, W], got shape {tuple(pan.shape)}")
    height, width = pan.shape
    h, w = mask_size
    num_classes, num_things = data_cfg.num_classes, data_cfg.num_things
    void = num_classes  # internal channel index of void

    # Segment id per pixel, and each cell's area fraction per segment (bincount: [hw, U], no [U, H, W] tensor).
    seg_ids, inverse = torch.unique(pan, return_inverse=True)                   # [U], [H, W]
    num_segments = seg_ids.numel()
    rows = torch.arange(height) * h // height
    cols = torch.arange(width) * w // width
    cell = rows[:, None] * w + cols[None, :]                                    # [H, W]
    counts = torch.bincount((cell * num_segments + inverse).flatten(), minlength=h * w * num_segments)
    counts = counts.reshape(h * w, num_segments).float()
    fractions = counts / counts.sum(1, keepdim=True).clamp(min=1.0)             # [hw, U]

    # Network class of each segment (void channel for anything that is not a class).
    lookup = torch.full((max(num_classes, 256),), void, dtype=torch.long)
    lookup[torch.tensor(data_cfg.net_to_dataset)] = torch.arange(num_classes)
    dataset_class = seg_ids // data_cfg.label_divisor
    instance = seg_ids % data_cfg.label_divisor
    in_range = (dataset_class >= 0) & (dataset_class < lookup.numel())
    net_class = torch.where(in_range, lookup[dataset_class.clamp(0, lookup.numel() - 1)],
                            torch.full_like(dataset_class, void))

    # Class fractions -> semantic map and soft stuff masks.
    class_fractions = torch.zeros(h * w, num_classes + 1).index_add_(1, net_class, fractions)  # [hw, K + 1]
    semantic = class_fractions.argmax(1)
    semantic[semantic == void] = IGNORE_INDEX
    stuff_masks = class_fractions[:, num_things:num_classes].T.reshape(num_classes - num_things, h, w)

    # Thing instances (crowd excluded), soft, every one kept.
    is_instance = (net_class < num_things) & (instance > 0)
    return FrameTargets(
        thing_labels=net_class[is_instance].clone(),
        thing_masks=fractions[:, is_instance].T.reshape(-1, h, w).contiguous(),
        thing_ids=seg_ids[is_instance].clone(),
        stuff_masks=stuff_masks.contiguous(),
        semantic=semantic.reshape(h, w),
    )


# ----------------------------------------------------------------------------------------------------------------
# Criterion
# ----------------------------------------------------------------------------------------------------------------

Matching = tuple[torch.Tensor, torch.Tensor]


class VideoKNetCriterion(nn.Module):
    """All Video K-Net training losses for a batch of (key, reference) frame pairs.

    See the module docstring for what is computed and how it is normalised. Calling it returns
    ``(total, components)``: ``total`` is the scalar to back-propagate, ``components`` maps names to the
    *weighted* contributions as floats (they sum to ``components["total"]``): ``init_bce``, ``init_dice``,
    ``init_rank``, ``semantic``, ``s{k}_focal``, ``s{k}_bce``, ``s{k}_dice`` for update stage k = 1..S (the
    K-Net terms are the key/reference mean), ``track_ce`` and ``track_l2``, and ``vote`` when its weight is set.
    """

    def __init__(self, *, num_proposals: int, num_thing_classes: int, num_classes: int, weights: LossWeights,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, match_previous_stage: bool = True,
                 stage_reduction: Literal["sum", "mean"] = "sum", cost_focal: float = 2.0, cost_dice: float = 4.0,
                 cost_mask_bce: float = 1.0, track_pos_margin: float = 0.0, track_neg_margin: float = 0.1,
                 track_neg_pos_ub: int = 3, upsample: int = 1, cls_target: Literal["binary", "iou"] = "binary",
                 vote_power: float = 1.0) -> None:
        """
        Args:
            num_proposals: N_p thing proposals (the first N_p kernels).
            num_thing_classes: T; network classes 0..T-1 are things.
            num_classes: K = T + S.
            weights: loss weights.
            focal_alpha, focal_gamma: focal loss (and focal matching cost) parameters.
            match_previous_stage: match update stage s with stage s-1's detached predictions (K-Net's
                default, ``post_assign=False``); False matches each stage with its own detached predictions.
            stage_reduction: "sum" (K-Net) or "mean" over the update stages.
            cost_focal, cost_dice, cost_mask_bce: matching cost weights (K-Net's assigner: 2, 4, 1). Kept apart
                from the loss weights so that re-weighting a loss does not silently change the assignment.
            track_pos_margin, track_neg_margin, track_neg_pos_ub: :func:`cosine_l2_loss` parameters.
            upsample: factor from the network's mask resolution to the loss resolution (stride 8 -> 4: 2).
            cls_target: a matched thing's class target: "binary" (1, K-Net) or "iou" (its mask IoU).
            vote_power: the assembly's ``score ** p`` in the vote loss (``model.vote_score_power``).
        """
        super().__init__()
        if not 0 < num_thing_classes < num_classes:
            raise ValueError(f"need 0 < num_thing_classes ({num_thing_classes}) < num_classes ({num_classes})")
        if stage_reduction not in ("sum", "mean"):
            raise ValueError(f"stage_reduction must be 'sum' or 'mean', got {stage_reduction!r}")
        self.num_proposals = num_proposals
        self.num_thing_classes = num_thing_classes
        self.num_classes = num_classes
        self.num_stuff = num_classes - num_thing_classes
        self.weights = weights
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.match_previous_stage = match_previous_stage
        self.stage_reduction = stage_reduction
        self.cost_focal = cost_focal
        self.cost_dice = cost_dice
        self.cost_mask_bce = cost_mask_bce
        self.track_pos_margin = track_pos_margin
        self.track_neg_margin = track_neg_margin
        self.track_neg_pos_ub = track_neg_pos_ub
        if upsample < 1:
            raise ValueError(f"upsample must be >= 1, got {upsample}")
        self.upsample = upsample
        if cls_target not in ("binary", "iou"):
            raise ValueError(f"cls_target must be 'binary' or 'iou', got {cls_target!r}")
        self.cls_target = cls_target
        self.vote_power = vote_power

    # -- matching ---------------------------------------------------------------------------------------------

    def _match_own(self, out: KernelOutputs, head: int, b: int, targets: FrameTargets) -> Matching:
        """Match image b's proposals with head ``head``'s own detached predictions (head 0 = initial)."""
        n_p = self.num_proposals
        masks = out.mask_logits[head][b, :n_p].detach()
        cls = out.cls_logits[head - 1][b, :n_p].detach() if head > 0 else None
        return match(cls, masks, targets.thing_labels, targets.thing_masks, cost_focal=self.cost_focal,
                     cost_dice=self.cost_dice, cost_mask_bce=self.cost_mask_bce, focal_alpha=self.focal_alpha,
                     focal_gamma=self.focal_gamma)

    # -- per-frame K-Net losses -------------------------------------------------------------------------------

    def _check(self, out: KernelOutputs, targets: Sequence[FrameTargets]) -> None:
        batch, kernels = out.mask_logits[0].shape[:2]
        if kernels != self.num_proposals + self.num_stuff:
            raise ValueError(f"outputs have {kernels} kernels, expected {self.num_proposals} proposals + "
                             f"{self.num_stuff} stuff")
        if len(out.cls_logits) != len(out.mask_logits) - 1:
            raise ValueError("expected one cls_logits per update stage and mask_logits = initial + stages")
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} targets for a batch of {batch}")
        size = tuple(out.mask_logits[0].shape[-2:])
        for t in targets:
            if tuple(t.semantic.shape) != size or tuple(t.stuff_masks.shape) != (self.num_stuff, *size) or \
                    tuple(t.thing_masks.shape[1:]) != size:
                raise ValueError(f"targets must be at the mask resolution {size} with {self.num_stuff} stuff "
                                 f"masks; got semantic {tuple(t.semantic.shape)}, stuff "
                                 f"{tuple(t.stuff_masks.shape)}, things {tuple(t.thing_masks.shape)}")

    def _positives(self, m: Matching, t: FrameTargets) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel indices and target masks of one image's positives: matched things, then present stuff."""
        present = torch.nonzero(t.stuff_present).flatten()
        kernels = torch.cat((m[0], self.num_proposals + present))
        masks = torch.cat((t.thing_masks[m[1]], t.stuff_masks[present]))
        return kernels, masks

    def _mask_terms(self, mask_logits: torch.Tensor, matches: list[Matching],
                    targets: list[FrameTargets]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-normalised (mask BCE, dice) of one head: means over all positive masks of the batch."""
        bce, dice, count = [], [], 0
        for b, (m, t) in enumerate(zip(matches, targets, strict=True)):
            kernels, masks = self._positives(m, t)
            pred = mask_logits[b, kernels]
            bce.append(mask_bce_loss(pred, masks).sum())
            dice.append(dice_loss(pred, masks).sum())
            count += int(kernels.numel())
        denom = max(count, 1)
        return torch.stack(bce).sum() / denom, torch.stack(dice).sum() / denom

    def _focal_term(self, cls_logits: torch.Tensor, matches: list[Matching], targets: list[FrameTargets],
                    mask_logits: torch.Tensor) -> torch.Tensor:
        """Batch-normalised focal loss of one update stage (sum over weighted elements / number of positives).

        Thing proposals: weight on the T thing classes only, target at the matched instance's class (all zero
        when unmatched): 1, or with ``cls_target="iou"`` the IoU of the kernel's own mask of this stage with
        the instance (detached), so that a thing's score ranks how well its mask fits. Stuff kernel i: weight
        on class T + i only, target 1 iff present.
        """
        n_p, n_t = self.num_proposals, self.num_thing_classes
        weight = torch.zeros(cls_logits.shape[1:], device=cls_logits.device)           # [N, K]
        weight[:n_p, :n_t] = 1.0
        stuff = torch.arange(self.num_stuff, device=cls_logits.device)
        weight[n_p + stuff, n_t + stuff] = 1.0
        losses, num_pos = [], 0
        for b, (m, t) in enumerate(zip(matches, targets, strict=True)):
            target = torch.zeros_like(weight)
            if self.cls_target == "iou":
                quality = mask_iou(mask_logits[b, m[0]].detach(), t.thing_masks[m[1]])
            else:
                quality = torch.ones(m[0].shape, device=weight.device)
            target[m[0], t.thing_labels[m[1]]] = quality
            present = t.stuff_present
            target[n_p + stuff, n_t + stuff] = present.float()
            losses.append((sigmoid_focal_loss(cls_logits[b], target, alpha=self.focal_alpha,
                                              gamma=self.focal_gamma) * weight).sum())
            num_pos += int(m[0].numel()) + int(present.sum())
        return torch.stack(losses).sum() / max(num_pos, 1)

    def _initial_terms(self, out: KernelOutputs, matches: list[Matching],
                       targets: list[FrameTargets]) -> dict[str, torch.Tensor]:
        w = self.weights
        masks = out.mask_logits[0]
        bce, dice = self._mask_terms(masks, matches, targets)
        rank, rank_px, sem, sem_px = [], 0, [], 0
        for b, (m, t) in enumerate(zip(matches, targets, strict=True)):
            owner = rank_targets(t.thing_masks, m[0], m[1])
            rank.append(rank_loss(masks[b, : self.num_proposals], owner, reduction="sum"))
            rank_px += int((owner != _RANK_IGNORE).sum())
            sem.append(semantic_ce_loss(out.sem_logits[b], t.semantic, reduction="sum"))
            sem_px += int((t.semantic != IGNORE_INDEX).sum())
        return {
            "init_bce": w.init_mask_bce * bce,
            "init_dice": w.init_dice * dice,
            "init_rank": w.rank * torch.stack(rank).sum() / max(rank_px, 1),
            "semantic": w.semantic * torch.stack(sem).sum() / max(sem_px, 1),
        }

    def _frame(self, out: KernelOutputs, targets: list[FrameTargets]) -> tuple[dict[str, torch.Tensor],
                                                                                list[Matching]]:
        """K-Net losses of one frame of every pair (targets on the outputs' device); also returns the final
        stage's own matches (tracking)."""
        self._check(out, targets)
        num_stages = len(out.cls_logits)
        own = [[self._match_own(out, head, b, t) for b, t in enumerate(targets)] for head in range(num_stages + 1)]
        terms = self._initial_terms(out, own[0], targets)
        w = self.weights
        scale = 1.0 / num_stages if self.stage_reduction == "mean" else 1.0
        for s in range(1, num_stages + 1):
            matches = own[s - 1] if self.match_previous_stage else own[s]
            bce, dice = self._mask_terms(out.mask_logits[s], matches, targets)
            terms[f"s{s}_focal"] = scale * w.focal * self._focal_term(out.cls_logits[s - 1], matches, targets,
                                                                      out.mask_logits[s])
            terms[f"s{s}_bce"] = scale * w.mask_bce * bce
            terms[f"s{s}_dice"] = scale * w.dice * dice
        if w.vote > 0 or w.vote_things > 0:
            terms.update(self._vote_terms(out, own[num_stages], targets))
        return terms, own[num_stages]

    def _vote_terms(self, out: KernelOutputs, matches: list[Matching],
                    targets: list[FrameTargets]) -> dict[str, torch.Tensor]:
        """The weighted vote CE terms of the final stage, with the matches that make its segments: "vote", the
        mean over owned cells, and "vote_things", the mean over matched things of each one's mean over its
        cells; only those with a weight are computed."""
        w = self.weights
        per_cell, per_thing, cells, things = [], [], 0, 0
        for b, (m, t) in enumerate(zip(matches, targets, strict=True)):
            owner = vote_targets(t.thing_masks, t.semantic, m[0], m[1], num_proposals=self.num_proposals,
                                 num_thing_classes=self.num_thing_classes)
            vote = vote_logits(out.cls_logits[-1][b], out.mask_logits[-1][b], num_proposals=self.num_proposals,
                               num_thing_classes=self.num_thing_classes, power=self.vote_power)
            if w.vote > 0:
                per_cell.append(vote_loss(vote, owner, reduction="sum"))
                cells += int((owner != _RANK_IGNORE).sum())
            if w.vote_things > 0:
                total, count = thing_vote_loss(vote, owner, num_proposals=self.num_proposals)
                per_thing.append(total)
                things += count
        terms = {}
        if per_cell:
            terms["vote"] = w.vote * torch.stack(per_cell).sum() / max(cells, 1)
        if per_thing:
            terms["vote_things"] = w.vote_things * torch.stack(per_thing).sum() / max(things, 1)
        return terms

    # -- tracking ---------------------------------------------------------------------------------------------

    def tracking_losses(self, key_emb: torch.Tensor, ref_emb: torch.Tensor, key_match: Matching,
                        ref_match: Matching, key_ids: torch.Tensor,
                        ref_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unweighted (multi-positive CE, cosine L2) of one image pair.

        Rows are the key proposals matched (final stage) to an instance, columns the matched reference
        proposals; a pair is positive when the two instances have the same track id. Similarities are dot
        products of the raw embeddings (the tracker's measure) for the CE and their cosine for the L2 loss.

        Args:
            key_emb, ref_emb: float [N_p, E] embeddings of the image's key / reference proposals.
            key_match, ref_match: (pred_idx, gt_idx) final-stage matches.
            key_ids, ref_ids: long [G_key], [G_ref] track ids of the instances.

        Returns:
            Two float32 scalars (0, attached to the graph, when a frame has no match).
        """
        if key_match[0].numel() == 0 or ref_match[0].numel() == 0:
            zero = (key_emb.sum() + ref_emb.sum()) * 0.0
            return zero, zero
        k = key_emb[key_match[0]].float()
        r = ref_emb[ref_match[0]].float()
        positives = key_ids[key_match[1]][:, None] == ref_ids[ref_match[1]][None, :]
        ce = multi_positive_ce_loss(k @ r.T, positives)
        cosine = F.normalize(k, dim=1) @ F.normalize(r, dim=1).T
        l2 = cosine_l2_loss(cosine, positives, pos_margin=self.track_pos_margin,
                            neg_margin=self.track_neg_margin, neg_pos_ub=self.track_neg_pos_ub)
        return ce, l2

    # -- entry point ------------------------------------------------------------------------------------------

    def _to_loss_resolution(self, out: KernelOutputs) -> KernelOutputs:
        """Mask and semantic logits upsampled bilinearly by ``upsample`` (the embeddings are untouched)."""
        if self.upsample == 1:
            return out

        def up(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=float(self.upsample), mode="bilinear", align_corners=False)

        return out._replace(mask_logits=[up(m) for m in out.mask_logits], sem_logits=up(out.sem_logits))

    def forward(self, key_out: KernelOutputs, ref_out: KernelOutputs, key_targets: list[FrameTargets],
                ref_targets: list[FrameTargets]) -> tuple[torch.Tensor, dict[str, float]]:
        """
        Args:
            key_out, ref_out: network outputs of the key and reference frames (batch B each).
            key_targets, ref_targets: B targets each, at the loss resolution (stride-8 size x ``upsample``),
                on any device: they are moved to the outputs' device once, here.

        Returns:
            ``(total, components)``: scalar loss and the weighted components as floats (see the class doc).
        """
        device = key_out.mask_logits[0].device
        key_targets = [t.to(device) for t in key_targets]  # the one move to the outputs' device
        ref_targets = [t.to(device) for t in ref_targets]
        key_terms, key_final = self._frame(self._to_loss_resolution(key_out), key_targets)
        ref_terms, ref_final = self._frame(self._to_loss_resolution(ref_out), ref_targets)
        terms = {name: 0.5 * (key_terms[name] + ref_terms[name]) for name in key_terms}
        ce_sum, l2_sum = [], []
        for b, (kt, rt) in enumerate(zip(key_targets, ref_targets, strict=True)):
            ce, l2 = self.tracking_losses(key_out.embeddings[b], ref_out.embeddings[b], key_final[b], ref_final[b],
                                          kt.thing_ids, rt.thing_ids)
            ce_sum.append(ce)
            l2_sum.append(l2)
        batch = len(ce_sum)
        terms["track_ce"] = self.weights.track_ce * torch.stack(ce_sum).sum() / batch
        terms["track_l2"] = self.weights.track_l2 * torch.stack(l2_sum).sum() / batch
        total = torch.stack(list(terms.values())).sum()
        values = torch.stack([*terms.values(), total]).detach().cpu().tolist()  # one device sync
        components = dict(zip([*terms, "total"], values, strict=True))
        return total, components
