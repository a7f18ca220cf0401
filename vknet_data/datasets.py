"""Readers for KITTI-STEP and Cityscapes-VPS, and the key/reference frame-pair dataset for training.

Both readers produce the same thing: ordered sequences of (image path, panoptic map loader), with panoptic
maps as int32 [H, W] = class * label_divisor + instance in the dataset's own class ids (void = 255, crowd =
thing class with instance 0). Missing, mismatched or unreadable files raise :class:`DatasetError` naming
the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from vknet_data.panoptic_png import decode_panoptic_png
from vknet_model.errors import VKNetError
from vknet_model.preprocess import PAD_VALUE

_LOG = logging.getLogger(__name__)
VOID = 255


class DatasetError(VKNetError, ValueError):
    """A dataset folder or file that cannot be read as documented; the message names the path."""


def read_rgb(path: Path) -> np.ndarray:
    """PNG/JPEG -> RGB uint8 [H, W, 3]."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path} (missing, truncated or not an image)")
    return np.ascontiguousarray(image[:, :, ::-1])


def _read_label_rgb(path: Path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"cannot read label {path} (missing, truncated or not a PNG)")
    if label.ndim != 3 or label.shape[2] != 3 or label.dtype != np.uint8:
        raise DatasetError(f"{path}: expected an 8-bit RGB panoptic PNG, got {label.dtype} {list(label.shape)}")
    return label[:, :, ::-1].astype(np.int64)


def read_kitti_step_panoptic(path: Path, label_divisor: int = 1000) -> np.ndarray:
    """KITTI-STEP panoptic PNG (:mod:`vknet_data.panoptic_png`) -> int32 [H, W]."""
    try:
        return decode_panoptic_png(_read_label_rgb(path), label_divisor)
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class VideoSequence:
    """One video: frame images in order and a loader for each frame's panoptic map."""

    name: str
    images: tuple[Path, ...]
    labels: tuple[Callable[[], np.ndarray], ...]

    def __len__(self) -> int:
        return len(self.images)


def kitti_step_sequences(root: str | Path, split: str, label_divisor: int = 1000) -> list[VideoSequence]:
    """Sequences of a KITTI-STEP-layout folder (``images/<split>/<seq>/`` and ``panoptic_maps/<split>/<seq>/``)."""
    root = Path(root)
    image_root, label_root = root / "images" / split, root / "panoptic_maps" / split
    if not image_root.is_dir():
        raise DatasetError(f"{image_root} does not exist: expected the KITTI-STEP layout "
                           f"images/<split>/<seq>/<frame>.png (make one with `vknet synth`)")
    if not label_root.is_dir():
        raise DatasetError(f"{label_root} does not exist: panoptic labels are missing for split {split!r}")
    sequences = []
    for seq_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
        images = tuple(sorted(seq_dir.glob("*.png")))
        if not images:
            raise DatasetError(f"{seq_dir} holds no .png frames")
        labels = tuple(label_root / seq_dir.name / img.name for img in images)
        missing = [str(p) for p in labels if not p.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} label(s) missing for {seq_dir}, e.g. {missing[0]}")
        loaders = tuple(_kitti_loader(p, label_divisor) for p in labels)
        sequences.append(VideoSequence(seq_dir.name, images, loaders))
    if not sequences:
        raise DatasetError(f"{image_root} holds no sequence folders")
    return sequences


def _kitti_loader(path: Path, label_divisor: int) -> Callable[[], np.ndarray]:
    return lambda: read_kitti_step_panoptic(path, label_divisor)


def cityscapes_vps_sequences(root: str | Path, split: str, class_names: Sequence[str],
                             label_divisor: int = 1000) -> list[VideoSequence]:
    """Sequences of a Cityscapes-VPS folder (VPSNet layout).

    Layout: ``<root>/<split>/img/<name>_leftImg8bit.png``, ``<root>/<split>/panoptic_video/<name>_gtFine_...png``
    and ``<root>/panoptic_gt_<split>_city_vps.json`` (COCO panoptic style: ``images``, ``annotations`` with
    ``file_name`` and ``segments_info``, ``categories``). PNG segment id = R + 256 G + 256^2 B. Frames are
    grouped into videos by the 4-digit prefix of the file name and ordered by the next field. Categories are
    matched to ``class_names`` by name, so the output uses this project's class ids.
    """
    root = Path(root)
    ann_path = root / f"panoptic_gt_{split}_city_vps.json"
    if not ann_path.is_file():
        raise DatasetError(f"{ann_path} not found: expected the VPSNet Cityscapes-VPS layout")
    try:
        meta = json.loads(ann_path.read_text())
        categories = {c["id"]: (c["name"], bool(c.get("isthing", 0))) for c in meta["categories"]}
        annotations = meta["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{ann_path}: malformed annotation file ({exc})") from exc
    name_to_id = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({name for name, _ in categories.values() if name not in name_to_id})
    if unknown:
        raise DatasetError(f"{ann_path}: categories {unknown} are not in the config's class_names")
    by_video: dict[str, list[tuple[str, Path, Path, list[dict]]]] = {}
    for ann in annotations:
        label_path = root / split / "panoptic_video" / ann["file_name"]
        stem = ann["file_name"].split("_gtFine")[0]
        image_path = root / split / "img" / f"{stem}_leftImg8bit.png"
        for path in (label_path, image_path):
            if not path.is_file():
                raise DatasetError(f"{path} listed in {ann_path.name} does not exist")
        video, frame = stem.split("_")[0], stem.split("_")[1]
        by_video.setdefault(video, []).append((frame, image_path, label_path, ann["segments_info"]))
    sequences = []
    for video in sorted(by_video):
        frames = sorted(by_video[video], key=lambda f: f[0])
        loaders = tuple(_vps_loader(label, segments, categories, name_to_id, label_divisor)
                        for _, _, label, segments in frames)
        sequences.append(VideoSequence(video, tuple(f[1] for f in frames), loaders))
    return sequences


