"""Two real rclpy nodes in two processes exchange camera images and our tracked-object messages.

The peer process (``python -m vknet_ros.echo``) echoes everything back, so each message crosses DDS twice
(test -> peer -> test) over loopback with the shipped Fast DDS profile. Every field must come back equal.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: run `make setup`")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from vknet_ros.conversions import rgb_to_image_msg  # noqa: E402
from vknet_ros.echo_client import EchoClient, start_echo_process, stop_echo_process  # noqa: E402
from vknet_ros.msg import BoundingBox2D, TrackedObject, TrackedObjectArray  # noqa: E402

HEIGHT, WIDTH = 375, 1242  # a KITTI frame: 1.4 MB as rgb8, above Fast DDS's default best-effort limit
FRAMES = 20


@pytest.fixture()
def client() -> Iterator[EchoClient]:
    peer = start_echo_process()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("vknet_transport_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield EchoClient(node, executor)
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)
    stop_echo_process(peer)


def _image(index: int):  # type: ignore[no-untyped-def]
    pixels = np.random.default_rng(index).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    header = Header(stamp=Time(sec=1000 + index, nanosec=123_456_789), frame_id=f"camera_{index}")
    return rgb_to_image_msg(pixels, header)


def _tracks(index: int) -> TrackedObjectArray:
    objects = [TrackedObject(
        track_id=2**40 + 10 * index + k, instance=1 + k, class_id=11 + 2 * (k % 2),
        class_name="person" if k % 2 == 0 else "car", score=0.25 + 0.25 * k,
        bbox=BoundingBox2D(center_x=100.5 + k, center_y=50.25, size_x=30.0 + index, size_y=60.0),
        mask_area=1234 + k, centroid=Point(x=99.5, y=49.75 + k, z=0.0), age=index + k,
    ) for k in range(3)]
    return TrackedObjectArray(header=Header(stamp=Time(sec=2000 + index, nanosec=index), frame_id="camera"),
                              objects=objects)


def test_image_and_tracks_round_trip_between_processes(client: EchoClient) -> None:
    assert client.warm_up(_image(FRAMES)), "no echo from the peer process within 30 s"
    sent_images = [_image(i) for i in range(FRAMES)]
    sent_tracks = [_tracks(i) for i in range(FRAMES)]
    for image, tracks in zip(sent_images, sent_tracks, strict=True):
        client.publish(image, tracks)
        client.spin_for(0.03)  # ~30 Hz, like a camera
    client.spin_until(lambda: len(client.tracks) >= FRAMES and len(client.images) >= FRAMES, timeout_s=10.0)

    # Reliable: every message, in order, equal in every field (64-bit ids included).
    assert len(client.tracks) == FRAMES
    for got, want in zip(client.tracks, sent_tracks, strict=True):
        assert got == want
        assert got.objects[0].track_id == want.objects[0].track_id > 2**32
    # Best effort over the shared-memory transport: at most one frame may be lost, none may be altered.
    by_frame = {img.header.frame_id: img for img in client.images}
    assert len(by_frame) >= FRAMES - 1, f"only {len(by_frame)} of {FRAMES} images came back"
    for want in sent_images:
        got = by_frame.get(want.header.frame_id)
        if got is None:
            continue
        assert (got.height, got.width, got.encoding, got.step, got.is_bigendian) == (HEIGHT, WIDTH, "rgb8",
                                                                                    WIDTH * 3, 0)
        assert got.header == want.header
        assert bytes(got.data) == bytes(want.data)
    assert len(client.round_trip_ms()) == len(by_frame)
