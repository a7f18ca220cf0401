"""Panoptic assembly on hand-built 4x4 masks (merge at mask resolution: upsample=1, stride 4).

Classes (network order): 0, 1 things; 2, 3 stuff. Kernels: 2 thing proposals, then stuff 2 and stuff 3.
"""

from __future__ import annotations

import torch

from vknet_model.panoptic import assemble_panoptic, slot_scores_and_labels

ON, OFF = 8.0, -8.0  # mask logits: sigmoid ~ 1 and ~ 0


def _mask(rows: slice, cols: slice) -> torch.Tensor:
    m = torch.full((4, 4), OFF)
    m[rows, cols] = ON
    return m


def _assemble(cls_scores: torch.Tensor, masks: torch.Tensor, sem: torch.Tensor | None = None,
              **thr: float):  # type: ignore[no-untyped-def]
    if sem is None:
        sem = torch.zeros(4, 4, 4)
        sem[2] = 1.0  # semantic head says class 2 everywhere
    args = {"instance_score_thr": 0.25, "overlap_thr": 0.6, "mask_thr": 0.5} | thr
    return assemble_panoptic(cls_scores, masks, sem, num_proposals=2, num_thing_classes=2, mask_stride=4,
                             upsample=1, **args)


def _scores(thing_a: tuple[float, float], thing_b: tuple[float, float], stuff: tuple[float, float]) -> torch.Tensor:
    scores = torch.zeros(4, 4)
    scores[0, :2] = torch.tensor(thing_a)
    scores[1, :2] = torch.tensor(thing_b)
    scores[2, 2] = stuff[0]
    scores[3, 3] = stuff[1]
    return scores


def test_scores_and_labels() -> None:
    scores, labels = slot_scores_and_labels(_scores((0.1, 0.9), (0.7, 0.2), (0.5, 0.6)), num_proposals=2,
                                            num_thing_classes=2)
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, 0.5, 0.6]))
    assert labels.tolist() == [1, 0, 2, 3]


def test_things_on_stuff_with_boxes_and_areas() -> None:
    masks = torch.stack([_mask(slice(0, 2), slice(0, 2)),   # thing A: top-left 2x2
                         _mask(slice(2, 4), slice(3, 4)),   # thing B: right column, bottom 2 rows
                         _mask(slice(0, 4), slice(0, 4)),   # stuff 2 everywhere
                         _mask(slice(0, 0), slice(0, 0))])  # stuff 3 nowhere
    out = _assemble(_scores((0.9, 0.0), (0.0, 0.8), (0.5, 0.5)), masks)
    assert out.slot_map.tolist() == [[0, 0, 2, 2], [0, 0, 2, 2], [2, 2, 2, 1], [2, 2, 2, 1]]
    assert out.keep.tolist() == [True, True, True, False]
    assert out.areas.tolist() == [4, 2, 10, 0]
    assert out.labels.tolist() == [0, 1, 2, 3]
    # Boxes in pixels of the stride-4 grid: thing A covers cells x 0..1, y 0..1.
    assert out.boxes[0].tolist() == [0.0, 0.0, 8.0, 8.0]
    assert out.boxes[1].tolist() == [12.0, 8.0, 16.0, 16.0]
    assert out.boxes[3].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert out.slot_map.dtype == torch.int32 and out.semantic_map.dtype == torch.int32


def test_low_score_thing_does_not_vote() -> None:
    masks = torch.stack([_mask(slice(0, 2), slice(0, 2)), _mask(slice(0, 0), slice(0, 0)),
                         _mask(slice(0, 4), slice(0, 4)), _mask(slice(0, 0), slice(0, 0))])
    out = _assemble(_scores((0.2, 0.0), (0.0, 0.0), (0.1, 0.0)), masks)  # thing below 0.25, stuff at 0.1
    assert not out.keep[0] and out.keep[2]
    assert (out.slot_map == 2).all()  # the weak stuff takes everything: stuff kernels are not thresholded
    out = _assemble(_scores((0.2, 0.0), (0.0, 0.0), (0.1, 0.0)), masks, instance_score_thr=0.15)
    assert out.keep[0] and out.slot_map[0, 0] == 0


def test_overlap_threshold_drops_an_occluded_segment_and_semantic_fills_in() -> None:
    # A (score 0.9) covers columns 0-2; B (0.8) covers columns 1-3: B wins only column 3 = 4 of its 12 pixels.
    masks = torch.stack([_mask(slice(0, 4), slice(0, 3)), _mask(slice(0, 4), slice(1, 4)),
                         _mask(slice(0, 0), slice(0, 0)), _mask(slice(0, 0), slice(0, 0))])
    sem = torch.zeros(4, 4, 4)
    sem[3] = 1.0  # the semantic head says class 3 where nobody claims
    out = _assemble(_scores((0.9, 0.0), (0.8, 0.0), (0.0, 0.0)), masks, sem)
    assert out.keep.tolist() == [True, False, False, False]
    assert out.slot_map[:, 3].tolist() == [-1, -1, -1, -1]
    assert out.semantic_map[:, 3].tolist() == [3, 3, 3, 3]
    assert out.semantic_map[:, 0].tolist() == [0, 0, 0, 0]
    # A lower overlap threshold (4/12 = 0.33 >= 0.3) keeps B's visible part.
    out = _assemble(_scores((0.9, 0.0), (0.8, 0.0), (0.0, 0.0)), masks, sem, overlap_thr=0.3)
    assert out.keep[1] and out.slot_map[:, 3].tolist() == [1, 1, 1, 1]


