"""Draw panoptic results over the camera image: stuff tinted by class, things by a colour fixed per track id.

Pure numpy/OpenCV (no ROS), used by the node's ``overlay`` topic and by the demo. A track keeps its colour
for its whole life, so a person watching RViz sees identity, and each thing is labelled "id class".
"""

from __future__ import annotations

import cv2
import numpy as np

from vknet_model.pipeline import FrameResult
from vknet_model.preprocess import CHANNEL_ORDERS

# Cityscapes colours for the 19 KITTI-STEP classes (RGB), the convention people recognise.
CITYSCAPES_COLOURS = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)
# Indexed by dataset class id, BGR; void (255) and unknown ids are black.
_PALETTE_BGR = np.zeros((256, 3), dtype=np.uint8)
_PALETTE_BGR[: len(CITYSCAPES_COLOURS)] = CITYSCAPES_COLOURS[:, ::-1]
_GOLDEN = 0.6180339887498949


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour that depends only on the track id (golden-ratio hue steps keep neighbours apart)."""
    hue = (track_id * _GOLDEN) % 1.0
    hsv = np.array([[[hue * 179, 220, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_overlay(image: np.ndarray, result: FrameResult, *, channel_order: str = "rgb", label_divisor: int = 1000,
                 stuff_alpha: float = 0.35, thing_alpha: float = 0.55, band_rows: int = 256) -> np.ndarray:
    """BGR uint8 [H, W, 3] overlay (the node's bgr8 topic) of one frame's ``result`` on ``image``.

    ``image`` is uint8 [H, W, 3] in ``channel_order`` ("rgb" or "bgr": read as it is, never converted).
    Colours and weights are chosen per merge-stride cell of the result (a few ten thousand), not per pixel,
    and the blend runs over bands of ``band_rows`` rows, so no full-resolution temporary is made (a
    per-pixel float blend of one 4096x4096 frame allocated 720 MB).
    """
    if image.shape[:2] != result.panoptic.shape:
        raise ValueError(f"image {list(image.shape[:2])} and panoptic {list(result.panoptic.shape)} sizes differ")
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    tint = _PALETTE_BGR[result.class_cells]                                   # [Hm, Wm, 3] uint8
    weight = np.full(result.class_cells.shape, _alpha(stuff_alpha), dtype=np.float32)
    for obj in result.objects:
        cells = result.panoptic_cells == obj.class_id * label_divisor + obj.instance
        tint[cells] = track_colour(obj.track_id)[::-1]
        weight[cells] = _alpha(thing_alpha)
    image_weight = 1.0 - weight
    out = np.empty(image.shape, dtype=np.uint8)
    for top in range(0, image.shape[0], band_rows):
        rows = slice(top, top + band_rows)
        band = np.ascontiguousarray(image[rows])
        bgr = band if channel_order == "bgr" else cv2.cvtColor(band, cv2.COLOR_RGB2BGR)
        # OpenCV's per-pixel weighted sum (vectorised, rounded): 3x faster here than the same sum in numpy.
        out[rows] = cv2.blendLinear(result.upsample(tint, rows), bgr, result.upsample(weight, rows),
                                    result.upsample(image_weight, rows))
    scale = max(0.4, image.shape[0] / 900)
    for obj in result.objects:
        colour = track_colour(obj.track_id)[::-1]
        x1, y1, x2, y2 = (round(v) for v in obj.box)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
        text = f"{obj.track_id} {obj.class_name}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(0, y1 - th - base - 2)
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(out, text, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha
