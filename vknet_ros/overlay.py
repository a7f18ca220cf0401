"""Draw panoptic results over the camera image: stuff tinted by class, things by a colour fixed per track id.

Pure numpy/OpenCV (no ROS), used by the node's ``overlay`` topic and by the demo. A track keeps its colour
for its whole life, so a person watching RViz sees identity, and each thing is labelled "id class".
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vknet_model.pipeline import TrackedObjectInfo

# Cityscapes colours for the 19 KITTI-STEP classes (RGB), the convention people recognise.
CITYSCAPES_COLOURS = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)
_GOLDEN = 0.6180339887498949


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour that depends only on the track id (golden-ratio hue steps keep neighbours apart)."""
    hue = (track_id * _GOLDEN) % 1.0
    hsv = np.array([[[hue * 179, 220, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_overlay(image: np.ndarray, semantic: np.ndarray, panoptic: np.ndarray, objects: Sequence[TrackedObjectInfo],
                 *, label_divisor: int = 1000, stuff_alpha: float = 0.35, thing_alpha: float = 0.55) -> np.ndarray:
    """RGB uint8 [H, W, 3] overlay of one frame's results on ``image`` (RGB uint8 [H, W, 3])."""
    if image.shape[:2] != semantic.shape or semantic.shape != panoptic.shape:
        raise ValueError(f"image {image.shape[:2]}, semantic {semantic.shape} and panoptic {panoptic.shape} differ")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CITYSCAPES_COLOURS)] = CITYSCAPES_COLOURS
    tint = palette[semantic].astype(np.float32)
    alpha = np.full(semantic.shape, stuff_alpha, dtype=np.float32)
    for obj in objects:
        mask = panoptic == obj.class_id * label_divisor + obj.instance
        tint[mask] = track_colour(obj.track_id)
        alpha[mask] = thing_alpha
    out = (image.astype(np.float32) * (1 - alpha[..., None]) + tint * alpha[..., None]).astype(np.uint8)
    scale = max(0.4, image.shape[0] / 900)
    for obj in objects:
        colour = track_colour(obj.track_id)
        x1, y1, x2, y2 = (round(v) for v in obj.box)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
        text = f"{obj.track_id} {obj.class_name}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(0, y1 - th - base - 2)
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(out, text, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out
