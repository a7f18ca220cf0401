"""The node's parameters: names, defaults, descriptions and validation, without rclpy.

One table drives everything: the node declares these parameters with their descriptions, `vknet_ros/config/vknet.yaml`
lists the same names (a test checks it), and :func:`settings_from_values` turns whatever the user set into a
validated :class:`NodeSettings` or a :class:`SettingsError` naming the parameter and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vknet_model.backends import BACKENDS, PRECISIONS
from vknet_model.errors import VKNetError

INPUT_QOS = ("auto", "sensor_data", "reliable", "best_effort")
CORRUPT_COMPRESSED = ("drop", "process")
PANOPTIC_ENCODINGS = ("16UC1", "32SC1")
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")  # vknet_model.backends.torch_backend.PRECISIONS, without torch
# Thresholds that take effect on the next frame when changed at run time (`ros2 param set`).
DYNAMIC = ("instance_score_thr", "overlap_thr", "mask_thr", "init_score_thr", "obj_score_thr", "match_score_thr",
           "match_cosine_thr", "reset_gap_s")
# Default of every threshold: the value the model was trained and exported with (its config, in model.json or
# the checkpoint). A model made with other thresholds runs with its own unless the user sets one.
MODEL_VALUE = -1.0
_MODEL = "; -1 = the model's own (its config)"


# name -> (default, description). The order is the order of `ros2 param list`.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "model": ("", "model file: .onnx (with its model.json; TensorRT engines are built from it and cached) or "
                  "checkpoint .pt; empty = the bundled model"),
    "backend": ("auto", "tensorrt | onnxruntime | torch | auto (TensorRT on a GPU where installed, else ONNX "
                        "Runtime; torch for checkpoints); a fallback is logged"),
    "device": ("auto", "cpu | cuda | cuda:N | auto (cuda when available)"),
    "ort_spin_wait": (False, "ONNX Runtime threads busy-wait between runs: faster alone, slower beside the DDS "
                             "threads on few cores (2-core VM at 15 Hz: p90 77-104 ms on, 43-53 ms off)"),
    "precision": ("auto", "auto (as the model file is) | fp32 | int8 (MODEL.int8.onnx beside the model, from "
                          "`vknet quantize`) | bf16 (a checkpoint, on a GPU or a CPU with native bf16); refused with "
                          "the reason where it cannot be had"),
    "torch_precision": ("fp32", "torch backend (checkpoints): fp32 | fp16 | bf16, the last two through autocast "
                                "(fp16 is the GPU's); the panoptic assembly stays float32"),
    "cuda_graph": (False, "torch backend on CUDA: record the per-frame forward once as a CUDA graph and replay it"),
    "input_size": ([0, 0], "expected network input [height, width]; [0, 0] = the model's (it is fixed at export)"),
    "cameras": ([""], "camera names, e.g. [front, left]: one model serves them all, each with its own topics under "
                      "its name (front/image -> front/panoptic ...), tracker and track ids; [''] = one camera "
                      "on the plain topics (image -> panoptic ...)"),
    "compressed_input": (False, "subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image"),
    "input_qos": ("auto", "input QoS: auto (match the camera's publishers: best effort if any is, transient local "
                          "if all are; re-checked every second) | sensor_data | reliable | best_effort"),
    "input_depth": (1, "input queue depth; the worker always takes the newest frame"),
    "corrupt_compressed": ("drop", "a compressed frame the decoder finds damaged (flipped or missing bytes; "
                                   "libjpeg still returns a partial picture): drop | process; counted either way"),
    "depth": (False, "subscribe to depth (sensor_msgs/Image registered to the colour camera: 16UC1 mm or 32FC1 m, "
                     "REP 118; plus depth/camera_info if its size differs) and give tracks 3D positions, sizes and "
                     "velocities (needs message_filters)"),
    "depth_slop_s": (0.05, "largest stamp difference (s) between a colour frame and its depth image"),
    "depth_wait_s": (0.1, "how long (s) a frame waits for its depth image while depth is arriving"),
    "instance_score_thr": (MODEL_VALUE, "[dynamic] minimum score of a thing in the panoptic output" + _MODEL),
    "overlap_thr": (MODEL_VALUE, "[dynamic] minimum visible fraction of a mask after overlaps" + _MODEL),
    "mask_thr": (MODEL_VALUE, "[dynamic] mask probability threshold" + _MODEL),
    "init_score_thr": (MODEL_VALUE, "[dynamic] minimum score to start a new track" + _MODEL),
    "obj_score_thr": (MODEL_VALUE, "[dynamic] minimum score to continue a track" + _MODEL),
    "match_score_thr": (MODEL_VALUE, "[dynamic] minimum bi-softmax similarity to match a track" + _MODEL),
    "match_cosine_thr": (MODEL_VALUE, "[dynamic] a match also needs this cosine similarity of the embeddings "
                                      "(0 = none: the relative bi-softmax alone)" + _MODEL),
    "reset_gap_s": (MODEL_VALUE, "[dynamic] reset the tracker when frames are further apart than this (s)" + _MODEL),
    "label_divisor": (1000, "panoptic pixel = class_id * label_divisor + instance"),
    "panoptic_encoding": ("16UC1", "16UC1 (RViz shows it) | 32SC1"),
    "publish_panoptic": (True, "publish the panoptic id image"),
    "publish_semantic": (True, "publish the semantic class image (mono8; only while someone subscribes)"),
    "publish_overlay": (True, "publish the overlay (only while someone subscribes)"),
    "publish_markers": (True, "publish RViz markers (only while someone subscribes)"),
    "diagnostics_period_s": (1.0, "period of /diagnostics"),
    "autostart": (True, "configure and activate on start (false: wait for lifecycle transitions)"),
}


class SettingsError(VKNetError, ValueError):
    """A parameter value the node cannot use; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class NodeSettings:
    model: str
    backend: str
    device: str
    ort_spin_wait: bool
    precision: str
    torch_precision: str
    cuda_graph: bool
    input_size: tuple[int, int]
    cameras: tuple[str, ...]
    compressed_input: bool
    input_qos: str
    input_depth: int
    corrupt_compressed: str
    depth: bool
    depth_slop_s: float
    depth_wait_s: float
    instance_score_thr: float
    overlap_thr: float
    mask_thr: float
    init_score_thr: float
    obj_score_thr: float
    match_score_thr: float
    match_cosine_thr: float
    reset_gap_s: float
    label_divisor: int
    panoptic_encoding: str
    publish_panoptic: bool
    publish_semantic: bool
    publish_overlay: bool
    publish_markers: bool
    diagnostics_period_s: float
    autostart: bool


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SettingsError(f"parameter {name}={value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _unit(name: str, value: Any) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"parameter {name}={value} must be in [0, 1]")
    return value


def validate_dynamic(name: str, value: Any) -> float:
    """Check one threshold (on configure or a run-time change); raises :class:`SettingsError`.

    Any negative value means "the model's own" and is stored as :data:`MODEL_VALUE`.
    """
    if float(value) < 0:
        return MODEL_VALUE
    if name == "reset_gap_s":
        value = float(value)
        if value <= 0:
            raise SettingsError(f"parameter reset_gap_s={value} must be > 0")
        return value
    return _unit(name, value)


def camera_names(value: Any) -> tuple[str, ...]:
    """The ``cameras`` parameter checked: names that are ROS name tokens (they become topic namespaces),
    unique, or the one unnamed camera ('' alone, also what an empty list means)."""
    names = tuple(str(n) for n in (value or [""]))
    if names == ("",):
        return names
    for name in names:
        if not (name and (name[0].isalpha()) and all(c.isalnum() or c == "_" for c in name) and name.isascii()):
            raise SettingsError(f"parameter cameras: {name!r} is not a topic name token (a letter, then letters, "
                                f"digits or _); '' names the one unnamed camera and cannot be mixed with names")
    if len(set(names)) != len(names):
        raise SettingsError(f"parameter cameras={list(names)} names a camera twice")
    return names


def settings_from_values(values: dict[str, Any]) -> NodeSettings:
    """Validated settings from parameter values (missing names take their defaults)."""
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise SettingsError(f"unknown parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
    v = {name: values.get(name, default) for name, (default, _) in PARAMETERS.items()}
    device = str(v["device"])
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise SettingsError(f"parameter device={device!r} must be auto, cpu, cuda or cuda:N")
    size = [int(x) for x in v["input_size"]]
    if len(size) != 2 or min(size) < 0 or (0 in size and size != [0, 0]):
        raise SettingsError(f"parameter input_size={size} must be [height, width] > 0, or [0, 0] for the model's")
    depth = int(v["input_depth"])
    if not 1 <= depth <= 100:
        raise SettingsError(f"parameter input_depth={depth} must be in [1, 100]")
    divisor = int(v["label_divisor"])
    encoding = _choice("panoptic_encoding", v["panoptic_encoding"], PANOPTIC_ENCODINGS)
    if divisor < 2:
        raise SettingsError(f"parameter label_divisor={divisor} must be >= 2")
    cameras = camera_names(v["cameras"])
    slop, wait = float(v["depth_slop_s"]), float(v["depth_wait_s"])
    if not 0 < slop <= 10:
        raise SettingsError(f"parameter depth_slop_s={slop} must be in (0, 10]")
    if not 0 <= wait <= 10:
        raise SettingsError(f"parameter depth_wait_s={wait} must be in [0, 10]")
    period = float(v["diagnostics_period_s"])
    if period <= 0:
        raise SettingsError(f"parameter diagnostics_period_s={period} must be > 0")
    return NodeSettings(
        model=str(v["model"]), backend=_choice("backend", v["backend"], BACKENDS), device=device,
        ort_spin_wait=bool(v["ort_spin_wait"]), precision=_choice("precision", v["precision"], PRECISIONS),
        torch_precision=_choice("torch_precision", v["torch_precision"], TORCH_PRECISIONS),
        cuda_graph=bool(v["cuda_graph"]),
        input_size=(size[0], size[1]), cameras=cameras, compressed_input=bool(v["compressed_input"]),
        input_qos=_choice("input_qos", v["input_qos"], INPUT_QOS), input_depth=depth,
        corrupt_compressed=_choice("corrupt_compressed", v["corrupt_compressed"], CORRUPT_COMPRESSED),
        depth=bool(v["depth"]), depth_slop_s=slop, depth_wait_s=wait,
        **{name: validate_dynamic(name, v[name]) for name in DYNAMIC},
        label_divisor=divisor, panoptic_encoding=encoding,
        publish_panoptic=bool(v["publish_panoptic"]), publish_semantic=bool(v["publish_semantic"]),
        publish_overlay=bool(v["publish_overlay"]), publish_markers=bool(v["publish_markers"]),
        diagnostics_period_s=period, autostart=bool(v["autostart"]),
    )
