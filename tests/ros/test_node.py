"""The vknet lifecycle node over real DDS on loopback: outputs, no backlog, fuzzing, lifecycle, parameters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from tests.conftest import forged_jpeg_size, moving_square_frame
from tests.ros.node_client import wait_for
from vknet_model.pipeline import Pipeline
from vknet_ros import vision_messages
from vknet_ros.camera import Camera
from vknet_ros.conversions import decode_compressed, image_msg_to_labels, rgb_to_image_msg
from vknet_ros.msg import TrackedObjectArray
from vknet_ros.node import BAD_INPUT_REASONS, VKNetNode
from vknet_ros.spinner import BackgroundSpinner

HEIGHT, WIDTH = 120, 400
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


pytestmark = pytest.mark.usefixtures("rclpy_context")


@pytest.fixture(scope="module")
def onnx_model(exported_tiny: Any) -> Path:
    return Path(exported_tiny[2])


class Harness:
    """A VKNetNode and a client node spun by one executor in a background thread (traffic goes over DDS)."""

    def __init__(self, model: Path | str, input_qos: str = "reliable", compressed: bool = False,
                 **params: Any) -> None:
        overrides = [Parameter("model", value=str(model)), Parameter("input_qos", value=input_qos),
                     Parameter("compressed_input", value=compressed)]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.node = VKNetNode(parameter_overrides=overrides)
        self.client = Node("vknet_test_client")
        best_effort = input_qos in ("sensor_data", "best_effort")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT) if best_effort else RELIABLE
        self.image_pub = self.client.create_publisher(Image, "image", qos)
        self.compressed_pub = self.client.create_publisher(CompressedImage, "image/compressed", qos)
        self.panoptic: list[Image] = []
        self.semantic: list[Image] = []
        self.tracks: list[TrackedObjectArray] = []
        self.client.create_subscription(Image, "panoptic", self.panoptic.append, RELIABLE)
        self.semantic_sub = self.client.create_subscription(Image, "semantic", self.semantic.append, RELIABLE)
        self.client.create_subscription(TrackedObjectArray, "tracks", self.tracks.append, RELIABLE)
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.spinner = BackgroundSpinner(self.executor)

    def connected(self, pub: Any = None) -> bool:
        pub = pub or self.image_pub
        # The semantic image goes out only while the node's publisher has matched a subscription.
        semantic = self.node.cameras[0].pubs["semantic"]
        return wait_for(lambda: pub.get_subscription_count() > 0 and self.client.count_publishers("panoptic") > 0
                        and semantic.get_subscription_count() > 0, 10.0)

    def close(self) -> None:
        assert self.spinner.stop(), "the executor thread did not stop"
        self.node.trigger_shutdown()
        self.node.destroy_node()
        self.client.destroy_node()


@pytest.fixture
def harness(onnx_model: Path) -> Iterator[Harness]:
    h = Harness(onnx_model)
    assert h.connected()
    yield h
    h.close()


def frame_msg(t: int, frame_id: str = "cam", stamp_s: float | None = None) -> Image:
    stamp = 100.0 + 0.1 * t if stamp_s is None else stamp_s
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = int(stamp), round((stamp % 1) * 1e9)
    return rgb_to_image_msg(moving_square_frame(t, HEIGHT, WIDTH), header)


def test_frames_in_outputs_out_with_the_input_header(harness: Harness) -> None:
    sent = []
    for t in range(8):
        msg = frame_msg(t)
        sent.append(msg)
        harness.image_pub.publish(msg)
        assert wait_for(lambda n=t + 1: len(harness.tracks) >= n and len(harness.panoptic) >= n), f"frame {t}"
    for got in (harness.panoptic, harness.semantic, harness.tracks):
        assert [m.header.stamp for m in got] == [m.header.stamp for m in sent]
        assert {m.header.frame_id for m in got} == {"cam"}
    panoptic = image_msg_to_labels(harness.panoptic[-1])
    assert panoptic.shape == (HEIGHT, WIDTH) and harness.panoptic[-1].encoding == "16UC1"
    assert set(np.unique(panoptic // 1000)) <= set(range(19))
    assert harness.node.counters["processed"] == 8 and harness.node.counters["dropped"] == 0


def test_semantic_goes_out_only_while_subscribed(onnx_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vknet_ros.camera as node_module

    encoded: list[str] = []
    real = node_module.labels_to_serialized_image

    def recording(labels: np.ndarray, header: Header, encoding: str) -> bytes:
        encoded.append(encoding)
        return real(labels, header, encoding)

    monkeypatch.setattr(node_module, "labels_to_serialized_image", recording)
    harness = Harness(onnx_model)
    try:
        assert harness.connected()
        semantic_pub = harness.node.cameras[0].pubs["semantic"]
        harness.client.destroy_subscription(harness.semantic_sub)
        assert wait_for(lambda: semantic_pub.get_subscription_count() == 0)
        harness.image_pub.publish(frame_msg(0))
        assert wait_for(lambda: len(harness.panoptic) == 1)
        assert encoded == ["16UC1"] and not harness.semantic, "the semantic image was built for nobody"
        harness.client.create_subscription(Image, "semantic", harness.semantic.append, RELIABLE)
        assert wait_for(lambda: semantic_pub.get_subscription_count() == 1)
        harness.image_pub.publish(frame_msg(1))
        assert wait_for(lambda: len(harness.semantic) == 1), "a new subscriber gets the semantic image"
        assert encoded == ["16UC1", "16UC1", "mono8"]
    finally:
        harness.close()


def test_a_burst_leaves_no_backlog_and_the_node_keeps_answering(onnx_model: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The processed count at the moment the burst's last frame is received, taken inside the node's own callback:
    # from then on only the frame in flight and the one in the slot may still be worked on. (Counting delivered
    # outputs from the end of publishing instead flaked on a loaded 2-core CI machine, where DDS was still
    # delivering the burst when publishing ended.)
    processed_at_last_receipt: list[int] = []
    on_image = Camera._on_image

    def recording(self: Camera, msg: Image | CompressedImage) -> None:
        on_image(self, msg)
        if self.counters["received"] == 101:
            processed_at_last_receipt.append(self.counters["processed"])

    monkeypatch.setattr(Camera, "_on_image", recording)
    # A deep input queue so that every message reaches the node and its own one-frame slot does the dropping.
    harness = Harness(onnx_model, input_depth=100)
    try:
        assert harness.connected()
        _burst(harness, processed_at_last_receipt)
    finally:
        harness.close()


def _burst(harness: Harness, processed_at_last_receipt: list[int]) -> None:
    harness.image_pub.publish(frame_msg(0))
    assert wait_for(lambda: len(harness.panoptic) == 1)
    per_frame = harness.node.cameras[0].processing_ms[-1] / 1e3
    period = max(per_frame / 10, 0.002)  # 10x faster than the node can go
    for t in range(1, 101):
        harness.image_pub.publish(frame_msg(t))
        time.sleep(period)
    assert wait_for(lambda: harness.node.counters["received"] == 101, 10.0)
    # Waits, not a fixed sleep: on a loaded 2-core machine the last frame's processing and the delivery of its
    # outputs can take a while; what is asserted is what was worked off, not how fast.
    c = harness.node.counters
    assert wait_for(lambda: c["processed"] + c["dropped"] == 101, 10.0), dict(c)
    assert c["dropped"] > 50, dict(c)
    assert c["processed"] - processed_at_last_receipt[0] <= 2, "frames were still being worked off after the burst"
    # the newest frame of the burst is the one processed last, and its outputs arrive
    newest = frame_msg(100).header.stamp
    assert wait_for(lambda: harness.panoptic[-1].header.stamp == newest, 10.0), harness.panoptic[-1].header
    harness.image_pub.publish(frame_msg(200, stamp_s=500.0))
    assert wait_for(lambda: harness.panoptic[-1].header.stamp.sec == 500), "the node stopped answering"


def _bad_images() -> list[tuple[str, Image]]:
    good = frame_msg(0)
    out = []

    def variant(**fields: Any) -> Image:
        msg = Image(header=good.header, height=good.height, width=good.width, encoding=good.encoding,
                    is_bigendian=0, step=good.step, data=bytes(good.data))
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg

    for enc in ("16UC1", "mono16", "32FC1", "yuv422", "", "bayer_rggb8", "rgb16", "64FC1"):
        out.append((f"encoding {enc}", variant(encoding=enc)))
    out.append(("0x0", variant(height=0, width=0, step=0, data=b"")))
    out.append(("0 rows", variant(height=0)))
    out.append(("huge", variant(height=100_000, width=100_000, step=300_000)))
    out.append(("step too small", variant(step=WIDTH * 3 - 1)))
    out.append(("truncated", variant(data=bytes(good.data)[: len(good.data) // 2])))
    out.append(("no data", variant(data=b"")))
    out.append(("one byte short", variant(data=bytes(good.data)[:-1])))
    out.append(("height lies", variant(height=HEIGHT * 2)))
    return out


def flipped_jpeg(jpeg: bytes, flips: int = 20, seed: int = 0) -> bytes:
    """``jpeg`` with bytes flipped past its headers: libjpeg still decodes it, to a partial picture."""
    data = bytearray(jpeg)
    for position in np.random.default_rng(seed).integers(len(jpeg) // 2, len(jpeg) - 2, flips):
        data[position] ^= 0xFF
    return bytes(data)


def test_damaged_jpegs_are_dropped_or_processed_as_set_and_counted_either_way(onnx_model: Path) -> None:
    import cv2

    jpeg = cv2.imencode(".jpg", moving_square_frame(0, HEIGHT, WIDTH))[1].tobytes()
    damaged = flipped_jpeg(jpeg)
    assert decode_compressed(CompressedImage(format="jpeg", data=damaged), keep_damaged=True)[1], "not damaged"
    for mode, processed in (("drop", 0), ("process", 1)):
        h = Harness(onnx_model, compressed=True, corrupt_compressed=mode)
        try:
            assert h.connected(h.compressed_pub)
            h.compressed_pub.publish(CompressedImage(header=frame_msg(0).header, format="jpeg", data=damaged))
            assert wait_for(lambda h=h: h.node.bad_reasons["corrupt_compressed"] == 1), mode
            assert wait_for(lambda h=h, n=processed: h.node.counters["processed"] == n and len(h.panoptic) == n)
            assert h.node.counters["bad_input"] == 1 - processed and h.node.counters["errors"] == 0
            h.compressed_pub.publish(CompressedImage(header=frame_msg(1).header, format="jpeg", data=jpeg))
            assert wait_for(lambda h=h, n=processed: h.node.counters["processed"] == n + 1), mode
            assert h.node.bad_reasons["corrupt_compressed"] == 1
        finally:
            h.close()


def test_fuzz_200_malformed_messages_are_counted_and_survived(onnx_model: Path) -> None:
    import cv2

    raw = Harness(onnx_model)
    comp = Harness(onnx_model, compressed=True)
    try:
        assert raw.connected() and comp.connected(comp.compressed_pub)
        bad = _bad_images()
        jpeg = cv2.imencode(".jpg", moving_square_frame(0, HEIGHT, WIDTH))[1].tobytes()
        corrupt = [b"", b"\xff\xd8\xff", jpeg[: len(jpeg) // 3], b"not a jpeg at all", bytes(200), jpeg[::-1],
                   forged_jpeg_size(jpeg, 30_000, 30_000), flipped_jpeg(jpeg)]
        sent_raw = sent_comp = 0
        for i in range(200):
            if i % 4 == 3:
                msg = CompressedImage(header=frame_msg(i).header, format="jpeg", data=corrupt[sent_comp % len(corrupt)])
                comp.compressed_pub.publish(msg)
                sent_comp += 1
                assert wait_for(lambda n=sent_comp: comp.node.counters["bad_input"] == n), f"compressed {i}"
            else:
                name, msg = bad[sent_raw % len(bad)]
                raw.image_pub.publish(msg)
                sent_raw += 1
                assert wait_for(lambda n=sent_raw: raw.node.counters["bad_input"] == n), name
        for h in (raw, comp):
            assert h.node.counters["errors"] == 0 and h.node.counters["processed"] == 0
            assert h.node._worker is not None and h.node._worker.is_alive()
        assert raw.node.counters["bad_input"] + comp.node.counters["bad_input"] == 200
        for h in (raw, comp):  # counted under fixed codes, whatever the messages held
            assert set(h.node.bad_reasons) == set(BAD_INPUT_REASONS), h.node.bad_reasons
            assert sum(h.node.bad_reasons.values()) == h.node.counters["bad_input"]
        assert {r for r, n in raw.node.bad_reasons.items() if n} == {"encoding", "empty", "too_large", "step",
                                                                      "truncated"}
        assert {r for r, n in comp.node.bad_reasons.items() if n} == {"empty", "undecodable", "too_large",
                                                                       "corrupt_compressed"}
        raw.image_pub.publish(frame_msg(1))
        assert wait_for(lambda: raw.node.counters["processed"] == 1), "no output after the fuzz"
        good_jpeg = CompressedImage(header=frame_msg(2).header, format="jpeg", data=jpeg)
        comp.compressed_pub.publish(good_jpeg)
        assert wait_for(lambda: comp.node.counters["processed"] == 1), "compressed path dead after the fuzz"
    finally:
        raw.close()
        comp.close()


def test_a_corrupt_model_fails_configure_with_a_clear_error(tmp_path: Path, onnx_model: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf")
    (tmp_path / "model.json").write_bytes(onnx_model.with_suffix(".json").read_bytes())
    node = VKNetNode(parameter_overrides=[Parameter("model", value=str(bad))])
    try:
        # Unconfigured again after the failed autostart: no model, no settings (every parameter may be set).
        assert node.pipeline is None and node.settings is None
        assert node._state_machine.current_state[1] == "unconfigured"
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    finally:
        node.trigger_shutdown()
        node.destroy_node()
    assert "configure failed" in capfd.readouterr().err


def test_a_model_that_loads_but_cannot_run_fails_configure(onnx_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    def broken(self: Pipeline, runs: int = 2) -> float:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Pipeline, "warm_up", broken)
    node = VKNetNode(parameter_overrides=[Parameter("model", value=str(onnx_model))])
    try:
        assert node.pipeline is None
        assert node._state_machine.current_state[1] == "unconfigured"
    finally:
        node.trigger_shutdown()
        node.destroy_node()
    assert "configure failed: CUDA out of memory (simulated)" in capfd.readouterr().err


def test_lifecycle_frees_and_restores_the_model(onnx_model: Path) -> None:
    h = Harness(onnx_model, autostart=False)
    try:
        node = h.node
        assert node.pipeline is None and node._state_machine.current_state[1] == "unconfigured"
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.pipeline is not None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert h.connected()
        h.image_pub.publish(frame_msg(0))
        assert wait_for(lambda: len(h.panoptic) == 1)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node._worker is None and not node.cameras[0].inputs
        h.image_pub.publish(frame_msg(1))
        time.sleep(0.5)
        assert len(h.panoptic) == 1, "an inactive node must not process"
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and node.pipeline is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.pipeline is not None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert h.connected()
        h.image_pub.publish(frame_msg(2))
        assert wait_for(lambda: len(h.panoptic) == 2), "no output after re-activation"
    finally:
        h.close()


def test_lifecycle_switches_models(onnx_model: Path, tmp_path: Path) -> None:
    """deactivate -> cleanup -> set model -> configure -> activate (set model had been refused after cleanup)."""
    from vknet_model.bundled import BUNDLED_ONNX

    h = Harness(onnx_model)
    try:
        node = h.node
        refused = node.set_parameters([Parameter("model", value=str(BUNDLED_ONNX))])[0]
        assert not refused.successful and "read on configure" in refused.reason  # while configured
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.set_parameters([Parameter("model", value=str(tmp_path / "missing.onnx"))])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE  # a failed configure ...
        assert node.set_parameters([Parameter("model", value=str(BUNDLED_ONNX))])[0].successful  # ... can be fixed
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert str(BUNDLED_ONNX) in node._backend_line
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert h.connected()
        h.image_pub.publish(frame_msg(0))
        assert wait_for(lambda: len(h.panoptic) == 1), "no output from the new model"
    finally:
        h.close()


def test_thresholds_change_at_run_time_and_bad_values_are_refused(harness: Harness) -> None:
    node = harness.node
    ok: SetParametersResult = node.set_parameters([Parameter("instance_score_thr", value=0.9)])[0]
    assert ok.successful and node.pipeline is not None
    assert node.pipeline.postprocess.instance_score_thr == 0.9
    assert node.set_parameters([Parameter("match_score_thr", value=0.75)])[0].successful
    assert node.pipeline.tracker_config.match_score_thr == 0.75
    before = node.pipeline.postprocess.overlap_thr
    refused = node.set_parameters([Parameter("overlap_thr", value=1.5)])[0]
    assert not refused.successful and "[0, 1]" in refused.reason
    assert node.pipeline.postprocess.overlap_thr == before != 1.5
    static = node.set_parameters([Parameter("backend", value="torch")])[0]
    assert not static.successful and "configure" in static.reason


def test_an_incompatible_publisher_qos_is_reported(onnx_model: Path) -> None:
    h = Harness(onnx_model, input_qos="reliable")
    try:
        best_effort = h.client.create_publisher(Image, "image", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert wait_for(lambda: h.node.counters["qos_incompatible"] > 0, 10.0)
        h.client.destroy_publisher(best_effort)
    finally:
        h.close()


def test_rgb8_bgr8_and_png_frames_give_the_same_outputs_and_overlay(onnx_model: Path) -> None:
    """The node takes each frame in its own channel order (no conversion); the results must not depend on it."""
    import cv2

    rgb = moving_square_frame(3, HEIGHT, WIDTH)
    header = Header(frame_id="cam")
    header.stamp.sec = 7
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    frames = {"rgb8": rgb_to_image_msg(rgb, header, "rgb8"), "bgr8": rgb_to_image_msg(rgb, header, "bgr8"),
              "png": CompressedImage(header=header, format="png", data=png.tobytes())}
    outputs = {}
    for kind, msg in frames.items():
        harness = Harness(onnx_model, compressed=kind == "png")  # a fresh node each: same track ids
        overlays: list[Image] = []
        harness.client.create_subscription(Image, "overlay", overlays.append, RELIABLE)
        try:
            pub = harness.compressed_pub if kind == "png" else harness.image_pub
            assert harness.connected(pub)
            overlay_pub = harness.node.cameras[0].pubs["overlay"]
            assert wait_for(lambda p=overlay_pub: p.get_subscription_count() > 0)
            pub.publish(msg)
            assert wait_for(lambda o=overlays, h=harness: len(o) == 1 and len(h.panoptic) == 1), kind
        finally:
            harness.close()
        overlay = overlays[0]
        assert (overlay.header, overlay.encoding, overlay.height, overlay.width) == (header, "bgr8", HEIGHT, WIDTH)
        outputs[kind] = (image_msg_to_labels(harness.panoptic[0]), bytes(overlay.data))
    assert outputs["rgb8"][0].any()
    for kind in ("bgr8", "png"):
        assert np.array_equal(outputs[kind][0], outputs["rgb8"][0]), kind
        assert outputs[kind][1] == outputs["rgb8"][1], kind


def test_camera_info_is_checked_and_the_last_good_one_kept(harness: Harness) -> None:
    from sensor_msgs.msg import CameraInfo

    info_pub = harness.client.create_publisher(CameraInfo, "camera_info", RELIABLE)
    assert wait_for(lambda: info_pub.get_subscription_count() > 0)
    good = CameraInfo(width=WIDTH, height=HEIGHT, k=[500.0, 0.0, 200.0, 0.0, 500.0, 60.0, 0.0, 0.0, 1.0])
    info_pub.publish(good)
    assert wait_for(lambda: harness.node.cameras[0].intrinsics == ((500.0, 500.0, 200.0, 60.0), (WIDTH, HEIGHT)))
    bad = [CameraInfo(width=WIDTH, height=HEIGHT, k=[500.0, 0.0, float("nan"), 0.0, 500.0, 60.0, 0.0, 0.0, 1.0]),
           CameraInfo(width=WIDTH, height=HEIGHT, k=[1e-300, 0.0, 200.0, 0.0, 1e-300, 60.0, 0.0, 0.0, 1.0]),
           CameraInfo(width=WIDTH, height=HEIGHT, k=[500.0, 0.0, float("inf"), 0.0, 500.0, 60.0, 0.0, 0.0, 1.0]),
           CameraInfo(width=0, height=0, k=[500.0, 0.0, 200.0, 0.0, 500.0, 60.0, 0.0, 0.0, 1.0]),
           CameraInfo()]
    for n, msg in enumerate(bad, start=1):
        info_pub.publish(msg)
        assert wait_for(lambda n=n: harness.node.bad_reasons["camera_info"] == n)
    assert harness.node.cameras[0].intrinsics == ((500.0, 500.0, 200.0, 60.0), (WIDTH, HEIGHT))
    assert harness.node.counters["bad_input"] == len(bad)


def test_another_publisher_on_an_output_topic_is_reported(harness: Harness) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    statuses: list[DiagnosticStatus] = []
    harness.client.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), RELIABLE)
    assert harness.node._shared_output_topics() == []
    harness.client.create_publisher(TrackedObjectArray, "tracks", RELIABLE)  # e.g. a second node of the same name
    assert wait_for(lambda: harness.node._shared_output_topics() == ["/tracks"])
    assert wait_for(lambda: any("other publishers on /tracks" in s.message for s in statuses), 5.0)
    mine = [s for s in statuses if "other publishers" in s.message][-1]
    assert mine.level == DiagnosticStatus.WARN
    assert mine.name == f"{harness.node.get_fully_qualified_name()}: pipeline" and mine.name.startswith("/")


def test_sigint_twice_ends_the_node_cleanly(onnx_model: Path) -> None:
    """A terminal's Ctrl-C under ros2 launch reaches the node twice (the terminal, then launch)."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "vknet_ros.node", "--ros-args", "-p", f"model:={onnx_model}",
                             "-r", "__node:=vknet_sigint_test"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ))
    lines: list[str] = []
    active = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "active: listening" in line:
                active.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert active.wait(60.0), "".join(lines)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    output = "".join(lines)
    assert "ERROR" not in output and "Traceback" not in output and "Failed to publish" not in output, output


