"""Bag tools: KITTI-STEP / raw-KITTI -> rosbag2 -> frames round trips, damaged bags, ROS 1 (kitti2bag) bags,
and `vknet eval-bag` agreeing with `vknet predict` + `vknet eval`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from vknet_cli import main
from vknet_data.datasets import kitti_step_sequences, read_rgb
from vknet_data.synth import SynthConfig, write_sequences
from vknet_model.checkpoint import save_checkpoint
from vknet_model.config import resolve_config
from vknet_model.network import build_model
from vknet_ros.bags import (
    CAMERA_INFO_TOPIC,
    DEFAULT_START_NS,
    GT_TOPIC,
    IMAGE_TOPIC,
    SEQUENCE_GAP_S,
    BagError,
    BagReader,
    kitti_step_sources,
    raw_kitti_sources,
    write_bag,
)

FRAMES = 4


@pytest.fixture(scope="module")
def step_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("step")
    write_sequences(root, sequences=2, seed=5, split="val", cfg=SynthConfig(height=96, width=320, frames=FRAMES),
                    progress=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_model(cfg), cfg)
    return path


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_kitti_step_bag_round_trip_is_exact(step_root: Path, tmp_path: Path, storage: str, encoding: str) -> None:
    bag = tmp_path / "bag"
    report = write_bag(bag, kitti_step_sources(step_root, "val", rate_hz=10.0), storage=storage, encoding=encoding,
                       progress=False)
    assert (report.sequences, report.frames, report.messages) == (2, 2 * FRAMES, 3 * 2 * FRAMES)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 8 and meta["storage_identifier"] == storage
    assert {t["topic_metadata"]["name"] for t in meta["topics_with_message_count"]} == {
        IMAGE_TOPIC, CAMERA_INFO_TOPIC, GT_TOPIC}

    sequences = {s.name: s for s in kitti_step_sequences(step_root, "val")}
    reader = BagReader(bag)
    frames = list(reader.frames())
    assert len(frames) == 2 * FRAMES
    for k, frame in enumerate(frames):
        seq = sequences[frame.sequence]
        assert frame.index == k % FRAMES and frame.sequence == ("0000", "0001")[k // FRAMES]
        np.testing.assert_array_equal(frame.image, read_rgb(seq.images[frame.index]))
        assert frame.panoptic is not None
        np.testing.assert_array_equal(frame.panoptic, seq.labels[frame.index]())
        expected = DEFAULT_START_NS + frame.index * 100_000_000
        if frame.sequence == "0001":
            expected += (FRAMES - 1) * 100_000_000 + round(SEQUENCE_GAP_S * 1e9)
        assert frame.stamp_ns == expected
    assert reader.report.sequences == ["0000", "0001"] and reader.report.damage is None


def test_camera_info_carries_the_calibration(step_root: Path, tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), progress=False)
    calib = (step_root / "calib/val/0000.txt").read_text().split()[1:]
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == CAMERA_INFO_TOPIC]
        infos = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert len(infos) == 2 * FRAMES
    np.testing.assert_allclose(infos[0].p, [float(v) for v in calib])
    assert (infos[0].width, infos[0].height) == (320, 96)
    np.testing.assert_allclose(infos[0].k, infos[0].p.reshape(3, 4)[:, :3].reshape(-1))


def test_a_truncated_mcap_bag_is_reported_and_its_readable_frames_are_used(step_root: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), progress=False)
    data = next(bag.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size * 9 // 10])  # inside the second 1 MiB chunk
    reader = BagReader(bag)
    frames = list(reader.frames())
    assert reader.report.damage is not None and "cut-off" in reader.report.damage
    assert 2 <= len(frames) < 2 * FRAMES
    first = kitti_step_sequences(step_root, "val")[0]
    np.testing.assert_array_equal(frames[0].image, read_rgb(first.images[0]))
    assert "damaged" in caplog.text and f"{len(frames)} readable frames" in caplog.text


@pytest.mark.parametrize("cut", [1, 30, 2000, "to 8 bytes"])
def test_an_mcap_cut_at_its_end_keeps_every_readable_frame(step_root: Path, tmp_path: Path, cut: int | str) -> None:
    """Cut in its footer or summary (struct.error after every frame was read) or to its magic alone
    (TypeError): both had crashed the reader."""
    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), progress=False)
    data = next(bag.glob("*.mcap"))
    raw = data.read_bytes()
    data.write_bytes(raw[:8] if cut == "to 8 bytes" else raw[: len(raw) - int(cut)])
    reader = BagReader(bag)
    assert reader.frame_count() in (None, 2 * FRAMES)  # a progress bar's total, never an exception
    frames = list(reader.frames())
    assert reader.report.damage is not None
    assert len(frames) == (0 if cut == "to 8 bytes" else 2 * FRAMES)


def test_a_failed_write_leaves_nothing_behind(step_root: Path, tmp_path: Path) -> None:
    sources = kitti_step_sources(step_root, "val")
    broken = sources[-1].images[-1]
    good = broken.read_bytes()
    broken.write_bytes(b"not a png")
    try:
        with pytest.raises(BagError, match="cannot read image"):
            write_bag(tmp_path / "bag", sources, progress=False)
    finally:
        broken.write_bytes(good)
    assert list(tmp_path.iterdir()) == []  # no half-written bag (a rerun had been refused: "already exists")
    report = write_bag(tmp_path / "bag", sources, progress=False)
    assert report.frames == 2 * FRAMES and sorted(p.name for p in tmp_path.iterdir()) == ["bag"]
    assert sorted(p.name for p in (tmp_path / "bag").iterdir()) == ["bag.mcap", "metadata.yaml"]


def test_an_mcap_folder_without_metadata_is_read_as_its_file(step_root: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), progress=False)
    expected = list(BagReader(bag).frames())
    assert BagReader(bag).frame_count() == len(expected) == 2 * FRAMES
    (bag / "metadata.yaml").unlink()
    frames = list(BagReader(bag).frames())  # it had been refused as "not a rosbag2 bag"
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in expected]
    np.testing.assert_array_equal(frames[-1].image, expected[-1].image)
    (bag / "copy.mcap").write_bytes(next(bag.glob("*.mcap")).read_bytes())
    with pytest.raises(BagError, match=r"2 \.mcap files"):
        BagReader(bag)


def test_a_truncated_sqlite_bag_gives_a_clear_error(step_root: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), storage="sqlite3", progress=False)
    data = next(bag.glob("*.db3"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(BagError, match=r"cannot open bag .*cannot be recovered"):
        list(BagReader(bag).frames())


def test_missing_and_malformed_bags_are_reported(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"without metadata\.yaml"):
        BagReader(tmp_path / "empty")


def test_writer_refuses_to_overwrite(step_root: Path, tmp_path: Path) -> None:
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagError, match="already exists"):
        write_bag(tmp_path / "bag", kitti_step_sources(step_root, "val"), progress=False)


def test_ros1_kitti2bag_bag_is_read(tmp_path: Path) -> None:
    """kitti2bag layout: bgr8 colour and mono8 grey cameras under /kitti/...; the colour left one is chosen."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    image_cls, header_cls = store.types["sensor_msgs/msg/Image"], store.types["std_msgs/msg/Header"]
    time_cls = store.types["builtin_interfaces/msg/Time"]
    rng = np.random.default_rng(0)
    colour = [rng.integers(0, 255, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "kitti_2011_09_26_drive_0005_synced.bag"
    with Writer(path) as writer:
        conns = {topic: writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store) for topic in (
            "/kitti/camera_gray_left/image_raw", "/kitti/camera_color_left/image_raw",
            "/kitti/camera_color_right/image_raw")}
        for t, rgb in enumerate(colour):
            stamp = 1_317_000_000 * 10**9 + t * 103_000_000
            header = header_cls(seq=t, stamp=time_cls(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                frame_id="camera_color_left")
            for topic, conn in conns.items():
                if "gray" in topic:
                    msg = image_cls(header=header, height=24, width=40, encoding="mono8", is_bigendian=0, step=40,
                                    data=rgb[:, :, 0].reshape(-1).copy())
                else:
                    msg = image_cls(header=header, height=24, width=40, encoding="bgr8", is_bigendian=0, step=120,
                                    data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1))
                writer.write(conn, stamp, store.serialize_ros1(msg, "sensor_msgs/msg/Image"))
    reader = BagReader(path)
    frames = list(reader.frames())
    assert reader.report.image_topic == "/kitti/camera_color_left/image_raw" and reader.report.gt_topic is None
    assert len(frames) == 3 and {f.sequence for f in frames} == {"0000"}
    for frame, rgb in zip(frames, colour, strict=True):
        np.testing.assert_array_equal(frame.image, rgb)
        assert frame.panoptic is None and frame.frame_id == "camera_color_left"


def test_raw_kitti_drive_keeps_its_timestamps(tmp_path: Path) -> None:
    drive = tmp_path / "2011_09_26" / "2011_09_26_drive_0005_sync"
    data = drive / "image_02" / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (30, 50, 3), dtype=np.uint8) for _ in range(3)]
    for t, rgb in enumerate(images):
        cv2.imwrite(str(data / f"{t:010d}.png"), rgb[:, :, ::-1])
    (drive / "image_02" / "timestamps.txt").write_text(
        "2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.067700000\n2011-09-26 13:02:26.171011111\n")
    (drive.parent / "calib_cam_to_cam.txt").write_text("P_rect_02: " + " ".join(str(float(i)) for i in range(12)))
    sources = raw_kitti_sources(drive)
    assert sources[0].camera is not None and sources[0].camera.projection == tuple(float(i) for i in range(12))
    bag = tmp_path / "bag"
    write_bag(bag, sources, progress=False)
    frames = list(BagReader(bag).frames())
    assert [f.stamp_ns for f in frames] == [1317042145964389445, 1317042146067700000, 1317042146171011111]
    for frame, rgb in zip(frames, images, strict=True):
        np.testing.assert_array_equal(frame.image, rgb)
        assert frame.panoptic is None


