"""The node's 3D output over real DDS: the bundled model on held-out synthetic frames with registered depth
(16UC1 millimetres, KITTI intrinsics), paired by stamp; then depth that is damaged in every way a camera or
a sender can damage it. The node never dies, a thing it cannot place says has_position false, and each
such thing is counted under a fixed reason."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.ros.node_client import NodeClient, camera_info, depth_msg, header, wait_for
from vknet_data.synth import SynthConfig, SyntheticScene
from vknet_eval.placement import PlacementScorer, PredictedThing
from vknet_ros import depth_input, vision_messages
from vknet_ros.conversions import image_msg_to_labels

pytestmark = [pytest.mark.skipif(not depth_input.available(),
                                 reason="message_filters is not installed (make ros-kit installs it)"),
              pytest.mark.usefixtures("rclpy_context")]

FPS = 10.0
CFG = SynthConfig(frames=12)
K = (CFG.focal, CFG.focal, CFG.width / 2, CFG.height / 2)




@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(0, 1000, CFG)  # held out: evaluation's seed and sequences


@pytest.fixture(scope="module")
def client() -> Iterator[NodeClient]:
    c = NodeClient(depth=True, depth_wait_s=1.0)
    assert c.connected(depth=True)
    yield c
    c.close()


def _send(c: NodeClient, image: np.ndarray, stamp: float, depth: object | None, info: bool = True) -> None:
    cam = c.cameras[""]
    h = header(stamp, "camera")
    if info:
        cam.info.publish(camera_info(h, CFG.width, CFG.height, K))
    if depth is not None:
        cam.depth.publish(depth)
    before = len(cam.tracks)
    cam.send(image, h)
    assert wait_for(lambda: len(cam.tracks) > before), f"no answer to the frame at {stamp}"


def test_tracked_things_are_placed_within_3_percent_and_move_the_right_way(client: NodeClient,
                                                                          scene: SyntheticScene) -> None:
    cam = client.cameras[""]
    scorer = PlacementScorer()
    motion: dict[int, int] = {}
    for t in range(CFG.frames):
        image, gt_panoptic, gt_depth = scene.frame_with_depth(t)
        _send(client, image, 50.0 + t / FPS, depth_msg(gt_depth, header(50.0 + t / FPS, "camera")))
        tracks, panoptic = cam.tracks[-1], image_msg_to_labels(cam.panoptic[-1])
        assert tracks.header.stamp == cam.panoptic[-1].header.stamp
        things = []
        for o in tracks.objects:
            # A track's positions count from its first placed frame; the scorer settles on 5 of them.
            motion[o.track_id] = motion.get(o.track_id, 0) + 1 if o.has_position else 0
            position = (o.position.x, o.position.y, o.position.z) if o.has_position else None
            things.append(PredictedThing(o.track_id, o.class_id * 1000 + o.instance, position,
                                         (o.velocity.x, o.velocity.y, o.velocity.z), motion[o.track_id]))
        scorer.add_frame(panoptic, things, gt_panoptic, gt_depth, K, scene.velocities_m_s(t, FPS))
    summary = scorer.summary()
    print(summary)
    assert summary["matched"] >= 30 and summary["unplaced"] == 0
    assert summary["position_error_pct_median"] < 3.0
    assert summary["velocity_scored"] >= 3 and summary["velocity_direction_right_pct"] >= 80.0
    camera = client.node.cameras[0]
    assert camera.counters["placed"] >= summary["matched"]
    assert sum(camera.unplaced.values()) == 0 and camera.bad_reasons["depth"] == 0


def _one_frame_outcome(client: NodeClient, scene: SyntheticScene, stamp: float, depth: object | None,
                       info: bool = True) -> tuple[list[bool], dict[str, int], int]:
    """has_position of the answer's things, the unplaced counts it added, the bad depth messages it added."""
    camera = client.node.cameras[0]
    unplaced_before, bad_before = dict(camera.unplaced), camera.bad_reasons["depth"]
    image, _, _ = scene.frame_with_depth(3)
    _send(client, image, stamp, depth, info)
    added = {k: camera.unplaced[k] - unplaced_before[k] for k in camera.unplaced if camera.unplaced[k] !=
             unplaced_before[k]}
    return [o.has_position for o in client.cameras[""].tracks[-1].objects], added, \
        camera.bad_reasons["depth"] - bad_before


