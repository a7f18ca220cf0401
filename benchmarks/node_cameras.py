"""One node serving 1, 2 and 3 cameras: the highest total frame rate it keeps up with and its memory.

For each camera count a fresh node process (the bundled model, ONNX Runtime, ``cameras:=[cam0, ...]``) is
fed KITTI-size synthetic frames (1242x375 rgb8, a different street per camera) on every camera at once, at
rising total rates split evenly over the cameras. A frame counts as dropped when no answer (its ``tracks``)
came back; the answer per camera count is the highest total rate with < 5 % drops on every camera. The
node's resident memory is read from /proc after the sweep (VmRSS) with its peak (VmHWM).

Usage: python benchmarks/node_cameras.py [--cameras 1 2 3] [--rates 1 2 3 4 6] [--seconds 8]
       [--json benchmarks/node_cameras.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vknet_model.machine import describe_cpu

MAX_DROP = 0.05
TAIL_S = 3.0  # after the last frame: the answers still in flight


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Client:
    """Publishes on every camera's image topic and counts answers on its tracks topic, by stamp."""

    def __init__(self, names: list[str], namespace: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from vknet_ros.msg import TrackedObjectArray

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("vknet_cameras_bench", namespace=namespace, context=self.context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {n: self.node.create_publisher(Image, f"{n}/image", qos) for n in names}
        self.answers: dict[str, dict[int, float]] = {n: {} for n in names}  # stamp ns -> arrival time
        for n in names:
            self.node.create_subscription(TrackedObjectArray, f"{n}/tracks",
                                          lambda m, n=n: self._on_tracks(n, m), qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on_tracks(self, name: str, msg: Any) -> None:
        self.answers[name][msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = time.monotonic()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _frames(count: int) -> list[Any]:
    import numpy as np

    from vknet_data.synth import SynthConfig, SyntheticScene

    cfg = SynthConfig(frames=4)
    return [[np.ascontiguousarray(SyntheticScene(0, 1000 + c, cfg).frame(t)[0]) for t in range(4)]
            for c in range(count)]


def measure(cameras: int, rates: list[float], seconds: float) -> dict[str, Any]:
    from std_msgs.msg import Header

    from vknet_ros.child_process import popen_tied_to_parent
    from vknet_ros.conversions import rgb_to_image_msg
    from vknet_ros.replay import replay_namespace

    names = [f"cam{i}" for i in range(cameras)]
    namespace = replay_namespace()
    cmd = [sys.executable, "-m", "vknet_ros.node", "--ros-args", "-r", f"__ns:={namespace}",
           "-p", f"cameras:=[{', '.join(names)}]", "-p", "input_qos:=reliable", "-p", "backend:=onnxruntime",
           "-p", "device:=cpu"]
    log = Path(tempfile.mkdtemp(prefix="vknet_cameras_")) / "node.log"
    with log.open("wb") as out:  # the child writes to its own copy of the descriptor
        node = popen_tied_to_parent(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
                                    start_new_session=True)
    client = _Client(names, namespace)
    frames = _frames(cameras)
    try:
        if not client.ready(120.0):
            raise RuntimeError(f"the node did not subscribe within 120 s; log {log}:\n{log.read_text()[-2000:]}")
        stamp_ns = 10**9
        rows: list[dict[str, Any]] = []

        def send(i: int, k: int) -> None:
            nonlocal stamp_ns
            stamp_ns += 1_000_000  # distinct, increasing stamps (1 ms apart: no tracker reset)
            header = Header(frame_id=names[i])
            header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
            client.pubs[names[i]].publish(rgb_to_image_msg(frames[i][k % 4], header))

        for k in range(2):  # warm-up round, answered before timing
            for i in range(cameras):
                send(i, k)
            time.sleep(2.0)
        for rate in rates:
            for answers in client.answers.values():
                answers.clear()
            per_camera = rate / cameras
            count = max(3, round(per_camera * seconds))
            start = time.monotonic()
            sent: dict[str, list[int]] = {n: [] for n in names}
            for k in range(count):
                for i in range(cameras):  # each camera at per_camera Hz, staggered across the period
                    due = start + (k + i / cameras) / per_camera
                    time.sleep(max(0.0, due - time.monotonic()))
                    send(i, k)
                    sent[names[i]].append(stamp_ns)
            time.sleep(TAIL_S)
            drops = [1 - sum(s in client.answers[n] for s in sent[n]) / len(sent[n]) for n in names]
            rows.append({"total_rate_hz": rate, "per_camera_hz": per_camera, "frames_per_camera": count,
                         "drop_fraction_per_camera": drops, "worst_drop_fraction": max(drops)})
        rss, peak = _status_mb(node.pid, "VmRSS"), _status_mb(node.pid, "VmHWM")
    finally:
        client.close()
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
    kept = [r["total_rate_hz"] for r in rows if r["worst_drop_fraction"] < MAX_DROP]
    return {"cameras": cameras, "rows": rows, "max_total_rate_hz": max(kept, default=0.0), "rss_mb": rss,
            "peak_rss_mb": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0],
                        help="total frame rates over all cameras (Hz)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each rate's run (default 8)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/node_cameras.json"))
    args = parser.parse_args(argv)
    from vknet_ros.dds_env import apply_loopback_environment

    apply_loopback_environment()
    results = []
    print(f"{'cameras':>7} {'total Hz':>8} {'per cam Hz':>10} {'worst drop %':>12}")
    for cameras in args.cameras:
        result = measure(cameras, args.rates, args.seconds)
        results.append(result)
        for row in result["rows"]:
            print(f"{cameras:>7} {row['total_rate_hz']:>8.1f} {row['per_camera_hz']:>10.2f} "
                  f"{100 * row['worst_drop_fraction']:>12.1f}")
    base = results[0]["rss_mb"]
    print(f"\n{'cameras':>7} {'max total Hz (<5% drops)':>24} {'RSS MB':>8} {'peak MB':>8} {'RSS / first':>11}")
    for r in results:
        r["rss_ratio_to_first"] = r["rss_mb"] / base
        print(f"{r['cameras']:>7} {r['max_total_rate_hz']:>24.1f} {r['rss_mb']:>8.0f} {r['peak_rss_mb']:>8.0f} "
              f"{r['rss_ratio_to_first']:>11.2f}")
    record = {"cpu": describe_cpu(), "cores": os.cpu_count(), "results": results}
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
