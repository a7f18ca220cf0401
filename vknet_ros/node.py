"""The vknet ROS 2 node: a lifecycle shell around :class:`vknet_model.pipeline.Pipeline`.

configure loads the model (a bad file fails the transition with the reason, the node stays up), activate
subscribes and starts the worker, deactivate stops both, cleanup frees the model. With ``autostart`` (the
default) the node configures and activates itself, so nobody is left with a silent unconfigured node.

The image callback only puts the message into a one-frame slot; a worker thread takes the newest frame,
decodes it, runs the pipeline and publishes. A frame replaced in the slot before the worker took it is
counted as dropped: the node never builds a backlog, whatever the camera rate. A message that cannot be
decoded is logged (throttled), counted by reason and skipped; nothing in a message can stop the node.

Topics (relative, remap them): in ``image`` or ``image/compressed``, ``camera_info``; out ``panoptic``,
``semantic``, ``overlay``, ``tracks``, ``markers``, ``class_map`` (latched), ``detections`` and ``label_info``
(latched; vision_msgs, where it is installed), ``~/processing_ms``, ``~/latency_ms`` and ``/diagnostics``.
Every output copies the input header.
"""

from __future__ import annotations

import collections
import dataclasses
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32, Header
from visualization_msgs.msg import MarkerArray

from vknet_model.backends import CHECKPOINT_SUFFIXES, ONNX_BACKENDS
from vknet_model.percentile import percentile
from vknet_model.pipeline import FrameResult, Pipeline
from vknet_ros import vision_messages
from vknet_ros.conversions import (
    REFUSAL_REASONS,
    ImageConversionError,
    Intrinsics,
    bgr_to_serialized_image,
    checked_intrinsics,
    decode_camera_image,
    decode_compressed,
    label_dtype,
    labels_to_serialized_image,
)
from vknet_ros.messages import class_map_msg, markers_msg, tracks_msg
from vknet_ros.msg import ClassMap, TrackedObjectArray
from vknet_ros.node_settings import (
    DYNAMIC,
    MODEL_VALUE,
    PARAMETERS,
    NodeSettings,
    SettingsError,
    settings_from_values,
    validate_dynamic,
)
from vknet_ros.overlay import draw_overlay

OUTPUT_DEPTH = 5
WARM_UP_RUNS = 3  # blank forwards on configure, so the first camera frames do not pay for session start-up
PIPELINE_STAGES = ("preprocess", "network", "tracker", "postprocess")  # the Pipeline's own timings, in order
# The worker's stages in /diagnostics: decode + pipeline + publish = processing, then the pipeline's split.
WORKER_STAGES = ("decode", "pipeline", *PIPELINE_STAGES, "publish")
# Fixed codes a refused input is counted under (node.bad_reasons, diagnostics bad_input_<code>): the
# decoders' refusals, an image the pipeline refuses, and an unusable camera_info.
BAD_INPUT_REASONS = (*REFUSAL_REASONS, "image", "camera_info")


def input_qos(settings: NodeSettings, publishers: Sequence[Any] = ()) -> QoSProfile:
    """The image subscription's QoS; ``publishers`` (rclpy TopicEndpointInfo) are the camera's, for auto."""
    if settings.input_qos == "auto":
        return matching_qos(publishers, settings.input_depth)
    if settings.input_qos == "sensor_data":
        qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k) for k in ("history", "reliability", "durability")},
                         depth=settings.input_depth)
    else:
        reliability = ReliabilityPolicy.RELIABLE if settings.input_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=settings.input_depth, reliability=reliability)
    return qos


def matching_qos(publishers: Sequence[Any], depth: int) -> QoSProfile:
    """A subscription QoS that matches every publisher and gets the most they offer: reliable only if all are
    reliable (a reliable reader never matches a best-effort writer), transient local only if all are. No
    publisher yet: best effort and volatile, which match anything that comes."""
    profiles = [p.qos_profile for p in publishers]
    reliable = bool(profiles) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in profiles)
    latched = bool(profiles) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in profiles)
    return QoSProfile(depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def describe_qos(qos: QoSProfile) -> str:
    return f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}, depth {qos.depth}"