def test_a_score_power_below_one_lets_a_confident_mask_keep_its_pixels() -> None:
    # A (score 0.9) has a weak mask (0.6) over columns 0-3; B (score 0.4) a confident one (0.95) over column 3.
    logit = torch.logit(torch.tensor(0.6))
    masks = torch.stack([torch.full((4, 4), float(logit)), _mask(slice(0, 4), slice(3, 4)),
                         _mask(slice(0, 0), slice(0, 0)), _mask(slice(0, 0), slice(0, 0))])
    masks[1, :, 3] = torch.logit(torch.tensor(0.95))
    scores = _scores((0.9, 0.0), (0.4, 0.0), (0.0, 0.0))
    upstream = _assemble(scores, masks)                       # 0.9 x 0.6 = 0.54 beats 0.4 x 0.95 = 0.38
    assert (upstream.slot_map == 0).all() and not upstream.keep[1]
    rooted = _assemble(scores, masks, score_power=0.5)        # 0.95 x 0.6 = 0.57 loses to 0.63 x 0.95 = 0.60
    assert rooted.slot_map[:, 3].tolist() == [1, 1, 1, 1] and rooted.keep[1]
    assert (rooted.slot_map[:, :3] == 0).all()
    torch.testing.assert_close(rooted.scores, upstream.scores)  # the reported scores stay the classifier's


def test_result_does_not_depend_on_proposal_order() -> None:
    torch.manual_seed(0)
    masks = torch.randn(4, 4, 4) * 4
    scores = _scores((0.9, 0.1), (0.3, 0.6), (0.5, 0.7))
    out = _assemble(scores, masks)
    swapped = _assemble(scores[[1, 0, 2, 3]], masks[[1, 0, 2, 3]])
    remap = torch.tensor([1, 0, 2, 3])
    expected = torch.where(out.slot_map >= 0, remap[out.slot_map.clamp(min=0).long()], -1)
    assert torch.equal(swapped.slot_map.long(), expected)
    assert torch.equal(swapped.semantic_map, out.semantic_map)


def test_thresholds_as_tensors_give_the_same_result() -> None:
    torch.manual_seed(3)
    masks = torch.randn(4, 4, 4) * 4
    scores = _scores((0.9, 0.1), (0.3, 0.6), (0.5, 0.7))
    a = _assemble(scores, masks)
    sem = torch.zeros(4, 4, 4)
    sem[2] = 1.0
    b = assemble_panoptic(scores, masks, sem, num_proposals=2, num_thing_classes=2, mask_stride=4,
                          upsample=1, instance_score_thr=torch.tensor(0.25), overlap_thr=torch.tensor(0.6),
                          mask_thr=torch.tensor(0.5))
    assert torch.equal(a.slot_map, b.slot_map) and torch.equal(a.keep, b.keep)


def test_unclaimed_thing_pixels_go_to_the_best_kept_thing_or_stuff() -> None:
    # A (thing 0, kept) is sure of columns 0-1 and weak (sigmoid 0.4) in column 2; nobody claims columns 2-3.
    a = _mask(slice(0, 4), slice(0, 2))
    a[:, 2] = -0.405  # sigmoid ~0.4: below mask_thr (no claim) but above half of it
    masks = torch.stack([a, _mask(slice(0, 0), slice(0, 0)), _mask(slice(0, 0), slice(0, 0)),
                         _mask(slice(0, 0), slice(0, 0))])
    sem = torch.zeros(4, 4, 4)
    sem[0] = 1.0  # the semantic head calls every pixel thing class 0, with stuff 3 its best stuff class
    sem[3] = 0.5
    out = _assemble(_scores((0.9, 0.0), (0.0, 0.0), (0.0, 0.0)), masks, sem)
    assert out.keep.tolist() == [True, False, False, False]
    # Column 2 joins A (the best kept thing there); column 3, where no kept thing's mask reaches 0.25, takes the
    # semantic head's best stuff class (3 here): never thing class 0 without an instance, never void.
    assert out.slot_map[:, 2].tolist() == [0, 0, 0, 0] and out.slot_map[:, 3].tolist() == [-1, -1, -1, -1]
    assert out.semantic_map[:, 3].tolist() == [3, 3, 3, 3]
    assert out.semantic_map[:, 2].tolist() == [0, 0, 0, 0]
    assert out.areas[0] == 12
    # Where the semantic head says stuff, unclaimed pixels take its class as before.
    sem[0], sem[3] = 0.0, 1.0
    out = _assemble(_scores((0.9, 0.0), (0.0, 0.0), (0.0, 0.0)), masks, sem)
    assert out.semantic_map[:, 3].tolist() == [3, 3, 3, 3] and out.slot_map[:, 2].tolist() == [-1] * 4


def test_merge_from_bilinearly_upsampled_masks() -> None:
    # A thing whose stride-8 mask covers the left half: at merge stride 2 (x4) the slot map is 4x larger and the
    # boundary falls halfway between the cells, where the bilinearly interpolated probabilities cross.
    masks = torch.stack([_mask(slice(0, 4), slice(0, 2)), _mask(slice(0, 0), slice(0, 0)),
                         _mask(slice(0, 4), slice(2, 4)), _mask(slice(0, 0), slice(0, 0))])
    sem = torch.zeros(4, 4, 4)
    sem[2] = 1.0
    out = assemble_panoptic(_scores((0.9, 0.0), (0.0, 0.0), (0.9, 0.0)), masks, sem,
                            num_proposals=2, num_thing_classes=2, instance_score_thr=0.25, overlap_thr=0.6,
                            mask_thr=0.5, mask_stride=8, upsample=4)
    assert out.slot_map.shape == (16, 16)
    assert (out.slot_map[:, :8] == 0).all() and (out.slot_map[:, 8:] == 2).all()
    assert out.areas[0] == 128 and out.boxes[0].tolist() == [0.0, 0.0, 16.0, 32.0]
