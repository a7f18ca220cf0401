"""Replay a bag into the live node over DDS, record what it publishes, and score it.

The node runs as its own process (`python -m vknet_ros.node`), exactly as deployed; this process plays
the bag's frames on ``image`` and listens to ``panoptic`` (and ``overlay`` when asked). Two modes:

* ``rate_hz=None`` ("as fast as the node keeps up"): each frame is sent when the previous answer arrived.
  Nothing is dropped, so the scores must equal the offline `vknet eval-bag` on the same bag.
* ``rate_hz=R``: frames go out every 1/R s whatever the node does, like a camera. Frames the node skipped
  (it always takes the newest) have no answer; they are scored as an empty (void) prediction, which is
  what a consumer of the live topic would have had.

Outputs arrive in input order (the node processes the newest frame, the topics are reliable), so an answer
for frame k means every unanswered frame before k was dropped; scoring streams along with the replay.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from vknet_model.percentile import percentile
from vknet_ros.bags import BagFrame
from vknet_ros.child_process import popen_tied_to_parent
from vknet_ros.spinner import BackgroundSpinner

_LOG = logging.getLogger(__name__)
READY_TIMEOUT_S = 120.0


class FrameSource(Protocol):
    """Anything that yields frames in time order: a :class:`vknet_ros.bags.BagReader`, a video file reader."""

    def frames(self) -> Iterator[BagFrame]: ...


class ReplayError(RuntimeError):
    """The node could not be started or stopped answering; the message carries its log tail."""


@dataclass
class ReplayReport:
    sent: int = 0
    answered: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    node_diagnostics: dict[str, str] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def _start_node(params: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "vknet_ros.node", "--ros-args", "-r", "__node:=vknet_replay"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"]
    log = log_path.open("wb")
    _LOG.info("starting the node: %s", " ".join(cmd))
    return popen_tied_to_parent(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                start_new_session=True)


def _stop_node(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def replay_through_node(reader: FrameSource, *, model: Path, backend: str = "auto", device: str = "cpu",
                        rate_hz: float | None = None, work_dir: Path,
                        on_answer: Callable[[BagFrame, np.ndarray | None], None],
                        on_overlay: Callable[[np.ndarray], None] | None = None,
                        answer_timeout_s: float = 60.0, ready_timeout_s: float = READY_TIMEOUT_S,
                        progress: bool = True) -> ReplayReport:
    """Play every frame of ``reader`` into a freshly started node; call ``on_answer(frame, panoptic)`` per frame
    in order (``panoptic`` is None for a frame the node dropped).

    The caller sets up DDS (``vknet_ros.dds_env.apply_loopback_environment``) before calling.
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from tqdm import tqdm

    from vknet_ros.conversions import image_msg_to_labels, image_msg_to_rgb, rgb_to_image_msg

    if rate_hz is not None and rate_hz <= 0:
        raise ValueError(f"rate must be positive, got {rate_hz}")
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "node.log"
    params = {"model": str(model), "backend": backend, "device": device, "input_qos": "reliable",
              "input_depth": "10", "publish_semantic": "false",
              "publish_markers": "false", "publish_overlay": "true" if on_overlay else "false"}
    proc = _start_node(params, log_path)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("vknet_replay_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    answers: queue.Queue[tuple[int, np.ndarray, float]] = queue.Queue()
    report = ReplayReport()
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)

    def on_panoptic(msg: Image) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        answers.put((stamp, image_msg_to_labels(msg).astype(np.int32), time.perf_counter()))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("vknet_replay"):
                report.node_diagnostics = {kv.key: kv.value for kv in status.values}

    publisher = node.create_publisher(Image, "image", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(Image, "panoptic", on_panoptic, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)
    if on_overlay is not None:
        node.create_subscription(Image, "overlay", lambda m: on_overlay(image_msg_to_rgb(m)), reliable)
    spinner = BackgroundSpinner(executor, name="vknet_replay_spinner")
    pending: deque[tuple[BagFrame, float]] = deque()

    def settle(block_until: int | None, timeout: float) -> None:
        """Take answers off the queue and resolve pending frames (until the answer to ``block_until``)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting_for = block_until is not None and any(f.stamp_ns == block_until for f, _ in pending)
            try:
                stamp, panoptic, arrived = answers.get(timeout=0.05 if waiting_for else 0.0)
            except queue.Empty:
                if not waiting_for or time.monotonic() > deadline:
                    return
                if proc.poll() is not None:
                    raise ReplayError(f"the node exited with code {proc.returncode}:\n{_log_tail(log_path)}") from None
                continue
            while pending and pending[0][0].stamp_ns < stamp:
                on_answer(pending.popleft()[0], None)
                report.dropped += 1
            if pending and pending[0][0].stamp_ns == stamp:
                frame, sent_at = pending.popleft()
                report.latencies_ms.append(1e3 * (arrived - sent_at))
                report.answered += 1
                on_answer(frame, panoptic)

    try:
        deadline = time.monotonic() + ready_timeout_s
        while publisher.get_subscription_count() == 0 or node.count_publishers("panoptic") == 0:
            if proc.poll() is not None:
                raise ReplayError(f"the node exited with code {proc.returncode} before it was ready:\n"
                                  f"{_log_tail(log_path)}")
            if "configure failed" in _log_tail(log_path):
                raise ReplayError(f"the node could not configure:\n{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise ReplayError(f"the node was not ready after {ready_timeout_s:.0f} s:\n{_log_tail(log_path)}")
            time.sleep(0.05)
        time.sleep(0.2)  # let the reliable readers finish matching
        start = time.perf_counter()
        with tqdm(unit="frame", desc="replay", disable=not progress) as bar:
            for k, frame in enumerate(reader.frames()):
                if k == 0:
                    # The clock starts with the first decoded frame: opening the bag must not make the first
                    # frames late and then sent back to back (the node would rightly drop one of them).
                    start = time.perf_counter()
                if rate_hz is not None:
                    delay = start + k / rate_hz - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                header = Header(frame_id=frame.frame_id)
                header.stamp.sec, header.stamp.nanosec = divmod(frame.stamp_ns, 10**9)
                msg = rgb_to_image_msg(frame.image, header)
                pending.append((frame, time.perf_counter()))
                publisher.publish(msg)
                report.sent += 1
                if rate_hz is None:
                    settle(frame.stamp_ns, answer_timeout_s)
                    if pending:
                        raise ReplayError(f"no answer to frame {k} within {answer_timeout_s:.0f} s:\n"
                                          f"{_log_tail(log_path)}")
                else:
                    settle(None, 0.0)
                bar.update(1)
            if pending:
                settle(pending[-1][0].stamp_ns, 10.0)
            while pending:
                on_answer(pending.popleft()[0], None)
                report.dropped += 1
        report.wall_s = time.perf_counter() - start
        time.sleep(1.1)  # one more diagnostics period, for the node's own counters
    finally:
        # The player's thread is joined before anything it spins is destroyed; the node is stopped while
        # this side's DDS participant is still up, so it leaves the graph cleanly.
        if not spinner.stop():
            _LOG.warning("the replay's executor thread did not stop within 5 s")
        _stop_node(proc)
        node.destroy_node()
        rclpy.shutdown(context=context)
    return report


def describe(report: ReplayReport, mode: str) -> str:
    return (f"replay ({mode}): sent {report.sent}, answered {report.answered}, dropped {report.dropped}; "
            f"latency p50 {report.percentile(0.5):.1f} ms, p90 {report.percentile(0.9):.1f} ms, "
            f"max {max(report.latencies_ms, default=float('nan')):.1f} ms; "
            f"{report.sent / max(report.wall_s, 1e-9):.1f} frames/s sent")

