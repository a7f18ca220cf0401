"""Hostile depth against the live node: randomised depth messages, each frame's 3D outcome accounted for.

One node with ``depth:=true`` and the bundled model runs in this process over real DDS on loopback. Each
case sends (maybe) a camera_info, (maybe) a depth/camera_info, (maybe) a depth image, then a held-out
synthetic street frame with the case's stamp, and waits for the node's tracks. Depth kinds: good 16UC1 and
32FC1 (also big-endian), random holes, all zero / NaN / inf / negative, another resolution with and without
its depth/camera_info, wrong or unknown encodings, truncated data, a step below a row, empty and absurdly
claimed sizes, a stamp beyond the slop, no depth at all, and no camera_info for the image's size.

Per case the outcome is what moved in the node's counters: things placed, things left unplaced under each
reason, bad depth messages. Reported: cases, hangs (no answer), node errors, unexpected outcomes (a reason
the kind cannot produce), frames answered, the outcome table per kind, and whether a good frame at the end
is placed again. Peak RSS of the whole process.

Usage: python benchmarks/depth_fuzz.py [--cases 300] [--seed 0] [--json benchmarks/depth_fuzz.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vknet_model.machine import describe_cpu

PLACED = "placed"


@dataclass
class Case:
    kind: str
    depth: Any | None          # the depth Image, or None (none sent)
    depth_info_size: tuple[int, int] | None  # (width, height) of a depth/camera_info to send first
    colour_info: bool          # send the image's camera_info
    expected: frozenset[str]   # counters this case may move (besides those of things placed)


def _depth_image(values: np.ndarray, stamp: Any, encoding: str, *, big_endian: bool = False) -> Any:
    from sensor_msgs.msg import Image

    height, width = values.shape
    return Image(header=stamp, height=height, width=width, encoding=encoding, is_bigendian=int(big_endian),
                 step=width * values.itemsize, data=values.tobytes())


class Maker:
    def __init__(self, seed: int, depth_m: np.ndarray) -> None:
        self.rng = np.random.default_rng(seed)
        self.depth_m = depth_m  # the street's true depth (metres, NaN sky)

    def millimetres(self, depth: np.ndarray) -> np.ndarray:
        from vknet_data.synth import depth_to_png_mm

        return depth_to_png_mm(depth).astype("<u2")

    def case(self, header: Any) -> Case:
        from std_msgs.msg import Header

        rng, d = self.rng, self.depth_m
        good = frozenset({PLACED, "unplaced_few_depth_pixels"})
        refused = frozenset({"bad_input_depth", "unplaced_bad_depth"})
        kinds: list[Callable[[], Case]] = [
            lambda: Case("good_16uc1", _depth_image(self.millimetres(d), header, "16UC1"), None, True, good),
            lambda: Case("good_32fc1", _depth_image(d.astype("<f4"), header, "32FC1"), None, True, good),
            lambda: Case("good_16uc1_big_endian", _depth_image(self.millimetres(d).astype(">u2"), header, "16UC1",
                                                               big_endian=True), None, True, good),
            lambda: self._holes(header, good),
            lambda: Case("all_invalid", _depth_image(
                np.full(d.shape, rng.choice([0.0, np.nan, np.inf, -5.0]), "<f4"), header, "32FC1"), None, True,
                frozenset({"unplaced_few_depth_pixels"})),
            lambda: Case("other_size_no_info", _depth_image(self.millimetres(d[::2, ::2]), header, "16UC1"), None,
                         True, frozenset({"unplaced_depth_camera_info"})),
            lambda: Case("other_size_with_info", _depth_image(self.millimetres(d[::2, ::2]), header, "16UC1"),
                         (d.shape[1] // 2 + d.shape[1] % 2, d.shape[0] // 2 + d.shape[0] % 2), True, good),
            lambda: Case("wrong_encoding", _depth_image(self.millimetres(d), header, str(rng.choice(
                ["mono16", "16SC1", "rgb8", "64FC1", "", "ÿ漢字", "x" * 300]))), None, True, refused),
            lambda: self._malformed(header, refused),
            lambda: Case("stamp_beyond_slop", _depth_image(self.millimetres(d), Header(
                stamp=type(header.stamp)(sec=header.stamp.sec + 1, nanosec=header.stamp.nanosec),
                frame_id=header.frame_id), "16UC1"), None, True, frozenset({"unplaced_no_depth"})),
            lambda: Case("no_depth", None, None, True, frozenset({"unplaced_no_depth"})),
            lambda: Case("no_camera_info", _depth_image(self.millimetres(d), header, "16UC1"), None, False,
                         frozenset({"unplaced_no_camera_info"})),
        ]
        return kinds[int(rng.integers(len(kinds)))]()

    def _holes(self, header: Any, good: frozenset[str]) -> Case:
        holes = self.depth_m.copy()
        holes[self.rng.random(holes.shape) < self.rng.uniform(0.0, 0.98)] = np.nan
        return Case("random_holes", _depth_image(self.millimetres(holes), header, "16UC1"), None, True, good)

    def _malformed(self, header: Any, refused: frozenset[str]) -> Case:
        rng = self.rng
        msg = _depth_image(self.millimetres(self.depth_m), header, "16UC1")
        how = str(rng.choice(["truncated", "step", "empty", "claimed_huge"]))
        if how == "truncated":
            msg.data = bytes(msg.data[: int(rng.integers(0, len(msg.data)))])
        elif how == "step":
            msg.step = int(rng.integers(0, msg.width * 2))
        elif how == "empty":
            msg.width, msg.height, msg.data = 0, 0, b""
        else:
            msg.width, msg.height = int(rng.integers(10_000, 100_000)), int(rng.integers(10_000, 100_000))
            msg.step = msg.width * 2
        return Case(f"malformed_{how}", msg, None, True, refused)


def _counters(node: Any) -> collections.Counter[str]:
    camera = node.cameras[0]
    out = collections.Counter({f"unplaced_{k}": v for k, v in camera.unplaced.items()})
    out["bad_input_depth"] = camera.bad_reasons["depth"]
    out[PLACED] = camera.counters["placed"]
    out["errors"] = camera.counters["errors"]
    return out


def run(n: int, seed: int, timeout_s: float, progress: bool = True) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from tqdm import tqdm

    from vknet_data.synth import SynthConfig, SyntheticScene
    from vknet_model.bundled import BUNDLED_ONNX
    from vknet_ros import depth_input
    from vknet_ros.conversions import rgb_to_image_msg
    from vknet_ros.dds_env import apply_loopback_environment
    from vknet_ros.msg import TrackedObjectArray
    from vknet_ros.node import VKNetNode
    from vknet_ros.spinner import BackgroundSpinner

    if not depth_input.available():
        raise SystemExit("depth_fuzz: message_filters is not installed (make ros-kit)")
    apply_loopback_environment()
    rclpy.init()
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    cfg = SynthConfig(frames=4)
    street, _, depth_m = SyntheticScene(0, 1000, cfg).frame_with_depth(2)
    k = (cfg.focal, cfg.focal, cfg.width / 2, cfg.height / 2)
    node = VKNetNode("vknet", namespace="/depth_fuzz", parameter_overrides=[
        Parameter("model", value=str(BUNDLED_ONNX)), Parameter("input_qos", value="reliable"),
        Parameter("depth", value=True), Parameter("depth_wait_s", value=0.5)])
    client = Node("vknet_depth_fuzz_sender")
    image_pub = client.create_publisher(Image, "/depth_fuzz/image", reliable)
    depth_pub = client.create_publisher(Image, "/depth_fuzz/depth", reliable)
    info_pub = client.create_publisher(CameraInfo, "/depth_fuzz/camera_info", reliable)
    depth_info_pub = client.create_publisher(CameraInfo, "/depth_fuzz/depth/camera_info", reliable)
    answers: list[TrackedObjectArray] = []
    client.create_subscription(TrackedObjectArray, "/depth_fuzz/tracks", answers.append, reliable)
    executor = MultiThreadedExecutor(num_threads=3)
    for n_ in (node, client):
        executor.add_node(n_)
    spinner = BackgroundSpinner(executor)

    def info(h: Header, width: int, height: int, scale: float) -> CameraInfo:
        fx, fy, cx, cy = (v * scale for v in k)
        return CameraInfo(header=h, width=width, height=height, k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                          p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])

    maker = Maker(seed, depth_m)
    outcomes: dict[str, collections.Counter[str]] = {}
    unexpected: list[str] = []
    hangs = answered = 0
    start = time.perf_counter()
    try:
        pubs = (image_pub, depth_pub, info_pub, depth_info_pub)
        deadline = time.monotonic() + 30
        while not all(p.get_subscription_count() for p in pubs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in tqdm(range(n), unit="case", desc="depth fuzz", disable=not progress):
            # 5 s apart: each frame starts its tracks afresh, so an outcome never depends on the cases before.
            header = Header(frame_id="camera")
            header.stamp.sec = 1000 + 5 * i
            case = maker.case(header)
            camera = node.cameras[0]
            if not case.colour_info:
                camera.intrinsics = None  # as before any camera_info arrived
            else:
                info_pub.publish(info(header, cfg.width, cfg.height, 1.0))
            if case.depth_info_size is not None:
                width, height = case.depth_info_size
                depth_info_pub.publish(info(header, width, height, 0.5))
            else:
                camera.depth_intrinsics = None
            time.sleep(0.02)  # camera_info first, as drivers send it
            if case.colour_info and case.depth is not None:
                while camera.intrinsics is None:
                    time.sleep(0.005)
            if case.depth_info_size is not None:
                while camera.depth_intrinsics is None:
                    time.sleep(0.005)
            before = _counters(node)
            count = len(answers)
            if case.depth is not None:
                depth_pub.publish(case.depth)
            image_pub.publish(rgb_to_image_msg(street, header))
            deadline = time.monotonic() + timeout_s
            while len(answers) == count and time.monotonic() < deadline:
                time.sleep(0.002)
            if len(answers) == count:
                hangs += 1
                continue
            answered += 1
            after = _counters(node)
            moved = {key for key in after if after[key] != before[key]}
            kind = outcomes.setdefault(case.kind, collections.Counter())
            for key in sorted(moved) or ["no_things"]:
                kind[key] += 1
                if key != "no_things" and key not in case.expected:
                    unexpected.append(f"{case.kind}: {key}")
        header = Header(frame_id="camera")
        header.stamp.sec = 1000 + 5 * n
        info_pub.publish(info(header, cfg.width, cfg.height, 1.0))
        time.sleep(0.2)
        depth_pub.publish(_depth_image(maker.millimetres(depth_m), header, "16UC1"))
        count = len(answers)
        image_pub.publish(rgb_to_image_msg(street, header))
        deadline = time.monotonic() + timeout_s
        while len(answers) == count and time.monotonic() < deadline:
            time.sleep(0.002)
        placed_after = len(answers) > count and all(o.has_position for o in answers[-1].objects) \
            and bool(answers[-1].objects)
        errors = node.cameras[0].counters["errors"]
    finally:
        spinner.stop()
        node.trigger_shutdown()
        for n_ in (node, client):
            n_.destroy_node()
        rclpy.shutdown()
    return {"cases": n, "answered": answered, "hangs": hangs, "node_errors": errors, "unexpected": len(unexpected),
            "unexpected_examples": unexpected[:10], "good_frame_placed_after": placed_after,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "wall_s": round(time.perf_counter() - start, 1),
            "outcomes": {kind: dict(sorted(c.items())) for kind, c in sorted(outcomes.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/depth_fuzz.json"))
    args = parser.parse_args(argv)
    result = run(args.cases, args.seed, args.timeout, progress=not args.no_progress)
    print(f"\n{'kind':28s} outcomes")
    for kind, counts in result["outcomes"].items():
        print(f"{kind:28s} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for key in ("cases", "answered", "hangs", "node_errors", "unexpected", "good_frame_placed_after", "peak_rss_mb",
                "wall_s"):
        print(f"{key:28s} {result[key]}")
    result["cpu"] = describe_cpu()
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.json}")
    ok = result["hangs"] == result["node_errors"] == result["unexpected"] == 0 and result["good_frame_placed_after"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