def choose_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(settings: NodeSettings) -> tuple[Pipeline, str]:
    """The pipeline the settings ask for, and a line saying what was chosen and why (fallbacks included)."""
    from vknet_model.bundled import resolve_model

    device = choose_device(settings.device)
    backend = settings.backend
    model = resolve_model(settings.model or None, prefer_onnx=True, backend=backend)
    if backend == "tensorrt" and not device.startswith("cuda"):
        raise SettingsError("backend tensorrt needs a CUDA device (device=cuda)")
    if model.suffix in CHECKPOINT_SUFFIXES and backend in ONNX_BACKENDS:
        raise SettingsError(f"{model} is a checkpoint: backend {backend} needs an exported .onnx "
                            f"(`vknet export --checkpoint {model} --out model.onnx`)")
    # The panoptic map is built in its message encoding's dtype: no conversion or range check per frame.
    pipeline = Pipeline(_open(model, backend, device, settings), label_divisor=settings.label_divisor,
                        panoptic_dtype=label_dtype(settings.panoptic_encoding))
    apply_thresholds(pipeline, settings)
    expected = pipeline.backend.contract.input_size
    if settings.input_size != (0, 0) and tuple(settings.input_size) != tuple(expected):
        raise SettingsError(f"input_size {list(settings.input_size)} differs from the model's {list(expected)}, "
                            f"fixed at export: re-export at that size or leave input_size at [0, 0]")
    described = pipeline.backend.describe()
    note = ""
    if backend == "auto" and device.startswith("cuda") and "onnxruntime" in described.lower():
        note = " (TensorRT is not available here: fell back to ONNX Runtime)"
    return pipeline, f"model {model}, backend {described}{note}"


def _open(model: Path, backend: str, device: str, s: NodeSettings) -> Any:
    from vknet_model.backends import open_backend

    return open_backend(model, backend=backend, device=device, ort_spin_wait=s.ort_spin_wait,
                        torch_precision=s.torch_precision, cuda_graph=s.cuda_graph)


def apply_thresholds(pipeline: Pipeline, s: NodeSettings) -> None:
    """Put the thresholds into the pipeline (on load and on `ros2 param set`): the model's own config, with
    only the ones the user set (not :data:`MODEL_VALUE`) replaced."""
    model = pipeline.backend.contract.config

    def chosen(section: Any, names: tuple[str, ...]) -> dict[str, float]:
        return {n: getattr(s, n) for n in names if getattr(s, n) != MODEL_VALUE and hasattr(section, n)}

    pipeline.set_postprocess(dataclasses.replace(
        model.postprocess, **chosen(model.postprocess, ("instance_score_thr", "overlap_thr", "mask_thr"))))
    tracker: Any = chosen(model.tracker, ("init_score_thr", "obj_score_thr", "match_score_thr", "reset_gap_s"))
    pipeline.set_tracker_config(dataclasses.replace(model.tracker, **tracker))


