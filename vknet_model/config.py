"""One typed configuration tree, from YAML to model, training, export and the node.

``VKNetConfig`` holds frozen dataclasses for each consumer. A YAML file lists only what differs from the
defaults, one section per consumer (no base-file chains); unknown keys are errors, so a typo never
silently falls back to a default. The config hash is stored in checkpoints and export metadata, so a
deployed engine can be traced to the exact settings it was trained with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vknet_model.errors import VKNetError

KITTI_STEP_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)


BACKBONE_NORMS = ("frozen_bn", "gn", "bn")


class ConfigError(VKNetError, ValueError):
    """A configuration that cannot be used; the message names the key and the file."""


@dataclass(frozen=True)
class DataConfig:
    """The label space of a dataset.

    The network orders its classes things first, then stuff (one kernel per stuff class follows the thing
    proposals); ``net_to_dataset`` maps network class indices back to dataset class ids.
    """

    name: str = "kitti_step"
    class_names: tuple[str, ...] = KITTI_STEP_CLASSES
    thing_ids: tuple[int, ...] = (11, 13)
    void_id: int = 255
    label_divisor: int = 1000

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_things(self) -> int:
        return len(self.thing_ids)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_classes) if i not in self.thing_ids)

    @property
    def net_to_dataset(self) -> tuple[int, ...]:
        return self.thing_ids + self.stuff_ids

    def validate(self) -> None:
        if not self.class_names:
            raise ConfigError("data.class_names is empty")
        if not self.thing_ids:
            raise ConfigError("data.thing_ids is empty: Video K-Net tracks thing classes")
        if len(set(self.thing_ids)) != len(self.thing_ids) or any(
                not 0 <= i < self.num_classes for i in self.thing_ids):
            raise ConfigError(f"data.thing_ids {self.thing_ids} must be distinct class ids below "
                              f"{self.num_classes}")
        if 0 <= self.void_id < self.num_classes:
            raise ConfigError(f"data.void_id {self.void_id} collides with a class id")
        if self.label_divisor <= 1:
            raise ConfigError("data.label_divisor must be > 1")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the per-frame network (backbone, pyramid, kernel head). Defaults are the paper's R50."""

    backbone_depth: int = 50          # 18, 34 or 50
    backbone_width: int = 64          # channels of the stem; 64 is the standard ResNet, "tiny" narrows it
    channels: int = 256               # FPN, kernel and feature width
    num_proposals: int = 100          # thing kernels N_p
    num_stages: int = 3               # kernel update stages
    num_heads: int = 8
    ffn_dim: int = 2048
    embed_dim: int = 256              # kernel association embedding
    kernel_fusion: bool = False       # KF (the paper's best R50 row)
    input_height: int = 384           # static network input; images are letterboxed to it
    input_width: int = 1248
    norm_groups: int = 32             # GroupNorm in the neck
    # Backbone normalisation: "frozen_bn" (BatchNorm with fixed ImageNet statistics: the start from ImageNet
    # weights, as upstream), "gn" (GroupNorm: from scratch at a batch of 2, where BatchNorm statistics are
    # noise) or "bn" (BatchNorm that trains, for large batches).
    backbone_norm: str = "frozen_bn"
    # Stride of the kernels' mask features: 8 (the paper's semantic FPN output) or 4 (that output upsampled
    # and refined with P2: small and thin objects keep their shape; decoder ceiling STQ 0.87 -> 0.90).
    mask_stride: int = 8
    merge_stride: int = 4             # panoptic assembly resolution (stride of the slot map), <= mask_stride
    # A pixel goes to the kernel with the highest score ** vote_score_power x mask probability. Below 1 a
    # confident mask counts for more against a neighbour's higher score: small things beside larger ones
    # keep their pixels. An export-time constant of the graph, like merge_stride (no retraining).
    vote_score_power: float = 1.0

    def validate(self) -> None:
        if self.backbone_depth not in (18, 34, 50):
            raise ConfigError(f"model.backbone_depth must be 18, 34 or 50, got {self.backbone_depth}")
        if self.backbone_norm not in BACKBONE_NORMS:
            raise ConfigError(f"model.backbone_norm must be one of {list(BACKBONE_NORMS)}, got {self.backbone_norm!r}")
        # P2's and P3's strides in the ResNet pyramid (ResNet.strides); SemanticFPN checks the built backbone's.
        if self.mask_stride not in (4, 8):
            raise ConfigError(f"model.mask_stride must be 4 or 8, got {self.mask_stride}")
        if self.merge_stride not in (1, 2, 4, 8) or self.merge_stride > self.mask_stride:
            raise ConfigError(f"model.merge_stride must be 1, 2, 4 or 8 and at most mask_stride "
                              f"({self.mask_stride}), got {self.merge_stride}")
        if not 0.0 <= self.vote_score_power <= 4.0:
            raise ConfigError(f"model.vote_score_power must be in [0, 4], got {self.vote_score_power}")
        if self.channels % self.num_heads or self.channels % 2:
            raise ConfigError(f"model.channels ({self.channels}) must be even and divisible by num_heads "
                              f"({self.num_heads})")
        if self.channels % self.norm_groups:
            raise ConfigError(f"model.channels ({self.channels}) must be divisible by norm_groups "
                              f"({self.norm_groups})")
        if self.input_height % 32 or self.input_width % 32:
            raise ConfigError(f"model input {self.input_height}x{self.input_width} must be a multiple of 32")
        if self.num_stages < 1 or self.num_proposals < 1:
            raise ConfigError("model.num_stages and model.num_proposals must be >= 1")


