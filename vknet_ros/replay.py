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

import collections
import functools
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vknet_model.errors import VKNetError
from vknet_model.percentile import percentile
from vknet_ros.bags import BagFrame
from vknet_ros.child_process import popen_tied_to_parent
from vknet_ros.spinner import BackgroundSpinner

_LOG = logging.getLogger(__name__)
READY_TIMEOUT_S = 120.0
FINAL_ANSWER_TIMEOUT_S = 10.0  # at a fixed rate: how long the last frame's answer may still take
DIAGNOSTICS_TIMEOUT_S = 5.0    # the node publishes its counters every diagnostics_period_s (1 s by default)
NODE_NAME = "vknet"            # the node this replay starts, in a namespace of its own (replay_namespace)
POLL_S = 0.02                  # how often a wait looks again at the node process and the matching state


class FrameSource(Protocol):
    """Anything that yields frames in time order: a :class:`vknet_ros.bags.BagReader`, a video file reader."""

    def frames(self) -> Iterator[BagFrame]: ...

    def frame_count(self) -> int | None:
        """How many frames ``frames`` will yield, if known without reading them (for progress bars)."""
        ...


class ReplayError(VKNetError, RuntimeError):
    """The node could not be started or stopped answering; the message carries its log tail."""


@dataclass
class ReplayReport:
    sent: int = 0
    answered: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    node_diagnostics: dict[str, str] = field(default_factory=dict)
    other_outputs: dict[str, int] = field(default_factory=dict)  # messages received per topic (every_output)

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


