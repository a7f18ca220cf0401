"""A VKNetNode and a client node for one or more cameras, spun together over real DDS (3D and camera tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from vknet_data.synth import depth_to_png_mm
from vknet_ros.conversions import rgb_to_image_msg
from vknet_ros.msg import TrackedObjectArray
from vknet_ros.node import VKNetNode
from vknet_ros.spinner import BackgroundSpinner

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def header(stamp_s: float, frame_id: str) -> Header:
    out = Header(frame_id=frame_id)
    out.stamp.sec, out.stamp.nanosec = int(stamp_s), round((stamp_s % 1) * 1e9)
    return out


def camera_info(h: Header, width: int, height: int, k: tuple[float, float, float, float]) -> CameraInfo:
    fx, fy, cx, cy = k
    return CameraInfo(header=h, width=width, height=height, k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def depth_msg(depth_m: np.ndarray, h: Header, encoding: str = "16UC1") -> Image:
    """A depth image as cameras send it: 16UC1 millimetres with 0 for no depth, or 32FC1 metres with NaN."""
    values = depth_to_png_mm(depth_m).astype("<u2") if encoding == "16UC1" else depth_m.astype("<f4")
    height, width = values.shape
    return Image(header=h, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * values.itemsize, data=values.tobytes())


class CameraClient:
    """One camera's publishers (image, camera_info, depth, depth/camera_info) and subscriptions (panoptic,
    tracks) on the client node, under the camera's name."""

    def __init__(self, node: Node, name: str) -> None:
        prefix = f"{name}/" if name else ""
        self.image = node.create_publisher(Image, prefix + "image", RELIABLE)
        self.info = node.create_publisher(CameraInfo, prefix + "camera_info", RELIABLE)
        self.depth = node.create_publisher(Image, prefix + "depth", RELIABLE)
        self.depth_info = node.create_publisher(CameraInfo, prefix + "depth/camera_info", RELIABLE)
        self.panoptic: list[Image] = []
        self.tracks: list[TrackedObjectArray] = []
        node.create_subscription(Image, prefix + "panoptic", self.panoptic.append, RELIABLE)
        node.create_subscription(TrackedObjectArray, prefix + "tracks", self.tracks.append, RELIABLE)

    def send(self, rgb: np.ndarray, h: Header) -> None:
        self.image.publish(rgb_to_image_msg(rgb, h))


class NodeClient:
    """A VKNetNode (the bundled model unless ``model`` is given) and a client with a CameraClient per camera."""

    def __init__(self, cameras: tuple[str, ...] = ("",), **params: Any) -> None:
        overrides = [Parameter("input_qos", value="reliable"), Parameter("cameras", value=list(cameras))]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.node = VKNetNode(parameter_overrides=overrides)
        assert self.node.cameras, "the node did not configure"
        self.client = Node("vknet_test_client")
        self.cameras = {name: CameraClient(self.client, name) for name in cameras}
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.spinner = BackgroundSpinner(self.executor)

    def connected(self, depth: bool = False) -> bool:
        """Every camera's image (and with ``depth`` its depth and camera_info) reaches the node and its tracks
        reach the client."""
        def ready(c: CameraClient) -> bool:
            inputs = (c.image, c.info, c.depth) if depth else (c.image,)
            tracks = c.image.topic_name[: -len("image")] + "tracks"
            return all(p.get_subscription_count() > 0 for p in inputs) and self.client.count_publishers(tracks) > 0

        return wait_for(lambda: all(ready(c) for c in self.cameras.values()))

    def close(self) -> None:
        assert self.spinner.stop(), "the executor thread did not stop"
        self.node.trigger_shutdown()
        self.node.destroy_node()
        self.client.destroy_node()