@pytest.mark.skipif(not vision_messages.available(),
                    reason="vision_msgs is not installed (a ROS install has it; in this venv it comes with "
                           "../shared/ros2_cli_kit: `make ros-kit`); test_without_vision_msgs_the_node_says_so "
                           "covers this venv")
def test_detections_and_label_info_mirror_tracks_and_the_class_map() -> None:
    from rclpy.qos import DurabilityPolicy
    from vision_msgs.msg import Detection2DArray, LabelInfo

    from vknet_data.synth import SynthConfig, render_sequence
    from vknet_model.bundled import BUNDLED_ONNX
    from vknet_ros.msg import ClassMap

    h = Harness(BUNDLED_ONNX)  # a trained model: the street frames below hold cars and people it finds
    detections: list[Detection2DArray] = []
    labels: list[LabelInfo] = []
    class_maps: list[ClassMap] = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    h.client.create_subscription(Detection2DArray, "detections", detections.append, RELIABLE)
    h.client.create_subscription(LabelInfo, "label_info", labels.append, latched)
    h.client.create_subscription(ClassMap, "class_map", class_maps.append, latched)
    try:
        assert h.connected() and wait_for(lambda: labels and class_maps), "no latched label_info / class_map"
        label_info = labels[-1]
        assert [(c.class_id, c.class_name) for c in label_info.class_map] == list(enumerate(class_maps[-1].class_names))
        assert label_info.threshold == pytest.approx(h.node.pipeline.postprocess.instance_score_thr)
        images, _ = render_sequence(0, 1000, SynthConfig(frames=4))
        for t, rgb in enumerate(images):
            header = Header(frame_id="cam")
            header.stamp.sec, header.stamp.nanosec = 100, t * 100_000_000
            h.image_pub.publish(rgb_to_image_msg(rgb, header))
            assert wait_for(lambda n=t + 1: len(h.tracks) >= n and len(detections) >= n, 30.0), f"frame {t}"
        assert sum(len(d.detections) for d in detections) > 0, "the model found nothing: the test checks nothing"
        for tracks, dets in zip(h.tracks, detections, strict=True):
            assert dets.header == tracks.header  # what Foxglove and RViz match frames by
            assert len(dets.detections) == len(tracks.objects)
            for det, obj in zip(dets.detections, tracks.objects, strict=True):
                assert det.header == tracks.header and det.id == str(obj.track_id)
                (result,) = det.results
                assert result.hypothesis.class_id == str(obj.class_id)
                assert result.hypothesis.score == pytest.approx(obj.score, abs=1e-6)
                assert (det.bbox.center.position.x, det.bbox.center.position.y) == pytest.approx(
                    (obj.bbox.center_x, obj.bbox.center_y))
                assert (det.bbox.size_x, det.bbox.size_y) == pytest.approx((obj.bbox.size_x, obj.bbox.size_y))
        # A new threshold is announced on label_info, latched for late subscribers.
        assert h.node.set_parameters([Parameter("instance_score_thr", value=0.9)])[0].successful
        assert wait_for(lambda: labels[-1].threshold == pytest.approx(0.9)), labels[-1].threshold
    finally:
        h.close()


