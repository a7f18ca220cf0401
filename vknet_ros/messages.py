"""Build the node's output messages from Pipeline results (pure functions; the node only publishes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from vknet_model.config import DataConfig
from vknet_model.depth3d import TrackPlacement
from vknet_model.pipeline import TrackedObjectInfo
from vknet_ros.msg import BoundingBox2D, ClassMap, TrackedObject, TrackedObjectArray
from vknet_ros.overlay import track_colour

MARKER_DEPTH_M = 1.0  # a thing without a 3D position is drawn as its box on the plane 1 m in front of the camera
SPHERE_M = 0.5        # diameter of the sphere at a placed thing's position
MIN_ARROW_M_S = 0.2   # slower things get no velocity arrow (the filter's noise at standstill)
Placements = Mapping[int, TrackPlacement]  # track id -> this frame's 3D placement


def tracks_msg(objects: Sequence[TrackedObjectInfo], header: Header,
               placements: Placements | None = None) -> TrackedObjectArray:
    out = TrackedObjectArray(header=header)
    for o in objects:
        x1, y1, x2, y2 = o.box
        placed = placements.get(o.track_id) if placements else None
        three_d = {}
        if placed is not None:
            three_d["velocity"] = Vector3(x=placed.velocity[0], y=placed.velocity[1], z=placed.velocity[2])
            if placed.placement is not None:
                p = placed.placement
                three_d.update(has_position=True, depth_pixels=p.depth_pixels,
                               position=Point(x=p.position[0], y=p.position[1], z=p.position[2]),
                               size=Vector3(x=p.size[0], y=p.size[1], z=p.size[2]))
        out.objects.append(TrackedObject(**three_d,  # type: ignore[arg-type]
            track_id=o.track_id, instance=o.instance, class_id=o.class_id, class_name=o.class_name,
            score=float(o.score),
            bbox=BoundingBox2D(center_x=(x1 + x2) / 2, center_y=(y1 + y2) / 2, size_x=x2 - x1, size_y=y2 - y1),
            mask_area=int(o.mask_area), centroid=Point(x=float(o.centroid[0]), y=float(o.centroid[1]), z=0.0),
            age=int(o.age)))
    return out


def class_map_msg(data: DataConfig, label_divisor: int, header: Header) -> ClassMap:
    return ClassMap(header=header, class_names=list(data.class_names), thing_ids=list(data.thing_ids),
                    label_divisor=label_divisor, void_id=data.void_id)


def markers_msg(objects: Sequence[TrackedObjectInfo], header: Header, intrinsics: tuple[float, float, float, float],
                placements: Placements | None = None) -> MarkerArray:
    """RViz markers in the camera's optical frame: a thing with a 3D position is a sphere there, an "id class
    distance" label above it and an arrow of the distance it covers in one second; one without is its box
    outline and "id class" label on the plane z = 1 m.

    Args:
        intrinsics: fx, fy, cx, cy from camera_info (the node guesses them when no camera_info arrives).
    """
    fx, fy, cx, cy = intrinsics
    array = MarkerArray()
    array.markers.append(Marker(header=header, action=Marker.DELETEALL))

    def ray(u: float, v: float) -> Point:
        return Point(x=(u - cx) / fx * MARKER_DEPTH_M, y=(v - cy) / fy * MARKER_DEPTH_M, z=MARKER_DEPTH_M)

    for o in objects:
        r, g, b = track_colour(o.track_id)
        colour = ColorRGBA(r=r / 255, g=g / 255, b=b / 255, a=1.0)
        placed = placements.get(o.track_id) if placements else None
        if placed is not None and placed.placement is not None:
            array.markers += _markers_3d(o, placed, header, colour)
            continue
        x1, y1, x2, y2 = o.box
        box = Marker(header=header, ns="vknet_boxes", id=int(o.track_id % 2**31), type=Marker.LINE_STRIP,
                     action=Marker.ADD, color=colour)
        box.scale.x = 0.004
        box.pose.orientation.w = 1.0
        box.points = [ray(x1, y1), ray(x2, y1), ray(x2, y2), ray(x1, y2), ray(x1, y1)]
        label = Marker(header=header, ns="vknet_labels", id=int(o.track_id % 2**31), type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, color=colour, text=f"{o.track_id} {o.class_name}")
        label.scale.z = 0.04
        label.pose.position = ray((x1 + x2) / 2, y1)
        label.pose.orientation.w = 1.0
        array.markers += [box, label]
    return array


def _markers_3d(o: TrackedObjectInfo, placed: TrackPlacement, header: Header, colour: ColorRGBA) -> list[Marker]:
    assert placed.placement is not None
    x, y, z = placed.placement.position
    marker_id = int(o.track_id % 2**31)
    sphere = Marker(header=header, ns="vknet_positions", id=marker_id, type=Marker.SPHERE, action=Marker.ADD,
                    color=colour)
    sphere.pose.position = Point(x=x, y=y, z=z)
    sphere.pose.orientation.w = 1.0
    sphere.scale.x = sphere.scale.y = sphere.scale.z = SPHERE_M
    label = Marker(header=header, ns="vknet_labels", id=marker_id, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                   color=colour, text=f"{o.track_id} {o.class_name} {z:.1f} m")
    label.scale.z = 0.5
    label.pose.position = Point(x=x, y=y - placed.placement.size[1] / 2 - SPHERE_M, z=z)  # y points down
    label.pose.orientation.w = 1.0
    out = [sphere, label]
    vx, vy, vz = placed.velocity
    if (vx * vx + vy * vy + vz * vz) ** 0.5 >= MIN_ARROW_M_S:
        arrow = Marker(header=header, ns="vknet_velocities", id=marker_id, type=Marker.ARROW, action=Marker.ADD,
                       color=colour, points=[Point(x=x, y=y, z=z), Point(x=x + vx, y=y + vy, z=z + vz)])
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.1, 0.25, 0.3  # shaft and head diameters, head length
        arrow.pose.orientation.w = 1.0
        out.append(arrow)
    return out
