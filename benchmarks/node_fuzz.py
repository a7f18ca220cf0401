"""Hostile input against the live node: thousands of randomised messages, each accounted for.

Two nodes run in this process over real DDS on loopback, with the bundled model: one on ``image`` and one on
``image/compressed``; both take ``camera_info``. Messages are sent one at a time and the next waits until the
node has settled the last one (processed it, or counted it under one of its fixed reasons), so every message
has exactly one observed outcome and none is lost to the node's newest-frame-wins slot. Message kinds:

- raw images: valid ones of random size (1x1 up to 1920x1080, a few 4096x2160) and colour encodings, with
  stamps backwards, zero and far in the future and long or non-ASCII frame ids; unknown encodings (16-bit,
  float, Bayer, YUV, random non-ASCII text); sizes claimed up to 100000x100000 with little data; step and data
  length that disagree with the size; big-endian flags; fields drawn at random;
- compressed images: good JPEG and PNG, random bytes, headers forged to 0x0, 1x1, 8192x8192 and 30000x30000,
  truncated and byte-flipped JPEG and PNG, 16-bit PNG, GIF, empty data;
- camera_info: good ones and ones with zeros, NaN, inf, negative focal lengths or no size.

Reported: messages, crashes (this process would die: it is a crash of the node), hangs (no outcome within
``--timeout`` s), uncounted messages (settled with no counter moved), unexpected outcomes (a reason the kind
cannot produce), the outcome table per kind, the slowest message, peak RSS of the whole process (both nodes,
the sender and its messages), and whether a good frame sent last under a new frame_id is answered exactly as a
freshly built Pipeline answers it.

Usage: python benchmarks/node_fuzz.py [--messages 5000] [--seed 0] [--json benchmarks/node_fuzz.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vknet_model.machine import describe_cpu

PROCESSED = "processed"
CAMERA_INFO_OK = "camera_info_accepted"
COLOUR = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
UNKNOWN_ENCODINGS = ("16UC1", "mono16", "32FC1", "64FC1", "yuv422", "bayer_rggb8", "rgb16", "8UC3", "",
                     "RGB8", "rgb8 ", "jpeg", "ÿ\x00é漢字", "x" * 300)


@dataclass
class Case:
    kind: str
    target: str           # "raw", "compressed" or "info"
    msg: Any
    expected: frozenset[str]


@dataclass
class Tally:
    messages: int = 0
    hangs: int = 0
    uncounted: int = 0
    unexpected: list[str] = field(default_factory=list)
    outcomes: dict[str, collections.Counter[str]] = field(default_factory=dict)
    slowest_s: float = 0.0
    slowest_kind: str = ""
    peak_raised_by: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))  # kind -> MB


def peak_rss_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---- message makers -----------------------------------------------------------------------------------------
class Maker:
    """Random messages of every kind, from one seeded generator and one synthetic street frame."""

    def __init__(self, seed: int, street: np.ndarray) -> None:
        import cv2

        self.rng = np.random.default_rng(seed)
        self.street = street  # RGB uint8 375x1242
        self.jpeg = cv2.imencode(".jpg", street[:, :, ::-1])[1].tobytes()
        self.png = cv2.imencode(".png", street[::2, ::2, ::-1])[1].tobytes()
        self.png16 = cv2.imencode(".png", street[::4, ::4, 0].astype(np.uint16) * 257)[1].tobytes()
        self.sequence = 0

    def header(self, stamp_s: float | None = None, frame_id: str | None = None) -> Any:
        from std_msgs.msg import Header

        r = self.rng
        if stamp_s is None:
            stamp_s = float(r.choice([0.0, 1e-9, 100.0 + r.random() * 100, 2**31 - 1.0, 4e9 - 1, r.random() * 1e9]))
        if frame_id is None:
            frame_id = str(r.choice(["cam", "camera_ü", "", "漢字" * 50, "x" * 10_000, "a/b c\td"]))
        header = Header(frame_id=frame_id)
        header.stamp.sec = int(min(stamp_s, 2**31 - 1))
        header.stamp.nanosec = int(r.integers(0, 2**32)) if r.random() < 0.1 else int((stamp_s % 1) * 1e9)
        return header

    def _image(self, height: int, width: int, encoding: str, *, step: int | None = None, data: bytes | None = None,
               bigendian: int = 0) -> Any:
        from sensor_msgs.msg import Image

        channels = CHANNELS.get(encoding, 3)
        if data is None:
            import cv2

            rgb = cv2.resize(self.street, (width, height), interpolation=cv2.INTER_AREA)
            pixels = {1: rgb[:, :, :1], 3: rgb, 4: np.concatenate([rgb, rgb[:, :, :1]], axis=2)}[channels]
            data = np.ascontiguousarray(pixels).tobytes()
        return Image(header=self.header(), height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                     step=width * channels if step is None else step, data=data)

    def raw(self) -> Case:
        r = self.rng
        roll = r.random()
        if roll < 0.12:
            size = [(1, 1), (1, 2), (2, 1), (3, 7), (17, 31), (375, 1242), (1080, 1920), (480, 640)]
            h, w = size[r.integers(len(size))]
            if r.random() < 0.05:
                h, w = 2160, 4096
            enc = str(r.choice(COLOUR))
            return Case("raw_valid", "raw", self._image(h, w, enc, bigendian=int(r.integers(2))),
                        frozenset({PROCESSED}))
        if roll < 0.25:
            encoding = str(r.choice(UNKNOWN_ENCODINGS))
            return Case("raw_unknown_encoding", "raw", self._image(4, 6, encoding, data=bytes(72)),
                        frozenset({"encoding"}))
        if roll < 0.37:
            h, w = (int(v) for v in r.choice([[8192, 8192], [100_000, 100_000], [65_535, 1], [1, 2**31 - 1],
                                              [2**31 - 1, 2**31 - 1], [8193, 8192]]))
            return Case("raw_huge_claim", "raw", self._image(h, w, "rgb8", data=bytes(int(r.integers(0, 4096)))),
                        frozenset({"too_large", "truncated"}))
        if roll < 0.50:
            h, w = int(r.integers(1, 200)), int(r.integers(1, 200))
            enc = str(r.choice(COLOUR))
            c = CHANNELS[enc]
            choice = int(r.integers(3))
            if choice == 0:
                return Case("raw_step_too_small", "raw", self._image(h, w, enc, step=w * c - 1, data=bytes(h * w * c)),
                            frozenset({"step"}))
            if choice == 1:
                return Case("raw_data_short", "raw",
                            self._image(h, w, enc, data=bytes(int(r.integers(0, h * w * c)))),
                            frozenset({"truncated", "empty"}))
            padded = self._image(h, w, enc, step=w * c + int(r.integers(1, 64)), data=None)
            padded.data = bytes(padded.step * h)  # rows padded as some drivers do: valid
            return Case("raw_step_padded", "raw", padded, frozenset({PROCESSED}))
        if roll < 0.57:
            return Case("raw_empty", "raw", self._image(int(r.integers(0, 2)) * 5, 0, "rgb8", data=b""),
                        frozenset({"empty"}))
        # every field at random
        h, w = int(r.integers(0, 3000)), int(r.integers(0, 3000))
        enc = str(r.choice(COLOUR + UNKNOWN_ENCODINGS[:4]))
        step = int(r.integers(0, 12_000))
        length = int(r.integers(0, 2_000_000))
        return Case("raw_random_fields", "raw",
                    self._image(h, w, enc, step=step, data=bytes(length), bigendian=int(r.integers(2))),
                    frozenset({PROCESSED, "encoding", "empty", "too_large", "step", "truncated"}))

    def compressed(self) -> Case:
        from sensor_msgs.msg import CompressedImage

        r = self.rng
        roll = r.random()
        fmt = str(r.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "weird ü"]))

        def case(kind: str, data: bytes, *expected: str) -> Case:
            return Case(kind, "compressed", CompressedImage(header=self.header(), format=fmt, data=data),
                        frozenset(expected))

        if roll < 0.10:
            return case("jpeg_good", self.jpeg, PROCESSED)
        if roll < 0.15:
            return case("png_good", self.png, PROCESSED)
        if roll < 0.30:
            flipped = bytearray(self.jpeg)
            for at in r.integers(2, len(flipped), int(r.integers(1, 40))):
                flipped[at] ^= int(r.integers(1, 256))
            # A flip inside the entropy-coded data can leave valid codes that no decoder can tell from the
            # real ones: such a frame is processed (reported in the table), not an error.
            return case("jpeg_flipped", bytes(flipped), "corrupt_compressed", "undecodable", "too_large", "empty",
                        PROCESSED)
        if roll < 0.38:
            return case("jpeg_truncated", self.jpeg[: int(r.integers(0, len(self.jpeg)))], "corrupt_compressed",
                        "undecodable", "empty")
        if roll < 0.48:
            h, w = (int(v) for v in r.choice([[0, 0], [1, 1], [8192, 8192], [30_000, 30_000], [65_535, 65_535],
                                              [375, 1242]]))
            return case("jpeg_forged_size", forge_jpeg_size(self.jpeg, h, w), "too_large", "corrupt_compressed",
                        "undecodable", "empty", PROCESSED)
        if roll < 0.58:
            flipped = bytearray(self.png)
            for at in r.integers(8, len(flipped), int(r.integers(1, 10))):
                flipped[at] ^= int(r.integers(1, 256))
            return case("png_flipped", bytes(flipped), "undecodable", "too_large", "empty", "encoding")
        if roll < 0.63:
            return case("png_truncated", self.png[: int(r.integers(0, len(self.png)))], "undecodable", "empty")
        if roll < 0.68:
            return case("png_16_bit", self.png16, "encoding")
        if roll < 0.76:
            h, w = (int(v) for v in r.choice([[0, 0], [8192, 8192], [16_384, 16_384], [2**31 - 1, 1]]))
            return case("png_forged_size", forge_png_size(self.png, h, w), "too_large", "undecodable", "empty")
        if roll < 0.90:
            return case("random_bytes", r.bytes(int(r.integers(1, 20_000))), "undecodable")
        if roll < 0.95:
            return case("gif", b"GIF89a" + r.bytes(200), "undecodable")
        return case("compressed_empty", b"", "empty")

    def camera_info(self) -> Case:
        from sensor_msgs.msg import CameraInfo

        r = self.rng
        fx = 500.0 + r.random() * 1000
        k = [fx, 0.0, 621.0, 0.0, fx, 187.5, 0.0, 0.0, 1.0]
        p = [fx, 0.0, 621.0, 0.0, 0.0, fx, 187.5, 0.0, 0.0, 0.0, 1.0, 0.0]
        width, height = 1242, 375
        bad = r.random() < 0.7
        if bad:
            what = int(r.integers(6))
            if what == 0:
                k = [0.0] * 9
            elif what == 1:
                k[int(r.integers(9))] = float("nan")
            elif what == 2:
                p[int(r.integers(12))] = float("inf")
            elif what == 3:
                k[0] = -fx
            elif what == 4:
                k[4] = 1e-300
            else:
                width = height = 0
        msg = CameraInfo(header=self.header(), width=width, height=height, k=k, p=p)
        return Case("camera_info_bad" if bad else "camera_info_good", "info", msg,
                    frozenset({"camera_info"} if bad else {CAMERA_INFO_OK}))


def forge_jpeg_size(jpeg: bytes, height: int, width: int) -> bytes:
    """The JPEG with its baseline frame header rewritten to claim another size."""
    start = jpeg.index(b"\xff\xc0") + 5  # marker, length (2), precision (1)
    return jpeg[:start] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[start + 4:]


def forge_png_size(png: bytes, height: int, width: int) -> bytes:
    """The PNG with its IHDR rewritten to claim another size, with a correct CRC (so only the size lies)."""
    body = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]
    return png[:12] + body + zlib.crc32(body).to_bytes(4, "big") + png[33:]


def cases(maker: Maker, n: int) -> Iterator[Case]:
    for _ in range(n):
        roll = maker.rng.random()
        yield maker.raw() if roll < 0.5 else maker.compressed() if roll < 0.9 else maker.camera_info()


# ---- the run ------------------------------------------------------------------------------------------------
def _snapshot(node: Any) -> collections.Counter[str]:
    counts = collections.Counter({reason: n for reason, n in node.bad_reasons.items()})
    counts[PROCESSED] = node.counters["processed"]
    counts["errors"] = node.counters["errors"]
    counts[CAMERA_INFO_OK] = node.counters["camera_info"]
    return counts


def _settle(nodes: list[Any], before: list[collections.Counter[str]], timeout_s: float) -> list[str] | None:
    """The counters that moved in each of ``nodes`` since ``before``, once every node has settled the message
    (a counter moved); None if one had not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        moved = [[key for key, n in _snapshot(node).items() if n != old[key]]
                 for node, old in zip(nodes, before, strict=True)]
        if all(moved):
            return [key for keys in moved for key in keys]
        time.sleep(0.001)
    return None