@pytest.mark.skipif(vision_messages.available(), reason="vision_msgs is installed: the test above runs instead")
def test_without_vision_msgs_the_node_says_so_and_publishes_the_rest(harness: Harness) -> None:
    assert "detections" not in harness.node.cameras[0].pubs and "label_info" not in harness.node._pubs
    names = {name for name, _ in harness.node.get_publisher_names_and_types_by_node("vknet", "/")}
    assert {"/panoptic", "/tracks", "/class_map"} <= names and "/detections" not in names


def test_matching_qos_gets_the_most_every_publisher_offers() -> None:
    from types import SimpleNamespace

    from rclpy.qos import DurabilityPolicy

    from vknet_ros.node import matching_qos

    def pub(reliability: ReliabilityPolicy, durability: DurabilityPolicy = DurabilityPolicy.VOLATILE) -> Any:
        return SimpleNamespace(qos_profile=QoSProfile(depth=1, reliability=reliability, durability=durability))

    reliable, best = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    latched = DurabilityPolicy.TRANSIENT_LOCAL
    cases = [([], best, DurabilityPolicy.VOLATILE), ([pub(reliable)], reliable, DurabilityPolicy.VOLATILE),
             ([pub(reliable), pub(best)], best, DurabilityPolicy.VOLATILE),
             ([pub(reliable, latched)], reliable, latched), ([pub(reliable, latched), pub(reliable)], reliable,
                                                             DurabilityPolicy.VOLATILE)]
    for publishers, reliability, durability in cases:
        qos = matching_qos(publishers, depth=3)
        assert (qos.reliability, qos.durability, qos.depth) == (reliability, durability, 3), publishers


