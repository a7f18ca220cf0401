"""Where tracked things are in 3D: positions from the depth of their *mask* pixels, and velocities over time.

Peers crop depth with the 2D box, so a car's box takes the road and the wall behind it; we have each thing's
pixels. Its position is the median depth of its valid mask pixels after an erosion (edge pixels mix object and
background depth), back-projected through the pinhole intrinsics; its size spans the 10th to 90th percentile
of the back-projected points. Velocities come from a small alpha-beta (constant velocity) filter per track.
Everything is in the camera's optical frame (x right, y down, z forward, metres) and framework-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vknet_model.pipeline import FrameResult

Intrinsics = tuple[float, float, float, float]  # fx, fy, cx, cy in pixels
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
DEPTH_ENCODINGS = ("16UC1", "32FC1")  # REP 118: millimetres as uint16, metres as float32; 0 / NaN = no depth


@dataclass(frozen=True)
class Placement:
    """One thing's 3D position (metres), its extent along x, y, z, and how many depth pixels gave them."""

    position: tuple[float, float, float]
    size: tuple[float, float, float]
    depth_pixels: int


def depth_in_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """float32 metres with NaN where there is no depth (0, NaN, inf or negative)."""
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding {encoding!r} is not one of {DEPTH_ENCODINGS} (REP 118)")
    metres = depth.astype(np.float32) * (np.float32(1e-3) if encoding == "16UC1" else np.float32(1.0))
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def resample_depth(depth_m: np.ndarray, depth_k: Intrinsics, colour_k: Intrinsics,
                   colour_size: tuple[int, int]) -> np.ndarray:
    """Depth registered to the colour camera but of another resolution, on the colour grid (height, width):
    each colour pixel takes the depth pixel on the same ray (nearest), through both intrinsics, never a
    blind stretch (which is wrong as soon as the principal points differ)."""
    height, width = colour_size
    fx, fy, cx, cy = colour_k
    dfx, dfy, dcx, dcy = depth_k
    u = np.rint((np.arange(width) - cx) / fx * dfx + dcx).astype(np.int64)
    v = np.rint((np.arange(height) - cy) / fy * dfy + dcy).astype(np.int64)
    inside_u = (u >= 0) & (u < depth_m.shape[1])
    inside_v = (v >= 0) & (v < depth_m.shape[0])
    out = np.full((height, width), np.nan, np.float32)
    out[np.ix_(inside_v, inside_u)] = depth_m[np.ix_(v[inside_v], u[inside_u])]
    return out


