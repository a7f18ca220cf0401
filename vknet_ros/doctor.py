"""Check that vknet is installed and working on this machine, and measure DDS on loopback.

Prints the versions of what vknet runs on, checks that the generated messages load, then starts a second
process (`python -m vknet_ros.echo`) and sends camera-sized images to it and back over DDS, reporting how
many returned and the round-trip latency. Exits non-zero when something a user needs is broken, with the
fix in the message.

The check keeps DDS on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, the shipped Fast DDS
profile, a random ROS_DOMAIN_ID unless you set one).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform

from vknet_model.percentile import percentile

# (import name, distribution name for the version, needed for what)
_COMPONENTS: tuple[tuple[str, str, str], ...] = (
    ("numpy", "numpy", "everything"),
    ("torch", "torch", "the network (training, torch backend, export)"),
    ("onnx", "onnx", "export"),
    ("onnxruntime", "onnxruntime", "the onnxruntime backend"),
    ("cv2", "opencv-python-headless", "image I/O"),
    ("rosbags", "rosbags", "bag tools"),
    ("rclpy", "ros-rclpy", "the ROS 2 node"),
    ("tensorrt", "tensorrt", "the TensorRT backend (optional)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=30, help="images sent in the round trip (default 30)")
    parser.add_argument("--height", type=int, default=375, help="image height (default 375, KITTI)")
    parser.add_argument("--width", type=int, default=1242, help="image width (default 1242, KITTI)")
    parser.add_argument("--rate", type=float, default=10.0, help="send rate in Hz (default 10)")
    parser.add_argument("--skip-dds", action="store_true", help="versions only, no DDS round trip")


def _versions() -> list[tuple[str, str, str]]:
    rows = []
    for module, dist, purpose in _COMPONENTS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            rows.append((module, f"MISSING ({exc.__class__.__name__})", purpose))
            continue
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "installed"
        rows.append((module, version, purpose))
    return rows


def _round_trip(frames: int, height: int, width: int, rate_hz: float) -> tuple[int, list[float]]:
    import numpy as np
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import Header

    from vknet_ros.conversions import rgb_to_image_msg
    from vknet_ros.echo_client import EchoClient, start_echo_process, stop_echo_process

    pixels = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    peer = start_echo_process(prefix="doctor")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("vknet_doctor", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        client = EchoClient(node, executor, prefix="doctor")
        if not client.warm_up(rgb_to_image_msg(pixels, Header(frame_id="warmup"))):
            raise RuntimeError("the echo process never answered: DDS discovery failed on loopback. Check "
                               "that FASTDDS_DEFAULT_PROFILES_FILE points at vknet_ros/config/fastdds_loopback.xml "
                               "and that /dev/shm is writable")
        period = 1.0 / rate_hz
        for index in range(frames):
            header = Header(stamp=Time(sec=index), frame_id=f"frame_{index}")
            client.publish(rgb_to_image_msg(pixels, header))
            client.spin_for(period)
        client.spin_until(lambda: len(client.images) >= frames, timeout_s=5.0)
        return len(client.images), client.round_trip_ms()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        stop_echo_process(peer)


def run(args: argparse.Namespace) -> int:
    from vknet_ros.dds_env import apply_loopback_environment

    print(f"vknet doctor on {platform.node()} ({platform.machine()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs)")
    rows = _versions()
    for module, version, purpose in rows:
        print(f"  {module:<12} {version:<24} {purpose}")
    missing = {module for module, version, _ in rows if version.startswith("MISSING")}
    required_missing = missing - {"tensorrt", "rclpy"}
    if required_missing:
        print(f"FAILED: {', '.join(sorted(required_missing))} missing: run `make setup`")
        return 1
    if "rclpy" in missing:
        print("ROS 2 is not installed: training, export and evaluation work; the node does not (`make setup`)")
        return 0 if args.skip_dds else 1
    try:
        importlib.import_module("vknet_ros.msg")
    except ImportError as exc:
        print(f"FAILED: vknet_ros messages are not built ({exc}): run `make setup` or `colcon build`")
        return 1
    print("  vknet_ros.msg  generated messages load")
    if args.skip_dds:
        return 0
    env = apply_loopback_environment()
    print(f"DDS round trip: {args.frames} images {args.width}x{args.height} rgb8 "
          f"({args.width * args.height * 3 / 1e6:.1f} MB) at {args.rate:g} Hz, best effort, "
          f"to a second process and back (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, loopback only)")
    try:
        received, rtt = _round_trip(args.frames, args.height, args.width, args.rate)
    except RuntimeError as exc:
        print(f"FAILED: {exc}")
        return 1
    if not rtt:
        print("FAILED: no image came back")
        return 1
    rtt.sort()
    p90 = percentile(rtt, 0.9)
    print(f"  returned {received}/{args.frames}, round trip p50 {percentile(rtt, 0.5):.2f} ms, "
          f"p90 {p90:.2f} ms, max {rtt[-1]:.2f} ms")
    if received < args.frames:
        print(f"WARNING: {args.frames - received} images lost on loopback")
    print("vknet doctor: OK")
    return 0
