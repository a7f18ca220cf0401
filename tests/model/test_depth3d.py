"""3D placement from mask depth and per-track velocities, on scenes with known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from vknet_model.depth3d import MotionFilter, Placer, depth_in_metres, place, resample_depth

K = (700.0, 700.0, 320.0, 120.0)  # fx, fy, cx, cy of a 640x240 camera


def _scene(z_object: float = 10.0, z_background: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A 60x40 px box at depth z_object in front of a wall at z_background; the mask reaches one pixel past the
    box on every side, onto the wall, as predicted masks do at object edges."""
    depth = np.full((240, 640), z_background, np.float32)
    depth[100:140, 400:460] = z_object
    mask = np.zeros((240, 640), bool)
    mask[99:141, 399:461] = True
    return mask, depth


def test_depth_encodings_follow_rep_118() -> None:
    millimetres = np.array([[0, 1500, 65535]], np.uint16)
    np.testing.assert_allclose(depth_in_metres(millimetres, "16UC1"), [[np.nan, 1.5, 65.535]], rtol=1e-6)
    metres = np.array([[np.nan, np.inf, -1.0, 0.0, 2.25]], np.float32)
    np.testing.assert_array_equal(depth_in_metres(metres, "32FC1"), [[np.nan] * 4 + [2.25]])
    with pytest.raises(ValueError, match="REP 118"):
        depth_in_metres(millimetres, "mono16")


def test_the_mask_not_the_box_places_a_thing_even_with_edge_pixels_on_the_background() -> None:
    mask, depth = _scene()
    placed = place(mask, depth, K)
    assert placed is not None
    fx, fy, cx, cy = K
    centre_u, centre_v = (400 + 459) / 2, (100 + 139) / 2
    expected = ((centre_u - cx) / fx * 10.0, (centre_v - cy) / fy * 10.0, 10.0)
    np.testing.assert_allclose(placed.position, expected, rtol=0.01, atol=0.01)
    assert placed.size[2] == pytest.approx(0.0, abs=1e-6)  # a flat box: no depth extent
    assert placed.size[0] == pytest.approx(59 * 0.8 / fx * 10.0, rel=0.1)  # 10th-90th percentile of its width
    # What a box crop with the mean gives: pulled far towards the wall.
    box_mean = float(depth[99:141, 399:461].mean())
    assert box_mean > 10.5


def test_holes_thin_things_and_no_depth() -> None:
    mask, depth = _scene()
    holed = depth.copy()
    holed[100:140:2, 400:460:2] = np.nan  # a quarter of the object has no depth (glass, stereo holes)
    placed = place(mask, holed, K)
    assert placed is not None and placed.position[2] == pytest.approx(10.0)
    thin = np.zeros_like(mask)
    thin[100:140, 420:422] = True  # a pole two pixels wide: the eroded mask is empty, the mask itself is used
    pole = place(thin, depth, K)
    assert pole is not None and pole.position[2] == pytest.approx(10.0) and pole.depth_pixels == 80
    assert place(mask, np.full_like(depth, np.nan), K) is None
    assert place(np.zeros_like(mask), depth, K) is None


def test_depth_of_another_resolution_is_resampled_through_both_intrinsics() -> None:
    mask, _ = _scene()
    # The same scene seen by a half-resolution depth camera whose principal point is off by 3 px.
    depth_k = (350.0, 350.0, 163.0, 60.0)
    half = np.full((120, 320), 30.0, np.float32)
    rows = np.arange(120)[:, None]
    cols = np.arange(320)[None, :]
    u = (cols - depth_k[2]) / depth_k[0] * K[0] + K[2]
    v = (rows - depth_k[3]) / depth_k[1] * K[1] + K[3]
    half[(u >= 400) & (u < 460) & (v >= 100) & (v < 140)] = 10.0
    on_colour = resample_depth(half, depth_k, K, (240, 640))
    assert on_colour.shape == (240, 640)
    placed = place(mask, on_colour, K)
    assert placed is not None and placed.position[2] == pytest.approx(10.0)
    stretched = np.repeat(np.repeat(half, 2, 0), 2, 1)  # the blind stretch misplaces the box by 6 px
    assert np.mean(stretched[100:140, 400:460] == 10.0) < np.mean(on_colour[100:140, 400:460] == 10.0)


def test_velocity_of_a_moving_thing_converges_and_resets() -> None:
    rng = np.random.default_rng(0)
    motion = MotionFilter()
    true_velocity = np.array([1.5, 0.0, -4.0])  # crossing to the right and approaching
    velocity = (0.0, 0.0, 0.0)
    for frame in range(20):
        t = frame * 0.1
        position = np.array([-2.0, 1.0, 20.0]) + true_velocity * t + rng.normal(0, 0.03, 3)
        velocity = motion.update(7, t, tuple(position))
        if frame == 0:
            assert velocity == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(velocity, true_velocity, atol=0.35)
    assert motion.update(7, 1.9, (0.0, 0.0, 0.0)) == velocity  # time did not move on: nothing learnt
    motion.keep_only({8})
    assert motion.update(7, 2.0, (0.0, 1.0, 12.0)) == (0.0, 0.0, 0.0)  # forgotten: a first measurement again
    motion.reset()
    assert motion.update(7, 2.1, (0.0, 1.0, 12.0)) == (0.0, 0.0, 0.0)


def test_a_jump_no_thing_can_make_restarts_the_track_instead_of_a_huge_velocity() -> None:
    """An identity switch moves a track's position by metres in one frame: the filter starts again (velocity
    0, one measurement) rather than report tens of m/s; ordinary motion at 30 m/s is not gated."""
    motion = MotionFilter()
    for t in range(6):  # 30 m/s along x at 20 m, 10 Hz
        motion.update(1, t * 0.1, (3.0 * t, 0.0, 20.0))
    assert motion.velocity(1)[0] == pytest.approx(30.0, rel=0.05) and motion.restarts == 0
    assert motion.update(1, 0.6, (-4.0, 0.0, 9.0)) == (0.0, 0.0, 0.0)  # another thing under the same id
    assert motion.restarts == 1 and motion.measurements(1) == 1
    vx, _, _ = motion.update(1, 0.7, (-4.1, 0.0, 9.0))
    assert vx == pytest.approx(-1.0) and motion.measurements(1) == 2


def test_the_placer_looks_for_a_mask_in_its_box_only_and_finds_the_same_placement() -> None:
    panoptic = np.zeros((60, 100), np.int32)
    panoptic[20:40, 30:50] = 13001
    panoptic[5:15, 70:90] = 11001
    depth = np.full((60, 100), 12.0, np.float32)
    depth[20:40, 30:50] = 8.0
    k = (80.0, 80.0, 50.0, 30.0)
    whole = Placer(1000).step(panoptic, [(7, 13001, None), (8, 11001, None)], depth, k, 0.0)
    boxed = Placer(1000).step(panoptic, [(7, 13001, (30.0, 20.0, 50.0, 40.0)), (8, 11001, (70.2, 5.0, 89.6, 15.0))],
                              depth, k, 0.0)
    assert [p.placement for p in boxed] == [p.placement for p in whole]
    assert boxed[0].placement is not None and boxed[0].placement.position[2] == pytest.approx(8.0)
    assert boxed[0].placement.position[0] == pytest.approx((39.5 - 50.0) / 80.0 * 8.0, abs=0.11)
    # A box that misses the mask (a stale box) finds nothing rather than another thing's pixels.
    assert Placer(1000).step(panoptic, [(7, 13001, (0.0, 0.0, 10.0, 10.0))], depth, k, 0.0)[0].placement is None
