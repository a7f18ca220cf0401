"""The 3D parts of the node's messages (TrackedObject fields, markers) and their bird's-eye drawing."""

from __future__ import annotations

from pathlib import Path

import pytest
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from vknet_model.depth3d import Placement, TrackPlacement
from vknet_model.pipeline import TrackedObjectInfo
from vknet_ros.marker_view import BACKGROUND, draw_top_view
from vknet_ros.messages import markers_msg, tracks_msg

K = (700.0, 700.0, 620.0, 187.0)


def _thing(track_id: int) -> TrackedObjectInfo:
    return TrackedObjectInfo(track_id=track_id, instance=track_id + 1, class_id=13, class_name="car", score=0.9,
                             box=(100.0, 150.0, 300.0, 250.0), mask_area=12000, centroid=(200.0, 200.0), age=3)


PLACEMENTS = {
    1: TrackPlacement(1, Placement(position=(2.0, 1.0, 10.0), size=(1.8, 1.4, 0.5), depth_pixels=900),
                      velocity=(-3.0, 0.0, 0.5), motion_frames=4),
    2: TrackPlacement(2, Placement(position=(-4.0, 1.0, 15.0), size=(0.6, 1.7, 0.3), depth_pixels=150),
                      velocity=(0.05, 0.0, 0.0), motion_frames=2),  # standing still
    3: TrackPlacement(3, None, velocity=(1.0, 0.0, 0.0), motion_frames=6),  # no depth this frame
}


def test_tracked_objects_carry_position_size_velocity_and_why_not() -> None:
    msg = tracks_msg([_thing(1), _thing(3), _thing(4)], Header(frame_id="camera"), PLACEMENTS)
    placed, unplaced, unknown = msg.objects
    assert placed.has_position and (placed.position.x, placed.position.y, placed.position.z) == (2.0, 1.0, 10.0)
    assert (placed.size.x, placed.size.y, placed.size.z) == pytest.approx((1.8, 1.4, 0.5))
    assert (placed.velocity.x, placed.velocity.z) == (-3.0, 0.5) and placed.depth_pixels == 900
    assert not unplaced.has_position and unplaced.position.z == 0.0 and unplaced.velocity.x == 1.0
    assert not unknown.has_position and unknown.velocity.x == 0.0
    assert not any(o.has_position for o in tracks_msg([_thing(1)], Header()).objects)  # no depth input at all


def test_markers_place_spheres_labels_and_velocity_arrows_in_3d() -> None:
    markers = markers_msg([_thing(1), _thing(2), _thing(3)], Header(frame_id="camera"), K, PLACEMENTS).markers
    assert markers[0].action == Marker.DELETEALL
    by_kind = {(m.ns, m.id): m for m in markers[1:]}
    sphere = by_kind[("vknet_positions", 1)]
    assert sphere.type == Marker.SPHERE and (sphere.pose.position.x, sphere.pose.position.z) == (2.0, 10.0)
    arrow = by_kind[("vknet_velocities", 1)]
    assert arrow.type == Marker.ARROW and (arrow.points[1].x, arrow.points[1].z) == (-1.0, 10.5)  # 1 s ahead
    assert "10.0 m" in by_kind[("vknet_labels", 1)].text
    assert ("vknet_velocities", 2) not in by_kind and ("vknet_positions", 2) in by_kind  # too slow for an arrow
    box = by_kind[("vknet_boxes", 3)]  # unplaced: its box on the 1 m plane
    assert box.type == Marker.LINE_STRIP and {p.z for p in box.points} == {1.0}
    assert ("vknet_positions", 3) not in by_kind


def test_the_top_view_draws_each_marker_where_it_is() -> None:
    markers = markers_msg([_thing(1), _thing(2)], Header(frame_id="camera"), K, PLACEMENTS)
    view = draw_top_view(markers, 200, 300, range_m=20.0)
    scale = (200 - 20) / 20.0
    # thing 1's sphere at x = 2 m, z = 10 m; thing 2's at x = -4 m, z = 15 m
    for x, z in ((2.0, 10.0), (-4.0, 15.0)):
        u, v = round(150 + x * scale), round(190 - z * scale)
        assert tuple(view[v, u]) != BACKGROUND
    assert tuple(view[190 - 2 * 18, 150 + 12]) == BACKGROUND  # nothing at (1.3 m, 2 m)


def test_view3d_writes_the_picture_and_checks_its_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    from vknet_cli import main

    out = tmp_path / "view.png"
    assert main(["view3d", "--frames", "3", "--rows", "0", "2", "--out", str(out)]) == 0
    picture = cv2.imread(str(out))
    assert picture.shape == (2 * 375, 1242 + 2 * 375, 3)
    assert "placed" in capsys.readouterr().out
    assert main(["view3d", "--frames", "3", "--rows", "3"]) == 2
    assert "--rows" in capsys.readouterr().err