def test_auto_input_qos_follows_the_camera_publishers(onnx_model: Path) -> None:
    """A reliable subscription never hears a best-effort camera (the users' top QoS complaint); auto matches
    whatever publishes, and changes when the publishers do."""
    h = Harness(onnx_model, input_qos="auto")  # its reliable camera publisher appears after the node is active
    try:
        def subscribed() -> Any:
            return h.node.cameras[0].inputs[0].qos_profile.reliability

        assert h.connected() and wait_for(lambda: subscribed() == ReliabilityPolicy.RELIABLE), subscribed()
        h.image_pub.publish(frame_msg(0))
        assert wait_for(lambda: len(h.panoptic) == 1)
        best_effort = h.client.create_publisher(Image, "image", QoSProfile(depth=1,
                                                                            reliability=ReliabilityPolicy.BEST_EFFORT))
        assert wait_for(lambda: subscribed() == ReliabilityPolicy.BEST_EFFORT), subscribed()
        assert wait_for(lambda: best_effort.get_subscription_count() == 1)
        best_effort.publish(frame_msg(1))
        assert wait_for(lambda: len(h.panoptic) == 2), "the best-effort camera's frame did not arrive"
        h.image_pub.publish(frame_msg(2))
        assert wait_for(lambda: len(h.panoptic) == 3), "the reliable camera's frame did not arrive"
    finally:
        h.close()