def test_damaged_depth_is_counted_and_never_stops_the_node(client: NodeClient, scene: SyntheticScene) -> None:
    _, _, gt_depth = scene.frame_with_depth(3)
    stamp = iter(np.arange(200.0, 300.0, 5.0))  # far apart: every frame starts the tracker again

    def at(s: float, depth: np.ndarray, encoding: str = "16UC1") -> object:
        return depth_msg(depth, header(s, "camera"), encoding)

    s = next(stamp)
    placed, added, bad = _one_frame_outcome(client, scene, s, at(s, gt_depth))
    assert placed and all(placed) and not added and not bad
    n = len(placed)

    holes = gt_depth.copy()
    holes[:, ::2] = np.nan  # every other column missing: still enough depth under each mask
    s = next(stamp)
    placed, added, _ = _one_frame_outcome(client, scene, s, at(s, holes))
    assert sum(placed) >= n - 1

    for encoding in ("16UC1", "32FC1"):  # no valid depth at all (zeros, NaNs)
        s = next(stamp)
        placed, added, bad = _one_frame_outcome(client, scene, s, at(s, np.full_like(gt_depth, np.nan), encoding))
        assert not any(placed) and added == {"few_depth_pixels": len(placed)} and not bad

    half = gt_depth[::2, ::2]  # another resolution: registered only with depth/camera_info of its size
    s = next(stamp)
    placed, added, _ = _one_frame_outcome(client, scene, s, at(s, half))
    assert not any(placed) and added == {"depth_camera_info": len(placed)}
    client.cameras[""].depth_info.publish(camera_info(header(s, "camera"), half.shape[1], half.shape[0],
                                                      tuple(v / 2 for v in K)))  # type: ignore[arg-type]
    assert wait_for(lambda: client.node.cameras[0].depth_intrinsics is not None)
    s = next(stamp)
    placed, added, _ = _one_frame_outcome(client, scene, s, at(s, half))
    assert sum(placed) >= n - 1

    s = next(stamp)
    wrong = at(s, gt_depth)
    wrong.encoding = "rgb8"  # type: ignore[attr-defined]
    placed, added, bad = _one_frame_outcome(client, scene, s, wrong)
    assert not any(placed) and added == {"bad_depth": len(placed)} and bad == 1

    s = next(stamp)
    cut = at(s, gt_depth)
    cut.data = cut.data[:1000]  # type: ignore[attr-defined]
    placed, added, bad = _one_frame_outcome(client, scene, s, cut)
    assert not any(placed) and added == {"bad_depth": len(placed)} and bad == 1

    s = next(stamp)
    placed, added, _ = _one_frame_outcome(client, scene, s, at(s + 1.0, gt_depth))  # a stamp beyond the slop
    assert not any(placed) and added == {"no_depth": len(placed)}

    camera = client.node.cameras[0]
    camera.intrinsics = None  # as before any camera_info arrived
    s = next(stamp)
    placed, added, _ = _one_frame_outcome(client, scene, s, at(s, gt_depth), info=False)
    assert not any(placed) and added == {"no_camera_info": len(placed)}

    s = next(stamp)
    placed, added, bad = _one_frame_outcome(client, scene, s, at(s, gt_depth))  # and all is well again
    assert all(placed) and not added and not bad
    assert camera.counters["errors"] == 0


@pytest.mark.skipif(not vision_messages.available(), reason="vision_msgs is not installed (make ros-kit)")
def test_detections_3d_carry_the_placed_tracks(client: NodeClient, scene: SyntheticScene) -> None:
    from vision_msgs.msg import Detection3DArray

    from tests.ros.node_client import RELIABLE

    got: list[Detection3DArray] = []
    client.client.create_subscription(Detection3DArray, "detections_3d", got.append, RELIABLE)
    assert wait_for(lambda: client.node.count_subscribers("/detections_3d") > 0)
    image, _, gt_depth = scene.frame_with_depth(5)
    _send(client, image, 400.0, depth_msg(gt_depth, header(400.0, "camera")))
    assert wait_for(lambda: bool(got))
    tracks = client.cameras[""].tracks[-1]
    placed = {str(o.track_id): o for o in tracks.objects if o.has_position}
    assert placed and {d.id for d in got[-1].detections} == set(placed)
    for detection in got[-1].detections:
        o = placed[detection.id]
        assert detection.bbox.center.position.z == pytest.approx(o.position.z)
        assert detection.bbox.size.x == pytest.approx(o.size.x) and detection.header.stamp == tracks.header.stamp
