"""The bag player without rosbag2: every message out unchanged on its topic, /clock, ROS 1 bags, offsets,
clear errors. Real rclpy over loopback DDS; the launch file using it is tested in test_kitti_replay_launch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: run `make setup`")

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image

from vknet_data.synth import SynthConfig, write_sequences
from vknet_ros.bag_player import PlayError, PlayOptions, main, play
from vknet_ros.bags import CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, kitti_step_sources, open_any_reader, write_bag
from vknet_ros.dds_env import apply_loopback_environment
from vknet_ros.spinner import BackgroundSpinner

FRAMES = 4
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module", autouse=True)
def ros() -> Iterator[None]:
    apply_loopback_environment()
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("player")
    write_sequences(root / "data", sequences=1, seed=2, split="val", cfg=SynthConfig(height=48, width=160,
                                                                                        frames=FRAMES), progress=False)
    write_bag(root / "bag", kitti_step_sources(root / "data", "val"), progress=False)
    return root / "bag"


class Listener:
    """Raw (serialized) messages per topic, and /clock, received by a node spun in the background."""

    def __init__(self, topics: dict[str, Any]) -> None:
        self.node = rclpy.create_node("vknet_player_test_listener")
        self.raw: dict[str, list[bytes]] = {topic: [] for topic in topics}
        self.clock: list[int] = []
        for topic, kind in topics.items():
            self.node.create_subscription(kind, topic, self.raw[topic].append, RELIABLE, raw=True)
        self.node.create_subscription(Clock, "/clock", lambda m: self.clock.append(
            m.clock.sec * 10**9 + m.clock.nanosec), 100)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = BackgroundSpinner(self.executor)

    def close(self) -> None:
        assert self.spinner.stop()
        self.node.destroy_node()


def _recorded(bag: Path, topic: str) -> list[tuple[int, bytes]]:
    reader = open_any_reader(bag)
    try:
        return [(t, bytes(raw)) for c, t, raw in reader.messages() if c.topic == topic]
    finally:
        reader.close()


def _play(bag: Path, options: PlayOptions) -> int:
    node = rclpy.create_node("vknet_bag_player_under_test")
    try:
        return play(bag, options, node)
    finally:
        node.destroy_node()


def test_every_message_goes_out_unchanged_with_the_bag_time_on_clock(bag: Path) -> None:
    listener = Listener({IMAGE_TOPIC: Image, CAMERA_INFO_TOPIC: CameraInfo, GT_TOPIC: Image})
    try:
        published = _play(bag, PlayOptions(rate=5.0, clock=True, wait_for=(IMAGE_TOPIC, GT_TOPIC), progress=False))
        assert published == 3 * FRAMES
        for topic in (IMAGE_TOPIC, CAMERA_INFO_TOPIC, GT_TOPIC):
            assert listener.raw[topic] == [raw for _, raw in _recorded(bag, topic)], topic
        times = [t for t, _ in _recorded(bag, IMAGE_TOPIC)]
        assert set(times) <= set(listener.clock)  # the bag time of every frame went out on /clock
        assert listener.clock == sorted(listener.clock)
    finally:
        listener.close()


def test_offset_duration_and_topic_choice(bag: Path) -> None:
    listener = Listener({IMAGE_TOPIC: Image, CAMERA_INFO_TOPIC: CameraInfo})
    try:
        times = [t for t, _ in _recorded(bag, IMAGE_TOPIC)]
        offset_s, duration_s = (times[1] - times[0]) / 1e9, (times[2] - times[1]) / 1e9 + 1e-3
        published = _play(bag, PlayOptions(rate=5.0, topics=(IMAGE_TOPIC,), start_offset_s=offset_s,
                                           duration_s=duration_s, wait_for=(IMAGE_TOPIC,), progress=False))
        assert published == 2  # frames 1 and 2
        assert listener.raw[IMAGE_TOPIC] == [raw for _, raw in _recorded(bag, IMAGE_TOPIC)[1:3]]
        assert listener.raw[CAMERA_INFO_TOPIC] == []
    finally:
        listener.close()


def test_a_ros1_bag_is_played_as_ros2_messages(tmp_path: Path) -> None:
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    image_cls, header_cls = store.types["sensor_msgs/msg/Image"], store.types["std_msgs/msg/Header"]
    time_cls = store.types["builtin_interfaces/msg/Time"]
    pixels = [np.random.default_rng(t).integers(0, 255, (6, 8, 3), dtype=np.uint8) for t in range(3)]
    path = tmp_path / "drive.bag"
    with Writer(path) as writer:
        conn = writer.add_connection("/kitti/camera_color_left/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for t, rgb in enumerate(pixels):
            header = header_cls(seq=t, stamp=time_cls(sec=100 + t, nanosec=0), frame_id="camera_color_left")
            msg = image_cls(header=header, height=6, width=8, encoding="rgb8", is_bigendian=0, step=24,
                            data=rgb.reshape(-1))
            writer.write(conn, (100 + t) * 10**9, store.serialize_ros1(msg, "sensor_msgs/msg/Image"))
    received: list[Image] = []
    node = rclpy.create_node("vknet_player_test_ros1")
    node.create_subscription(Image, "/kitti/camera_color_left/image_raw", received.append, RELIABLE)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = BackgroundSpinner(executor)
    try:
        assert _play(path, PlayOptions(rate=10.0, wait_for=("/kitti/camera_color_left/image_raw",),
                                       progress=False)) == 3
        done = threading.Event()
        for _ in range(200):
            if len(received) == 3:
                done.set()
                break
            done.wait(0.01)
        assert [m.header.stamp.sec for m in received] == [100, 101, 102]
        for msg, rgb in zip(received, pixels, strict=True):
            assert msg.header.frame_id == "camera_color_left"
            np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(6, 8, 3), rgb)
    finally:
        assert spinner.stop()
        node.destroy_node()


def test_bad_requests_are_one_line(bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PlayError, match="no topic"):
        _play(bag, PlayOptions(topics=("/nope",), progress=False))
    assert main(["bag_player", str(bag), "--rate", "0"]) == 2
    assert main(["bag_player", str(bag.parent / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("bag_player: error:") == 2 and "does not exist" in err and "--rate" in err
