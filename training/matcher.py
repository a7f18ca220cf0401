"""Hungarian matching of thing proposals to ground-truth instances (one image at a time).

K-Net trains its thing kernels DETR-style: every update stage assigns each ground-truth instance to exactly
one proposal by minimising a matching cost, and every other proposal is background. The cost per
(proposal, instance) pair is

    cost = cost_focal * focal_cost + cost_dice * dice_cost + cost_mask_bce * bce_cost      (2, 4, 1 by default)

with

* ``focal_cost`` (DETR / Deformable-DETR / Mask2Former style): with ``p = sigmoid(logit)`` at the instance's
  class, ``pos = alpha * (1 - p)^gamma * -log(p)`` and ``neg = (1 - alpha) * p^gamma * -log(1 - p)``;
  ``focal_cost = pos - neg`` (how much cheaper the pair's focal loss is when the class is "on" than "off").
* ``dice_cost``: exactly :func:`training.losses.dice_loss` of the pair (K-Net's squared-denominator dice).
* ``bce_cost``: exactly :func:`training.losses.mask_bce_loss` of the pair (mean per-pixel sigmoid BCE).

All three are built from MatMuls over the flattened masks ([N, HW] @ [HW, G]); nothing of size
[N, G, HW] is ever materialised, which matters at 100 proposals x 30 instances x 48x156 pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

# Denominator epsilon of the dice loss (K-Net's value); shared with training.losses so that the matching cost
# is the loss the matched pair will pay.
DICE_EPS = 1e-3

# Replacement for non-finite costs (an fp16 overflow, a diverged prediction): the assignment still exists and
# the loss itself shows the problem, instead of scipy raising deep inside the training step.
_INVALID_COST = 1e8


def pairwise_focal_cost(cls_logits: torch.Tensor, gt_labels: torch.Tensor, *, alpha: float = 0.25,
                        gamma: float = 2.0) -> torch.Tensor:
    """Focal classification cost of assigning each proposal to each instance.

    Args:
        cls_logits: float [N, K] class logits of the proposals.
        gt_labels: long [G] network class of each instance (index into K).
        alpha: focal-loss balance of positives.
        gamma: focal-loss focusing exponent.

    Returns:
        float32 [N, G]: ``pos - neg`` at each instance's class (see the module docstring). ``-log(p)`` and
        ``-log(1 - p)`` are computed as ``softplus(-x)`` and ``softplus(x)``, which stay finite for any logit.
    """
    x = cls_logits.float()[:, gt_labels]               # [N, G]
    p = x.sigmoid()
    pos = alpha * (1.0 - p).pow(gamma) * F.softplus(-x)
    neg = (1.0 - alpha) * p.pow(gamma) * F.softplus(x)
    return pos - neg


def pairwise_dice_cost(mask_logits: torch.Tensor, gt_masks: torch.Tensor, *, eps: float = DICE_EPS) -> torch.Tensor:
    """Dice loss of every (proposal, instance) pair: ``1 - 2 sum(p t) / (sum(p^2) + sum(t^2) + 2 eps)``.

    Args:
        mask_logits: float [N, h, w] (or [N, HW]) mask logits.
        gt_masks: bool or float [G, h, w] (or [G, HW]) instance masks.
        eps: added once per sum in the denominator (K-Net adds it to both sums).

    Returns:
        float32 [N, G].
    """
    p = mask_logits.float().flatten(1).sigmoid()       # [N, HW]
    t = gt_masks.float().flatten(1)                    # [G, HW]
    inter = p @ t.T                                    # [N, G]
    denom = (p * p).sum(1)[:, None] + (t * t).sum(1)[None, :] + 2.0 * eps
    return 1.0 - 2.0 * inter / denom


def pairwise_mask_bce_cost(mask_logits: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel sigmoid BCE of every (proposal, instance) pair, as two MatMuls.

    ``BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x)``, so summed over pixels it is
    ``softplus(-X) @ T^T + softplus(X) @ (1 - T)^T``.

    Args:
        mask_logits: float [N, h, w] (or [N, HW]).
        gt_masks: bool or float [G, h, w] (or [G, HW]).

    Returns:
        float32 [N, G].
    """
    x = mask_logits.float().flatten(1)                 # [N, HW]
    t = gt_masks.float().flatten(1)                    # [G, HW]
    pos = F.softplus(-x) @ t.T
    neg = F.softplus(x) @ (1.0 - t).T
    return (pos + neg) / x.shape[1]


