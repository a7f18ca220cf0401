"""vknet_eval/agreement.py: panoptic cells compared up to the per-frame numbering of segments."""

from __future__ import annotations

import numpy as np

from vknet_eval.agreement import _renamed


def test_segments_numbered_in_another_order_are_the_same_segments() -> None:
    # road (stuff 0), car 13001 left and car 13002 right; the candidate numbers the two cars the other way
    reference = np.array([[13001, 13001, 0, 13002, 13002]])
    candidate = np.array([[13002, 13002, 0, 13001, 13001]])
    assert (_renamed(reference, candidate, 1000) == reference).all()


def test_a_segment_that_does_not_match_keeps_its_number() -> None:
    reference = np.array([[13001, 13001, 13001, 0, 0]])
    # the candidate's 13005 covers one of the car's three cells and two road cells: IoU 0.25, no match
    candidate = np.array([[0, 0, 13005, 13005, 13005]])
    assert (_renamed(reference, candidate, 1000) == candidate).all()
    # stuff and crowd (instance 0) are never renamed, even where a thing's cells are
    crowd = np.array([[13000, 13000, 13000, 0, 0]])
    assert (_renamed(reference, crowd, 1000) == crowd).all()
