"""Training losses: elementary losses against hand formulas, targets from a hand panoptic map, tracking losses
on a hand example, and the criterion on a hand case and on the tiny network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from training.losses import (
    FrameTargets,
    LossWeights,
    VideoKNetCriterion,
    cosine_l2_loss,
    dice_loss,
    mask_bce_loss,
    mask_iou,
    multi_positive_ce_loss,
    rank_loss,
    rank_targets,
    semantic_ce_loss,
    sigmoid_focal_loss,
    targets_from_panoptic,
    thing_vote_loss,
    vote_logits,
    vote_loss,
    vote_targets,
)
from vknet_model.config import DataConfig, resolve_config
from vknet_model.network import KernelOutputs, build_model


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------------------------------------------
# Elementary losses
# ---------------------------------------------------------------------------------------------------------------

def test_sigmoid_focal_loss_hand_values() -> None:
    # x = 0, t = 1: p = 0.5, BCE = ln 2, alpha_t = 0.25, (1 - p)^2 = 0.25
    # x = 2, t = 0: BCE = -ln(1 - p), alpha_t = 0.75, weight p^2
    # x = -1, t = 1: BCE = -ln p, alpha_t = 0.25, weight (1 - p)^2
    p2, pm1 = _sigmoid(2.0), _sigmoid(-1.0)
    expected = _t(0.25 * 0.25 * math.log(2.0),
                  0.75 * p2**2 * -math.log(1.0 - p2),
                  0.25 * (1.0 - pm1) ** 2 * -math.log(pm1))
    assert_close(sigmoid_focal_loss(_t(0.0, 2.0, -1.0), _t(1.0, 0.0, 1.0)), expected)
    # gamma 0, alpha 0.5 is half the BCE
    assert_close(sigmoid_focal_loss(_t(0.0), _t(1.0), alpha=0.5, gamma=0.0), _t(0.5 * math.log(2.0)))


def test_focal_loss_with_a_soft_target_is_the_quality_focal_loss() -> None:
    # t = 0.6, x = 0: a(t) = alpha (a positive), |t - p|^2 = 0.01, BCE = ln 2
    assert_close(sigmoid_focal_loss(_t(0.0), _t(0.6)), _t(0.25 * 0.01 * math.log(2.0)))
    # minimal (zero gradient) where p = t, unlike a binary target
    x = torch.tensor([math.log(0.6 / 0.4)], requires_grad=True)
    sigmoid_focal_loss(x, _t(0.6)).sum().backward()
    assert x.grad is not None and abs(float(x.grad[0])) < 1e-6
    x1 = torch.tensor([0.0], requires_grad=True)
    sigmoid_focal_loss(x1, _t(1.0)).sum().backward()
    assert x1.grad is not None and float(x1.grad[0]) < -1e-3                   # a binary target still pulls up


def test_mask_iou_hand_values() -> None:
    logits = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0]])
    targets = torch.tensor([[1.0, 0.6, 0.4, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert_close(mask_iou(logits, targets), _t(1.0, 0.0, 0.0))     # soft targets binarised at 0.5; empty: 0
    assert_close(mask_iou(logits[:1], torch.tensor([[1.0, 0.0, 1.0, 0.0]])), _t(1 / 3))


def test_dice_loss_hand_values() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])   # p = (0.5, 0.75), (0.5, 0.5)
    target = torch.tensor([[True, False], [False, False]])
    # row 0: 1 - 2 * 0.5 / (0.25 + 0.5625 + 1 + 2e-3); row 1: empty target: 1 - 0 / (0.5 + 2e-3) = 1
    assert_close(dice_loss(logits, target), _t(1.0 - 1.0 / 1.8145, 1.0))


def test_mask_bce_loss_hand_values() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), -math.log(3.0)]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # row 0: (-ln 0.5 - ln(1 - 0.75)) / 2 = 1.5 ln 2; row 1: both pixels -ln 0.75
    assert_close(mask_bce_loss(logits, target), _t(1.5 * math.log(2.0), -math.log(0.75)))


def test_rank_loss_hand_example() -> None:
    # three kernels, three pixels; pixel 0 owned by kernel 0, pixel 1 by kernel 2, pixel 2 by nobody
    logits = torch.tensor([[[1.0, 0.0, 5.0]], [[0.0, 0.0, -5.0]], [[0.0, 2.0, 9.0]]])   # [N=3, 1, 3]
    owner = torch.tensor([[0, 2, -1]])
    ce0 = -math.log(math.e / (math.e + 2.0))
    ce1 = -math.log(math.e**2 / (2.0 + math.e**2))
    assert_close(rank_loss(logits, owner), torch.tensor((ce0 + ce1) / 2))
    assert_close(rank_loss(logits, owner, reduction="sum"), torch.tensor(ce0 + ce1))
    assert_close(rank_loss(logits, torch.full((1, 3), -1)), torch.tensor(0.0))


def test_rank_targets_from_matches() -> None:
    thing_masks = torch.tensor([[[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.75, 0.5, 0.0]]])          # G = 2, soft
    owner = rank_targets(thing_masks, torch.tensor([3]), torch.tensor([1]))
    # instance 0 unmatched -> ignored; instance 1 -> proposal 3 where it covers more than half; the rest nobody's
    assert owner.tolist() == [[-1, 3, -1, -1]]


def test_vote_targets_give_stuff_to_its_kernel_and_things_to_their_proposal() -> None:
    # 2 proposals, 1 thing class, 2 stuff classes (kernels 2, 3); cells: thing 0, boundary, stuff 1, stuff 2, void
    thing_masks = torch.tensor([[[1.0, 0.5, 0.0, 0.0, 0.0]], [[0.0, 0.4, 0.0, 0.0, 0.0]]])
    semantic = torch.tensor([[0, 0, 1, 2, 255]])
    owner = vote_targets(thing_masks, semantic, torch.tensor([1]), torch.tensor([0]), num_proposals=2,
                         num_thing_classes=1)
    assert owner.tolist() == [[1, -1, 2, 3, -1]]  # the shared boundary cell and void belong to nobody


def test_vote_loss_is_the_ce_of_score_power_times_mask() -> None:
    # kernel 0: a thing proposal (score = best thing class), kernel 1: stuff class 1's kernel; 2 cells
    cls = torch.tensor([[2.0, -9.0], [-9.0, 0.0]])                  # [N=2, K=2]: thing 0, stuff 1
    masks = torch.tensor([[[3.0, 1.0]], [[-1.0, 2.0]]])              # [N, 1, 2]
    owner = torch.tensor([[0, 1]])
    sig = torch.sigmoid
    for power in (1.0, 0.5, 0.0):
        w0, w1 = sig(torch.tensor(2.0)) ** power, sig(torch.tensor(0.0)) ** power
        votes = torch.stack((w0 * sig(masks[0, 0]), w1 * sig(masks[1, 0])))  # [N, cells]
        expected = -(torch.log(votes[0, 0] / votes[:, 0].sum()) + torch.log(votes[1, 1] / votes[:, 1].sum())) / 2
        got = vote_loss(vote_logits(cls, masks, num_proposals=1, num_thing_classes=1, power=power), owner)
        assert_close(got, expected)
    # the gradient lowers the score of a neighbour that outvotes the owner, and only with power > 0
    leaking = cls.clone().requires_grad_(True)
    vote_loss(vote_logits(leaking, masks, num_proposals=1, num_thing_classes=1, power=0.5),
              torch.tensor([[1, 1]])).backward()
    assert leaking.grad is not None and float(leaking.grad[0, 0]) > 0 and float(leaking.grad[1, 1]) < 0
    vote = vote_logits(cls, masks, num_proposals=1, num_thing_classes=1, power=1.0)
    assert_close(vote_loss(vote, torch.full((1, 2), -1)), torch.tensor(0.0))


def test_thing_vote_loss_weighs_every_thing_alike() -> None:
    # Kernels 0 and 1 are thing proposals, 2 a stuff kernel; 5 cells: a large thing (0: cells 0-2), a small
    # one (1: cell 3) and a stuff cell (4).
    vote = torch.randn(3, 1, 5, generator=torch.Generator().manual_seed(0))
    owner = torch.tensor([[0, 0, 0, 1, 2]])
    ce = torch.nn.functional.cross_entropy(vote[:, 0].T, owner[0], reduction="none")
    total, count = thing_vote_loss(vote, owner, num_proposals=2)
    assert count == 2
    assert_close(total, ce[:3].mean() + ce[3])                # stuff is left out; each thing is one mean
    assert_close(vote_loss(vote, owner), ce.mean())           # the per-cell mean weighs the large thing x3
    # No thing cell: zero, still attached to the graph so a batch of such frames backpropagates.
    vote.requires_grad_(True)
    none, count = thing_vote_loss(vote, torch.tensor([[2, 2, -1, -1, 2]]), num_proposals=2)
    assert count == 0 and float(none.detach()) == 0.0 and none.requires_grad


def test_semantic_ce_ignores_void() -> None:
    logits = torch.tensor([[[2.0, 7.0]], [[0.0, -3.0]]])          # [K=2, 1, 2]
    semantic = torch.tensor([[1, 255]])
    expected = torch.tensor(-math.log(1.0 / (1.0 + math.e**2)))
    assert_close(semantic_ce_loss(logits, semantic), expected)
    changed = logits.clone()
    changed[:, 0, 1] = torch.tensor([-50.0, 50.0])                # the ignored pixel does not matter
    assert_close(semantic_ce_loss(changed, semantic), expected)
    assert_close(semantic_ce_loss(logits, torch.full((1, 2), 255)), torch.tensor(0.0))


# ---------------------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------------------

# KITTI-STEP label space: network classes person 0, car 1, then stuff road 2, sidewalk 3, building 4, ...
PANOPTIC = np.array([
    [13001, 13001, 13002, 13002, 0, 0],
    [13001, 13001, 13002, 0, 0, 0],
    [11000, 11000, 255000, 11005, 0, 2000],
    [11000, 0, 255000, 0, 2000, 2000],
], dtype=np.int32)


def test_targets_from_panoptic_at_half_resolution() -> None:
    """2x2 cells: soft area fractions; car 1 whole, car 2 3/4, crowd person 3/4, void 1/2 + a 1-pixel person kept
    at 1/4, building 3/4."""
    data = DataConfig()
    t = targets_from_panoptic(PANOPTIC, data, (2, 3))
    assert t.thing_ids.tolist() == [11005, 13001, 13002]           # the 1-pixel person is kept, softly
    assert t.thing_labels.tolist() == [0, 1, 1]
    assert t.thing_masks.dtype == torch.float32
    assert t.thing_masks.tolist() == [[[0, 0, 0], [0, 0.25, 0]], [[1, 0, 0], [0, 0, 0]], [[0, 0.75, 0], [0, 0, 0]]]
    # crowd keeps its class (person 0); void majority -> 255; road = 2, building = 4
    assert t.semantic.tolist() == [[1, 1, 2], [0, 255, 4]]
    assert t.stuff_masks.shape == (17, 2, 3)
    present = torch.nonzero(t.stuff_present).flatten().tolist()
    assert present == [0, 2]                                       # road (class 2), building (class 4)
    assert t.stuff_masks[0].tolist() == [[0, 0.25, 1], [0.25, 0.25, 0.25]]
    assert t.stuff_masks[2].tolist() == [[0, 0, 0], [0, 0, 0.75]]
    # per cell, the fractions of every segment (void and crowd included) add up to one
    covered = t.thing_masks.sum(0) + t.stuff_masks.sum(0)
    assert covered.tolist() == [[1, 1, 1], [0.25, 0.5, 1]]


def test_targets_from_panoptic_at_full_resolution() -> None:
    t = targets_from_panoptic(torch.from_numpy(PANOPTIC), DataConfig(), (4, 6))
    assert t.thing_ids.tolist() == [11005, 13001, 13002]
    assert t.thing_labels.tolist() == [0, 1, 1]
    for mask, pid in zip(t.thing_masks, t.thing_ids.tolist(), strict=True):
        assert torch.equal(mask, torch.from_numpy(np.equal(PANOPTIC, pid)).float())
    expected = [[1, 1, 1, 1, 2, 2], [1, 1, 1, 2, 2, 2], [0, 0, 255, 0, 2, 4], [0, 2, 255, 2, 4, 4]]
    assert t.semantic.tolist() == expected
    # crowd and void pixels are in no mask
    covered = (t.thing_masks.sum(0) + t.stuff_masks.sum(0)) > 0
    assert covered.int().tolist() == [[1] * 6, [1] * 6, [0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 1, 1]]


def test_targets_without_things() -> None:
    t = targets_from_panoptic(np.full((8, 8), 10 * 1000, dtype=np.int64), DataConfig(), (2, 2))
    assert t.thing_labels.shape == t.thing_ids.shape == (0,)
    assert t.thing_masks.shape == (0, 2, 2)
    assert (t.semantic == 12).all()                                # sky is network class 12


# ---------------------------------------------------------------------------------------------------------------
# Tracking losses
# ---------------------------------------------------------------------------------------------------------------

def _criterion(num_proposals: int = 2, things: int = 1, classes: int = 2, **kwargs: object) -> VideoKNetCriterion:
    return VideoKNetCriterion(num_proposals=num_proposals, num_thing_classes=things, num_classes=classes,
                              weights=LossWeights(), **kwargs)  # type: ignore[arg-type]


def test_tracking_losses_hand_example() -> None:
    """Key k0=(1,0), k1=(0,2); reference r0=(2,0), r1=(1,1). Track ids pair k0 with r1 and k1 with r0."""
    key_emb = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ref_emb = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    key_match = (torch.tensor([0, 1]), torch.tensor([0, 1]))
    ref_match = (torch.tensor([0, 1]), torch.tensor([1, 0]))      # r0 -> instance 1 (id 9), r1 -> instance 0 (id 7)
    key_ids, ref_ids = torch.tensor([7, 9]), torch.tensor([7, 9])
    ce, l2 = _criterion().tracking_losses(key_emb, ref_emb, key_match, ref_match, key_ids, ref_ids)
    # dots: k0: (r0 2, r1 1) positive r1; k1: (r0 0, r1 2) positive r0
    assert_close(ce, torch.tensor((math.log(1 + math.e) + math.log(1 + math.e**2)) / 2))
    # cos: k0: (1, 1/sqrt2) pos r1; k1: (0, 1/sqrt2) pos r0; negatives pay clamp(cos - 0.1, 0, 1)^2
    r = 1 / math.sqrt(2)
    expected_l2 = ((r - 1) ** 2 + 1.0 + 0.9**2 + (r - 0.1) ** 2) / 4
    assert_close(l2, torch.tensor(expected_l2))


def test_multi_positive_ce_several_positives_and_none() -> None:
    sim = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0]])
    pos = torch.tensor([[True, True, False], [False, False, False]])   # row 1 has no positive: not counted
    assert_close(multi_positive_ce_loss(sim, pos), torch.tensor(math.log(1 + math.e**1 + math.e**-1)))
    assert_close(multi_positive_ce_loss(sim, torch.zeros_like(pos)), torch.tensor(0.0))


def test_cosine_l2_hard_negative_mining() -> None:
    cos = torch.tensor([[0.5, 0.9, 0.05, 0.6, -0.3, 0.3, 0.8]])
    pos = torch.tensor([[True, False, False, False, False, False, False]])
    # positive (0.5 - 1)^2; negatives (c - 0.1)^2 clamped: .64, 0, .25, 0, .04, .49 -> 3 hardest: .64 .49 .25
    assert_close(cosine_l2_loss(cos, pos), torch.tensor((0.25 + 0.64 + 0.49 + 0.25) / 4))
    assert_close(cosine_l2_loss(cos, pos, neg_pos_ub=-1), torch.tensor((0.25 + 0.64 + 0.25 + 0.04 + 0.49) / 7))
    assert_close(cosine_l2_loss(cos, torch.zeros_like(pos)), torch.tensor(0.0))   # no positive: nothing kept


# ---------------------------------------------------------------------------------------------------------------
# Criterion on a hand case: N_p = 2 proposals, 1 thing class, 1 stuff class, one update stage, 1x2 masks
# ---------------------------------------------------------------------------------------------------------------

def _hand_case() -> tuple[KernelOutputs, FrameTargets]:
    initial = torch.tensor([[[-2.0, 0.0]], [[3.0, -1.0]], [[-1.0, 2.0]]])      # p1 fits the car: initial match p1
    stage = torch.tensor([[[2.0, -2.0]], [[-3.0, 1.0]], [[0.5, 0.5]]])         # ... while stage 1 prefers p0
    cls = torch.tensor([[0.5, -1.0], [-0.5, 0.2], [1.0, -2.0]])
    sem = torch.tensor([[[1.0, 0.0]], [[-1.0, 0.5]]])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = KernelOutputs([cls[None]], [initial[None], stage[None]], sem[None], torch.zeros(1, 3, 4), emb[None])
    targets = FrameTargets(thing_labels=torch.tensor([0]), thing_masks=torch.tensor([[[True, False]]]),
                           thing_ids=torch.tensor([13001]), stuff_masks=torch.tensor([[[False, True]]]),
                           semantic=torch.tensor([[0, 1]]))
    return out, targets


@pytest.mark.parametrize("previous", [True, False])
def test_criterion_hand_case(previous: bool) -> None:
    out, t = _hand_case()
    total, parts = _criterion(match_previous_stage=previous)(out, out, [t], [t])
    initial, stage, cls = out.mask_logits[0][0], out.mask_logits[1][0], out.cls_logits[0][0]
    car, road = t.thing_masks[0], t.stuff_masks[0]
    targets = torch.stack((car, road))
    # initial head: positives proposal 1 (matched on initial masks) and stuff kernel 2
    assert parts["init_bce"] == pytest.approx(float(mask_bce_loss(initial[[1, 2]], targets).mean()))
    assert parts["init_dice"] == pytest.approx(4 * float(dice_loss(initial[[1, 2]], targets).mean()))
    rank = rank_loss(initial[:2], torch.tensor([[1, -1]]))          # thing proposals only, on the car's pixel
    assert parts["init_rank"] == pytest.approx(0.1 * float(rank))
    assert parts["semantic"] == pytest.approx(float(semantic_ce_loss(out.sem_logits[0], t.semantic)))
    # stage 1: matched on the initial masks (previous) or on its own masks
    p = 1 if previous else 0
    assert parts["s1_bce"] == pytest.approx(float(mask_bce_loss(stage[[p, 2]], targets).mean()))
    assert parts["s1_dice"] == pytest.approx(4 * float(dice_loss(stage[[p, 2]], targets).mean()))
    # focal: proposals on the thing column only (matched one targets 1), stuff kernel on its own column
    focal = (sigmoid_focal_loss(cls[p, 0], torch.tensor(1.0)) + sigmoid_focal_loss(cls[1 - p, 0], torch.tensor(0.0))
             + sigmoid_focal_loss(cls[2, 1], torch.tensor(1.0))) / 2   # 2 positives
    assert parts["s1_focal"] == pytest.approx(2 * float(focal))
    assert parts["total"] == pytest.approx(float(total))
    assert float(total) == pytest.approx(sum(v for k, v in parts.items() if k != "total"), rel=1e-6)


@pytest.mark.parametrize("previous", [True, False])
def test_criterion_iou_class_target(previous: bool) -> None:
    """With cls_target="iou" the matched proposal's class target is its own stage mask's IoU with the car:
    0 for proposal 1 (matched on the initial masks, its stage mask is on the road pixel), 1 for proposal 0."""
    out, t = _hand_case()
    _, parts = _criterion(match_previous_stage=previous, cls_target="iou")(out, out, [t], [t])
    cls = out.cls_logits[0][0]
    p, quality = (1, 0.0) if previous else (0, 1.0)
    focal = (sigmoid_focal_loss(cls[p, 0], torch.tensor(quality)) + sigmoid_focal_loss(cls[1 - p, 0], torch.tensor(0.0))
             + sigmoid_focal_loss(cls[2, 1], torch.tensor(1.0))) / 2
    assert parts["s1_focal"] == pytest.approx(2 * float(focal))
    _, binary = _criterion(match_previous_stage=previous)(out, out, [t], [t])
    assert (parts["s1_focal"] == pytest.approx(binary["s1_focal"])) == (not previous)
    with pytest.raises(ValueError, match="cls_target"):
        _criterion(cls_target="soft")


def test_criterion_vote_term_only_when_weighted() -> None:
    out, t = _hand_case()
    _, plain = _criterion()(out, out, [t], [t])
    assert "vote" not in plain
    weights = LossWeights(vote=2.0)
    criterion = VideoKNetCriterion(num_proposals=2, num_thing_classes=1, num_classes=2, weights=weights,
                                   vote_power=0.5)
    _, parts = criterion(out, out, [t], [t])
    # final stage's own match: proposal 0 (its stage mask fits the car); the road cell goes to stuff kernel 2
    vote = vote_logits(out.cls_logits[0][0], out.mask_logits[1][0], num_proposals=2, num_thing_classes=1,
                       power=0.5)
    expected = vote_loss(vote, torch.tensor([[0, 2]]))
    assert parts["vote"] == pytest.approx(2 * float(expected))
    assert "vote_things" not in parts
    assert parts["total"] == pytest.approx(plain["total"] + parts["vote"], rel=1e-6)
    # The per-thing term: its own weight, the one thing's (proposal 0's) mean over its single cell.
    both = VideoKNetCriterion(num_proposals=2, num_thing_classes=1, num_classes=2,
                              weights=LossWeights(vote=2.0, vote_things=3.0), vote_power=0.5)
    _, parts = both(out, out, [t], [t])
    per_thing = thing_vote_loss(vote, torch.tensor([[0, 2]]), num_proposals=2)[0]
    assert parts["vote_things"] == pytest.approx(3 * float(per_thing))
    assert parts["total"] == pytest.approx(plain["total"] + parts["vote"] + parts["vote_things"], rel=1e-6)


def test_criterion_stage_mean_and_empty_frame() -> None:
    out, t = _hand_case()
    _, summed = _criterion()(out, out, [t], [t])
    _, mean = _criterion(stage_reduction="mean")(out, out, [t], [t])
    assert mean["s1_focal"] == pytest.approx(summed["s1_focal"])            # one stage: mean == sum
    none = torch.zeros(0, dtype=torch.long)
    empty = FrameTargets(thing_labels=none, thing_masks=torch.zeros(0, 1, 2, dtype=torch.bool), thing_ids=none,
                         stuff_masks=torch.zeros(1, 1, 2, dtype=torch.bool), semantic=torch.full((1, 2), 255))
    total, parts = _criterion()(out, out, [empty], [empty])
    assert math.isfinite(float(total))
    assert parts["init_bce"] == parts["init_rank"] == parts["semantic"] == parts["track_ce"] == 0.0
    assert parts["s1_focal"] > 0.0                                         # all kernels are negatives
    with pytest.raises(ValueError, match="mask resolution"):
        _criterion()(out, out, [t], [FrameTargets(t.thing_labels, t.thing_masks, t.thing_ids, t.stuff_masks,
                                                  torch.zeros(2, 2, dtype=torch.long))])


# ---------------------------------------------------------------------------------------------------------------
# Criterion on the tiny network
# ---------------------------------------------------------------------------------------------------------------

HEIGHT, WIDTH = 64, 128


def _panoptic(shift: int, with_things: bool = True) -> np.ndarray:
    pan = np.zeros((HEIGHT, WIDTH), dtype=np.int64)          # road
    pan[:16] = 10 * 1000                                      # sky
    pan[16:24, :] = 2 * 1000                                  # building
    pan[60:, :8] = 255 * 1000                                 # void corner
    if with_things:
        pan[24:48, 16 + shift: 48 + shift] = 13 * 1000 + 1    # car 1
        pan[24:56, 72 - shift: 112 - shift] = 13 * 1000 + 2   # car 2
    return pan


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    cfg = resolve_config("tiny")
    crit = VideoKNetCriterion(num_proposals=cfg.model.num_proposals, num_thing_classes=cfg.data.num_things,
                              num_classes=cfg.data.num_classes, weights=LossWeights())
    return cfg, crit


def _forward(net, cfg, key: torch.Tensor, ref: torch.Tensor):  # type: ignore[no-untyped-def]
    ref_out = net(ref, torch.zeros(1, net.num_kernels, cfg.model.channels), torch.zeros(1))
    key_out = net(key, ref_out.kernels, torch.ones(1))
    return key_out, ref_out


@pytest.mark.parametrize("with_things", [True, False])
def test_tiny_network_losses_are_finite(tiny, with_things: bool) -> None:  # type: ignore[no-untyped-def]
    cfg, crit = tiny
    torch.manual_seed(0)
    net = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    key, ref = (torch.rand(1, 3, HEIGHT, WIDTH, generator=g) * 255 for _ in range(2))
    mask_size = (HEIGHT // net.mask_stride, WIDTH // net.mask_stride)
    key_t = [targets_from_panoptic(_panoptic(2, with_things), cfg.data, mask_size)]
    ref_t = [targets_from_panoptic(_panoptic(0, with_things), cfg.data, mask_size)]
    assert key_t[0].thing_ids.numel() == (2 if with_things else 0)
    total, parts = crit(*_forward(net, cfg, key, ref), key_t, ref_t)
    assert math.isfinite(total.item()) and all(math.isfinite(v) for v in parts.values())
    expected = {"init_bce", "init_dice", "init_rank", "semantic", "track_ce", "track_l2", "total"}
    expected |= {f"s{s}_{name}" for s in (1, 2) for name in ("focal", "bce", "dice")}
    assert set(parts) == expected
    total.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if with_things:
        assert parts["track_ce"] > 0.0 and net.embedding.layers[-1].weight.grad.abs().sum() > 0
    else:
        assert parts["track_ce"] == parts["track_l2"] == 0.0
    # With the vote loss on, its term joins the others and stays finite on the real network.
    voting = VideoKNetCriterion(num_proposals=cfg.model.num_proposals, num_thing_classes=cfg.data.num_things,
                                num_classes=cfg.data.num_classes, weights=LossWeights(vote=1.0), vote_power=0.5)
    _, with_vote = voting(*_forward(net, cfg, key, ref), key_t, ref_t)
    assert set(with_vote) == expected | {"vote"} and math.isfinite(with_vote["vote"]) and with_vote["vote"] > 0


def test_optimisation_steps_reduce_the_loss(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg, crit = tiny
    torch.manual_seed(0)
    net = build_model(cfg)
    g = torch.Generator().manual_seed(2)
    key, ref = (torch.rand(1, 3, HEIGHT, WIDTH, generator=g) * 255 for _ in range(2))
    mask_size = (HEIGHT // net.mask_stride, WIDTH // net.mask_stride)
    key_t = [targets_from_panoptic(_panoptic(2), cfg.data, mask_size)]
    ref_t = [targets_from_panoptic(_panoptic(0), cfg.data, mask_size)]
    # lr 1e-4 (the paper's): at 1e-3 Adam's first, sign-like steps from a random init overshoot the dynamic
    # mask kernels and the loss goes up before it comes down.
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    losses = []
    for _ in range(4):
        total, _ = crit(*_forward(net, cfg, key, ref), key_t, ref_t)
        losses.append(total.item())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert losses[-1] < losses[0] - 0.5, losses