def match_cost(cls_logits: torch.Tensor | None, mask_logits: torch.Tensor, gt_labels: torch.Tensor,
               gt_masks: torch.Tensor, *, cost_focal: float = 2.0, cost_dice: float = 4.0,
               cost_mask_bce: float = 1.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> torch.Tensor:
    """The weighted matching cost matrix (no gradient).

    Args:
        cls_logits: float [N, K] class logits, or None where the predictions have no classifier (K-Net's
            initial kernels): the classification term is then left out.
        mask_logits: float [N, h, w].
        gt_labels: long [G] network classes.
        gt_masks: bool/float [G, h, w] at the same resolution as ``mask_logits``.
        cost_focal, cost_dice, cost_mask_bce: weights of the three terms.
        focal_alpha, focal_gamma: focal parameters of the classification term.

    Returns:
        float32 [N, G] on the device of ``mask_logits``.
    """
    if mask_logits.shape[-2:] != gt_masks.shape[-2:]:
        raise ValueError(f"mask size mismatch: predictions {tuple(mask_logits.shape[-2:])}, "
                         f"targets {tuple(gt_masks.shape[-2:])}")
    with torch.no_grad():
        cost = cost_dice * pairwise_dice_cost(mask_logits, gt_masks)
        cost = cost + cost_mask_bce * pairwise_mask_bce_cost(mask_logits, gt_masks)
        if cls_logits is not None and cost_focal != 0.0:
            cost = cost + cost_focal * pairwise_focal_cost(cls_logits, gt_labels, alpha=focal_alpha,
                                                           gamma=focal_gamma)
    return cost


def match(cls_logits: torch.Tensor | None, mask_logits: torch.Tensor, gt_labels: torch.Tensor,
          gt_masks: torch.Tensor, *, cost_focal: float = 2.0, cost_dice: float = 4.0, cost_mask_bce: float = 1.0,
          focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of proposals to instances (scipy's Hungarian solver).

    Args:
        cls_logits: float [N_p, K] class logits of the thing proposals, or None (no classification term).
        mask_logits: float [N_p, h, w] mask logits of the thing proposals.
        gt_labels: long [G] network class (a thing class) of each instance; G may be 0.
        gt_masks: bool/float [G, h, w] instance masks at the masks' resolution (stride 8).
        cost_focal, cost_dice, cost_mask_bce, focal_alpha, focal_gamma: see :func:`match_cost`.

    Returns:
        ``(pred_idx, gt_idx)``: long [min(N_p, G)] each, on the device of ``mask_logits``; proposal
        ``pred_idx[k]`` is assigned instance ``gt_idx[k]``. Every other proposal is background; when
        G > N_p the instances left over are unmatched. ``pred_idx`` is ascending.
    """
    device = mask_logits.device
    num_pred, num_gt = mask_logits.shape[0], gt_masks.shape[0]
    if num_pred == 0 or num_gt == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    cost = match_cost(cls_logits, mask_logits, gt_labels, gt_masks, cost_focal=cost_focal, cost_dice=cost_dice,
                      cost_mask_bce=cost_mask_bce, focal_alpha=focal_alpha, focal_gamma=focal_gamma)
    cost_np = torch.nan_to_num(cost, nan=_INVALID_COST, posinf=_INVALID_COST, neginf=-_INVALID_COST)
    rows, cols = linear_sum_assignment(cost_np.cpu().double().numpy())
    pred_idx = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
    gt_idx = torch.as_tensor(np.asarray(cols, dtype=np.int64), device=device)
    return pred_idx, gt_idx
