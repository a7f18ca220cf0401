"""The vknet ROS 2 node: a lifecycle shell around :class:`vknet_model.pipeline.Pipeline`, for one or more cameras.

configure loads the model (a bad file fails the transition with the reason, the node stays up), activate
subscribes and starts the worker, deactivate stops both, cleanup frees the model. With ``autostart`` (the
default) the node configures and activates itself, so nobody is left with a silent unconfigured node.

Each camera (:class:`~vknet_ros.camera.Camera`; the ``cameras`` parameter, one unnamed camera by default) has
a one-frame slot its image callback fills; one worker thread serves the cameras' newest frames in turn,
decodes, runs the camera's pipeline (the model is loaded once), places the tracks in 3D when depth is on,
and publishes. A frame replaced in its slot before the worker took it is counted as dropped: the node never
builds a backlog, whatever the camera rates. A message that cannot be decoded is logged (throttled), counted
by reason and skipped; nothing in a message can stop the node.

Topics (relative, remap them; a named camera's are under its name, ``front/image`` ...): in ``image`` or
``image/compressed``, ``camera_info``, with ``depth`` on also ``depth`` and ``depth/camera_info``; out
``panoptic``, ``semantic``, ``overlay``, ``tracks``, ``markers``, ``detections`` and ``detections_3d``
(vision_msgs, where it is installed), ``~/processing_ms``, ``~/latency_ms``; for all cameras ``class_map`` and
``label_info`` (latched) and ``/diagnostics`` (a status per camera). Every output copies its input's header.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from std_msgs.msg import Header

from vknet_model.backends import CHECKPOINT_SUFFIXES, ONNX_BACKENDS
from vknet_model.pipeline import Pipeline
from vknet_ros import depth_input, vision_messages
from vknet_ros.camera import BAD_INPUT_REASONS, PIPELINE_STAGES, UNPLACED_REASONS, WORKER_STAGES, Camera
from vknet_ros.conversions import label_dtype
from vknet_ros.messages import class_map_msg
from vknet_ros.msg import ClassMap
from vknet_ros.node_settings import (
    DYNAMIC,
    MODEL_VALUE,
    PARAMETERS,
    NodeSettings,
    SettingsError,
    settings_from_values,
    validate_dynamic,
)
from vknet_ros.qos import describe_qos, input_qos, matching_qos

__all__ = ["BAD_INPUT_REASONS", "PIPELINE_STAGES", "UNPLACED_REASONS", "WORKER_STAGES", "VKNetNode", "input_qos",
           "load_pipeline", "main", "matching_qos"]

OUTPUT_DEPTH = 5
WARM_UP_RUNS = 3  # blank forwards on configure, so the first camera frames do not pay for session start-up


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

    return open_backend(model, backend=backend, device=device, ort_spin_wait=s.ort_spin_wait, precision=s.precision,
                        torch_precision=s.torch_precision, cuda_graph=s.cuda_graph)


def next_ready(waiting: Sequence[bool], turn: int) -> int:
    """The camera the worker serves next: the first with a frame ``waiting`` from index ``turn`` on, wrapping
    round (the worker then starts after it, so every waiting camera is served within one round)."""
    count = len(waiting)
    return next(i % count for i in range(turn, turn + count) if waiting[i % count])


def camera_pipeline(first: Pipeline, s: NodeSettings, track_ids: tuple[int, int]) -> Pipeline:
    """A camera's pipeline over the loaded one's backend: the model is loaded once, the temporal state
    (tracker, track ids in their own ``track_ids`` space, instance numbers) is the camera's own."""
    pipeline = Pipeline(first.backend, label_divisor=s.label_divisor, panoptic_dtype=first.panoptic_dtype,
                        track_ids=track_ids)
    apply_thresholds(pipeline, s)
    return pipeline