class _NodeProcess:
    """The node under test: ``python -m vknet_ros.node`` in its own process, its output in ``log_path``."""

    def __init__(self, params: dict[str, str], log_path: Path, namespace: str) -> None:
        cmd = [sys.executable, "-m", "vknet_ros.node", "--ros-args", "-r", f"__node:={NODE_NAME}",
               "-r", f"__ns:={namespace}"]
        for name, value in params.items():
            cmd += ["-p", f"{name}:={value}"]
        self.log_path = log_path
        _LOG.info("starting the node: %s", " ".join(cmd))
        with log_path.open("wb") as log:  # the child writes to its own copy of the descriptor
            self.proc = popen_tied_to_parent(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                             start_new_session=True)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def raise_if_failed(self, *, starting: bool = False) -> None:
        """ReplayError if the node exited, was stopped (SIGSTOP: it would never answer again) or, while
        ``starting``, logged that it could not configure."""
        if self.proc.poll() is not None:
            when = " before it was ready" if starting else ""
            raise ReplayError(f"the node exited with code {self.proc.returncode}{when}:\n{self.tail()}")
        if self._stopped():
            raise ReplayError(f"the node process {self.proc.pid} is stopped (SIGSTOP or a debugger)")
        if starting and "configure failed" in self.tail():
            raise ReplayError(f"the node could not configure:\n{self.tail()}")

    def _stopped(self) -> bool:
        """Stopped by a signal (T) or by a tracer (t), per /proc."""
        return _process_state(self.proc.pid) in ("T", "t")

    def stop(self) -> None:
        if self.proc.poll() is None and self._stopped():
            self.proc.kill()  # a stopped process cannot act on SIGINT
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class _Player:
    """This process's side of DDS: sends frames on ``image``, queues the node's ``panoptic`` answers, hands
    its ``overlay`` images to ``on_overlay`` and keeps its latest ``/diagnostics`` counters."""

    def __init__(self, on_overlay: Callable[[np.ndarray], None] | None, namespace: str,
                 every_output: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from vknet_ros.conversions import image_msg_to_rgb

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        # In the node's namespace: the relative topics below are its topics, and no other node's.
        self.namespace = namespace
        self.node = Node("vknet_replay_player", namespace=namespace, context=self.context)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self.node)
        self.answers: queue.Queue[tuple[int, np.ndarray, float]] = queue.Queue()
        self.diagnostics: dict[str, str] = {}
        self.received: collections.Counter[str] = collections.Counter()
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(Image, "image",
                                                    QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        # The topics whose publishers must be matched before the first frame goes out.
        self._inputs = [self.node.create_subscription(Image, "panoptic", self._on_panoptic, reliable)]
        if on_overlay is not None:
            self._inputs.append(self.node.create_subscription(
                Image, "overlay", lambda msg: on_overlay(image_msg_to_rgb(msg)), reliable))
        if every_output:  # the node builds its visual outputs only for subscribers: be one (and discard them)
            from visualization_msgs.msg import MarkerArray

            listened = [("semantic", Image), ("markers", MarkerArray)]
            listened += [("overlay", Image)] if on_overlay is None else []
            for topic, kind in listened:
                self.received[topic] = 0
                self._inputs.append(self.node.create_subscription(
                    kind, topic, lambda msg, topic=topic: self.received.update((topic,)), reliable))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)
        self._spinner = BackgroundSpinner(executor, name="vknet_replay_spinner")

    def _on_panoptic(self, msg: Any) -> None:
        from vknet_ros.conversions import image_msg_to_labels

        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.answers.put((stamp, image_msg_to_labels(msg).astype(np.int32), time.perf_counter()))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == f"{self.namespace}/{NODE_NAME}: pipeline":  # the node's fully qualified name
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def _matched_publishers(self, subscription: Any) -> int:
        # Subscription.get_publisher_count (matched writers) is rclpy >= Iron; Humble has only the graph count.
        count = getattr(subscription, "get_publisher_count", None)
        return int(count()) if count is not None else int(self.node.count_publishers(subscription.topic_name))

    def matched(self) -> bool:
        """The node's image subscription matched our publisher, and its answers' publishers our subscriptions.

        A reliable writer delivers to every reader it has matched, so from here on no frame and no answer is
        lost. (The node creates its endpoints after it has discovered ours, so it matches before we see it.)
        """
        return self.publisher.get_subscription_count() > 0 and all(
            self._matched_publishers(s) > 0 for s in self._inputs) and self._alone()

    def _alone(self) -> bool:
        """Whether every endpoint on our image and panoptic topics is known to be ours; ReplayError for one of
        another node (answers must come from the node this replay started: a leftover node with other
        thresholds had been scored without a word)."""
        for topic in (self.publisher.topic_name, self._inputs[0].topic_name):
            for info in (*self.node.get_publishers_info_by_topic(topic),
                         *self.node.get_subscriptions_info_by_topic(topic)):
                if info.node_name == "_NODE_NAME_UNKNOWN_":  # its node's name is not discovered yet
                    return False
                owner = (info.node_namespace, info.node_name)
                if owner not in ((self.namespace, NODE_NAME), (self.namespace, self.node.get_name())):
                    raise ReplayError(f"another node ({info.node_namespace}/{info.node_name}) is on {topic}: "
                                      f"the replay would score answers it did not ask for")
        return True

    def send(self, frame: BagFrame) -> float:
        """Publish ``frame`` (stamped with its own time); return when it was sent (perf_counter)."""
        from std_msgs.msg import Header

        from vknet_ros.conversions import rgb_to_image_msg

        header = Header(frame_id=frame.frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(frame.stamp_ns, 10**9)
        msg = rgb_to_image_msg(frame.image, header)
        sent_at = time.perf_counter()
        self.publisher.publish(msg)
        return sent_at

    def stop_spinning(self) -> None:
        """Join the thread that runs the callbacks (before anything it spins is destroyed)."""
        if not self._spinner.stop():
            _LOG.warning("the replay's executor thread did not stop within 5 s")

    def destroy(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class _Pending:
    """Frames sent and not answered yet, oldest first, resolved as answers arrive.

    Answers come in input order, so the answer to frame k means the node dropped every older pending frame.
    """

    def __init__(self, report: ReplayReport, on_answer: Callable[[BagFrame, np.ndarray | None], None]) -> None:
        self.report = report
        self.on_answer = on_answer
        self.frames: deque[tuple[BagFrame, float]] = deque()

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, frame: BagFrame, sent_at: float) -> None:
        self.frames.append((frame, sent_at))
        self.report.sent += 1

    def holds(self, stamp_ns: int) -> bool:
        return any(f.stamp_ns == stamp_ns for f, _ in self.frames)

    def resolve(self, stamp_ns: int, panoptic: np.ndarray, arrived: float) -> None:
        """The node answered the frame stamped ``stamp_ns``."""
        while self.frames and self.frames[0][0].stamp_ns < stamp_ns:
            self.drop_oldest()
        if self.frames and self.frames[0][0].stamp_ns == stamp_ns:
            frame, sent_at = self.frames.popleft()
            self.report.latencies_ms.append(1e3 * (arrived - sent_at))
            self.report.answered += 1
            self.on_answer(frame, panoptic)

    def drop_oldest(self) -> None:
        self.on_answer(self.frames.popleft()[0], None)
        self.report.dropped += 1


def _wait_until(condition: Callable[[], bool], timeout_s: float, node: _NodeProcess, *,
                starting: bool = False) -> bool:
    """Wait for ``condition``; False after ``timeout_s``. ReplayError as soon as the node fails."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        node.raise_if_failed(starting=starting)
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _reached(when: float) -> bool:
    return time.perf_counter() >= when


def _process_state(pid: int) -> str:
    """The one-letter state of process ``pid`` from /proc (Linux; "" where it cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[0]  # after "pid (command)", which may hold spaces


def _settle(player: _Player, node: _NodeProcess, pending: _Pending, until: int | None, timeout_s: float) -> None:
    """Resolve the answers that have arrived; with ``until``, first wait up to ``timeout_s`` for the answer
    to the pending frame stamped ``until``."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = until is not None and pending.holds(until)
        try:
            answer = player.answers.get(timeout=POLL_S if waiting else 0.0)
        except queue.Empty:
            if not waiting or time.monotonic() > deadline:
                return
            node.raise_if_failed()
            continue
        pending.resolve(*answer)


def _play(reader: FrameSource, player: _Player, node: _NodeProcess, pending: _Pending, *, rate_hz: float | None,
          answer_timeout_s: float, progress: bool) -> float:
    """Send every frame, lockstep or at ``rate_hz``, and resolve every answer; return the wall time."""
    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(total=reader.frame_count(), unit="frame", desc="replay", disable=not progress) as bar:
        for k, frame in enumerate(reader.frames()):
            if k == 0:
                # The clock starts with the first decoded frame: opening the bag must not make the first
                # frames late and then sent back to back (the node would rightly drop one of them).
                start = time.perf_counter()
            if rate_hz is not None:  # the camera's clock; a node that dies meanwhile is noticed within POLL_S
                _wait_until(functools.partial(_reached, start + k / rate_hz), float("inf"), node)
                node.raise_if_failed()
            pending.add(frame, player.send(frame))
            if rate_hz is None:
                _settle(player, node, pending, frame.stamp_ns, answer_timeout_s)
                if pending:
                    raise ReplayError(f"no answer to frame {k} within {answer_timeout_s:.0f} s:\n{node.tail()}")
            else:
                _settle(player, node, pending, None, 0.0)
            bar.update(1)
        if pending:
            _settle(player, node, pending, pending.frames[-1][0].stamp_ns, FINAL_ANSWER_TIMEOUT_S)
        while pending:
            pending.drop_oldest()
    return time.perf_counter() - start


def replay_through_node(reader: FrameSource, *, model: Path, backend: str = "auto", device: str = "cpu",
                        precision: str = "auto", rate_hz: float | None = None, work_dir: Path,
                        on_answer: Callable[[BagFrame, np.ndarray | None], None],
                        on_overlay: Callable[[np.ndarray], None] | None = None,
                        answer_timeout_s: float = 60.0, ready_timeout_s: float = READY_TIMEOUT_S,
                        progress: bool = True, every_output: bool = False,
                        on_node_started: Callable[[int], None] | None = None) -> ReplayReport:
    """Play every frame of ``reader`` into a freshly started node; call ``on_answer(frame, panoptic)`` per frame
    in order (``panoptic`` is None for a frame the node dropped).

    ``every_output`` subscribes to (and discards) the semantic, overlay and marker topics as well, so the node
    builds every output it has, as it does for a user watching all of them in RViz. ``on_node_started(pid)``
    is told the node's process id (a soak test watches its memory, threads and descriptors).

    The caller sets up DDS (``vknet_ros.dds_env.apply_loopback_environment``) before calling.
    """
    if rate_hz is not None and rate_hz <= 0:
        raise ValueError(f"rate must be positive, got {rate_hz}")
    work_dir.mkdir(parents=True, exist_ok=True)
    params = {"model": str(model), "backend": backend, "device": device, "precision": precision,
              "input_qos": "reliable",
              "input_depth": "10", "publish_semantic": str(every_output).lower(),
              "publish_markers": str(every_output).lower(),
              "publish_overlay": str(every_output or on_overlay is not None).lower()}
    namespace = replay_namespace()
    node = _NodeProcess(params, work_dir / "node.log", namespace)
    if on_node_started is not None:
        on_node_started(node.proc.pid)
    try:
        player = _Player(on_overlay, namespace, every_output)
    except BaseException:
        node.stop()
        raise
    report = ReplayReport()
    try:
        if not _wait_until(player.matched, ready_timeout_s, node, starting=True):
            raise ReplayError(f"the node was not ready after {ready_timeout_s:.0f} s:\n{node.tail()}")
        report.wall_s = _play(reader, player, node, _Pending(report, on_answer), rate_hz=rate_hz,
                              answer_timeout_s=answer_timeout_s, progress=progress)
        # The node's own counters, once a /diagnostics message counts every answered frame.
        if not _wait_until(lambda: int(player.diagnostics.get("processed", -1)) >= report.answered,
                           DIAGNOSTICS_TIMEOUT_S, node):
            _LOG.warning("no node diagnostics counting the %d answered frames within %.0f s", report.answered,
                         DIAGNOSTICS_TIMEOUT_S)
        report.node_diagnostics = dict(player.diagnostics)
        # The other outputs of the last frames may still be on their way after its panoptic image.
        _wait_until(lambda: all(n >= report.answered for n in player.received.values()), DIAGNOSTICS_TIMEOUT_S, node)
        report.other_outputs = dict(player.received)
    finally:
        # The player's thread is joined before anything it spins is destroyed; the node is stopped while
        # this side's DDS participant is still up, so it leaves the graph cleanly.
        player.stop_spinning()
        node.stop()
        player.destroy()
    return report


def replay_namespace() -> str:
    """A namespace no other replay or node uses: this process's id and a random part."""
    return f"/vknet_replay_{os.getpid()}_{secrets.token_hex(3)}"


def describe(report: ReplayReport, mode: str) -> str:
    return (f"replay ({mode}): sent {report.sent}, answered {report.answered}, dropped {report.dropped}; "
            f"latency p50 {report.percentile(0.5):.1f} ms, p90 {report.percentile(0.9):.1f} ms, "
            f"max {max(report.latencies_ms, default=float('nan')):.1f} ms; "
            f"{report.sent / max(report.wall_s, 1e-9):.1f} frames/s sent")

