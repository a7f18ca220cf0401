"""A second ROS 2 process for the transport tests: republishes what it receives, unchanged.

Subscribes to ``echo_in/image`` (best effort, like a camera) and ``echo_in/tracks`` (reliable) and
publishes every message as received on ``echo_out/...`` with the same QoS. Runs until SIGTERM/SIGINT or
``--timeout`` seconds, then prints how many messages of each kind it echoed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from vknet_ros.msg import TrackedObjectArray


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    stop = {"now": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = Node("vknet_echo_peer")
    reliable = QoSProfile(depth=100)
    images_out = node.create_publisher(Image, "echo_out/image", qos_profile_sensor_data)
    tracks_out = node.create_publisher(TrackedObjectArray, "echo_out/tracks", reliable)
    seen = {"image": 0, "tracks": 0}

    def on_image(msg: Image) -> None:
        images_out.publish(msg)
        seen["image"] += 1

    def on_tracks(msg: TrackedObjectArray) -> None:
        tracks_out.publish(msg)
        seen["tracks"] += 1

    node.create_subscription(Image, "echo_in/image", on_image, qos_profile_sensor_data)
    node.create_subscription(TrackedObjectArray, "echo_in/tracks", on_tracks, reliable)
    print("echo_peer: ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while not stop["now"] and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    print(f"echo_peer: image={seen['image']} tracks={seen['tracks']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
