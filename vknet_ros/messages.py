"""Build the node's output messages from Pipeline results (pure functions; the node only publishes them)."""

from __future__ import annotations

from collections.abc import Sequence

from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from vknet_model.config import DataConfig
from vknet_model.pipeline import TrackedObjectInfo
from vknet_ros.msg import BoundingBox2D, ClassMap, TrackedObject, TrackedObjectArray
from vknet_ros.overlay import track_colour

MARKER_DEPTH_M = 1.0  # markers are drawn on the plane 1 m in front of the camera (no depth is known)


def tracks_msg(objects: Sequence[TrackedObjectInfo], header: Header) -> TrackedObjectArray:
    out = TrackedObjectArray(header=header)
    for o in objects:
        x1, y1, x2, y2 = o.box
        out.objects.append(TrackedObject(
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
                ) -> MarkerArray:
    """Box outlines and "id class" labels in the camera's optical frame, on the plane z = 1 m.

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
