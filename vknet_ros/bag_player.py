"""Play a bag onto ROS 2 topics, for machines without rosbag2 (`ros2 bag` has no PyPI wheel).

Reads rosbag2 (mcap, sqlite3) and ROS 1 bags through rosbags, and publishes every message unchanged (ROS 1
messages converted to CDR) on its recorded topic with its recorded QoS (reliable, volatile where the bag does
not say), at the recorded pace scaled by --rate. With --clock it publishes the bag time on /clock (every
message, and at --clock-hz in between), so nodes with use_sim_time follow the bag. --wait-for TOPIC holds
the start until that topic has a subscriber (a node that is still loading its model would miss the first
frames). kitti_replay.launch.py uses this player where `ros2 bag play` is not installed.

Examples:
  vknet play bags/synth_val --clock --wait-for /camera/image_raw
  ros2 run vknet_ros bag_player bags/synth_val --rate 0.5 --loop --topics /camera/image_raw /camera/camera_info
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vknet_model.errors import VKNetError

CLOCK_TOPIC = "/clock"


@dataclass(frozen=True)
class PlayOptions:
    rate: float = 1.0
    loop: bool = False
    clock: bool = False
    clock_hz: float = 40.0
    start_offset_s: float = 0.0
    duration_s: float | None = None
    topics: tuple[str, ...] = ()
    wait_for: tuple[str, ...] = ()
    wait_timeout_s: float = 300.0
    progress: bool = True


class PlayError(VKNetError, ValueError):
    """A bag or option the player cannot use; the message says what to change."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder or .mcap/.db3 file, or a ROS 1 .bag")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", action="store_true", help="play again from the start until stopped")
    parser.add_argument("--clock", action="store_true", help="publish the bag time on /clock (for use_sim_time)")
    parser.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate between messages (default 40)")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                        help="skip the first S seconds of the bag")
    parser.add_argument("--duration", type=float, metavar="S", help="play only S seconds of bag time")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="play only these topics")
    parser.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC",
                        help="start once each of these topics has a subscriber")
    parser.add_argument("--wait-timeout", type=float, default=300.0, metavar="S",
                        help="give up waiting for --wait-for subscribers after S seconds (default 300)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> PlayOptions:
    if args.rate <= 0 or args.clock_hz <= 0:
        raise PlayError(f"--rate and --clock-hz must be positive, got {args.rate} and {args.clock_hz}")
    if args.start_offset < 0 or (args.duration is not None and args.duration <= 0):
        raise PlayError("--start-offset must be >= 0 and --duration > 0")
    return PlayOptions(rate=args.rate, loop=args.loop, clock=args.clock, clock_hz=args.clock_hz,
                       start_offset_s=args.start_offset, duration_s=args.duration, topics=tuple(args.topics),
                       wait_for=tuple(args.wait_for), wait_timeout_s=args.wait_timeout,
                       progress=not args.no_progress)


def message_class(msgtype: str) -> Any:
    """The rclpy class of ``pkg/msg/Name`` (or a ROS 1 ``pkg/Name``)."""
    package, _, name = msgtype.replace("/msg/", "/").partition("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise PlayError(f"message type {msgtype} is not installed here ({package}): install it or leave its "
                        f"topic out with --topics") from exc


def recorded_qos(connection: Any) -> Any:
    """The QoS the recorder saw offered (reliability and durability), reliable and volatile by default."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=10)
    profiles = getattr(connection.ext, "offered_qos_profiles", None) or []
    if isinstance(profiles, str):  # older rosbags: the metadata's YAML text
        import yaml

        profiles = yaml.safe_load(profiles) or []
    for profile in profiles if isinstance(profiles, list) else []:
        reliability = str(profile.get("reliability", "")).lower()
        durability = str(profile.get("durability", "")).lower()
        if reliability in ("2", "best_effort"):
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if durability in ("1", "transient_local"):
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return qos


def _messages(reader: Any, connections: list[Any], start_ns: int, stop_ns: int | None,
              ) -> Iterator[tuple[Any, int, bytes | memoryview]]:
    """(connection, bag time, CDR bytes); ROS 1 messages are read by their own definitions and written as the
    ROS 2 message of the same name (a Header loses its seq)."""
    from vknet_ros.bags import ros2_typestore

    store = None if reader.is2 else ros2_typestore()
    for conn, time_ns, raw in reader.messages(connections=connections, start=start_ns, stop=stop_ns):
        if store is None:
            yield conn, time_ns, raw
        else:
            yield conn, time_ns, store.serialize_cdr(reader.deserialize(raw, conn.msgtype), conn.msgtype)


def play(path: Path, options: PlayOptions, node: Any) -> int:
    """Publish the bag through ``node``; returns the number of messages published."""
    from rclpy.duration import Duration
    from rosbags.highlevel import AnyReader
    from rosgraph_msgs.msg import Clock
    from tqdm import tqdm

    from vknet_ros.bags import BagError, open_any_reader

    try:
        reader: AnyReader = open_any_reader(path)
    except BagError as exc:
        raise PlayError(str(exc)) from exc
    try:
        connections = [c for c in reader.connections if not options.topics or c.topic in options.topics]
        missing = sorted(set(options.topics) - {c.topic for c in connections})
        if missing or not connections:
            raise PlayError(f"{path}: no topic(s) {missing or list(options.topics)}; the bag has "
                            f"{sorted({c.topic for c in reader.connections})}")
        publishers = {}
        for conn in connections:
            if conn.topic not in publishers:
                publishers[conn.topic] = node.create_publisher(message_class(conn.msgtype), conn.topic,
                                                               recorded_qos(conn))
        clock = node.create_publisher(Clock, CLOCK_TOPIC, 10) if options.clock else None
        _wait_for_subscribers(node, options)
        start_ns = reader.start_time + round(options.start_offset_s * 1e9)
        stop_ns = start_ns + round(options.duration_s * 1e9) if options.duration_s is not None else None
        total = sum(c.msgcount for c in connections) if not (options.start_offset_s or options.duration_s) else None
        published = 0
        while True:
            wall_start = time.monotonic()
            with tqdm(total=total, unit="msg", desc=f"play {path.name}", disable=not options.progress) as bar:
                for conn, time_ns, raw in _messages(reader, connections, start_ns, stop_ns):
                    due = wall_start + (time_ns - start_ns) / 1e9 / options.rate
                    _wait_until(due, clock, start_ns, wall_start, options)
                    if clock is not None:
                        _publish_clock(clock, time_ns)
                    publishers[conn.topic].publish(bytes(raw))
                    published += 1
                    bar.update(1)
            if not options.loop:
                break
        for pub in publishers.values():  # a reliable subscriber gets the last messages before we exit
            pub.wait_for_all_acked(Duration(seconds=5))
    finally:
        reader.close()
    return published


def _publish_clock(clock: Any, time_ns: int) -> None:
    msg = clock.msg_type()
    msg.clock.sec, msg.clock.nanosec = divmod(time_ns, 10**9)
    clock.publish(msg)


def _wait_until(due: float, clock: Any, start_ns: int, wall_start: float, options: PlayOptions) -> None:
    """Sleep until ``due`` (monotonic); with /clock, keep publishing the bag time meanwhile."""
    while (remaining := due - time.monotonic()) > 0:
        time.sleep(min(remaining, 1.0 / options.clock_hz))
        if clock is not None and due - time.monotonic() > 0:
            now_ns = start_ns + round((time.monotonic() - wall_start) * options.rate * 1e9)
            _publish_clock(clock, now_ns)


def _wait_for_subscribers(node: Any, options: PlayOptions) -> None:
    deadline = time.monotonic() + options.wait_timeout_s
    for topic in options.wait_for:
        while node.count_subscribers(topic) == 0:
            if time.monotonic() > deadline:
                raise PlayError(f"no subscriber on {topic} after {options.wait_timeout_s:.0f} s")
            time.sleep(0.05)


def run(args: argparse.Namespace) -> int:
    import rclpy

    options = options_from_args(args)
    context = rclpy.Context()  # its own: a caller's rclpy (a test, an embedding process) is left alone
    rclpy.init(args=getattr(args, "ros_args", None) or None, context=context)
    node = rclpy.create_node("vknet_bag_player", context=context)
    try:
        published = play(args.bag, options, node)
        print(f"played {published} messages from {args.bag}", flush=True)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        node.destroy_node()
        context.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    """`ros2 run vknet_ros bag_player BAG ...` (ROS arguments after --ros-args are rclpy's)."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    args.ros_args = argv
    try:
        return run(args)
    except PlayError as exc:
        print(f"bag_player: error: {exc}", file=sys.stderr)
        return 2