def _readme_topics(depth: bool) -> dict[tuple[str, str], str]:
    """(topic, in|out) -> type, from the README's topic table (the rows "with `depth:=true`" only with ``depth``)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("| topic (relative to the node's namespace) |")
    rows = {}
    for line in text[start:].split("\n\n", 1)[0].splitlines()[2:]:
        topic, direction, kind, what = (cell.strip().strip("`") for cell in line.strip("|").split("|")[:4])
        if depth or "with `depth:=true`" not in what:
            rows[(topic, direction)] = kind
    return rows


@pytest.mark.parametrize(("compressed", "depth"), [(False, False), (True, False), (False, True)],
                         ids=["raw", "compressed", "depth"])
def test_the_readme_topic_table_is_what_the_node_advertises(onnx_model: Path, compressed: bool, depth: bool) -> None:
    """Names and types read from the ROS graph, for a node in a namespace (outputs relative, ~/ private)."""
    from vknet_ros import depth_input

    if depth and not depth_input.available():
        pytest.skip("message_filters is not installed: the node has no depth topics (make ros-kit)")
    # A namespace per case: the graph may still list the previous case's node for a moment after it is gone.
    ns = f"/readme_{'compressed' if compressed else 'depth' if depth else 'raw'}"
    node = VKNetNode(namespace=ns, parameter_overrides=[
        Parameter("model", value=str(onnx_model)), Parameter("compressed_input", value=compressed),
        Parameter("depth", value=depth)])
    try:
        def graph(entries: list[tuple[str, list[str]]], direction: str) -> dict[tuple[str, str], str]:
            out = {}
            for name, kinds in entries:
                if name in ("/rosout", "/parameter_events", f"{ns}/vknet/transition_event"):
                    continue  # every rclpy lifecycle node has these
                relative = "~/" + name.removeprefix(f"{ns}/vknet/") if name.startswith(f"{ns}/vknet/") else (
                    name.removeprefix(f"{ns}/") if name.startswith(f"{ns}/") else name)
                out[(relative, direction)] = kinds[0]
            return out

        advertised = graph(node.get_publisher_names_and_types_by_node("vknet", ns), "out")
        advertised |= graph(node.get_subscriber_names_and_types_by_node("vknet", ns), "in")
        expected = {key: kind for key, kind in _readme_topics(depth).items()
                    if key[0] != ("image" if compressed else "image/compressed")
                    and (vision_messages.available() or not kind.startswith("vision_msgs/"))}
        assert advertised == expected
    finally:
        node.trigger_shutdown()
        node.destroy_node()


def test_qos_overrides_parameters_set_output_and_input_qos(onnx_model: Path) -> None:
    """The rclpy way to change a topic's QoS without code: qos_overrides.<topic>.<publisher|subscription>.*"""
    node = VKNetNode(parameter_overrides=[
        Parameter("model", value=str(onnx_model)), Parameter("input_qos", value="reliable"),
        Parameter("qos_overrides./tracks.publisher.reliability", value="best_effort"),
        Parameter("qos_overrides./tracks.publisher.depth", value=3),
        Parameter("qos_overrides./image.subscription.reliability", value="best_effort")])
    try:
        (tracks,) = node.get_publishers_info_by_topic("/tracks")
        assert tracks.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert node.cameras[0].pubs["tracks"].qos_profile.depth == 3  # the graph does not carry depths
        (panoptic,) = node.get_publishers_info_by_topic("/panoptic")
        assert panoptic.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # not overridden
        (image,) = node.get_subscriptions_info_by_topic("/image")
        assert image.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert node.get_parameter("qos_overrides./tracks.publisher.reliability").value == "best_effort"
    finally:
        node.trigger_shutdown()
        node.destroy_node()