def run(n: int, seed: int, timeout_s: float, progress: bool = True) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from tqdm import tqdm

    from vknet_data.synth import SynthConfig, render_sequence
    from vknet_model.backends import open_backend
    from vknet_model.bundled import BUNDLED_ONNX
    from vknet_model.pipeline import Pipeline
    from vknet_ros.conversions import image_msg_to_labels, rgb_to_image_msg
    from vknet_ros.dds_env import apply_loopback_environment
    from vknet_ros.node import BAD_INPUT_REASONS, VKNetNode
    from vknet_ros.spinner import BackgroundSpinner

    apply_loopback_environment()
    rclpy.init()
    # Depth 1: messages go one at a time, and a deeper writer history would keep up to that many of the
    # largest (35 MB) frames in this process, which the peak RSS would charge to the nodes.
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    street = render_sequence(0, 1000, SynthConfig(frames=1))[0][0]
    maker = Maker(seed, street)
    # One namespace per node: the sender feeds each its own input and reads the raw node's answers.
    nodes = {target: VKNetNode("vknet", namespace=f"/fuzz_{target}", parameter_overrides=[
        Parameter("model", value=str(BUNDLED_ONNX)), Parameter("input_qos", value="reliable"),
        Parameter("compressed_input", value=target == "compressed")]) for target in ("raw", "compressed")}
    client = Node("vknet_fuzz_sender")
    pubs: dict[str, Any] = {
        "raw": client.create_publisher(Image, "/fuzz_raw/image", reliable),
        "compressed": client.create_publisher(CompressedImage, "/fuzz_compressed/image/compressed", reliable),
        "info": [client.create_publisher(CameraInfo, f"/fuzz_{t}/camera_info", reliable) for t in nodes]}
    answers: list[Image] = []
    client.create_subscription(Image, "/fuzz_raw/panoptic", answers.append, reliable)
    executor = MultiThreadedExecutor(num_threads=3)
    for node in (*nodes.values(), client):
        executor.add_node(node)
    spinner = BackgroundSpinner(executor)
    tally = Tally()
    start = time.perf_counter()
    try:
        every_pub = [pubs["raw"], pubs["compressed"], *pubs["info"]]
        _wait(lambda: all(p.get_subscription_count() >= 1 for p in every_pub), 30.0, "the nodes to subscribe")
        setup_rss_mb = current_rss_mb()  # both nodes configured and warmed up, before the first message
        for case in tqdm(cases(maker, n), total=n, unit="msg", desc="fuzz", disable=not progress):
            targets = [nodes["raw"], nodes["compressed"]] if case.target == "info" else [nodes[case.target]]
            before = [_snapshot(node) for node in targets]
            peak_before = peak_rss_mb()
            sent = time.perf_counter()
            for pub in pubs["info"] if case.target == "info" else [pubs[case.target]]:
                pub.publish(case.msg)
            moved = _settle(targets, before, timeout_s)
            took = time.perf_counter() - sent
            tally.peak_raised_by[case.kind] += peak_rss_mb() - peak_before
            tally.messages += 1
            if took > tally.slowest_s:
                tally.slowest_s, tally.slowest_kind = took, case.kind
            if moved is None:
                tally.hangs += 1
                continue
            outcomes = set(moved) - {"errors"}
            if not outcomes:
                tally.uncounted += 1
            for outcome in sorted(set(moved)):
                tally.outcomes.setdefault(case.kind, collections.Counter())[outcome] += 1
                if outcome not in case.expected:
                    tally.unexpected.append(f"{case.kind}: {outcome}")
        # A good frame after all of it, under a frame_id never used (a fresh track state), answered as a fresh
        # Pipeline answers it.
        from std_msgs.msg import Header

        header = Header(frame_id="after_the_fuzz")
        header.stamp.sec = 2**31 - 2
        good = rgb_to_image_msg(street, header)
        answers.clear()
        pubs["raw"].publish(good)
        answered = _wait(lambda: any(a.header.frame_id == "after_the_fuzz" for a in answers), 60.0, "", strict=False)
        reference = Pipeline(open_backend(BUNDLED_ONNX, backend="onnxruntime"), panoptic_dtype=np.uint16)
        expected = reference.step(street, stamp=float(header.stamp.sec), frame_id="after_the_fuzz").panoptic
        correct = answered and np.array_equal(
            image_msg_to_labels([a for a in answers if a.header.frame_id == "after_the_fuzz"][-1]), expected)
        end_rss_mb = current_rss_mb()
        errors = sum(node.counters["errors"] for node in nodes.values())
        fixed = all(set(node.bad_reasons) == set(BAD_INPUT_REASONS) for node in nodes.values())
        counted = all(sum(node.bad_reasons.values()) == node.counters["bad_input"] for node in nodes.values())
    finally:
        spinner.stop()
        for node in (*nodes.values(), client):
            node.destroy_node()
        rclpy.shutdown()
    return {
        "messages": tally.messages, "crashes": 0, "hangs": tally.hangs, "uncounted": tally.uncounted,
        "unexpected": len(tally.unexpected), "unexpected_examples": tally.unexpected[:10], "node_errors": errors,
        "reasons_fixed_set": fixed, "reasons_sum_to_bad_input": counted,
        "good_frame_after": "answered exactly as a fresh Pipeline" if correct else
        ("answered, differently" if answered else "not answered"), "good_frame_correct": bool(correct),
        "rss_after_setup_mb": round(setup_rss_mb, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_at_end_mb": round(end_rss_mb, 1),
        "slowest_message_s": round(tally.slowest_s, 3),
        "peak_raised_by_mb": {k: round(v, 1) for k, v in sorted(tally.peak_raised_by.items(), key=lambda kv: -kv[1])
                              if v >= 1},
        "slowest_kind": tally.slowest_kind, "wall_s": round(time.perf_counter() - start, 1),
        "outcomes": {kind: dict(sorted(c.items())) for kind, c in sorted(tally.outcomes.items())},
    }


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, strict: bool = True) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    if strict:
        raise SystemExit(f"node_fuzz: timed out waiting for {what}")
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one message may take (a hang)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/node_fuzz.json"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    result = run(args.messages, args.seed, args.timeout, progress=not args.no_progress)
    result.update({"seed": args.seed, "cpu": describe_cpu(),
                   "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv])})
    r = result
    print(f"\n| messages | crashes | hangs | uncounted | unexpected | node errors | RSS after setup / at end / "
          f"peak (MB) | slowest (s) | good frame after |\n|---|---|---|---|---|---|---|---|---|\n"
          f"| {r['messages']} | 0 | {r['hangs']} | {r['uncounted']} | {r['unexpected']} | {r['node_errors']} | "
          f"{r['rss_after_setup_mb']} / {r['rss_at_end_mb']} / {r['peak_rss_mb']} | {r['slowest_message_s']} "
          f"({r['slowest_kind']}) | {r['good_frame_after']} |\n")
    print(f"peak RSS raised by (MB, per message kind): {result['peak_raised_by_mb']}\n")
    print("| kind | outcomes |\n|---|---|")
    for kind, outcomes in result["outcomes"].items():
        print(f"| {kind} | {', '.join(f'{k} {v}' for k, v in outcomes.items())} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = (result["hangs"] == 0 and result["uncounted"] == 0 and result["unexpected"] == 0 and result["node_errors"] == 0
          and result["good_frame_correct"] and result["reasons_fixed_set"] and result["reasons_sum_to_bad_input"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
