"""The export contract: what an exported model takes and returns, written next to it as ``model.json``.

Every backend reads it and checks the real model's inputs and outputs against it before the first frame,
so that a stale or foreign file fails at load with a message instead of producing garbage later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vknet_model import __version__
from vknet_model.config import ConfigError, VKNetConfig, config_from_dict, values_hash
from vknet_model.errors import VKNetError

CONTRACT_FORMAT = "vknet-model-contract"
CONTRACT_VERSION = 1
PRECISIONS = ("fp32", "int8")  # of an exported graph (bf16 and fp16 are engine settings, not files)


class ContractError(VKNetError, ValueError):
    """A model file that does not match its contract (or has none)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: uint8, float32, int32, bool

    @staticmethod
    def from_dict(values: dict[str, Any]) -> TensorSpec:
        return TensorSpec(str(values["name"]), tuple(int(d) for d in values["shape"]), str(values["dtype"]))


@dataclass(frozen=True)
class ModelContract:
    """Inputs, outputs and provenance of an exported per-frame network.

    Attributes:
        config: the full configuration the network was built and trained with.
        inputs, outputs: tensor specs in graph order (static shapes).
        onnx_sha256: digest of the ONNX file this contract describes ("" for a torch checkpoint).
        normalization: how the image must look when it enters the graph.
        precision: "fp32", or "int8" for a graph quantised by ``vknet quantize`` (QDQ nodes; the inputs and
            outputs keep their types, so the rest of the product does not change).
        calibration: for int8, what the quantisation was calibrated on (source and frames).
        fp32_sha256: for int8, the digest of the fp32 export it was quantised from.
    """

    config: VKNetConfig
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_sha256: str = ""
    opset: int = 0
    vknet_version: str = __version__
    precision: str = "fp32"
    calibration: str = ""
    fp32_sha256: str = ""

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the static network input."""
        return self.config.model.input_height, self.config.model.input_width

    @property
    def normalization(self) -> dict[str, Any]:
        from vknet_model.network import PIXEL_MEAN, PIXEL_STD

        return {"layout": "NCHW", "channels": "RGB", "range": "0..255, uint8 or float32",
                "inside_graph": True, "mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONTRACT_FORMAT,
            "version": CONTRACT_VERSION,
            "vknet_version": self.vknet_version,
            "config_hash": self.config.hash(),
            "config": self.config.to_dict(),
            "class_names": list(self.config.data.class_names),
            "thing_ids": list(self.config.data.thing_ids),
            "net_to_dataset": list(self.config.data.net_to_dataset),
            "normalization": self.normalization,
            "inputs": [asdict(spec) for spec in self.inputs],
            "outputs": [asdict(spec) for spec in self.outputs],
            "onnx_sha256": self.onnx_sha256,
            "opset": self.opset,
            "precision": self.precision,
            "calibration": self.calibration,
            "fp32_sha256": self.fp32_sha256,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def from_dict(values: dict[str, Any], source: str = "<dict>") -> ModelContract:
        if values.get("format") != CONTRACT_FORMAT:
            raise ContractError(f"{source}: not a vknet model contract (format {values.get('format')!r})")
        if values.get("version") != CONTRACT_VERSION:
            raise ContractError(f"{source}: contract version {values.get('version')} is not supported "
                                f"(this vknet reads version {CONTRACT_VERSION}); re-export the model")
        try:
            config = config_from_dict(values["config"], source=f"{source}:config")
            contract = ModelContract(
                config=config,
                inputs=tuple(TensorSpec.from_dict(v) for v in values["inputs"]),
                outputs=tuple(TensorSpec.from_dict(v) for v in values["outputs"]),
                onnx_sha256=str(values.get("onnx_sha256", "")),
                opset=int(values.get("opset", 0)),
                vknet_version=str(values.get("vknet_version", "?")),
                precision=str(values.get("precision", "fp32")),  # contracts before int8 existed are fp32
                calibration=str(values.get("calibration", "")),
                fp32_sha256=str(values.get("fp32_sha256", "")),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ContractError(f"{source}: malformed contract ({exc.__class__.__name__}: {exc})") from exc
        if contract.precision not in PRECISIONS:
            raise ContractError(f"{source}: precision {contract.precision!r} is not one of {PRECISIONS}")
        if values_hash(values["config"]) != values.get("config_hash"):
            raise ContractError(f"{source}: config_hash does not match the stored config (file edited by hand?)")
        return contract

    @staticmethod
    def load(path: str | Path) -> ModelContract:
        path = Path(path)
        if not path.is_file():
            raise ContractError(f"model contract not found: {path} (it is written by `vknet export` next to the "
                                f".onnx file)")
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContractError(f"{path}: not valid JSON ({exc})") from exc
        return ModelContract.from_dict(values, source=str(path))


def model_config(model_path: str | Path) -> VKNetConfig:
    """The config a model file was made with, without loading its weights: from ``model.json`` beside an
    .onnx file, else from the checkpoint's stored config."""
    model_path = Path(model_path)
    if model_path.suffix == ".onnx":
        return ModelContract.load(contract_path_for(model_path)).config
    from vknet_model.checkpoint import read_checkpoint

    return config_from_dict(read_checkpoint(model_path)["config"], source=f"{model_path}:config")


