"""Fit camera images of any size to the static network input, and map results back.

The image is resized with its aspect ratio kept so that it fits the network input, and padded at the
bottom and right (top-left aligned, so mapping back is one scale factor). Normalisation is not done
here: it happens inside the network, so every backend takes the same raw uint8 image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Pad value: the ImageNet mean, which normalises to ~0 inside the network (no artificial edges).
PAD_VALUE = (124, 116, 104)


@dataclass(frozen=True)
class Letterbox:
    """How an input image of ``source`` size sits inside the network input of ``target`` size.

    Attributes:
        source: (height, width) of the camera image.
        target: (height, width) of the network input.
        scale: network pixels per camera pixel.
        resized: (height, width) of the image content inside the network input (the rest is padding).
    """

    source: tuple[int, int]
    target: tuple[int, int]
    scale: float
    resized: tuple[int, int]

    @staticmethod
    def fit(source: tuple[int, int], target: tuple[int, int]) -> Letterbox:
        sh, sw = source
        th, tw = target
        if sh <= 0 or sw <= 0:
            raise ValueError(f"empty image ({sw}x{sh})")
        scale = min(th / sh, tw / sw)
        resized = (min(th, max(1, round(sh * scale))), min(tw, max(1, round(sw * scale))))
        return Letterbox(source=(sh, sw), target=(th, tw), scale=scale, resized=resized)

    def grid_indices(self, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """For every source row / column, the index of the network cell (at ``stride``) it falls in.

        Used to bring stride-4 maps back to camera resolution by fancy indexing (nearest neighbour),
        which is exact and allocation-light compared with resizing N masks.
        """
        sh, sw = self.source
        rh, rw = self.resized
        th, tw = self.target
        # Centre of each source pixel in network-input pixels, then the stride cell it lands in.
        rows = np.minimum(((np.arange(sh) + 0.5) * (rh / sh) / stride).astype(np.int64), th // stride - 1)
        cols = np.minimum(((np.arange(sw) + 0.5) * (rw / sw) / stride).astype(np.int64), tw // stride - 1)
        return rows, cols

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """float [M, 4] x1, y1, x2, y2 in network pixels -> camera pixels, clipped to the image."""
        sh, sw = self.source
        rh, rw = self.resized
        scale = np.array([sw / rw, sh / rh, sw / rw, sh / rh])
        return np.clip(boxes * scale, 0, np.array([sw, sh, sw, sh], dtype=np.float64))


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is a non-empty uint8 [H, W, 3] array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image ({image.shape[1]}x{image.shape[0]})")


CHANNEL_ORDERS = ("rgb", "bgr")


def letterbox(image: np.ndarray, target: tuple[int, int], out: np.ndarray | None = None, *,
              channel_order: str = "rgb") -> tuple[np.ndarray, Letterbox]:
    """uint8 [H, W, 3] -> (uint8 [1, 3, th, tw] RGB network input, the Letterbox to map results back).

    Args:
        out: uint8 [1, 3, th, tw] to write the network input into (a live pipeline reuses one buffer instead
            of allocating a fresh one per frame); a new array when None.
        channel_order: "rgb", or "bgr" for a BGR image (a bgr8 camera): the channels are swapped by the
            copy into ``out`` that happens anyway, so a BGR frame costs no conversion of its own.
    """
    check_image(image)
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    th, tw = target
    if out is None:
        out = np.empty((1, 3, th, tw), dtype=np.uint8)
    elif out.shape != (1, 3, th, tw) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 [1, 3, {th}, {tw}], got {out.dtype} {list(out.shape)}")
    box = Letterbox.fit(image.shape[:2], target)
    rh, rw = box.resized
    if (rh, rw) != image.shape[:2]:
        # Bilinear, as the training augmentation resizes (vknet_data/datasets.py): the network sees the same
        # kind of pixels it learned on, and it is 8x cheaper than INTER_AREA at KITTI size (0.5 vs 4.2 ms).
        image = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
    canvas = out[0]
    canvas[:] = np.asarray(PAD_VALUE, dtype=np.uint8)[:, None, None]
    chw = image.transpose(2, 0, 1)
    canvas[:, :rh, :rw] = chw[::-1] if channel_order == "bgr" else chw
    return out, box