@dataclass(frozen=True)
class PostprocessConfig:
    """Panoptic assembly thresholds (:func:`vknet_model.panoptic.assemble_panoptic`, run inside the graph)."""

    instance_score_thr: float = 0.25
    overlap_thr: float = 0.6
    mask_thr: float = 0.5


@dataclass(frozen=True)
class TrackerConfig:
    """Online kernel tracker thresholds and memory lengths (:class:`vknet_model.tracker.Tracker`)."""

    init_score_thr: float = 0.35        # an unmatched detection above this starts a track
    obj_score_thr: float = 0.3          # detections above this may take a track's id
    match_score_thr: float = 0.5        # bi-softmax similarity needed to match
    # The bi-softmax is relative: a lone detection and a lone track score high however unlike they are, so a
    # track whose object left can pass to a newcomer. A match also needs this cosine similarity of the raw
    # embeddings (0: no floor, as upstream).
    match_cosine_thr: float = 0.0
    nms_backdrop_iou_thr: float = 0.3   # duplicate removal IoU for low-score detections (score < obj thr)
    nms_class_iou_thr: float = 0.7      # duplicate removal IoU for confident detections
    memo_frames: int = 5                # drop a track missing for this many frames
    memo_backdrop_frames: int = 1       # unmatched detections kept as backdrops for this many frames
    memo_momentum: float = 0.8          # weight of the new embedding in the track's memory
    with_cats: bool = True              # match only within a class
    reset_gap_s: float = 1.0            # the pipeline resets when frames are further apart than this