def contract_path_for(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json`` (the contract always sits next to the model)."""
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_verified_contract(onnx_path: str | Path) -> tuple[ModelContract, str]:
    """The contract next to an exported ``onnx_path`` and the file's sha256, after checking that they belong
    together (when the contract records the sha256 of the file it was written for; every export does).

    Raises:
        ContractError: no readable contract, or the file was replaced or damaged after export.
    """
    onnx_path = Path(onnx_path)
    contract = ModelContract.load(contract_path_for(onnx_path))
    sha = file_sha256(onnx_path)
    if contract.onnx_sha256 and sha != contract.onnx_sha256:
        raise ContractError(f"{onnx_path} does not match the sha256 in {contract_path_for(onnx_path)}: the file was "
                            f"replaced or damaged after export; re-export it")
    return contract, sha


def check_io(contract: ModelContract, inputs: list[TensorSpec], outputs: list[TensorSpec], what: str) -> None:
    """Raise ContractError naming every difference between a model's I/O and its contract."""
    problems = []
    for kind, want, got in (("input", contract.inputs, inputs), ("output", contract.outputs, outputs)):
        if [s.name for s in want] != [s.name for s in got]:
            problems.append(f"{kind} names {[s.name for s in got]} != contract {[s.name for s in want]}")
            continue
        for w, g in zip(want, got, strict=True):
            if w.shape != g.shape:
                problems.append(f"{kind} {w.name}: shape {list(g.shape)} != contract {list(w.shape)}")
            if w.dtype != g.dtype:
                problems.append(f"{kind} {w.name}: dtype {g.dtype} != contract {w.dtype}")
    if problems:
        raise ContractError(f"{what} does not match its contract: " + "; ".join(problems))


def contract_for(config: VKNetConfig, *, onnx_sha256: str = "", opset: int = 0) -> ModelContract:
    """The I/O a FrameNet built from ``config`` has (tests check the eager network against it)."""
    m, d = config.model, config.data
    n = config.num_kernels
    hm, wm = m.input_height // m.merge_stride, m.input_width // m.merge_stride
    inputs = (
        TensorSpec("image", (1, 3, m.input_height, m.input_width), "uint8"),
        TensorSpec("prev_kernels", (1, n, m.channels), "float32"),
        TensorSpec("use_prev", (1,), "float32"),
        TensorSpec("thresholds", (3,), "float32"),
    )
    outputs = (
        TensorSpec("cls_scores", (n, d.num_classes), "float32"),
        TensorSpec("slot_map", (hm, wm), "int32"),
        TensorSpec("semantic_map", (hm, wm), "int32"),
        TensorSpec("slot_scores", (n,), "float32"),
        TensorSpec("slot_labels", (n,), "int32"),
        TensorSpec("slot_keep", (n,), "bool"),
        TensorSpec("slot_areas", (n,), "int32"),
        TensorSpec("boxes", (n, 4), "float32"),
        TensorSpec("kernels", (1, n, m.channels), "float32"),
        TensorSpec("embeddings", (m.num_proposals, m.embed_dim), "float32"),
    )
    return ModelContract(config=config, inputs=inputs, outputs=outputs, onnx_sha256=onnx_sha256, opset=opset)
