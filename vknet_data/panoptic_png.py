"""The KITTI-STEP panoptic PNG, written and read in one place: R = class, G = instance // 256, B = instance % 256.

Ground truth (`vknet synth`), predictions (`vknet predict`) and every reader use these two functions, so the
format cannot drift between the writer and the scorer.
"""

from __future__ import annotations

import numpy as np


def encode_panoptic_png(panoptic: np.ndarray, label_divisor: int = 1000) -> np.ndarray:
    """class * divisor + instance -> RGB uint8 [H, W, 3]; raises ValueError for ids the format cannot hold."""
    semantic, instance = panoptic // label_divisor, panoptic % label_divisor
    if semantic.size and (semantic.min() < 0 or semantic.max() > 255):
        raise ValueError(f"class ids must be in [0, 255] for a panoptic PNG, got {semantic.min()}..{semantic.max()}")
    return np.stack([semantic, instance // 256, instance % 256], axis=-1).astype(np.uint8)


def decode_panoptic_png(rgb: np.ndarray, label_divisor: int = 1000) -> np.ndarray:
    """RGB [H, W, 3] (any integer dtype) -> int32 [H, W] class * divisor + instance; ValueError when an instance
    does not fit below the divisor."""
    rgb = rgb.astype(np.int64)
    instance = rgb[:, :, 1] * 256 + rgb[:, :, 2]
    if instance.max(initial=0) >= label_divisor:
        raise ValueError(f"instance id {instance.max()} >= label divisor {label_divisor}")
    return (rgb[:, :, 0] * label_divisor + instance).astype(np.int32)