def test_raw_kitti_stamp_count_mismatch_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "drive" / "image_02" / "data"
    data.mkdir(parents=True)
    cv2.imwrite(str(data / "0000000000.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "drive" / "image_02" / "timestamps.txt").write_text("")
    with pytest.raises(BagError, match="0 stamps for 1 images"):
        raw_kitti_sources(tmp_path / "drive")


def test_undecodable_frames_are_skipped_and_counted(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    image_cls, header_cls = store.types["sensor_msgs/msg/Image"], store.types["std_msgs/msg/Header"]
    time_cls = store.types["builtin_interfaces/msg/Time"]
    bag = tmp_path / "bag"
    with Writer(bag, version=8) as writer:
        conn = writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for t, (encoding, nbytes) in enumerate([("rgb8", 12), ("16UC1", 8), ("rgb8", 5), ("rgb8", 12)]):
            header = header_cls(stamp=time_cls(sec=t, nanosec=0), frame_id="camera")
            msg = image_cls(header=header, height=2, width=2, encoding=encoding, is_bigendian=0,
                            step=6 if encoding == "rgb8" else 4, data=np.arange(nbytes, dtype=np.uint8))
            writer.write(conn, t * 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    reader = BagReader(bag, reset_gap_s=5.0)
    frames = list(reader.frames())
    assert len(frames) == 2 and reader.report.undecodable == 2
    assert any("16UC1" in e for e in reader.report.errors) and any("5 bytes" in e for e in reader.report.errors)


def test_bag_cli_and_eval_bag_agree_with_predict_and_eval(step_root: Path, checkpoint: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "bag"
    assert main(["bag", "--from-kitti-step", str(step_root), "--split", "val", "--out", str(bag),
                 "--no-progress"]) == 0
    assert "2 sequence(s), 8 frames, 24 messages" in capsys.readouterr().out
    offline = tmp_path / "offline.json"
    assert main(["eval-bag", "--bag", str(bag), "--model", str(checkpoint), "--json", str(offline),
                 "--no-progress"]) == 0
    pred = tmp_path / "pred"
    folder = tmp_path / "folder.json"
    assert main(["predict", "--model", str(checkpoint), "--data", str(step_root), "--out", str(pred)]) == 0
    assert main(["eval", "--gt", str(step_root), "--pred", str(pred), "--config", "tiny", "--json", str(folder)]) == 0
    a, b = json.loads(offline.read_text()), json.loads(folder.read_text())
    for key in ("STQ", "AQ", "SQ", "VPQ"):
        assert a[key] == pytest.approx(b[key], abs=1e-12), key
    assert a["per_sequence"].keys() == b["per_sequence"].keys()
    assert a["bag"]["frames"] == 8 and a["bag"]["damage"] is None


def test_eval_bag_without_ground_truth_predicts_and_says_so(step_root: Path, checkpoint: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A bag without labels (a recording, kitti2mcap) had been refused: it is run and reported, unscored."""
    bag = tmp_path / "bag"
    assert main(["bag", "--from-kitti-step", str(step_root), "--out", str(bag), "--no-gt", "--no-progress"]) == 0
    out = tmp_path / "result.json"
    assert main(["eval-bag", "--bag", str(bag), "--model", str(checkpoint), "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no ground-truth topic" in text and "8 frames predicted, no scores" in text and "pipeline p50" in text
    result = json.loads(out.read_text())
    assert result["predictions_only"] and "STQ" not in result and result["bag"]["frames"] == 8


def test_an_unwritable_destination_is_a_bag_error(step_root: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(BagError, match="cannot write"):
        write_bag(tmp_path / "a_file" / "bag", kitti_step_sources(step_root, "val"), progress=False)


def test_a_corrupt_ground_truth_frame_is_skipped_and_named(step_root: Path, checkpoint: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """One corrupt label frame had aborted the run ("labels [...] outside [0, 19)") without saying which."""
    import shutil

    import cv2

    data = tmp_path / "data"
    shutil.copytree(step_root, data)
    label = data / "panoptic_maps/val/0000/000002.png"
    bgr = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    bgr[:10, :10, 2] = 200  # R = semantic class 200: neither a class nor void
    cv2.imwrite(str(label), bgr)
    bag, out = tmp_path / "bag", tmp_path / "result.json"
    assert main(["bag", "--from-kitti-step", str(data), "--out", str(bag), "--no-progress"]) == 0
    assert main(["eval-bag", "--bag", str(bag), "--model", str(checkpoint), "--no-progress", "--no-vpq",
                 "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 ground-truth frame(s) on /ground_truth/panoptic could not be scored" in err
    assert "stamp " in err and "classes [200]" in err
    result = json.loads(out.read_text())
    assert result["bag"]["corrupt_gt"] == 1 and result["frames"] == 2 * FRAMES - 1


def _flipped(bag: Path, positions: list[int]) -> None:
    data = next(bag.glob("*.mcap"))
    raw = bytearray(data.read_bytes())
    for at in positions:
        raw[at] ^= 0xFF
    data.write_bytes(bytes(raw))


def test_written_mcap_bags_carry_chunk_and_data_section_crcs(step_root: Path, tmp_path: Path) -> None:
    """rosbags writes every CRC as 0 (none): a flipped pixel went unnoticed. Every chunk and the data section
    now carry one, which the mcap library checks here (and rosbags on every read)."""
    from mcap.records import Chunk, DataEnd
    from mcap.stream_reader import StreamReader

    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), progress=False)
    with next(bag.glob("*.mcap")).open("rb") as stream:
        records = list(StreamReader(stream, emit_chunks=True, validate_crcs=True).records)
    chunks = [r for r in records if isinstance(r, Chunk)]
    assert chunks and all(c.uncompressed_crc != 0 for c in chunks)
    assert [r.data_section_crc != 0 for r in records if isinstance(r, DataEnd)] == [True]


def test_a_flipped_byte_costs_its_chunk_only_and_is_reported(step_root: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), progress=False)
    clean = {f.stamp_ns: f for f in BagReader(bag).frames()}
    _flipped(bag, [next(bag.glob("*.mcap")).stat().st_size // 2])
    reader = BagReader(bag)
    frames = list(reader.frames())
    report = reader.report
    assert report.skipped and "checksum" in report.skipped[0] and report.damage is None
    assert report.lost_images >= 1 and len(frames) + report.lost_images == 2 * FRAMES
    assert any("never read" in line for line in report.problems())
    for frame in frames:  # what was read is exactly what was written: the damage did not reach a frame
        np.testing.assert_array_equal(frame.image, clean[frame.stamp_ns].image)
    assert frames[-1].stamp_ns == max(clean)  # reading went on after the damaged chunk


@pytest.mark.parametrize("seed", range(6))
def test_flipped_bytes_at_the_start_never_lose_a_frame_silently(step_root: Path, tmp_path: Path, seed: int) -> None:
    """20 flipped bytes in the first 2 KB had silently lost a frame (16 -> 15, rc 0)."""
    bag = tmp_path / "bag"
    write_bag(bag, kitti_step_sources(step_root, "val"), progress=False)
    _flipped(bag, [int(p) for p in np.random.default_rng(seed).integers(0, 2048, 20)])
    reader = BagReader(bag)
    frames = list(reader.frames())
    if len(frames) < 2 * FRAMES:
        assert reader.report.problems(), f"{2 * FRAMES - len(frames)} frame(s) lost without a word"


def test_unpaired_ground_truth_and_unreadable_records_are_counted_with_context(tmp_path: Path) -> None:
    """A record whose string is not UTF-8 had ended reading with a bare `utf-8` decode error; a ground truth
    with no image at its stamp had vanished without a count."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    image_cls, header_cls = store.types["sensor_msgs/msg/Image"], store.types["std_msgs/msg/Header"]
    time_cls = store.types["builtin_interfaces/msg/Time"]
    bag = tmp_path / "bag"
    with Writer(bag, version=8) as writer:  # rosbags' own writer: no CRCs, as many recorders
        image = writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        gt = writer.add_connection(GT_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for t in range(4):
            header = header_cls(stamp=time_cls(sec=t, nanosec=0), frame_id="camera")
            msg = image_cls(header=header, height=2, width=2, encoding="rgb8", is_bigendian=0, step=6,
                            data=np.arange(12, dtype=np.uint8))
            raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
            if t == 1:  # a frame_id that is not UTF-8
                raw = raw.tobytes().replace(b"camera", b"\xff\xfe\xfdera")
            if t != 2:  # frame 2 has ground truth only
                writer.write(image, t * 10**9, raw)
            labels = image_cls(header=header, height=2, width=2, encoding="32SC1", is_bigendian=0, step=8,
                               data=np.zeros(16, dtype=np.uint8))
            writer.write(gt, t * 10**9, store.serialize_cdr(labels, "sensor_msgs/msg/Image"))
    reader = BagReader(bag, reset_gap_s=5.0)
    frames = list(reader.frames())
    report = reader.report
    assert [f.stamp_ns for f in frames] == [0, 3 * 10**9]
    assert report.unreadable == 1 and report.gt_without_image == 2 and report.lost_images == 0
    assert IMAGE_TOPIC in report.errors[0] and "1000000000 ns" in report.errors[0]
    assert "'utf-8' codec can't decode" in report.errors[0]
    lines = report.problems()
    assert any("could not be deserialised" in line for line in lines)
    assert any("have no image at their stamp" in line for line in lines)


def test_depth_folders_become_a_registered_16uc1_depth_topic(tmp_path: Path) -> None:
    from vknet_ros.bags import DEPTH_TOPIC, open_any_reader, ros2_typestore

    write_sequences(tmp_path / "data", sequences=1, seed=6, split="val", depth=True,
                    cfg=SynthConfig(height=48, width=160, frames=3), progress=False)
    bag = tmp_path / "bag"
    report = write_bag(bag, kitti_step_sources(tmp_path / "data", "val"), progress=False)
    assert report.messages == 4 * 3  # image, camera_info, ground truth, depth per frame
    reader = open_any_reader(bag)
    try:
        by_topic: dict[str, list] = {}
        for conn, _, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append(ros2_typestore().deserialize_cdr(raw, conn.msgtype))
    finally:
        reader.close()
    depths, images = by_topic[DEPTH_TOPIC], by_topic[IMAGE_TOPIC]
    assert [d.header for d in depths] == [i.header for i in images]  # same stamps and frame: registered
    for t, msg in enumerate(depths):
        written = cv2.imread(str(tmp_path / "data" / "depth" / "val" / "0000" / f"{t:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("16UC1", 48, 160, 320)
        np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), "<u2").reshape(48, 160), written)
    assert BagReader(bag).report.image_topic in ("", IMAGE_TOPIC)
    (tmp_path / "data" / "depth" / "val" / "0000" / "000001.png").unlink()
    with pytest.raises(BagError, match="1 depth image"):
        kitti_step_sources(tmp_path / "data", "val")
