"""Synthetic depth: a ground plane under a level KITTI-like camera, things at the depth they stand at, written
as KITTI's 16-bit millimetres; and 3D placements from it (vknet_model.depth3d) against the scene's geometry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vknet_data.synth import CAR, PERSON, SKY, SynthConfig, SyntheticScene, ground_depth_m, write_sequences
from vknet_model.depth3d import place

CFG = SynthConfig(frames=8)


def _contact(scene: SyntheticScene, thing: int) -> float:
    """The image row where the thing with panoptic id ``thing`` touches the ground (its lowest pixel may be
    hidden behind a nearer thing)."""
    (obj,) = [o for o in scene.objects if (o.cls, o.instance) == divmod(thing, 1000)]
    return obj.bottom


def test_depth_follows_the_ground_plane_and_each_thing_stands_on_it() -> None:
    scene = SyntheticScene(0, 1000, CFG)
    image, panoptic, depth = scene.frame_with_depth(3)
    plain_image, plain_panoptic = scene.frame(3)
    np.testing.assert_array_equal(image, plain_image)  # the same frame, plus depth
    np.testing.assert_array_equal(panoptic, plain_panoptic)
    assert depth.dtype == np.float32 and depth.shape == panoptic.shape
    semantic, instance = panoptic // 1000, panoptic % 1000
    assert np.isnan(depth[semantic == SKY]).all() and np.isfinite(depth[semantic != SKY]).all()
    # Stuff: the ground plane's depth by row below the horizon (a few metres at the bottom), far_m above it.
    rows = np.broadcast_to(np.arange(CFG.height)[:, None], depth.shape)
    stuff = ~np.isin(semantic, (CAR, PERSON, SKY))
    np.testing.assert_allclose(depth[stuff], ground_depth_m(rows[stuff], scene.horizon, CFG))
    assert depth[-1][stuff[-1]].max() < 8.0 and (depth[: scene.horizon][stuff[: scene.horizon]] == CFG.far_m).all()
    # Every thing at one depth: the ground's depth at its lowest pixel (its ground contact).
    things = 0
    for thing in np.unique(panoptic[(instance > 0) & np.isin(semantic, (CAR, PERSON))]):
        pixels = panoptic == thing
        z = depth[pixels]
        assert np.ptp(z) == 0 and z[0] == ground_depth_m(_contact(scene, int(thing)), scene.horizon, CFG)
        things += 1
    assert things >= 2


def test_mask_placement_recovers_the_scene_geometry_from_ground_truth_masks() -> None:
    """Ground-truth masks + synthetic depth -> the depth each thing stands at, overlaps included (a consistency
    check of the generator and depth3d; with the node's predicted masks the error is the model's)."""
    k = (CFG.focal, CFG.focal, CFG.width / 2, CFG.height / 2)
    errors = []
    for sequence in range(1000, 1003):
        scene = SyntheticScene(0, sequence, CFG)
        for t in (0, 4):
            _, panoptic, depth = scene.frame_with_depth(t)
            semantic, instance = panoptic // 1000, panoptic % 1000
            for thing in np.unique(panoptic[(instance > 0) & np.isin(semantic, (CAR, PERSON))]):
                mask = panoptic == thing
                if mask.sum() < 200:
                    continue
                placed = place(mask, depth, k)
                assert placed is not None
                truth = float(ground_depth_m(_contact(scene, int(thing)), scene.horizon, CFG))
                errors.append(abs(placed.position[2] - truth) / truth)
    assert len(errors) >= 10 and float(np.median(errors)) < 0.01, errors


def test_depth_is_written_as_16_bit_millimetres(tmp_path: Path) -> None:
    small = SynthConfig(height=96, width=320, frames=2)
    write_sequences(tmp_path, sequences=1, seed=4, cfg=small, progress=False, depth=True)
    written = cv2.imread(str(tmp_path / "depth" / "train" / "0000" / "000001.png"), cv2.IMREAD_UNCHANGED)
    depth = SyntheticScene(4, 0, small).frame_with_depth(1)[2]
    assert written.dtype == np.uint16 and written.shape == depth.shape
    assert np.all(written[np.isnan(depth)] == 0)
    np.testing.assert_allclose(written[np.isfinite(depth)] / 1000.0, depth[np.isfinite(depth)], atol=5e-4)
    plain = tmp_path / "plain"
    write_sequences(plain, sequences=1, seed=4, cfg=small, progress=False)
    assert not (plain / "depth").exists()


def test_synth_command_writes_depth_on_request(tmp_path: Path) -> None:
    from vknet_cli import main

    assert main(["synth", "--out", str(tmp_path), "--sequences", "1", "--frames", "2", "--height", "64", "--width",
                 "128", "--depth"]) == 0
    assert sorted(p.name for p in (tmp_path / "depth" / "train" / "0000").iterdir()) == ["000000.png", "000001.png"]


def test_velocities_from_ground_truth_tracks_follow_the_scene_motion() -> None:
    """Things move across the panorama while the camera pans: their velocity along x in the camera frame is
    (object px/frame - camera px/frame) * depth / focal * frame rate; depth does not change (vz = 0)."""
    from vknet_model.depth3d import Placer

    cfg = SynthConfig(frames=12, crowd_probability=0.0)
    k = (cfg.focal, cfg.focal, cfg.width / 2, cfg.height / 2)
    fps = 10.0
    checked = 0
    for sequence in range(1000, 1004):
        scene = SyntheticScene(0, sequence, cfg)
        placer = Placer(1000)
        last: dict[int, tuple[float, float, float]] = {}
        seen: dict[int, int] = {}
        for t in range(cfg.frames):
            _, panoptic, depth = scene.frame_with_depth(t)
            ids = [int(p) for p in np.unique(panoptic) if p % 1000 and p // 1000 in (CAR, PERSON)]
            # Things cut by the image border have a mask centre that lags their motion: left out (and forgotten).
            inside = [p for p in ids if not (panoptic[:, [0, -1]] == p).any()]
            for p in set(seen) - set(inside):
                seen[p] = 0
            objects = [(p, p, None) for p in inside]  # the panoptic id as a stand-in track id
            for placed in placer.step(panoptic, objects, depth, k, t / fps):
                if placed.placement is not None:
                    last[placed.track_id] = placed.velocity
                    seen[placed.track_id] = seen.get(placed.track_id, 0) + 1
        for obj in scene.objects:
            thing = obj.cls * 1000 + obj.instance
            if seen.get(thing, 0) < 6:
                continue  # the filter needs a few frames
            z = float(ground_depth_m(obj.bottom, scene.horizon, cfg))
            expected_vx = (obj.vx - cfg.camera_speed) * z / cfg.focal * fps
            vx, _, vz = last[thing]
            if abs(expected_vx) > 0.5:
                assert np.sign(vx) == np.sign(expected_vx), (thing, vx, expected_vx)
                assert abs(vx - expected_vx) < 0.15 * abs(expected_vx) + 0.2, (thing, vx, expected_vx)
                checked += 1
            assert abs(vz) < 0.5
    assert checked >= 3
