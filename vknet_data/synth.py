"""Synthetic KITTI-STEP: street-like video sequences with tracked cars and people, in the official layout.

No dataset can be downloaded here, so the project makes its own to prove that training, tracking, export,
the node and evaluation work end to end. Scenes are built to make tracking non-trivial: a panning camera
over a street (sky, buildings, vegetation, poles, sidewalk, terrain, road); textured cars and people of the
same class that move in both directions, cross and occlude each other (drawn far to near), enter and leave
the frame; sometimes a crowd region (person pixels with instance 0). Each instance has its own colours and
pattern, so its appearance identifies it, as on real footage.

Layout written (identical to KITTI-STEP)::

    images/<split>/<seq:04d>/<frame:06d>.png          RGB camera image
    panoptic_maps/<split>/<seq:04d>/<frame:06d>.png   R = semantic id, G = instance // 256, B = instance % 256
    calib/<split>/<seq:04d>.txt                       KITTI-style "P2:" 3x4 projection matrix

Every sequence depends only on (seed, sequence index), so any subset can be regenerated exactly.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vknet_data.panoptic_png import encode_panoptic_png

_LOG = logging.getLogger(__name__)

# KITTI-STEP (Cityscapes train ids) used by the generator.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, TERRAIN, SKY, PERSON, CAR = 0, 1, 2, 5, 8, 9, 10, 11, 13
VOID = 255
# Mean colour per stuff class (RGB); textures add structured variation around it.
STUFF_COLOURS = {
    ROAD: (90, 88, 92), SIDEWALK: (170, 150, 150), BUILDING: (140, 110, 90), POLE: (200, 200, 60),
    VEGETATION: (60, 130, 50), TERRAIN: (150, 170, 90), SKY: (120, 170, 230),
}


@dataclass(frozen=True)
class SynthConfig:
    """Size and content of generated sequences."""

    height: int = 375
    width: int = 1242
    frames: int = 50
    max_cars: int = 6
    max_people: int = 6
    crowd_probability: float = 0.3
    camera_speed: float = 6.0  # pixels per frame of the panorama
    focal: float = 720.0       # for the calibration file (KITTI's is ~721)
    camera_height_m: float = 1.65  # above the ground plane, for depth (KITTI's colour cameras: 1.65 m)
    far_m: float = 60.0            # depth on or above the horizon and the ground's cap (16-bit mm holds 65.5 m)


@dataclass
class _Object:
    cls: int
    instance: int
    x: float          # panorama x of the object's centre at frame 0
    vx: float         # panorama pixels per frame
    bottom: float     # image y of the object's ground contact (depth: larger = closer)
    start: int        # first frame the object exists
    end: int          # last frame (inclusive)
    colours: np.ndarray  # [3, 3] uint8 body, detail, pattern colours
    pattern: int      # 0 stripes, 1 checks, 2 plain with a band
    phase: float      # walking phase for people


def _noise(rng: np.random.Generator, height: int, width: int, scale: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] (a coarse random grid upsampled), float32 [H, W]."""
    small = rng.uniform(-1, 1, size=(max(2, height // scale + 2), max(2, width // scale + 2))).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[:height, :width]


def _background(rng: np.random.Generator, cfg: SynthConfig, pan_width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Render the static street panorama: RGB uint8 [H, Wp, 3], semantic uint8 [H, Wp], and the road top y."""
    h, w = cfg.height, pan_width
    semantic = np.full((h, w), SKY, dtype=np.uint8)
    horizon = int(h * rng.uniform(0.40, 0.48))
    sidewalk_top = horizon + int(h * rng.uniform(0.04, 0.07))
    road_top = sidewalk_top + int(h * rng.uniform(0.05, 0.09))
    # Buildings: blocks of random width and height standing on the horizon.
    x = 0
    building_id = np.zeros((h, w), dtype=np.int32)
    block = 0
    while x < w:
        bw = int(rng.uniform(0.12, 0.35) * cfg.width)
        top = int(h * rng.uniform(0.05, 0.30))
        if rng.uniform() < 0.8:  # some gaps show the sky
            semantic[top:horizon, x:x + bw] = BUILDING
            block += 1
            building_id[top:horizon, x:x + bw] = block
        x += bw
    # Vegetation: tree crowns (ellipses) and hedges in front of the buildings.
    for _ in range(int(w / cfg.width * rng.integers(3, 7))):
        cx, cy = int(rng.uniform(0, w)), int(horizon - rng.uniform(0.05, 0.2) * h)
        axes = (int(rng.uniform(0.03, 0.08) * cfg.width), int(rng.uniform(0.06, 0.15) * h))
        cv2.ellipse(semantic, (cx, cy), axes, 0, 0, 360, VEGETATION, -1)
    semantic[sidewalk_top:road_top] = SIDEWALK
    semantic[horizon:sidewalk_top] = TERRAIN
    semantic[road_top:] = ROAD
    for _ in range(int(w / cfg.width * rng.integers(2, 5))):  # terrain patches on the sidewalk side
        cx = int(rng.uniform(0, w))
        cv2.rectangle(semantic, (cx, sidewalk_top), (cx + int(rng.uniform(0.03, 0.1) * cfg.width), road_top - 2),
                      TERRAIN, -1)
    for _ in range(int(w / cfg.width * rng.integers(2, 5))):  # poles standing on the sidewalk
        px = int(rng.uniform(0, w))
        thickness = max(3, int(0.014 * cfg.width))  # thick enough to survive the stride-4 output
        cv2.rectangle(semantic, (px, int(h * rng.uniform(0.1, 0.25))), (px + thickness, road_top), POLE, -1)

    image = np.zeros((h, w, 3), dtype=np.float32)
    for cls, colour in STUFF_COLOURS.items():
        image[semantic == cls] = colour
    # Structured textures: windows on buildings (per-block tint), leaves, asphalt grain, lane marks.
    tint = rng.uniform(-25, 25, size=(block + 1, 3)).astype(np.float32)
    is_building = semantic == BUILDING
    image[is_building] += tint[building_id[is_building]]
    rows, cols = np.mgrid[0:h, 0:w]
    windows = is_building & ((rows // 9) % 3 == 1) & ((cols // 11) % 3 == 1)
    image[windows] = image[windows] * 0.45 + np.array([180, 200, 220], np.float32) * 0.55
    image += _noise(rng, h, w, 6)[..., None] * 14.0
    leaves = semantic == VEGETATION
    image[leaves] += _noise(rng, h, w, 3)[leaves][:, None] * np.array([10, 30, 10], np.float32)
    road = semantic == ROAD
    image[road] += rng.normal(0, 6, size=(int(road.sum()), 1)).astype(np.float32)
    lane_y = road_top + (h - road_top) // 2
    for lx in range(0, w, 90):
        cv2.rectangle(image, (lx, lane_y - 2), (lx + 45, lane_y + 2), (230, 230, 230), -1)
    sky = semantic == SKY
    image[sky] += (rows[sky, None] / h * 40.0).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), semantic, road_top


def _spawn(rng: np.random.Generator, cfg: SynthConfig, pan_width: int, road_top: int, horizon: int,
           frames: int) -> list[_Object]:
    """Objects with lifetimes and straight motions; cars on the road, people on sidewalk and road."""
    objects: list[_Object] = []
    next_instance = {CAR: 1, PERSON: 1}
    h = cfg.height
    counts = ((CAR, int(rng.integers(2, cfg.max_cars + 1))), (PERSON, int(rng.integers(2, cfg.max_people + 1))))
    for cls, count in counts:
        for _ in range(count):
            start = int(rng.integers(0, max(1, frames // 2)))
            end = min(frames - 1, start + int(rng.integers(frames // 3, frames + 1)))
            if cls == CAR:
                bottom = float(rng.uniform(road_top + 0.15 * (h - road_top), h - 2))
                speed = float(rng.uniform(4.0, 12.0)) * (1 if rng.uniform() < 0.5 else -1)
            else:  # people stay near enough to be more than a few pixels tall at half resolution
                bottom = float(rng.uniform(horizon + 0.30 * (h - horizon), h - 2))
                speed = float(rng.uniform(1.0, 3.5)) * (1 if rng.uniform() < 0.5 else -1)
            x = float(rng.uniform(0, pan_width))
            base = rng.integers(30, 240, size=3)
            colours = np.stack([base, 255 - base // 2, rng.integers(0, 256, size=3)]).astype(np.uint8)
            objects.append(_Object(cls, next_instance[cls], x, speed, bottom, start, end, colours,
                                   int(rng.integers(0, 3)), float(rng.uniform(0, 6.28))))
            next_instance[cls] += 1
    return objects


def _scale_at(bottom: float, horizon: int, height: int) -> float:
    """Perspective: apparent size grows linearly with distance below the horizon."""
    return max(0.15, (bottom - horizon) / (height - horizon))


def ground_depth_m(row: float | np.ndarray, horizon: int, cfg: SynthConfig) -> np.ndarray:
    """Depth of the ground plane seen at image row ``row`` by a level pinhole camera ``camera_height_m`` above it
    (rows at or above the horizon are ``far_m`` away). Perspective scale in the generator is linear in the same
    ``row - horizon``, so an object drawn standing at ``row`` keeps one real size at every depth."""
    below = np.asarray(row, dtype=np.float64) - horizon
    with np.errstate(divide="ignore"):
        depth = np.where(below > 0, cfg.focal * cfg.camera_height_m / np.maximum(below, 1e-9), np.inf)
    return np.minimum(depth, cfg.far_m).astype(np.float32)


def _draw_object(obj: _Object, frame: int, cx: float, horizon: int, cfg: SynthConfig, image: np.ndarray,
                 instance_map: np.ndarray, class_map: np.ndarray, instance_value: int,
                 depth_map: np.ndarray | None = None) -> None:
    """Draw one object (body mask first, then its texture) into the image and the label maps, and at the depth
    of its ground contact into ``depth_map``."""
    s = _scale_at(obj.bottom, horizon, cfg.height)
    h, w = cfg.height, cfg.width
    mask = np.zeros((h, w), dtype=np.uint8)
    bottom = int(obj.bottom)
    if obj.cls == CAR:
        bw, bh = int(0.26 * w * s), int(0.30 * h * s)
        x0, y0 = int(cx - bw / 2), bottom - bh
        cv2.rectangle(mask, (x0, y0 + bh // 3), (x0 + bw, bottom - bh // 8), 1, -1)
        cv2.rectangle(mask, (x0 + bw // 5, y0), (x0 + 4 * bw // 5, y0 + bh // 3 + 1), 1, -1)
        for wx in (x0 + bw // 5, x0 + 4 * bw // 5):  # wheels
            cv2.circle(mask, (wx, bottom - bh // 8), max(2, bh // 6), 1, -1)
    else:
        ph, pw = int(0.42 * h * s), max(3, int(0.045 * w * s))
        stride = int(np.sin(obj.phase + 0.5 * frame) * pw * 0.4)
        top = bottom - ph
        cv2.circle(mask, (int(cx), top + pw // 2), max(2, pw // 2), 1, -1)                      # head
        cv2.ellipse(mask, (int(cx), top + ph // 3 + pw // 2), (pw // 2 + 1, ph // 4), 0, 0, 360, 1, -1)  # torso
        cv2.line(mask, (int(cx), top + ph // 2), (int(cx) - stride, bottom), 1, max(2, pw // 3))  # legs
        cv2.line(mask, (int(cx), top + ph // 2), (int(cx) + stride, bottom), 1, max(2, pw // 3))
    region = mask.astype(bool)
    if not region.any():
        return
    ys, xs = np.nonzero(region)
    body, detail, accent = (c.astype(np.float32) for c in obj.colours)
    if obj.pattern == 0:
        stripe = ((ys // max(2, int(6 * s))) % 2 == 0)[:, None]
        colour = np.where(stripe, body, accent)
    elif obj.pattern == 1:
        check = (((ys // max(2, int(7 * s))) + (xs // max(2, int(7 * s)))) % 2 == 0)[:, None]
        colour = np.where(check, body, detail)
    else:
        band = (np.abs(ys - ys.mean()) < max(2, (ys.max() - ys.min()) / 8))[:, None]
        colour = np.where(band, accent, body)
    if obj.cls == CAR:  # dark windows on the cabin and tyres
        top_rows = (ys < ys.min() + (ys.max() - ys.min()) * 0.3)[:, None]
        colour = np.where(top_rows, np.float32(40.0) + colour * 0.2, colour)
    image[ys, xs] = np.clip(colour, 0, 255).astype(np.uint8)
    instance_map[region] = instance_value
    class_map[region] = obj.cls
    if depth_map is not None:
        depth_map[region] = ground_depth_m(obj.bottom, horizon, cfg)


class SyntheticScene:
    """One generated street and its objects over ``cfg.frames`` frames, any of which renders on demand.

    Building the scene (the panorama, the objects' paths) costs about as much as three frames; rendering a
    frame is independent of the others (per-frame noise has its own generator), so a training stream can draw
    a frame pair from a fresh scene without rendering the whole video.
    """

    def __init__(self, seed: int, sequence: int, cfg: SynthConfig) -> None:
        rng = np.random.default_rng([seed, sequence])
        self.seed, self.sequence, self.cfg = seed, sequence, cfg
        frames = cfg.frames
        self.pan_width = cfg.width + int(cfg.camera_speed * frames) + 2
        self.background, self.stuff, road_top = _background(rng, cfg, self.pan_width)
        stuff = self.stuff
        self.horizon = int(np.argmax((stuff != SKY) & (stuff != BUILDING) & (stuff != VEGETATION) & (stuff != POLE),
                                     axis=0).min())
        self.objects = _spawn(rng, cfg, self.pan_width, road_top, self.horizon, frames)
        self.crowd: tuple[float, float] | None = None
        if rng.uniform() < cfg.crowd_probability:  # a tight group of small people labelled person, instance 0
            self.crowd = (float(rng.uniform(0.2, 0.8) * self.pan_width),
                          float(self.horizon + 0.15 * (cfg.height - self.horizon)))
        self.cam_jitter = rng.normal(0, 0.8, size=frames).cumsum() * 0.3

    def __len__(self) -> int:
        return self.cfg.frames

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 [H, W, 3], panoptic int32 [H, W] = class * 1000 + instance) of frame ``t``."""
        image, panoptic, _ = self._render(t, with_depth=False)
        return image, panoptic

    def frame_with_depth(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`frame` and its depth: float32 metres [H, W], NaN for the sky. The ground is a plane under a level
        camera (KITTI's height and focal length), everything on or above the horizon is ``far_m`` away, and each
        object stands at the depth of its ground contact."""
        image, panoptic, depth = self._render(t, with_depth=True)
        assert depth is not None
        return image, panoptic, depth

    def velocities_m_s(self, t: int, fps: float) -> dict[int, tuple[float, float, float]]:
        """Ground-truth velocity (m/s, camera optical frame) of each thing alive at frame ``t``, by panoptic id:
        it moves across the panorama at ``vx`` while the camera pans at ``camera_speed`` pixels per frame, at a
        constant depth (the camera's small jitter is left out)."""
        cfg = self.cfg
        out = {}
        for obj in self.objects:
            if obj.start <= t <= obj.end:
                z = float(ground_depth_m(obj.bottom, self.horizon, cfg))
                out[obj.cls * 1000 + obj.instance] = ((obj.vx - cfg.camera_speed) * z / cfg.focal * fps, 0.0, 0.0)
        return out

    def _render(self, t: int, with_depth: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        cfg, frames = self.cfg, self.cfg.frames
        if not 0 <= t < frames:
            raise IndexError(f"frame {t} outside the scene's {frames} frames")
        offset = round(float(cfg.camera_speed * t + self.cam_jitter[t])) % max(1, self.pan_width - cfg.width)
        image = self.background[:, offset:offset + cfg.width].copy()
        class_map = self.stuff[:, offset:offset + cfg.width].copy()
        instance_map = np.zeros(class_map.shape, dtype=np.int32)
        depth_map = None
        if with_depth:
            rows = ground_depth_m(np.arange(cfg.height, dtype=np.float64), self.horizon, cfg)
            depth_map = np.repeat(rows[:, None], cfg.width, axis=1)
            depth_map[class_map == SKY] = np.nan
        visible = [o for o in self.objects if o.start <= t <= o.end]
        drawables = [(o.bottom, o, o.x + o.vx * (t - o.start) - offset, o.instance) for o in visible]
        if self.crowd is not None:
            for k in range(5):
                member = _Object(PERSON, 0, self.crowd[0] + 14 * k, 0.0, self.crowd[1] + 3 * (k % 2), 0, frames,
                                 np.array([[90, 60, 60], [60, 60, 90], [120, 120, 120]], np.uint8), 2, float(k))
                drawables.append((member.bottom - 0.01, member, member.x - offset, 0))
        for _, obj, cx, instance in sorted(drawables, key=lambda d: d[0]):  # far (small bottom y) first
            if -0.3 * cfg.width < cx < 1.3 * cfg.width:
                _draw_object(obj, t, cx, self.horizon, cfg, image, instance_map, class_map, instance, depth_map)
        noise = np.random.default_rng([self.seed, self.sequence, t]).integers(-4, 5, size=image.shape, dtype=np.int16)
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return image, class_map.astype(np.int32) * 1000 + instance_map, depth_map


def render_sequence(seed: int, sequence: int, cfg: SynthConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Render one sequence: (RGB uint8 [H, W, 3] frames, panoptic int32 [H, W] maps = class * 1000 + instance)."""
    scene = SyntheticScene(seed, sequence, cfg)
    rendered = [scene.frame(t) for t in range(cfg.frames)]
    return [image for image, _ in rendered], [panoptic for _, panoptic in rendered]


def calibration_text(cfg: SynthConfig) -> str:
    """KITTI-style calib line for the left colour camera (P2), principal point at the image centre."""
    fx = cfg.focal
    p2 = [fx, 0.0, cfg.width / 2, 0.0, 0.0, fx, cfg.height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return "P2: " + " ".join(f"{v:.6e}" for v in p2) + "\n"


def depth_to_png_mm(depth_m: np.ndarray) -> np.ndarray:
    """KITTI's depth convention: uint16 millimetres, 0 where there is no depth."""
    mm = np.where(np.isfinite(depth_m), np.rint(depth_m * 1000.0), 0.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


def write_sequences(out: str | Path, *, sequences: int, seed: int, split: str = "train", first_sequence: int = 0,
                    cfg: SynthConfig | None = None, progress: bool = True, depth: bool = False) -> list[Path]:
    """Generate ``sequences`` sequences into ``out`` in the KITTI-STEP layout; return the image folders. With
    ``depth``, each frame's depth also goes to ``depth/<split>/<seq>/<frame>.png`` (16-bit millimetres)."""
    from tqdm import tqdm

    cfg = cfg or SynthConfig()
    out = Path(out)
    written = []
    bar = tqdm(total=sequences * cfg.frames, unit="frame", desc=f"synth {split}", disable=not progress)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for index in range(first_sequence, first_sequence + sequences):
        scene = SyntheticScene(seed, index, cfg)
        image_dir = out / "images" / split / f"{index:04d}"
        label_dir = out / "panoptic_maps" / split / f"{index:04d}"
        depth_dir = out / "depth" / split / f"{index:04d}"
        for folder in (image_dir, label_dir, *((depth_dir,) if depth else ())):
            folder.mkdir(parents=True, exist_ok=True)
        for t in range(cfg.frames):
            image, panoptic, depth_m = scene.frame_with_depth(t) if depth else (*scene.frame(t), None)
            written_ok = cv2.imwrite(str(image_dir / f"{t:06d}.png"), image[:, :, ::-1], png) and cv2.imwrite(
                str(label_dir / f"{t:06d}.png"), encode_panoptic_png(panoptic)[:, :, ::-1], png)
            if depth_m is not None:
                written_ok = written_ok and cv2.imwrite(str(depth_dir / f"{t:06d}.png"), depth_to_png_mm(depth_m), png)
            if not written_ok:
                raise OSError(f"could not write frame {t} of sequence {index:04d} under {out}")
            bar.update(1)
        calib = out / "calib" / split
        calib.mkdir(parents=True, exist_ok=True)
        (calib / f"{index:04d}.txt").write_text(calibration_text(cfg))
        written.append(image_dir)
    bar.close()
    return written


HELD_OUT_SEED, HELD_OUT_FIRST = 0, 1000   # `vknet synth --seed 0 --first-sequence 1000`: never a training seed


def write_held_out(out: str | Path, *, sequences: int, frames: int = 30, progress: bool = False) -> list[Path]:
    """The held-out synthetic set (val split) that training validates on and the bundled model's scores are
    reported on; return the image folders."""
    return write_sequences(out, sequences=sequences, seed=HELD_OUT_SEED, split="val", first_sequence=HELD_OUT_FIRST,
                           cfg=SynthConfig(frames=frames), progress=progress)


@contextlib.contextmanager
def held_out_or(data: Path | None, *, sequences: int, progress: bool = False) -> Iterator[Path]:
    """``data`` if given, else the held-out set generated into a temporary folder that lives as long as the
    ``with`` block (what a benchmark scores when the user brings no data)."""
    if data is not None:
        yield data
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_held_out(tmp, sequences=sequences, progress=progress)
        yield Path(tmp)