class VKNetNode(LifecycleNode):
    """Video K-Net panoptic segmentation and tracking as a lifecycle node (see the module docstring)."""

    def __init__(self, node_name: str = "vknet", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, dynamic_typing=isinstance(default, float)))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.settings: NodeSettings | None = None
        self.pipeline: Pipeline | None = None
        self._lock = threading.Lock()          # guards the frame slot
        self._wake = threading.Condition(self._lock)
        self._slot: tuple[Any, float] | None = None
        self._pipeline_lock = threading.Lock()  # the worker's step vs threshold changes
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._inputs: list[Any] = []  # image and camera_info subscriptions (rclpy keeps its own _subscriptions)
        self._pubs: dict[str, Any] = {}
        self._diag_timer: Any = None
        self._qos_timer: Any = None
        self._intrinsics: Intrinsics | None = None  # from the last good camera_info
        self.counters: collections.Counter[str] = collections.Counter()
        self.bad_reasons: collections.Counter[str] = collections.Counter({reason: 0 for reason in BAD_INPUT_REASONS})
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=200)
        self._processing_ms: collections.deque[float] = collections.deque(maxlen=200)
        # Per-stage times of the worker, reported in /diagnostics so overhead around the network is visible.
        self._stage_ms: dict[str, collections.deque[float]] = {
            s: collections.deque(maxlen=200) for s in WORKER_STAGES}
        self._done_times: collections.deque[float] = collections.deque(maxlen=50)
        self._backend_line = ""
        if self.get_parameter("autostart").value and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            self.settings = settings_from_values({n: self.get_parameter(n).value for n in PARAMETERS})
            start = time.perf_counter()
            self.pipeline, self._backend_line = load_pipeline(self.settings)
            load_s = time.perf_counter() - start
            # A model that loads but cannot run (a bad engine, out of GPU memory) fails here, not on frame one.
            warm_up_ms = self.pipeline.warm_up(WARM_UP_RUNS)
        except Exception as exc:  # any failure to load must leave a usable, unconfigured node with the reason
            log.error(f"configure failed: {exc}")
            self.pipeline = None
            self.settings = None  # unconfigured again: every parameter may be set before the next configure
            return TransitionCallbackReturn.FAILURE
        log.info(f"loaded {self._backend_line} in {load_s:.1f} s; warmed up with {WARM_UP_RUNS} forwards in "
                 f"{warm_up_ms:.0f} ms")
        s = self.settings

        def output(kind: Any, topic: str, latched: bool = False) -> Any:
            """A lifecycle publisher whose QoS a user may override the rclpy way
            (``qos_overrides./<topic>.publisher.<policy>`` parameters, read on configure)."""
            qos = (QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL) if latched
                   else QoSProfile(depth=OUTPUT_DEPTH))  # one object each: rclpy applies the overrides to it
            return self.create_lifecycle_publisher(kind, topic, qos,
                                                   qos_overriding_options=QoSOverridingOptions.with_default_policies())

        self._pubs = {
            "panoptic": output(Image, "panoptic") if s.publish_panoptic else None,
            "semantic": output(Image, "semantic") if s.publish_semantic else None,
            "overlay": output(Image, "overlay") if s.publish_overlay else None,
            "markers": output(MarkerArray, "markers") if s.publish_markers else None,
            "tracks": output(TrackedObjectArray, "tracks"),
            "class_map": output(ClassMap, "class_map", latched=True),
            "processing_ms": output(Float32, "~/processing_ms"),
            "latency_ms": output(Float32, "~/latency_ms"),
            "diagnostics": output(DiagnosticArray, "/diagnostics"),
        }
        if vision_messages.available():
            from vision_msgs.msg import Detection2DArray, LabelInfo

            self._pubs["detections"] = output(Detection2DArray, "detections")
            self._pubs["label_info"] = output(LabelInfo, "label_info", latched=True)
        else:
            log.info("vision_msgs is not installed: detections (vision_msgs/Detection2DArray) and label_info are not "
                     "published; tracks carry the same objects (install ros-<distro>-vision-msgs to have them)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.settings is not None and self.pipeline is not None
        result = super().on_activate(state)
        s = self.settings
        image_sub = self._subscribe_image()
        info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data)
        self._inputs = [image_sub, info_sub]
        self._pubs["class_map"].publish(class_map_msg(self.pipeline.data, s.label_divisor,
                                                      Header(stamp=self.get_clock().now().to_msg())))
        self._publish_label_info()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="vknet_worker", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(s.diagnostics_period_s, self._publish_diagnostics)
        self._qos_timer = self.create_timer(1.0, self._follow_camera_qos)
        self.get_logger().info(f"active: listening on {image_sub.topic_name} ({s.input_qos}: "
                               f"{describe_qos(image_sub.qos_profile)})")
        return result

    def _image_topic(self) -> tuple[Any, str]:
        assert self.settings is not None
        if self.settings.compressed_input:
            return CompressedImage, "image/compressed"
        return Image, "image"

    def _subscribe_image(self) -> Any:
        assert self.settings is not None
        kind, topic = self._image_topic()
        publishers = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        # An explicit input_qos may be overridden the rclpy way; auto follows the camera instead.
        overrides = None if self.settings.input_qos == "auto" else QoSOverridingOptions.with_default_policies()
        return self.create_subscription(kind, topic, self._on_image, input_qos(self.settings, publishers),
                                        event_callbacks=events, qos_overriding_options=overrides)

    def _follow_camera_qos(self) -> None:
        """input_qos auto: when the camera's publishers now call for another QoS, subscribe again with it."""
        if self.settings is None or self.settings.input_qos != "auto" or not self._inputs:
            return
        current = self._inputs[0]
        topic = current.topic_name
        publishers = self.get_publishers_info_by_topic(topic)
        wanted = input_qos(self.settings, publishers)
        have = current.qos_profile
        if (wanted.reliability, wanted.durability) == (have.reliability, have.durability) or not publishers:
            return
        self.destroy_subscription(current)
        self._inputs[0] = self._subscribe_image()
        self.get_logger().info(f"input QoS now {describe_qos(wanted)}, to match {len(publishers)} publisher(s) on "
                               f"{topic}")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        for timer in (self._diag_timer, self._qos_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._diag_timer = self._qos_timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in self._pubs.values():
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.pipeline = None  # frees the model (and its GPU memory) once the worker is gone
        self.settings = None  # configure reads every parameter again (another model, backend, topics...)
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self.pipeline = None
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._stop.set()
        with self._wake:
            self._slot = None
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    # ---- inputs --------------------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        with self._wake:
            if self._slot is not None:
                self.counters["dropped"] += 1
            self._slot = (msg, time.perf_counter())
            self.counters["received"] += 1
            self._wake.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        intrinsics, problem = checked_intrinsics(msg)
        if intrinsics is None:
            self._reject("camera_info", f"{problem}; keeping the last good camera_info")
        else:
            self._intrinsics = intrinsics
            self.counters["camera_info"] += 1

    def _on_incompatible_qos(self, info: QoSRequestedIncompatibleQoSInfo) -> None:
        self.counters["qos_incompatible"] += 1
        self.get_logger().warning(
            f"a publisher of the input image offers QoS incompatible with this node's input_qos "
            f"({self.settings.input_qos if self.settings else '?'}; last policy id {info.last_policy_kind}): no "
            f"frames will arrive from it. Set input_qos to match the camera (e.g. reliable).",
            throttle_duration_sec=5.0)

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        updates: dict[str, Any] = {}
        for p in params:
            if p.name not in DYNAMIC:
                if self.settings is not None and p.name in PARAMETERS:
                    return SetParametersResult(successful=False, reason=f"{p.name} is read on configure: "
                                               f"deactivate, cleanup, set it, then configure again")
                continue
            try:
                updates[p.name] = validate_dynamic(p.name, p.value)
            except (SettingsError, TypeError, ValueError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if updates and self.settings is not None and self.pipeline is not None:
            self.settings = dataclasses.replace(self.settings, **updates)
            s = self.settings
            with self._pipeline_lock:
                apply_thresholds(self.pipeline, s)
            self.get_logger().info(f"thresholds updated: {updates}")
            if "instance_score_thr" in updates:
                self._publish_label_info()
        return SetParametersResult(successful=True)

    # ---- worker --------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                while self._slot is None and not self._stop.is_set():
                    self._wake.wait(timeout=0.2)
                if self._stop.is_set():
                    return
                assert self._slot is not None
                msg, received = self._slot
                self._slot = None
            try:
                self._process(msg, received)
            except Exception as exc:  # the node must survive anything one frame can cause
                self.counters["errors"] += 1
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                                        throttle_duration_sec=2.0)

    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        assert self.settings is not None and self.pipeline is not None
        start = time.perf_counter()
        try:
            # An rgb8 or bgr8 frame stays a view of the message's data (alive until this method returns) in its
            # own channel order, as does OpenCV's BGR decode of a compressed one: no conversion.
            if isinstance(msg, CompressedImage):
                # A damaged JPEG raises corrupt_compressed (refused below) unless the user wants it processed.
                pixels, damage = decode_compressed(msg, keep_damaged=self.settings.corrupt_compressed == "process")
                order = "bgr"
                if damage:
                    self._count_bad("corrupt_compressed", damage + " (processed: corrupt_compressed=process)")
            else:
                pixels, order = decode_camera_image(msg)
        except ImageConversionError as exc:
            self._reject(exc.reason, str(exc))
            return
        decoded = time.perf_counter()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._pipeline_lock:
            try:
                result = self.pipeline.step(pixels, stamp=stamp, frame_id=msg.header.frame_id, channel_order=order)
            except ValueError as exc:
                self._reject("image", str(exc))
                return
        if result.reset_reason and self.counters["processed"]:
            self.counters["resets"] += 1
            # Throttled: a sender that changes frame_id on every message would otherwise own the log.
            self.get_logger().info(f"tracker reset: {result.reset_reason}", throttle_duration_sec=1.0)
        stepped = time.perf_counter()
        self._publish(msg.header, pixels, order, result)
        done = time.perf_counter()
        for stage, ms in (("decode", decoded - start), ("pipeline", stepped - decoded), ("publish", done - stepped)):
            self._stage_ms[stage].append(1e3 * ms)
        for stage in PIPELINE_STAGES:
            self._stage_ms[stage].append(result.timings_ms[stage])
        self.counters["processed"] += 1
        self._processing_ms.append(1e3 * (done - start))
        self._done_times.append(done)
        now = self.get_clock().now().nanoseconds * 1e-9
        latency = 1e3 * (now - stamp)
        self._latency_ms.append(latency)
        self._pubs["processing_ms"].publish(Float32(data=float(1e3 * (done - received))))
        self._pubs["latency_ms"].publish(Float32(data=float(latency)))

    def _reject(self, reason: str, detail: str) -> None:
        """Count a refused input message under its fixed ``reason`` (one of BAD_INPUT_REASONS); the detail
        goes to a throttled log line only."""
        self.counters["bad_input"] += 1
        self._count_bad(reason, f"skipped an input message ({reason}): {detail}")

    def _count_bad(self, reason: str, line: str) -> None:
        if reason not in BAD_INPUT_REASONS:
            raise ValueError(f"unknown bad-input reason {reason!r}")
        self.bad_reasons[reason] += 1
        self.get_logger().warning(line, throttle_duration_sec=2.0)

    def _publish(self, header: Header, pixels: np.ndarray, channel_order: str, result: FrameResult) -> None:
        s, pubs = self.settings, self._pubs
        assert s is not None
        # The label images go out pre-serialised: fewer copies of the pixels than a Python Image message.
        if pubs["panoptic"] is not None:
            pubs["panoptic"].publish(labels_to_serialized_image(result.panoptic, header, s.panoptic_encoding))
        if pubs["semantic"] is not None and pubs["semantic"].get_subscription_count() > 0:
            pubs["semantic"].publish(labels_to_serialized_image(result.semantic, header, "mono8"))
        pubs["tracks"].publish(tracks_msg(result.objects, header))
        if pubs.get("detections") is not None:
            pubs["detections"].publish(vision_messages.detections_msg(result.objects, header))
        if pubs["overlay"] is not None and pubs["overlay"].get_subscription_count() > 0:
            overlay = draw_overlay(pixels, result, channel_order=channel_order, label_divisor=s.label_divisor)
            pubs["overlay"].publish(bgr_to_serialized_image(overlay, header))
        if pubs["markers"] is not None and pubs["markers"].get_subscription_count() > 0:
            height, width = pixels.shape[:2]
            if self._intrinsics is not None and self._intrinsics[1] == (width, height):
                intrinsics = self._intrinsics[0]
            else:  # no camera_info yet, or one for another resolution: a guess (the markers' scale is approximate)
                intrinsics = (float(width), float(width), width / 2, height / 2)
            pubs["markers"].publish(markers_msg(result.objects, header, intrinsics))

    def _publish_label_info(self) -> None:
        """The latched class map in vision_msgs form, with the score a thing now needs to be reported."""
        if self._pubs.get("label_info") is not None and self.pipeline is not None:
            self._pubs["label_info"].publish(vision_messages.label_info_msg(
                self.pipeline.data, self.pipeline.postprocess.instance_score_thr,
                Header(stamp=self.get_clock().now().to_msg())))

    def _publish_diagnostics(self) -> None:
        pub = self._pubs.get("diagnostics")
        if pub is None:
            return
        c = self.counters
        times = list(self._done_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        level = DiagnosticStatus.OK
        message = "running"
        if c["errors"] or c["bad_input"]:
            level, message = DiagnosticStatus.WARN, f"{c['bad_input']} bad inputs, {c['errors']} errors"
        shared = self._shared_output_topics()
        if shared:
            level, message = DiagnosticStatus.WARN, f"other publishers on {', '.join(shared)}"
            self.get_logger().warning(
                f"another node publishes on {', '.join(shared)} too: subscribers get both nodes' messages (two "
                f"vknet nodes with the same name and namespace?)", throttle_duration_sec=30.0)
        processing = list(self._processing_ms)
        values = {"backend": self._backend_line, "rate_hz": f"{rate:.2f}",
                  "processing_ms_p50": f"{percentile(processing, 0.5, 0.0):.1f}",
                  "processing_ms_p90": f"{percentile(processing, 0.9, 0.0):.1f}",
                  "received": c["received"], "processed": c["processed"],
                  "dropped": c["dropped"], "bad_input": c["bad_input"], "errors": c["errors"], "resets": c["resets"],
                  "camera_info_accepted": c["camera_info"]}
        values.update({f"bad_input_{reason}": n for reason, n in self.bad_reasons.items()})
        for stage, series in self._stage_ms.items():
            values[f"{stage}_ms_p50"] = f"{percentile(series, 0.5):.1f}" if series else "n/a"
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: pipeline", message=message,
                                  hardware_id=self._backend_line,
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))


    def _shared_output_topics(self) -> list[str]:
        """This node's per-frame output topics that some other publisher also publishes on."""
        outputs = [self._pubs.get("panoptic"), self._pubs.get("tracks")]
        return [pub.topic_name for pub in outputs if pub is not None and self.count_publishers(pub.topic_name) > 1]


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run vknet_ros vknet_node`` and ``vknet node``.

    SIGINT and SIGTERM are handled here rather than by rclpy: the first one ends the spin, the node then
    shuts down once while its context is still valid, and any further signal is ignored. (With rclpy's
    handler the context went first: every clean stop logged an ERROR about a second shutdown transition
    and a failed rosout publish, and a terminal's double Ctrl-C under ros2 launch ended in a traceback.)
    """
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        stop.set()

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = VKNetNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))

