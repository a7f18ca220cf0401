"""Two real rclpy nodes in two processes exchange camera images and our tracked-object messages.

The peer process (tests/ros/echo_peer.py) echoes everything back, so each message crosses DDS twice
(test -> peer -> test) over loopback with the shipped Fast DDS profile. Every field must come back equal.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: run `make setup`")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from vknet_ros.msg import BoundingBox2D, TrackedObject, TrackedObjectArray  # noqa: E402

PEER = Path(__file__).parent / "ros" / "echo_peer.py"
HEIGHT, WIDTH = 375, 1242  # a KITTI frame: 1.4 MB as rgb8, above Fast DDS's default best-effort limit
FRAMES = 20


@pytest.fixture()
def ros_node() -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("vknet_transport_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.fixture()
def echo_peer() -> Iterator[subprocess.Popen[str]]:
    peer = subprocess.Popen([sys.executable, str(PEER)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    yield peer
    peer.terminate()
    try:
        peer.wait(timeout=20)
    except subprocess.TimeoutExpired:
        peer.kill()
        peer.wait()


def _spin_until(executor: SingleThreadedExecutor, done, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.02)
    return True


def _image(index: int) -> Image:
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    msg = Image()
    msg.header = Header(stamp=Time(sec=1000 + index, nanosec=123_456_789), frame_id=f"camera_{index}")
    msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = HEIGHT, WIDTH, "rgb8", 0, WIDTH * 3
    msg.data = pixels.tobytes()  # bytes, not the ndarray: assigning an ndarray costs ~70 ms per frame
    return msg


def _tracks(index: int) -> TrackedObjectArray:
    objects = []
    for k in range(3):
        objects.append(TrackedObject(
            track_id=2**40 + 10 * index + k, instance=1 + k, class_id=11 + 2 * (k % 2),
            class_name="person" if k % 2 == 0 else "car", score=0.25 + 0.25 * k,
            bbox=BoundingBox2D(center_x=100.5 + k, center_y=50.25, size_x=30.0 + index, size_y=60.0),
            mask_area=1234 + k, centroid=Point(x=99.5, y=49.75 + k, z=0.0), age=index + k,
            frames_since_seen=k,
        ))
    header = Header(stamp=Time(sec=2000 + index, nanosec=index), frame_id="camera")
    return TrackedObjectArray(header=header, objects=objects)


def test_image_and_tracks_round_trip_between_processes(ros_node, echo_peer) -> None:  # type: ignore[no-untyped-def]
    node, executor = ros_node
    reliable = QoSProfile(depth=100)
    image_pub = node.create_publisher(Image, "echo_in/image", qos_profile_sensor_data)
    tracks_pub = node.create_publisher(TrackedObjectArray, "echo_in/tracks", reliable)
    images: list[Image] = []
    tracks: list[TrackedObjectArray] = []
    node.create_subscription(Image, "echo_out/image", images.append, qos_profile_sensor_data)
    node.create_subscription(TrackedObjectArray, "echo_out/tracks", tracks.append, reliable)

    # Best effort loses what is sent before both directions are matched: warm up until one echo is back.
    warmup = _image(FRAMES + 1)
    warmup.header.frame_id = "warmup"
    deadline = time.monotonic() + 30.0
    while not images:
        assert time.monotonic() < deadline, "no echo from the peer process within 30 s"
        image_pub.publish(warmup)
        _spin_until(executor, lambda: bool(images), timeout=0.2)
    assert _spin_until(executor, lambda: tracks_pub.get_subscription_count() > 0, timeout=10.0)
    images.clear()

    sent_images = [_image(i) for i in range(FRAMES)]
    sent_tracks = [_tracks(i) for i in range(FRAMES)]
    for image, track_array in zip(sent_images, sent_tracks, strict=True):
        image_pub.publish(image)
        tracks_pub.publish(track_array)
        _spin_until(executor, lambda: False, timeout=0.03)  # ~30 Hz, like a camera
    _spin_until(executor, lambda: len(tracks) >= FRAMES and len(images) >= FRAMES, timeout=10.0)

    # Reliable: every message, in order, equal in every field.
    assert len(tracks) == FRAMES
    for got, want in zip(tracks, sent_tracks, strict=True):
        assert got == want
        assert got.objects[0].track_id == want.objects[0].track_id > 2**32
    # Best effort over the shared-memory transport: at most one frame may be lost, none may be altered.
    by_frame = {img.header.frame_id: img for img in images}
    assert len(by_frame) >= FRAMES - 1, f"only {len(by_frame)} of {FRAMES} images came back"
    for want in sent_images:
        got = by_frame.get(want.header.frame_id)
        if got is None:
            continue
        assert (got.height, got.width, got.encoding, got.step, got.is_bigendian) == \
            (HEIGHT, WIDTH, "rgb8", WIDTH * 3, 0)
        assert got.header == want.header
        assert bytes(got.data) == bytes(want.data)
