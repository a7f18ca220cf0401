"""One camera's share of the vknet node: its topics, frame slot, tracker state, 3D placement and counters.

The node loads the model once and holds one :class:`Camera` per name in its ``cameras`` parameter. Each camera
has its own :class:`~vknet_model.pipeline.Pipeline` over the shared backend (so its own tracker, track ids and
instance numbers), its own subscriptions and outputs under its name (``front/image`` -> ``front/panoptic``;
the unnamed camera uses the plain names), its own 3D placer and its own diagnostics. The node's one worker
serves the cameras' newest frames in turn.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32, Header
from visualization_msgs.msg import MarkerArray

from vknet_model.depth3d import Placer, TrackPlacement, resample_depth
from vknet_model.percentile import percentile
from vknet_model.pipeline import FrameResult, Pipeline
from vknet_ros import depth_input, vision_messages
from vknet_ros.conversions import (
    REFUSAL_REASONS,
    ImageConversionError,
    Intrinsics,
    bgr_to_serialized_image,
    checked_intrinsics,
    decode_camera_image,
    decode_compressed,
    depth_msg_to_metres,
    labels_to_serialized_image,
)
from vknet_ros.messages import markers_msg, tracks_msg
from vknet_ros.msg import TrackedObjectArray
from vknet_ros.node_settings import NodeSettings
from vknet_ros.overlay import draw_overlay
from vknet_ros.qos import describe_qos, input_qos

if TYPE_CHECKING:
    from vknet_ros.node import VKNetNode

PIPELINE_STAGES = ("preprocess", "network", "tracker", "postprocess")  # the Pipeline's own timings, in order
# The worker's stages in /diagnostics: decode + pipeline (+ 3D) + publish = processing, then the pipeline's split.
WORKER_STAGES = ("decode", "pipeline", *PIPELINE_STAGES, "place_3d", "publish")
# Fixed codes a refused input is counted under (bad_reasons, diagnostics bad_input_<code>): the decoders'
# refusals, an image the pipeline refuses, an unusable camera_info and an unusable depth message.
BAD_INPUT_REASONS = (*REFUSAL_REASONS, "image", "camera_info", "depth")
# Why a tracked thing went out without a 3D position (diagnostics unplaced_<code>, counted per thing):
# no depth image paired with its frame, no camera_info of the frame's size, the paired depth refused, a depth
# image of another size without a depth/camera_info to register it, too few valid depths under the mask.
UNPLACED_REASONS = ("no_depth", "no_camera_info", "bad_depth", "depth_camera_info", "few_depth_pixels")


class Camera:
    """The state and topics of one camera (see the module docstring); the node drives it."""

    def __init__(self, node: VKNetNode, name: str, pipeline: Pipeline) -> None:
        self.node, self.name, self.pipeline = node, name, pipeline
        self.slot: tuple[Any, float] | None = None  # the newest frame not yet taken, guarded by node._wake
        self.inputs: list[Any] = []  # the image subscription first
        self.pubs: dict[str, Any] = {}
        self.intrinsics: Intrinsics | None = None        # from the last good camera_info
        self.depth_intrinsics: Intrinsics | None = None  # from the last good depth/camera_info
        s = self.settings
        self.pairing = depth_input.DepthPairing(s.depth_slop_s) if s.depth and depth_input.available() else None
        self.placer = Placer(s.label_divisor) if self.pairing is not None else None
        self.counters: collections.Counter[str] = collections.Counter()
        self.bad_reasons: collections.Counter[str] = collections.Counter({reason: 0 for reason in BAD_INPUT_REASONS})
        self.unplaced: collections.Counter[str] = collections.Counter({reason: 0 for reason in UNPLACED_REASONS})
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=200)
        self.processing_ms: collections.deque[float] = collections.deque(maxlen=200)
        # Per-stage times of the worker, reported in /diagnostics so overhead around the network is visible.
        self.stage_ms: dict[str, collections.deque[float]] = {s: collections.deque(maxlen=200) for s in WORKER_STAGES}
        self.done_times: collections.deque[float] = collections.deque(maxlen=50)

    @property
    def settings(self) -> NodeSettings:
        assert self.node.settings is not None
        return self.node.settings

    def topic(self, name: str) -> str:
        """The camera's topic ``name`` (``~/x`` stays private to the node: ``~/<camera>/x``)."""
        if not self.name:
            return name
        return f"~/{self.name}/{name[2:]}" if name.startswith("~/") else f"{self.name}/{name}"

    # ---- outputs and inputs --------------------------------------------------------------------------------
    def create_outputs(self) -> None:
        s, output = self.settings, self.node.output
        self.pubs = {
            "panoptic": output(Image, self.topic("panoptic")) if s.publish_panoptic else None,
            "semantic": output(Image, self.topic("semantic")) if s.publish_semantic else None,
            "overlay": output(Image, self.topic("overlay")) if s.publish_overlay else None,
            "markers": output(MarkerArray, self.topic("markers")) if s.publish_markers else None,
            "tracks": output(TrackedObjectArray, self.topic("tracks")),
            "processing_ms": output(Float32, self.topic("~/processing_ms")),
            "latency_ms": output(Float32, self.topic("~/latency_ms")),
        }
        if vision_messages.available():
            from vision_msgs.msg import Detection2DArray, Detection3DArray

            self.pubs["detections"] = output(Detection2DArray, self.topic("detections"))
            if self.placer is not None:
                self.pubs["detections_3d"] = output(Detection3DArray, self.topic("detections_3d"))

    def destroy_outputs(self) -> None:
        for pub in self.pubs.values():
            if pub is not None:
                self.node.destroy_lifecycle_publisher(pub)
        self.pubs = {}

    def subscribe(self) -> None:
        node = self.node
        self.inputs = [self._subscribe_image(),
                       node.create_subscription(CameraInfo, self.topic("camera_info"), self._on_camera_info,
                                                qos_profile_sensor_data)]
        if self.pairing is not None:
            self.inputs += [
                node.create_subscription(Image, self.topic("depth"), self._on_depth, qos_profile_sensor_data),
                node.create_subscription(CameraInfo, self.topic("depth/camera_info"), self._on_depth_info,
                                         qos_profile_sensor_data)]

    def unsubscribe(self) -> None:
        for sub in self.inputs:
            self.node.destroy_subscription(sub)
        self.inputs = []

    def image_topic(self) -> tuple[Any, str]:
        if self.settings.compressed_input:
            return CompressedImage, self.topic("image/compressed")
        return Image, self.topic("image")

    def _subscribe_image(self) -> Any:
        node = self.node
        kind, topic = self.image_topic()
        publishers = node.get_publishers_info_by_topic(node.resolve_topic_name(topic))
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        # An explicit input_qos may be overridden the rclpy way; auto follows the camera instead.
        overrides = None if self.settings.input_qos == "auto" else QoSOverridingOptions.with_default_policies()
        return node.create_subscription(kind, topic, self._on_image, input_qos(self.settings, publishers),
                                        event_callbacks=events, qos_overriding_options=overrides)

    def follow_camera_qos(self) -> None:
        """input_qos auto: when the camera's publishers now call for another QoS, subscribe again with it."""
        if self.settings.input_qos != "auto" or not self.inputs:
            return
        current = self.inputs[0]
        topic = current.topic_name
        publishers = self.node.get_publishers_info_by_topic(topic)
        wanted = input_qos(self.settings, publishers)
        have = current.qos_profile
        if (wanted.reliability, wanted.durability) == (have.reliability, have.durability) or not publishers:
            return
        self.node.destroy_subscription(current)
        self.inputs[0] = self._subscribe_image()
        self.node.get_logger().info(f"input QoS now {describe_qos(wanted)}, to match {len(publishers)} "
                                    f"publisher(s) on {topic}")

    # ---- callbacks (executor thread) -----------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        with self.node._wake:
            if self.slot is not None:
                self.counters["dropped"] += 1
            self.slot = (msg, time.perf_counter())
            self.counters["received"] += 1
            self.node._wake.notify()
        if self.pairing is not None:
            try:
                self.pairing.colour(msg)
            except Exception as exc:  # a forged stamp the synchronizer cannot take: the frame goes on without 3D
                self.counters["unpairable_colour"] += 1
                self.node.get_logger().warning(f"colour frame not paired with depth: {exc}", throttle_duration_sec=5.0)

    def _on_depth(self, msg: Image) -> None:
        assert self.pairing is not None
        try:
            self.pairing.depth(msg)
        except Exception as exc:  # e.g. a stamp out of range
            self.reject("depth", f"depth message not pairable: {type(exc).__name__}: {exc}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        intrinsics, problem = checked_intrinsics(msg)
        if intrinsics is None:
            self.reject("camera_info", f"{problem}; keeping the last good camera_info")
        else:
            self.intrinsics = intrinsics
            self.counters["camera_info"] += 1

    def _on_depth_info(self, msg: CameraInfo) -> None:
        intrinsics, problem = checked_intrinsics(msg)
        if intrinsics is None:
            self.reject("camera_info", f"depth/{problem}; keeping the last good depth camera_info")
        else:
            self.depth_intrinsics = intrinsics

    def _on_incompatible_qos(self, info: QoSRequestedIncompatibleQoSInfo) -> None:
        self.counters["qos_incompatible"] += 1
        self.node.get_logger().warning(
            f"a publisher of {self.image_topic()[1]} offers QoS incompatible with this node's input_qos "
            f"({self.settings.input_qos}; last policy id {info.last_policy_kind}): no frames will arrive from it. "
            f"Set input_qos to match the camera (e.g. reliable).", throttle_duration_sec=5.0)

    # ---- worker thread -------------------------------------------------------------------------------------
    def process(self, msg: Image | CompressedImage, received: float) -> None:
        s = self.settings
        start = time.perf_counter()
        try:
            # An rgb8 or bgr8 frame stays a view of the message's data (alive until this method returns) in its
            # own channel order, as does the BGR decode of a compressed one: no conversion.
            if isinstance(msg, CompressedImage):
                # A damaged JPEG raises corrupt_compressed (refused below) unless the user wants it processed.
                pixels, damage = decode_compressed(msg, keep_damaged=s.corrupt_compressed == "process")
                order = "bgr"
                if damage:
                    self.count_bad("corrupt_compressed", damage + " (processed: corrupt_compressed=process)")
            else:
                pixels, order = decode_camera_image(msg)
        except ImageConversionError as exc:
            self.reject(exc.reason, str(exc))
            return
        decoded = time.perf_counter()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self.node._pipeline_lock:
            try:
                result = self.pipeline.step(pixels, stamp=stamp, frame_id=msg.header.frame_id, channel_order=order)
            except ValueError as exc:
                self.reject("image", str(exc))
                return
        if result.reset_reason and self.counters["processed"]:
            self.counters["resets"] += 1
            # Throttled: a sender that changes frame_id on every message would otherwise own the log.
            self.node.get_logger().info(f"{self._prefix()}tracker reset: {result.reset_reason}",
                                        throttle_duration_sec=1.0)
        stepped = time.perf_counter()
        placements = self._place(msg, pixels.shape[:2], result, stamp) if self.placer is not None else None
        placed = time.perf_counter()
        self._publish(msg.header, pixels, order, result, placements)
        done = time.perf_counter()
        for stage, ms in (("decode", decoded - start), ("pipeline", stepped - decoded), ("publish", done - placed)):
            self.stage_ms[stage].append(1e3 * ms)
        if placements is not None:
            self.stage_ms["place_3d"].append(1e3 * (placed - stepped))
        for stage in PIPELINE_STAGES:
            self.stage_ms[stage].append(result.timings_ms[stage])
        self.counters["processed"] += 1
        self.processing_ms.append(1e3 * (done - start))
        self.done_times.append(done)
        now = self.node.get_clock().now().nanoseconds * 1e-9
        latency = 1e3 * (now - stamp)
        self.latency_ms.append(latency)
        self.pubs["processing_ms"].publish(Float32(data=float(1e3 * (done - received))))
        self.pubs["latency_ms"].publish(Float32(data=float(latency)))

    def _place(self, msg: Any, size: tuple[int, int], result: FrameResult, stamp: float) -> dict[int, TrackPlacement]:
        """The frame's things in 3D from the depth image paired with it; a thing that cannot be placed is
        counted under its reason and keeps its last velocity."""
        assert self.placer is not None and self.pairing is not None
        height, width = size
        objects = self.placer.objects(result)
        depth_msg = self.pairing.take(depth_input.stamp_ns(msg), self.settings.depth_wait_s)
        colour_k = self.intrinsics[0] if self.intrinsics is not None and self.intrinsics[1] == (width, height) else None
        reason, depth = "", None
        if depth_msg is None:
            reason = "no_depth"
        elif colour_k is None:
            reason = "no_camera_info"
            self.node.get_logger().warning(
                f"{self._prefix()}no camera_info of the image's size {width}x{height} on "
                f"{self.node.resolve_topic_name(self.topic('camera_info'))}: no 3D positions",
                throttle_duration_sec=10.0)
        else:
            try:
                depth = depth_msg_to_metres(depth_msg)
            except ImageConversionError as exc:
                self.reject("depth", str(exc))
                reason = "bad_depth"
            if depth is not None and depth.shape != (height, width):
                known = self.depth_intrinsics
                if known is not None and known[1] == (depth.shape[1], depth.shape[0]):
                    depth = resample_depth(depth, known[0], colour_k, (height, width))
                else:
                    reason = "depth_camera_info"
                    self.node.get_logger().warning(
                        f"{self._prefix()}depth is {depth.shape[1]}x{depth.shape[0]}, the image {width}x{height}: "
                        f"a depth/camera_info of that size is needed to register it", throttle_duration_sec=10.0)
        if reason or depth is None or colour_k is None:
            if result.reset_reason:
                self.placer.motion.reset()
            self.unplaced[reason or "no_depth"] += len(objects)
            return {t: TrackPlacement(t, None, self.placer.motion.velocity(t)) for t, _, _ in objects}
        placed = self.placer.place_frame(result, depth, colour_k, stamp)
        self.unplaced["few_depth_pixels"] += sum(p.placement is None for p in placed)
        self.counters["placed"] += sum(p.placement is not None for p in placed)
        return {p.track_id: p for p in placed}

    def reject(self, reason: str, detail: str) -> None:
        """Count a refused input message under its fixed ``reason`` (one of BAD_INPUT_REASONS); the detail
        goes to a throttled log line only."""
        self.counters["bad_input"] += 1
        self.count_bad(reason, f"{self._prefix()}skipped an input message ({reason}): {detail}")

    def count_bad(self, reason: str, line: str) -> None:
        if reason not in BAD_INPUT_REASONS:
            raise ValueError(f"unknown bad-input reason {reason!r}")
        self.bad_reasons[reason] += 1
        self.node.get_logger().warning(line, throttle_duration_sec=2.0)

    def _prefix(self) -> str:
        return f"[{self.name}] " if self.name else ""

    def _publish(self, header: Header, pixels: np.ndarray, channel_order: str, result: FrameResult,
                 placements: dict[int, TrackPlacement] | None) -> None:
        s, pubs = self.settings, self.pubs
        # The label images go out pre-serialised: fewer copies of the pixels than a Python Image message.
        if pubs["panoptic"] is not None:
            pubs["panoptic"].publish(labels_to_serialized_image(result.panoptic, header, s.panoptic_encoding))
        if pubs["semantic"] is not None and pubs["semantic"].get_subscription_count() > 0:
            pubs["semantic"].publish(labels_to_serialized_image(result.semantic, header, "mono8"))
        pubs["tracks"].publish(tracks_msg(result.objects, header, placements))
        if pubs.get("detections") is not None:
            pubs["detections"].publish(vision_messages.detections_msg(result.objects, header))
        if pubs.get("detections_3d") is not None and placements is not None:
            pubs["detections_3d"].publish(vision_messages.detections_3d_msg(result.objects, placements, header))
        if pubs["overlay"] is not None and pubs["overlay"].get_subscription_count() > 0:
            overlay = draw_overlay(pixels, result, channel_order=channel_order, label_divisor=s.label_divisor)
            pubs["overlay"].publish(bgr_to_serialized_image(overlay, header))
        if pubs["markers"] is not None and pubs["markers"].get_subscription_count() > 0:
            height, width = pixels.shape[:2]
            if self.intrinsics is not None and self.intrinsics[1] == (width, height):
                intrinsics = self.intrinsics[0]
            else:  # no camera_info yet, or one for another resolution: a guess (the markers' scale is approximate)
                intrinsics = (float(width), float(width), width / 2, height / 2)
            pubs["markers"].publish(markers_msg(result.objects, header, intrinsics, placements))

    # ---- diagnostics ---------------------------------------------------------------------------------------
    def status(self, backend_line: str) -> DiagnosticStatus:
        c = self.counters
        times = list(self.done_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        level, message = DiagnosticStatus.OK, "running"
        if c["errors"] or c["bad_input"]:
            level, message = DiagnosticStatus.WARN, f"{c['bad_input']} bad inputs, {c['errors']} errors"
        shared = self.shared_output_topics()
        if shared:
            level, message = DiagnosticStatus.WARN, f"other publishers on {', '.join(shared)}"
            self.node.get_logger().warning(
                f"another node publishes on {', '.join(shared)} too: subscribers get both nodes' messages (two "
                f"vknet nodes with the same name and namespace?)", throttle_duration_sec=30.0)
        processing = list(self.processing_ms)
        values: dict[str, Any] = {
            "backend": backend_line, "rate_hz": f"{rate:.2f}",
            "processing_ms_p50": f"{percentile(processing, 0.5, 0.0):.1f}",
            "processing_ms_p90": f"{percentile(processing, 0.9, 0.0):.1f}",
            "received": c["received"], "processed": c["processed"], "dropped": c["dropped"],
            "bad_input": c["bad_input"], "errors": c["errors"], "resets": c["resets"],
            "camera_info_accepted": c["camera_info"]}
        values.update({f"bad_input_{reason}": n for reason, n in self.bad_reasons.items()})
        if self.placer is not None:
            values["placed"] = c["placed"]
            values["depth_received"] = self.pairing.received if self.pairing is not None else 0
            values.update({f"unplaced_{reason}": n for reason, n in self.unplaced.items()})
        for stage, series in self.stage_ms.items():
            values[f"{stage}_ms_p50"] = f"{percentile(series, 0.5):.1f}" if series else "n/a"
        name = f"{self.node.get_fully_qualified_name()}: {self.name + ' ' if self.name else ''}pipeline"
        return DiagnosticStatus(level=level, name=name, message=message, hardware_id=backend_line,
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    def shared_output_topics(self) -> list[str]:
        """This camera's per-frame output topics that some other publisher also publishes on."""
        outputs = [self.pubs.get("panoptic"), self.pubs.get("tracks")]
        return [pub.topic_name for pub in outputs
                if pub is not None and self.node.count_publishers(pub.topic_name) > 1]
