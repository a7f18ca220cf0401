"""The other end of :mod:`vknet_ros.echo`: publishes messages, collects their echoes and times them.

Shared by ``vknet doctor`` (to measure round-trip latency on this machine) and the transport tests (to
check that every field survives two DDS hops).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from vknet_ros.echo import RELIABLE_DEPTH
from vknet_ros.msg import TrackedObjectArray

WARMUP_FRAME_ID = "vknet_echo_warmup"


def start_echo_process(prefix: str = "echo", timeout_s: float = 120.0) -> subprocess.Popen[str]:
    """Start ``python -m vknet_ros.echo`` as a child process (same interpreter, inherited environment)."""
    return subprocess.Popen([sys.executable, "-m", "vknet_ros.echo", "--prefix", prefix,
                             "--timeout", str(timeout_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_echo_process(process: subprocess.Popen[str], timeout_s: float = 20.0) -> str:
    """Stop the echo process politely (SIGTERM), then by force; return what it printed."""
    process.terminate()
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output or ""


@dataclass
class EchoClient:
    """Publishes on ``<prefix>_in/*`` and records what comes back on ``<prefix>_out/*``.

    Attributes:
        images: echoed images (warm-up frames excluded), in arrival order.
        tracks: echoed TrackedObjectArray messages, in arrival order.
        sent_at: monotonic send time per image frame_id.
        received_at: monotonic arrival time per image frame_id.
    """

    node: Node
    executor: SingleThreadedExecutor
    prefix: str = "echo"
    images: list[Image] = field(default_factory=list)
    tracks: list[TrackedObjectArray] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        reliable = QoSProfile(depth=RELIABLE_DEPTH)
        self._image_pub = self.node.create_publisher(Image, f"{self.prefix}_in/image", qos_profile_sensor_data)
        self._tracks_pub = self.node.create_publisher(TrackedObjectArray, f"{self.prefix}_in/tracks", reliable)
        self._warm = False
        self.node.create_subscription(Image, f"{self.prefix}_out/image", self._on_image, qos_profile_sensor_data)
        self.node.create_subscription(TrackedObjectArray, f"{self.prefix}_out/tracks", self.tracks.append,
                                      reliable)

    def _on_image(self, msg: Image) -> None:
        if msg.header.frame_id == WARMUP_FRAME_ID:
            self._warm = True
            return
        self.received_at[msg.header.frame_id] = time.monotonic()
        self.images.append(msg)

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Process callbacks until ``done()`` holds (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                return False
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def spin_for(self, seconds: float) -> None:
        """Process callbacks for ``seconds`` (pacing a send loop without losing arrivals)."""
        self.spin_until(lambda: False, timeout_s=seconds)

    def warm_up(self, sample: Image, timeout_s: float = 30.0) -> bool:
        """Send copies of ``sample`` until one comes back, so that both directions are matched.

        Best effort drops whatever is sent before discovery completes; without this the first frames of
        a measurement would be lost for reasons that have nothing to do with the transport.
        """
        warmup = Image(header=sample.header, height=sample.height, width=sample.width,
                       encoding=sample.encoding, is_bigendian=sample.is_bigendian, step=sample.step,
                       data=sample.data)
        warmup.header.frame_id = WARMUP_FRAME_ID
        deadline = time.monotonic() + timeout_s
        while not self._warm:
            if time.monotonic() > deadline:
                return False
            self._image_pub.publish(warmup)
            self.spin_until(lambda: self._warm, timeout_s=0.2)
        return self.spin_until(lambda: self._tracks_pub.get_subscription_count() > 0, timeout_s)

    def publish(self, image: Image | None = None, tracks: TrackedObjectArray | None = None) -> None:
        if image is not None:
            self.sent_at[image.header.frame_id] = time.monotonic()
            self._image_pub.publish(image)
        if tracks is not None:
            self._tracks_pub.publish(tracks)

    def round_trip_ms(self) -> list[float]:
        """Round-trip times in milliseconds of the images that came back, in send order."""
        return [1000.0 * (self.received_at[key] - sent) for key, sent in self.sent_at.items()
                if key in self.received_at]
