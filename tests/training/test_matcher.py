"""Hungarian matcher: the cost matrix against per-pair losses, the assignment against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.testing import assert_close

from training.losses import dice_loss, mask_bce_loss, sigmoid_focal_loss
from training.matcher import match, match_cost, pairwise_focal_cost


def _case(seed: int, num_pred: int, num_gt: int, num_classes: int = 4, size: tuple[int, int] = (3, 5)):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(num_pred, num_classes, generator=g) * 2
    masks = torch.randn(num_pred, *size, generator=g) * 3
    labels = torch.randint(0, 2, (num_gt,), generator=g)
    gt = torch.rand(num_gt, *size, generator=g) > 0.5
    return cls, masks, labels, gt


def _focal_pair(x: float) -> float:
    """Hand formula: alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p)), alpha 0.25, gamma 2."""
    p = 1.0 / (1.0 + math.exp(-x))
    return 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p**2 * -math.log(1 - p)


def test_cost_matrix_equals_per_pair_losses() -> None:
    cls, masks, labels, gt = _case(0, 4, 3)
    cost = match_cost(cls, masks, labels, gt)
    assert cost.shape == (4, 3)
    expected = torch.zeros(4, 3)
    for i in range(4):
        for j in range(3):
            focal = _focal_pair(float(cls[i, labels[j]]))
            dice = float(dice_loss(masks[i : i + 1], gt[j : j + 1])[0])
            bce = float(mask_bce_loss(masks[i : i + 1], gt[j : j + 1])[0])
            expected[i, j] = 2.0 * focal + 4.0 * dice + 1.0 * bce
    assert_close(cost, expected)


def test_focal_cost_is_focal_loss_on_minus_off() -> None:
    cls, _, labels, _ = _case(1, 3, 2)
    x = cls[:, labels]
    expected = sigmoid_focal_loss(x, torch.ones_like(x)) - sigmoid_focal_loss(x, torch.zeros_like(x))
    assert_close(pairwise_focal_cost(cls, labels), expected)


def test_cost_weights_and_missing_classifier() -> None:
    cls, masks, labels, gt = _case(2, 3, 2)
    no_cls = match_cost(None, masks, labels, gt)
    assert_close(no_cls, match_cost(cls, masks, labels, gt, cost_focal=0.0))
    dice_only = match_cost(None, masks, labels, gt, cost_dice=1.0, cost_mask_bce=0.0)
    expected = torch.stack([dice_loss(masks, gt[j].expand_as(masks)) for j in range(2)], dim=1)
    assert_close(dice_only, expected)


def _brute_force(cost: torch.Tensor) -> float:
    """Minimum total cost over every injective assignment of the smaller side into the larger."""
    n, g = cost.shape
    if n >= g:
        return min(sum(float(cost[p, j]) for j, p in enumerate(perm)) for perm in itertools.permutations(range(n), g))
    return min(sum(float(cost[i, q]) for i, q in enumerate(perm)) for perm in itertools.permutations(range(g), n))


@pytest.mark.parametrize(("num_pred", "num_gt"), [(5, 4), (5, 2), (4, 4), (3, 1), (2, 4), (1, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assignment_is_optimal(num_pred: int, num_gt: int, seed: int) -> None:
    cls, masks, labels, gt = _case(100 * seed + 10 * num_pred + num_gt, num_pred, num_gt)
    pred_idx, gt_idx = match(cls, masks, labels, gt)
    k = min(num_pred, num_gt)
    assert pred_idx.dtype == gt_idx.dtype == torch.long
    assert pred_idx.shape == gt_idx.shape == (k,)
    assert len(set(pred_idx.tolist())) == k and len(set(gt_idx.tolist())) == k
    cost = match_cost(cls, masks, labels, gt).double()
    total = float(cost[pred_idx, gt_idx].sum())
    assert total == pytest.approx(_brute_force(cost), abs=1e-9)


def test_obvious_assignment() -> None:
    """Proposal 2 draws instance 0 exactly, proposal 0 instance 1; proposal 1 is background-like."""
    gt = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 1, 1]]], dtype=torch.bool)   # [2, 1, 4]
    big = 8.0
    masks = torch.tensor([[[-big, -big, big, big]], [[-big, -big, -big, -big]], [[big, big, -big, -big]]])
    cls = torch.zeros(3, 2)
    labels = torch.tensor([0, 1])
    pred_idx, gt_idx = match(cls, masks, labels, gt)
    assert pred_idx.tolist() == [0, 2]
    assert gt_idx.tolist() == [1, 0]


def test_no_ground_truth() -> None:
    cls, masks, _, _ = _case(3, 5, 0)
    pred_idx, gt_idx = match(cls, masks, torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, 5, dtype=torch.bool))
    assert pred_idx.shape == gt_idx.shape == (0,)
    assert pred_idx.dtype == gt_idx.dtype == torch.long


def test_more_instances_than_proposals() -> None:
    cls, masks, labels, gt = _case(4, 2, 4)
    pred_idx, gt_idx = match(cls, masks, labels, gt)
    assert sorted(pred_idx.tolist()) == [0, 1]
    assert len(set(gt_idx.tolist())) == 2


def test_no_gradient_and_size_check() -> None:
    cls, masks, labels, gt = _case(5, 3, 2)
    cls.requires_grad_(True)
    masks.requires_grad_(True)
    assert not match_cost(cls, masks, labels, gt).requires_grad
    with pytest.raises(ValueError, match="mask size"):
        match_cost(cls, masks, labels, gt[:, :2])


def test_non_finite_predictions_still_match() -> None:
    cls, masks, labels, gt = _case(6, 3, 2)
    masks[0] = float("nan")
    pred_idx, _ = match(cls, masks, labels, gt)
    assert pred_idx.tolist() == [1, 2]
