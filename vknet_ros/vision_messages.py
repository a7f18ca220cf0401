"""The standard ``vision_msgs`` view of the node's results, for consumers that know no vknet message.

``vision_msgs/Detection2DArray`` carries one ``Detection2D`` per tracked object (``id`` = the track id,
one result: the class id as a string and the score, ``bbox`` centre and size in pixels, the image's header)
and ``vision_msgs/LabelInfo`` maps those class ids to names once, transient local, as the vision_msgs README
recommends. With depth, ``vision_msgs/Detection3DArray`` carries the tracks placed in 3D. vision_msgs is a
ROS package a ROS install has (``ros-<distro>-vision-msgs``); in a venv made of
PyPI wheels it comes only with ros2_cli_kit, so the node asks :func:`available` first and does without.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from vknet_model.config import DataConfig
from vknet_model.depth3d import TrackPlacement
from vknet_model.pipeline import TrackedObjectInfo


@functools.cache
def available() -> bool:
    """Whether the vision_msgs Python messages import here (a package that is found but broken counts as
    absent: the node must still come up)."""
    try:
        importlib.import_module("vision_msgs.msg")
    except ImportError:
        return False
    return True


def detections_msg(objects: Sequence[TrackedObjectInfo], header: Any) -> Any:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    out = Detection2DArray(header=header)
    for o in objects:
        x1, y1, x2, y2 = o.box
        detection = Detection2D(header=header, id=str(o.track_id))
        detection.bbox.center.position.x = (x1 + x2) / 2
        detection.bbox.center.position.y = (y1 + y2) / 2
        detection.bbox.size_x, detection.bbox.size_y = float(x2 - x1), float(y2 - y1)
        result = ObjectHypothesisWithPose()
        result.hypothesis.class_id, result.hypothesis.score = str(o.class_id), float(o.score)
        detection.results.append(result)
        out.detections.append(detection)
    return out


def detections_3d_msg(objects: Sequence[TrackedObjectInfo], placements: Mapping[int, TrackPlacement],
                      header: Any) -> Any:
    """One ``Detection3D`` per tracked thing with a 3D position (``id`` = the track id): the box centred on
    the position with the mask's extent, axis-aligned in the camera's optical frame."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    out = Detection3DArray(header=header)
    for o in objects:
        placed = placements.get(o.track_id)
        if placed is None or placed.placement is None:
            continue
        p = placed.placement
        detection = Detection3D(header=header, id=str(o.track_id))
        centre = detection.bbox.center
        centre.position.x, centre.position.y, centre.position.z = p.position
        centre.orientation.w = 1.0
        detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = p.size
        result = ObjectHypothesisWithPose()
        result.hypothesis.class_id, result.hypothesis.score = str(o.class_id), float(o.score)
        result.pose.pose = centre
        detection.results.append(result)
        out.detections.append(detection)
    return out


def label_info_msg(data: DataConfig, threshold: float, header: Any) -> Any:
    """Every class of the model's label space (stuff too: the panoptic image carries them), and the score a
    thing needs to be reported."""
    from vision_msgs.msg import LabelInfo, VisionClass

    return LabelInfo(header=header, threshold=float(threshold), class_map=[
        VisionClass(class_id=class_id, class_name=name) for class_id, name in enumerate(data.class_names)])