@dataclass(frozen=True)
class LossWeights:
    """Loss weights and Hungarian matching costs (``train.loss``; K-Net / Video K-Net KITTI-STEP values).

    In the config (and its hash), so that a run's recipe is all in one place. The matching costs are their
    own fields: re-weighting a loss must not silently change the assignment.

    Attributes:
        focal: sigmoid focal classification loss of every update stage.
        mask_bce: mask BCE of every update stage.
        dice: dice loss of every update stage.
        init_mask_bce: mask BCE on the initial kernels (same as the stages, as in K-Net's kernel head).
        init_dice: dice on the initial kernels.
        rank: rank CE on the initial kernels.
        semantic: semantic CE on ``sem_logits``. K-Net puts weight 1.0 on its semantic loss (there a sigmoid
            focal loss); we keep 1.0 for the softmax CE used here instead, which gives each pixel one class,
            as the panoptic assembly's semantic argmax reads it.
        track_ce: multi-positive CE on embedding dot products.
        track_l2: L2 loss on embedding cosine similarity.
        vote: pixel CE over the final stage's assembly vote ``score ** p x mask`` (``model.vote_score_power``):
            trains the rule that decides which kernel owns a pixel, which the per-kernel losses never see.
            Not in K-Net; 0 (off) by default.
        vote_things: the same CE with every matched thing weighed alike (the mean over things of each one's
            mean over its own cells), so a small thing outvoted by a neighbour costs as much as a large one.
            0 (off) by default.
        cost_focal, cost_dice, cost_mask_bce: matching cost of each term (2, 4, 1).
    """

    focal: float = 2.0
    mask_bce: float = 1.0
    dice: float = 4.0
    init_mask_bce: float = 1.0
    init_dice: float = 4.0
    rank: float = 0.1
    semantic: float = 1.0
    track_ce: float = 0.25
    track_l2: float = 1.0
    vote: float = 0.0
    vote_things: float = 0.0
    cost_focal: float = 2.0
    cost_dice: float = 4.0
    cost_mask_bce: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """How ``vknet train`` optimises: schedule, batches, crops and augmentation, losses (``loss``), logging."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    backbone_lr_mult: float = 0.25
    grad_clip: float = 1.0
    warmup_iters: int = 500
    iters: int = 10000
    lr_steps: tuple[int, ...] = (8000,)
    batch_size: int = 2               # frame pairs per GPU / process
    ref_offsets: tuple[int, ...] = (-2, -1, 1, 2)
    crop: tuple[int, ...] = (384, 1248)   # training crop (height, width), the paper's for KITTI-STEP
    input_scale: float = 1.0          # resize applied before the random scale (1.0: native scale, as inferred)
    scale_range: tuple[float, ...] = (0.5, 2.0)
    loss_stride: int = 4              # mask and semantic logits are upsampled to this stride for losses/matching
    cls_target: str = "binary"        # a matched thing's class target: 1 (K-Net), or "iou": its mask's IoU
    loss: LossWeights = field(default_factory=LossWeights)
    flip: bool = True
    amp: bool = True                  # mixed precision on CUDA (ignored on CPU)
    ema_decay: float = 0.0            # > 0: validate and ship a moving average of the weights (training/ema.py)
    checkpoint_every: int = 1000
    val_every: int = 1000             # iterations between validations (0: only at the end)
    log_every: int = 20
    workers: int = 2                  # data-loading processes per training process
    seed: int = 0

    def validate(self) -> None:
        if len(self.crop) != 2 or min(self.crop) < 32:
            raise ConfigError(f"train.crop must be [height, width] >= 32, got {list(self.crop)}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"train.scale_range must be [min, max] with 0 < min <= max, got {list(self.scale_range)}")
        if any(s <= 0 for s in self.lr_steps) or list(self.lr_steps) != sorted(self.lr_steps):
            raise ConfigError(f"train.lr_steps must be increasing positive iterations, got {list(self.lr_steps)}")
        if self.batch_size < 1 or self.iters < 1:
            raise ConfigError("train.batch_size and train.iters must be >= 1")
        if self.cls_target not in ("binary", "iou"):
            raise ConfigError(f"train.cls_target must be 'binary' or 'iou', got {self.cls_target!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must lie in [0, 1) (0: no weight average), got {self.ema_decay}")
        if self.loss_stride not in (1, 2, 4, 8):
            raise ConfigError(f"train.loss_stride must be 1, 2, 4 or 8, got {self.loss_stride}")
        negative = [f.name for f in dataclasses.fields(self.loss) if getattr(self.loss, f.name) < 0]
        if negative:
            raise ConfigError(f"train.loss weights and costs must be >= 0, got negative {', '.join(negative)}")


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 18  # >= 17 (LayerNormalization); 18 is what the torch.onnx dynamo exporter emits natively


@dataclass(frozen=True)
class VKNetConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    @property
    def num_kernels(self) -> int:
        """N, the kernels of the network built from this config: the thing proposals, then one per stuff class."""
        return self.model.num_proposals + self.data.num_classes - self.data.num_things

    def validate(self) -> VKNetConfig:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if self.train.loss_stride > self.model.mask_stride:
            raise ConfigError(f"train.loss_stride ({self.train.loss_stride}) must be at most model.mask_stride "
                              f"({self.model.mask_stride}): losses compare upsampled, never pooled, logits")
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def hash(self) -> str:
        """Short stable digest of every setting (sorted JSON), stored with checkpoints and exports."""
        return values_hash(self.to_dict())


def values_hash(values: dict[str, Any]) -> str:
    """The digest :meth:`VKNetConfig.hash` gives a config whose ``to_dict()`` is ``values``.

    Files check their stored config against the stored hash with this, on the values *as stored*: a file
    written before a setting was added still verifies (and loads, the new setting taking its default),
    while a hand-edited or damaged config does not.
    """
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


T = TypeVar("T")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check and convert one YAML value to the annotated type (tuples from lists, ints to floats)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: union types are not supported in configs")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}.{name}")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}")
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any], source: str = "<dict>") -> VKNetConfig:
    """Build and validate a config from nested plain values (YAML, a checkpoint, export metadata)."""
    return _build(VKNetConfig, values or {}, source).validate()


def load_config(path: str | Path) -> VKNetConfig:
    """Load a YAML experiment file; missing keys take the defaults, unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return config_from_dict(values or {}, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def builtin_config_path(name: str) -> Path:
    """Path of a config shipped with the package in ``vknet_model/configs`` (``tiny``, ``tiny_synth``, ``r18``,
    ``r50``): package data, so that an installed wheel finds them as a source checkout does."""
    path = Path(__file__).resolve().parent / "configs" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no built-in config {name!r}; shipped: {shipped}")
    return path


def resolve_config(name_or_path: str | Path) -> VKNetConfig:
    """Accept a built-in name (``r50``) or a YAML path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return load_config(candidate)
    return load_config(builtin_config_path(str(name_or_path)))