def apply_thresholds(pipeline: Pipeline, s: NodeSettings) -> None:
    """Put the thresholds into the pipeline (on load and on `ros2 param set`): the model's own config, with
    only the ones the user set (not :data:`MODEL_VALUE`) replaced."""
    model = pipeline.backend.contract.config

    def chosen(section: Any, names: tuple[str, ...]) -> dict[str, float]:
        return {n: getattr(s, n) for n in names if getattr(s, n) != MODEL_VALUE and hasattr(section, n)}

    pipeline.set_postprocess(dataclasses.replace(
        model.postprocess, **chosen(model.postprocess, ("instance_score_thr", "overlap_thr", "mask_thr"))))
    tracker: Any = chosen(model.tracker, ("init_score_thr", "obj_score_thr", "match_score_thr",
                                          "match_cosine_thr", "reset_gap_s"))
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
        self.cameras: list[Camera] = []
        self._wake = threading.Condition(threading.Lock())  # guards every camera's frame slot
        self._pipeline_lock = threading.Lock()  # the worker's step vs threshold changes
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._pubs: dict[str, Any] = {}  # the node-wide outputs: class_map, label_info, diagnostics
        self._diag_timer: Any = None
        self._qos_timer: Any = None
        self._backend_line = ""
        if self.get_parameter("autostart").value and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # The first camera's pipeline and counters (the only camera unless ``cameras`` names several).
    @property
    def pipeline(self) -> Pipeline | None:
        return self.cameras[0].pipeline if self.cameras else None

    @property
    def counters(self) -> Any:
        return self.cameras[0].counters

    @property
    def bad_reasons(self) -> Any:
        return self.cameras[0].bad_reasons

    def output(self, kind: Any, topic: str, latched: bool = False) -> Any:
        """A lifecycle publisher whose QoS a user may override the rclpy way
        (``qos_overrides./<topic>.publisher.<policy>`` parameters, read on configure)."""
        qos = (QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL) if latched
               else QoSProfile(depth=OUTPUT_DEPTH))  # one object each: rclpy applies the overrides to it
        return self.create_lifecycle_publisher(kind, topic, qos,
                                               qos_overriding_options=QoSOverridingOptions.with_default_policies())

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            self.settings = settings_from_values({n: self.get_parameter(n).value for n in PARAMETERS})
            start = time.perf_counter()
            pipeline, self._backend_line = load_pipeline(self.settings)
            load_s = time.perf_counter() - start
            # A model that loads but cannot run (a bad engine, out of GPU memory) fails here, not on frame one.
            warm_up_ms = pipeline.warm_up(WARM_UP_RUNS)
        except Exception as exc:  # any failure to load must leave a usable, unconfigured node with the reason
            log.error(f"configure failed: {exc}")
            self.cameras = []
            self.settings = None  # unconfigured again: every parameter may be set before the next configure
            return TransitionCallbackReturn.FAILURE
        s = self.settings
        log.info(f"loaded {self._backend_line} in {load_s:.1f} s; warmed up with {WARM_UP_RUNS} forwards in "
                 f"{warm_up_ms:.0f} ms")
        count = len(s.cameras)
        # One pipeline per camera over the loaded backend; camera i of n reports track ids i + n k, so that no
        # track id is ever shared between cameras.
        pipelines = [camera_pipeline(pipeline, s, (i, count)) for i in range(count)]
        self.cameras = [Camera(self, name, p) for name, p in zip(s.cameras, pipelines, strict=True)]
        if len(self.cameras) > 1:
            log.info(f"{len(self.cameras)} cameras ({', '.join(s.cameras)}) share the model; each has its own "
                     f"tracker and topics under its name")
        if s.depth and not depth_input.available():
            log.warning("depth is on but message_filters is not installed: tracks get no 3D positions (install "
                        "ros-<distro>-message-filters)")
        for camera in self.cameras:
            camera.create_outputs()
        self._pubs = {"class_map": self.output(ClassMap, "class_map", latched=True),
                      "diagnostics": self.output(DiagnosticArray, "/diagnostics")}
        if vision_messages.available():
            from vision_msgs.msg import LabelInfo

            self._pubs["label_info"] = self.output(LabelInfo, "label_info", latched=True)
        else:
            log.info("vision_msgs is not installed: detections (vision_msgs/Detection2DArray), detections_3d and "
                     "label_info are not published; tracks carry the same objects (install "
                     "ros-<distro>-vision-msgs to have them)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.settings is not None and self.pipeline is not None
        result = super().on_activate(state)
        s = self.settings
        for camera in self.cameras:
            camera.subscribe()
        self._pubs["class_map"].publish(class_map_msg(self.pipeline.data, s.label_divisor,
                                                      Header(stamp=self.get_clock().now().to_msg())))
        self._publish_label_info()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="vknet_worker", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(s.diagnostics_period_s, self._publish_diagnostics)
        self._qos_timer = self.create_timer(1.0, self._follow_camera_qos)
        for camera in self.cameras:
            image_sub = camera.inputs[0]
            depth = f", depth on {camera.inputs[2].topic_name}" if camera.pairing is not None else ""
            self.get_logger().info(f"active: listening on {image_sub.topic_name} ({s.input_qos}: "
                                   f"{describe_qos(image_sub.qos_profile)}){depth}")
        return result

    def _follow_camera_qos(self) -> None:
        if self.settings is not None:
            for camera in self.cameras:
                camera.follow_camera_qos()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for camera in self.cameras:
            camera.unsubscribe()
        for timer in (self._diag_timer, self._qos_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._diag_timer = self._qos_timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for camera in self.cameras:
            camera.destroy_outputs()
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.cameras = []  # frees the model (and its GPU memory) once the worker is gone
        self.settings = None  # configure reads every parameter again (another model, backend, topics...)
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self.cameras = []
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._stop.set()
        with self._wake:
            for camera in self.cameras:
                camera.slot = None
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

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
        if updates and self.settings is not None and self.cameras:
            self.settings = dataclasses.replace(self.settings, **updates)
            with self._pipeline_lock:
                for camera in self.cameras:
                    apply_thresholds(camera.pipeline, self.settings)
            self.get_logger().info(f"thresholds updated: {updates}")
            if "instance_score_thr" in updates:
                self._publish_label_info()
        return SetParametersResult(successful=True)

    # ---- worker --------------------------------------------------------------------------------------------
    def _work(self) -> None:
        """Serve the cameras' newest frames in turn: after a camera's frame, the next camera with a frame
        waiting goes first, so a fast camera cannot starve a slow one."""
        turn = 0
        while not self._stop.is_set():
            with self._wake:
                while not self._stop.is_set() and not any(c.slot is not None for c in self.cameras):
                    self._wake.wait(timeout=0.2)
                if self._stop.is_set():
                    return
                index = next_ready([c.slot is not None for c in self.cameras], turn)
                camera = self.cameras[index]
                turn = index + 1
                assert camera.slot is not None
                msg, received = camera.slot
                camera.slot = None
            try:
                camera.process(msg, received)
            except Exception as exc:  # the node must survive anything one frame can cause
                camera.counters["errors"] += 1
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                                        throttle_duration_sec=2.0)

    # ---- node-wide outputs ---------------------------------------------------------------------------------
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
        pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                    status=[camera.status(self._backend_line) for camera in self.cameras]))

    def _shared_output_topics(self) -> list[str]:
        """Per-frame output topics of this node's cameras that some other publisher also publishes on."""
        return [topic for camera in self.cameras for topic in camera.shared_output_topics()]


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