def test_without_message_filters_depth_is_refused_in_one_line_and_2d_goes_on(
        onnx_model: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """Where message_filters is missing (a venv without ros2_cli_kit), depth:=true costs nothing but 3D."""
    from vknet_ros import depth_input

    monkeypatch.setattr(depth_input, "available", lambda: False)
    h = Harness(onnx_model, depth=True)
    try:
        assert h.connected()
        camera = h.node.cameras[0]
        assert camera.pairing is None and camera.placer is None and len(camera.inputs) == 2  # image, camera_info
        assert "message_filters is not installed: tracks get no 3D positions" in capfd.readouterr().err
        h.image_pub.publish(frame_msg(0))
        assert wait_for(lambda: len(h.tracks) == 1)
        assert not any(o.has_position for o in h.tracks[0].objects)
    finally:
        h.close()


def test_precision_int8_runs_the_quantised_model_beside_the_export(
        onnx_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from vknet_data.synth import SynthConfig, SyntheticScene
    from vknet_model.contract import contract_path_for
    from vknet_model.quantize import int8_path_for, quantize_model

    model = tmp_path / "tiny.onnx"
    model.write_bytes(onnx_model.read_bytes())
    contract_path_for(model).write_text(contract_path_for(onnx_model).read_text())
    refused = VKNetNode(parameter_overrides=[Parameter("model", value=str(model)),
                                             Parameter("precision", value="int8")])
    try:
        assert not refused.cameras and "no int8 model beside" in capfd.readouterr().err  # configure failed, said why
    finally:
        refused.destroy_node()
    quantize_model(model, int8_path_for(model), [[SyntheticScene(1000, 0, SynthConfig(frames=2)).frame(t)[0]
                                                  for t in range(2)]], calibration="test")
    h = Harness(model, precision="int8")
    try:
        assert h.connected() and h.node.pipeline is not None
        assert "int8" in h.node.pipeline.backend.describe()
        h.image_pub.publish(frame_msg(0))
        assert wait_for(lambda: len(h.panoptic) == 1)
    finally:
        h.close()