def _vps_loader(path: Path, segments: list[dict], categories: dict[int, tuple[str, bool]],
                name_to_id: dict[str, int], label_divisor: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        rgb = _read_label_rgb(path)
        ids = rgb[:, :, 0] + 256 * rgb[:, :, 1] + 256 * 256 * rgb[:, :, 2]
        out = np.full(ids.shape, VOID * label_divisor, dtype=np.int64)
        unnumbered = 0
        for seg in segments:
            name, is_thing = categories[seg["category_id"]]
            cls = name_to_id[name]
            instance = 0
            if is_thing and not seg.get("iscrowd", 0):
                # Segment ids are class * 1000 + instance and stay fixed across a video's frames, which is what
                # carries track identity. An id without an instance part gets a per-frame number from the top.
                instance = int(seg["id"]) % label_divisor
                if instance == 0:
                    unnumbered += 1
                    instance = label_divisor - unnumbered
            out[ids == seg["id"]] = cls * label_divisor + instance
        return out.astype(np.int32)

    return load


@dataclass(frozen=True)
class AugmentConfig:
    """The paper's augmentation: random scale, horizontal flip, the same crop on key and reference frames."""

    crop: tuple[int, int] = (192, 640)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    base_scale: float = 1.0  # applied before the random scale (1.0: native scale, as the network infers)


def augment_pair(frames: Sequence[tuple[np.ndarray, np.ndarray]], aug: AugmentConfig, rng: np.random.Generator,
                 label_divisor: int) -> dict[str, np.ndarray]:
    """Scale, flip and crop a (key, reference) pair of (RGB image, panoptic map) the same way.

    Where the crop reaches past the scaled image it is filled as inference letterboxes: the top-left is the
    image, the rest the normalisation mean (``PAD_VALUE``) with void labels, so training and inference see the
    same padding (a black pad is an edge the network never meets at run time).

    Returns:
        ``key_image``/``ref_image`` uint8 [3, h, w] and ``key_panoptic``/``ref_panoptic`` int32 [h, w].
    """
    scale = aug.base_scale * float(rng.uniform(*aug.scale_range))
    flip = aug.flip and bool(rng.uniform() < 0.5)
    h, w = frames[0][0].shape[:2]
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    ch, cw = aug.crop
    top = int(rng.integers(0, max(1, sh - ch + 1)))
    left = int(rng.integers(0, max(1, sw - cw + 1)))
    out: dict[str, np.ndarray] = {}
    for name, (image, label) in zip(("key", "ref"), frames, strict=True):
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (sw, sh), interpolation=cv2.INTER_NEAREST)
        if flip:
            image, label = image[:, ::-1], label[:, ::-1]
        crop_img = np.empty((ch, cw, 3), dtype=np.uint8)
        crop_img[:] = np.asarray(PAD_VALUE, dtype=np.uint8)
        crop_lbl = np.full((ch, cw), VOID * label_divisor, dtype=np.int32)
        patch = image[top:top + ch, left:left + cw]
        crop_img[: patch.shape[0], : patch.shape[1]] = patch
        crop_lbl[: patch.shape[0], : patch.shape[1]] = label[top:top + ch, left:left + cw]
        out[f"{name}_image"] = np.ascontiguousarray(crop_img.transpose(2, 0, 1))
        out[f"{name}_panoptic"] = crop_lbl
    return out


class FramePairDataset(Dataset[dict[str, np.ndarray]]):
    """Key frame + reference frame at a random offset in ``ref_offsets``, re-drawn on every access.

    ``__getitem__`` returns :func:`augment_pair`'s dict (void where the crop falls outside the image).
    """

    def __init__(self, sequences: list[VideoSequence], *, ref_offsets: Sequence[int] = (-2, -1, 1, 2),
                 augment: AugmentConfig | None = None, label_divisor: int = 1000, seed: int = 0) -> None:
        if not sequences:
            raise DatasetError("no sequences to train on")
        self.sequences = sequences
        self.ref_offsets = tuple(ref_offsets)
        self.augment = augment or AugmentConfig()
        self.label_divisor = label_divisor
        self.index = [(s, f) for s, seq in enumerate(sequences) for f in range(len(seq))]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def reseed(self, seed: int) -> None:
        """Give each data-loader worker / DDP rank its own augmentation stream."""
        self.rng = np.random.default_rng(seed)

    def reference_index(self, sequence: int, frame: int) -> int:
        return reference_frame(self.rng, frame, len(self.sequences[sequence]), self.ref_offsets)

    def __getitem__(self, item: int) -> dict[str, np.ndarray]:
        s, key = self.index[item]
        ref = self.reference_index(s, key)
        seq = self.sequences[s]
        frames = [(read_rgb(seq.images[i]), seq.labels[i]()) for i in (key, ref)]
        for (image, label), i in zip(frames, (key, ref), strict=True):
            if image.shape[:2] != label.shape:
                raise DatasetError(f"{seq.images[i]}: image {image.shape[:2]} and label {label.shape} sizes differ")
        return augment_pair(frames, self.augment, self.rng, self.label_divisor)


def reference_frame(rng: np.random.Generator, frame: int, length: int, offsets: Sequence[int]) -> int:
    """A reference frame at one of ``offsets`` from ``frame`` inside [0, length); ``frame`` itself if none fits."""
    valid = [frame + o for o in offsets if 0 <= frame + o < length]
    return int(rng.choice(valid)) if valid else frame
