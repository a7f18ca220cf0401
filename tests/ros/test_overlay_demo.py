"""Overlay rendering and the offline demo command."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vknet_cli import main
from vknet_model.pipeline import FrameResult, TrackedObjectInfo
from vknet_ros.overlay import CITYSCAPES_COLOURS, draw_overlay, track_colour


def test_track_colours_are_stable_and_distinct() -> None:
    assert track_colour(7) == track_colour(7)
    colours = {track_colour(i) for i in range(1, 40)}
    assert len(colours) == 39


def _result(semantic: np.ndarray, panoptic: np.ndarray, objects: list[TrackedObjectInfo], stride: int = 1,
            ) -> FrameResult:
    """A FrameResult whose cells are ``stride`` x ``stride`` blocks of the given maps."""
    rows, cols = np.arange(semantic.shape[0]) // stride, np.arange(semantic.shape[1]) // stride

    def upsample(cells: np.ndarray, band: slice = slice(None)) -> np.ndarray:
        return cells.take(cols, axis=1).take(rows[band], axis=0)

    return FrameResult(panoptic=panoptic, objects=objects, class_cells=semantic[::stride, ::stride],
                       panoptic_cells=panoptic[::stride, ::stride], upsample=upsample)


CAR = TrackedObjectInfo(track_id=41, instance=2, class_id=13, class_name="car", score=0.9,
                        box=(48.0, 48.0, 152.0, 92.0), mask_area=4160, centroid=(99.5, 69.5), age=3)


def _car_scene(height: int = 100, width: int = 200) -> tuple[np.ndarray, np.ndarray]:
    semantic = np.zeros((height, width), np.uint8)  # road everywhere
    panoptic = np.zeros((height, width), np.int32)
    panoptic[48:92, 48:152], semantic[48:92, 48:152] = 13 * 1000 + 2, 13
    return semantic, panoptic


def test_overlay_tints_stuff_by_class_and_things_by_track() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    semantic, panoptic = _car_scene()
    out = draw_overlay(image, _result(semantic, panoptic, [CAR], stride=4), stuff_alpha=1.0, thing_alpha=1.0)
    assert out.shape == (100, 200, 3) and out.dtype == np.uint8
    assert out[95, 190].tolist() == CITYSCAPES_COLOURS[0][::-1].tolist()  # a road pixel away from the car, BGR
    assert out[75, 100].tolist() == list(track_colour(41))[::-1]           # inside the car, below its label
    with pytest.raises(ValueError, match="differ"):
        draw_overlay(image, _result(semantic[:10], panoptic[:10], []))


def test_overlay_blends_like_the_float_formula_in_any_channel_order_and_band() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    semantic, panoptic = _car_scene()
    semantic[:20] = 10  # sky on top
    result = _result(semantic, panoptic, [CAR], stride=4)
    out = draw_overlay(rgb, result)
    # The blend by definition, in float, per pixel (boxes and labels aside).
    tint = CITYSCAPES_COLOURS[semantic].astype(np.float64)
    alpha = np.full(semantic.shape, 0.35)
    car = panoptic == 13002
    tint[car], alpha[car] = track_colour(41), 0.55
    expected = rgb * (1 - alpha[..., None]) + tint * alpha[..., None]
    inside = np.ones(semantic.shape, bool)
    inside[30:95, 45:155] = False  # the box, its label and their edges
    assert np.abs(out[:, :, ::-1].astype(np.float64) - expected)[inside].max() <= 1.0
    # A BGR frame gives the same overlay, whatever the band height.
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    for band in (1, 7, 256):
        assert np.array_equal(draw_overlay(bgr, result, channel_order="bgr", band_rows=band), out)
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(rgb, result, thing_alpha=1.5)


@pytest.mark.slow
def test_demo_runs_through_the_node_and_ends_with_the_summary_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--frames", "4", "--out", str(out)]) == 0  # the bundled model
    text = capsys.readouterr().out
    assert "replay (lockstep): sent 4, answered 4, dropped 0" in text
    last = text.strip().splitlines()[-1]
    match = re.fullmatch(r"STQ=([0-9.]+) frames=4 dropped=0 p50_ms=([0-9.]+)", last)
    assert match, last
    assert 0.0 < float(match.group(1)) <= 1.0 and float(match.group(2)) > 0
    strip = cv2.imread(str(out / "overlay_strip.png"))
    assert strip is not None and strip.shape[1] == 1242 and strip.shape[0] % 375 == 0
    assert (out / "bag" / "metadata.yaml").is_file() and "configure" not in (out / "node.log").read_text().lower()


@pytest.mark.slow
def test_demo_on_a_video_file_writes_an_overlay_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import moving_square_frame

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (320, 96))
    for t in range(5):
        writer.write(moving_square_frame(t, 96, 320)[:, :, ::-1])
    writer.release()
    out = tmp_path / "video_demo"
    from vknet_ros.demo import VideoFrames

    assert VideoFrames(video).frame_count() == 5  # the replay's progress bar has a total and an ETA
    assert main(["demo", "--video", str(video), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("frames=5 dropped=0 p50_ms=")
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)  # the source's rate (it was always 10)


def test_demo_reports_a_missing_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot open video" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # no empty output folder left behind


def test_demo_checks_the_model_before_writing_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_model.bundled import BUNDLED_ONNX

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx graph")
    (tmp_path / "bad.json").write_text((BUNDLED_ONNX.with_suffix(".json")).read_text())  # a valid contract
    assert main(["demo", "--model", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # no bag was written before the model failed
