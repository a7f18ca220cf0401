"""A ROS 2 process that republishes camera images and tracked objects unchanged.

``vknet doctor`` and the transport tests start it as a second process so that every message crosses DDS
twice (there and back) between two real participants. It subscribes to ``<prefix>_in/image`` (best effort,
like a camera) and ``<prefix>_in/tracks`` (reliable) and publishes each message as received on
``<prefix>_out/...`` with the same QoS, until SIGTERM/SIGINT or the timeout.

Run it with ``python -m vknet_ros.echo``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

from vknet_ros.msg import TrackedObjectArray

_LOG = logging.getLogger(__name__)
RELIABLE_DEPTH = 100


def run_echo(prefix: str, timeout_s: float) -> dict[str, int]:
    """Echo until signalled or ``timeout_s`` passes; return how many messages of each kind were echoed."""
    stop = {"now": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("vknet_echo")
    reliable = QoSProfile(depth=RELIABLE_DEPTH)
    images_out = node.create_publisher(Image, f"{prefix}_out/image", qos_profile_sensor_data)
    tracks_out = node.create_publisher(TrackedObjectArray, f"{prefix}_out/tracks", reliable)
    echoed = {"image": 0, "tracks": 0}

    def on_image(msg: Image) -> None:
        images_out.publish(msg)
        echoed["image"] += 1

    def on_tracks(msg: TrackedObjectArray) -> None:
        tracks_out.publish(msg)
        echoed["tracks"] += 1

    node.create_subscription(Image, f"{prefix}_in/image", on_image, qos_profile_sensor_data)
    node.create_subscription(TrackedObjectArray, f"{prefix}_in/tracks", on_tracks, reliable)
    deadline = time.monotonic() + timeout_s
    try:
        while not stop["now"] and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return echoed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="echo", help="topic prefix (default: echo)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    echoed = run_echo(args.prefix, args.timeout)
    _LOG.info("echoed image=%d tracks=%d", echoed["image"], echoed["tracks"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
