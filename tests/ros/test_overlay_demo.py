"""Overlay rendering and the offline demo command."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vknet_cli import main
from vknet_model.pipeline import TrackedObjectInfo
from vknet_ros.overlay import CITYSCAPES_COLOURS, draw_overlay, track_colour


def test_track_colours_are_stable_and_distinct() -> None:
    assert track_colour(7) == track_colour(7)
    colours = {track_colour(i) for i in range(1, 40)}
    assert len(colours) == 39


def test_overlay_tints_stuff_by_class_and_things_by_track() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    semantic = np.zeros((100, 200), np.uint8)  # road everywhere
    panoptic = np.zeros((100, 200), np.int32)
    panoptic[50:90, 50:150], semantic[50:90, 50:150] = 13 * 1000 + 2, 13
    car = TrackedObjectInfo(track_id=41, instance=2, class_id=13, class_name="car", score=0.9,
                            box=(50.0, 50.0, 150.0, 90.0), mask_area=4000, centroid=(99.5, 69.5), age=3)
    out = draw_overlay(image, semantic, panoptic, [car], stuff_alpha=1.0, thing_alpha=1.0)
    assert out.shape == (100, 200, 3) and out.dtype == np.uint8
    assert out[95, 190].tolist() == CITYSCAPES_COLOURS[0].tolist()  # a road pixel away from the car
    assert out[75, 100].tolist() == list(track_colour(41))           # inside the car, below its label
    with pytest.raises(ValueError, match="differ"):
        draw_overlay(image, semantic[:10], panoptic, [])


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
    from conftest import moving_square_frame

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (320, 96))
    for t in range(5):
        writer.write(moving_square_frame(t, 96, 320)[:, :, ::-1])
    writer.release()
    out = tmp_path / "video_demo"
    assert main(["demo", "--video", str(video), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("frames=5 dropped=0 p50_ms=")
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_demo_reports_a_missing_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot open video" in capsys.readouterr().err