def _eroded(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask shrunk by ``pixels`` (a pixel stays if its whole (2p+1)^2 neighbourhood is in the mask)."""
    if pixels <= 0:
        return mask
    padded = np.pad(mask, pixels)
    out = np.ones_like(mask)
    size = 2 * pixels + 1
    for dy in range(size):
        for dx in range(size):
            out &= padded[dy: dy + mask.shape[0], dx: dx + mask.shape[1]]
    return out


def place(mask: np.ndarray, depth_m: np.ndarray, k: Intrinsics, *, erosion_px: int = 2,
          min_pixels: int = 10) -> Placement | None:
    """The 3D placement of one thing from its mask [H, W] bool and the depth [H, W] (metres, NaN invalid),
    or None with fewer than ``min_pixels`` valid depths (then the unshrunk mask is tried: a thin thing)."""
    fx, fy, cx, cy = k
    for shrink in (erosion_px, 0):
        ys, xs = np.nonzero(_eroded(mask, shrink))
        z = depth_m[ys, xs]
        valid = np.isfinite(z)
        if int(valid.sum()) >= min_pixels:
            break
    else:
        return None
    xs, ys, z = xs[valid], ys[valid], z[valid]
    points = np.stack([(xs - cx) / fx * z, (ys - cy) / fy * z, z], axis=1)
    low, high = np.percentile(points, [10.0, 90.0], axis=0)
    centre = np.median(points, axis=0)
    return Placement(position=(float(centre[0]), float(centre[1]), float(centre[2])),
                     size=(float(high[0] - low[0]), float(high[1] - low[1]), float(high[2] - low[2])),
                     depth_pixels=int(valid.sum()))


class MotionFilter:
    """A constant-velocity (alpha-beta) filter per track id: positions in, smoothed velocities out.

    alpha and beta trade lag for noise: measured positions from median depth jitter by a few centimetres
    at 10 m, and a car's speed should settle within a few frames. A measurement further from the prediction
    than the gate (``gate_m``, or ``gate_fraction`` of its range if more) is not motion but another thing
    under the same track id (an identity switch, a merge): the track's filter starts again from it instead
    of reporting tens of metres per second. Before a velocity is known, the gate is a jump faster than
    ``max_speed_m_s``."""

    def __init__(self, alpha: float = 0.5, beta: float = 0.3, gate_m: float = 1.0, gate_fraction: float = 0.1,
                 max_speed_m_s: float = 50.0) -> None:
        self.alpha, self.beta = alpha, beta
        self.gate_m, self.gate_fraction, self.max_speed_m_s = gate_m, gate_fraction, max_speed_m_s
        # id -> (time, position, velocity, measurements since the filter (re)started)
        self._state: dict[int, tuple[float, np.ndarray, np.ndarray, int]] = {}
        self.restarts = 0  # gated jumps so far

    def update(self, track_id: int, time_s: float, position: tuple[float, float, float]) -> tuple[float, float, float]:
        """The track's velocity (m/s) after this measurement; zero on its first one (or after a gated jump),
        unchanged when time did not move on."""
        measured = np.asarray(position, dtype=np.float64)
        previous = self._state.get(track_id)
        if previous is None or time_s <= previous[0]:
            velocity = np.zeros(3) if previous is None else previous[2]
            count = 1 if previous is None else previous[3]
            self._state[track_id] = (time_s, measured, velocity, count)
            return (float(velocity[0]), float(velocity[1]), float(velocity[2]))
        last_time, last_position, last_velocity, count = previous
        dt = time_s - last_time
        predicted = last_position + (last_velocity * dt if count > 1 else 0.0)
        residual = measured - predicted
        gate = max(self.gate_m, self.gate_fraction * float(np.linalg.norm(measured)))
        if count == 1:
            gate = max(gate, self.max_speed_m_s * dt)
        if float(np.linalg.norm(residual)) > gate:
            self.restarts += 1
            self._state[track_id] = (time_s, measured, np.zeros(3), 1)
            return (0.0, 0.0, 0.0)
        if count == 1:  # the second measurement: start from the finite difference, not from rest (no lag)
            estimate, velocity = measured, residual / dt
        else:
            estimate = predicted + self.alpha * residual
            velocity = last_velocity + self.beta * residual / dt
        self._state[track_id] = (time_s, estimate, velocity, count + 1)
        return (float(velocity[0]), float(velocity[1]), float(velocity[2]))

    def measurements(self, track_id: int) -> int:
        """Positions the track's velocity rests on (0: none; 1: no velocity yet)."""
        state = self._state.get(track_id)
        return 0 if state is None else state[3]

    def velocity(self, track_id: int) -> tuple[float, float, float]:
        """The track's last velocity estimate (zero for a track never placed)."""
        state = self._state.get(track_id)
        return (0.0, 0.0, 0.0) if state is None else (float(state[2][0]), float(state[2][1]), float(state[2][2]))

    def keep_only(self, track_ids: set[int]) -> None:
        """Forget tracks that ended (their ids are never reused)."""
        self._state = {i: s for i, s in self._state.items() if i in track_ids}

    def reset(self) -> None:
        """With the tracker: a new video has no motion history."""
        self._state.clear()


@dataclass(frozen=True)
class TrackPlacement:
    """A tracked thing in 3D this frame: where (None without enough depth) and how fast it moves."""

    track_id: int
    placement: Placement | None
    velocity: tuple[float, float, float]
    motion_frames: int = 0  # positions the velocity rests on (since the track's filter last (re)started)


class Placer:
    """Places a frame's tracked things from the panoptic map and a registered depth image, and keeps their
    velocities across frames (the state the node holds per camera; reset with the tracker)."""

    def __init__(self, label_divisor: int, *, erosion_px: int = 2, min_pixels: int = 10) -> None:
        self.label_divisor = label_divisor
        self.erosion_px, self.min_pixels = erosion_px, min_pixels
        self.motion = MotionFilter()

    def objects(self, result: FrameResult) -> list[tuple[int, int, Box | None]]:
        """(track id, panoptic id, box) of a pipeline frame's tracked things: what :meth:`step` places."""
        return [(o.track_id, o.class_id * self.label_divisor + o.instance, o.box) for o in result.objects]

    def place_frame(self, result: FrameResult, depth_m: np.ndarray, k: Intrinsics,
                    stamp_s: float) -> list[TrackPlacement]:
        """:meth:`step` on a pipeline frame: its panoptic map, its tracked things, and its reset."""
        return self.step(result.panoptic, self.objects(result), depth_m, k, stamp_s, reset=bool(result.reset_reason))

    def step(self, panoptic: np.ndarray, objects: Sequence[tuple[int, int, Box | None]], depth_m: np.ndarray,
             k: Intrinsics, stamp_s: float, reset: bool = False) -> list[TrackPlacement]:
        """``objects``: (track_id, panoptic id, box) of the frame's tracked things, the box (x1, y1, x2, y2 in
        pixels, or None for the whole image) bounding the thing's mask: the mask is only looked for there,
        which makes a frame of 20 things ~20x cheaper on a KITTI-size image. ``depth_m`` is on the panoptic
        grid (see :func:`resample_depth`). A thing without a placement keeps its last velocity estimate."""
        if reset:
            self.motion.reset()
        if depth_m.shape != panoptic.shape:
            raise ValueError(f"depth {depth_m.shape} is not on the panoptic grid {panoptic.shape}: resample it")
        height, width = panoptic.shape
        fx, fy, cx, cy = k
        out = []
        for track_id, panoptic_id, box in objects:
            x0, y0, x1, y1 = 0, 0, width, height
            if box is not None:  # the box rounded outwards, one pixel of margin, clipped to the image
                x0, y0 = max(0, int(np.floor(box[0])) - 1), max(0, int(np.floor(box[1])) - 1)
                x1, y1 = min(width, int(np.ceil(box[2])) + 1), min(height, int(np.ceil(box[3])) + 1)
            mask = panoptic[y0:y1, x0:x1] == panoptic_id
            placed = place(mask, depth_m[y0:y1, x0:x1], (fx, fy, cx - x0, cy - y0), erosion_px=self.erosion_px,
                           min_pixels=self.min_pixels) if mask.size else None
            velocity = self.motion.update(track_id, stamp_s, placed.position) if placed else self.motion.velocity(
                track_id)
            out.append(TrackPlacement(track_id, placed, velocity, self.motion.measurements(track_id)))
        self.motion.keep_only({track_id for track_id, _, _ in objects})
        return out
