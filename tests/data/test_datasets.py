"""Synthetic KITTI-STEP writer <-> readers round trip, clear errors, frame pairs and augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vknet_data.datasets import (
    AugmentConfig,
    DatasetError,
    FramePairDataset,
    augment_pair,
    cityscapes_vps_sequences,
    kitti_step_sequences,
    read_kitti_step_panoptic,
    read_rgb,
)
from vknet_data.panoptic_png import decode_panoptic_png, encode_panoptic_png
from vknet_data.synth import (
    CAR,
    PERSON,
    SynthConfig,
    SyntheticScene,
    render_sequence,
    write_sequences,
)
from vknet_data.synth_stream import SyntheticPairStream
from vknet_model.config import KITTI_STEP_CLASSES
from vknet_model.preprocess import PAD_VALUE

SMALL = SynthConfig(height=96, width=320, frames=6)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_sequences(root, sequences=2, seed=3, cfg=SMALL, progress=False)
    return root


def test_generator_is_deterministic_and_seed_dependent() -> None:
    a_images, a_labels = render_sequence(5, 1, SMALL)
    b_images, b_labels = render_sequence(5, 1, SMALL)
    c_images, _ = render_sequence(6, 1, SMALL)
    assert all(np.array_equal(x, y) for x, y in zip(a_images, b_images, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(a_labels, b_labels, strict=True))
    assert not np.array_equal(a_images[0], c_images[0])


def test_scenes_hold_several_tracked_things_that_move() -> None:
    cfg = SynthConfig(height=188, width=621, frames=20)
    _, labels = render_sequence(0, 0, cfg)
    classes = set(np.unique(np.concatenate([lbl.ravel() // 1000 for lbl in labels])))
    assert {0, 1, 2, 10, PERSON, CAR} <= classes
    cars = {int(v) for lbl in labels for v in np.unique(lbl) if v // 1000 == CAR and v % 1000 > 0}
    assert len(cars) >= 2, "same-class instances are what makes tracking non-trivial"
    some_car = min(cars)
    xs = [np.argwhere(lbl == some_car)[:, 1].mean() for lbl in labels if (lbl == some_car).any()]
    assert len(xs) >= 2 and abs(xs[-1] - xs[0]) > 5, "objects move across frames"


def test_crowd_regions_appear_as_instance_zero() -> None:
    cfg = SynthConfig(height=188, width=621, frames=3, crowd_probability=1.0)
    _, labels = render_sequence(0, 2, cfg)
    assert any((lbl == PERSON * 1000).any() for lbl in labels)


def test_writer_and_reader_round_trip(synth_root: Path) -> None:
    sequences = kitti_step_sequences(synth_root, "train")
    assert [s.name for s in sequences] == ["0000", "0001"] and all(len(s) == SMALL.frames for s in sequences)
    images, labels = render_sequence(3, 1, SMALL)
    for t in range(SMALL.frames):
        assert np.array_equal(read_rgb(sequences[1].images[t]), images[t])
        assert np.array_equal(sequences[1].labels[t](), labels[t])
    assert (synth_root / "calib" / "train" / "0000.txt").read_text().startswith("P2: ")


def test_panoptic_png_encoding_by_hand(tmp_path: Path) -> None:
    panoptic = np.array([[13 * 1000 + 300, 11 * 1000 + 0], [255 * 1000, 2 * 1000]], dtype=np.int32)
    rgb = encode_panoptic_png(panoptic)
    assert rgb[0, 0].tolist() == [13, 1, 44]  # 300 = 1 * 256 + 44
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    assert np.array_equal(read_kitti_step_panoptic(path), panoptic)
    assert np.array_equal(decode_panoptic_png(rgb), panoptic)
    with pytest.raises(ValueError, match="instance id 300 >= label divisor 200"):
        decode_panoptic_png(rgb, label_divisor=200)
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 255\]"):
        encode_panoptic_png(np.array([[256 * 1000]]))


def test_corrupt_png_is_a_clear_error(synth_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes((synth_root / "panoptic_maps/train/0000/000000.png").read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"cannot read label .*bad\.png"):
        read_kitti_step_panoptic(bad)
    with pytest.raises(DatasetError, match="cannot read image"):
        read_rgb(bad)


def test_missing_labels_and_folders_are_reported(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="vknet synth"):
        kitti_step_sequences(tmp_path, "train")
    broken = tmp_path / "broken"
    for sub in ("images/train/0000", "panoptic_maps/train/0000"):
        (broken / sub).mkdir(parents=True)
    cv2.imwrite(str(broken / "images/train/0000/000000.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"label\(s\) missing .*000000\.png"):
        kitti_step_sequences(broken, "train")


def test_reference_frames_use_the_paper_offsets(synth_root: Path) -> None:
    dataset = FramePairDataset(kitti_step_sequences(synth_root, "train"), seed=0)
    offsets = {dataset.reference_index(0, 3) - 3 for _ in range(200)}
    assert offsets == {-2, -1, 1, 2}
    assert {dataset.reference_index(0, 0) for _ in range(100)} == {1, 2}


def test_key_and_reference_share_scale_flip_and_crop(synth_root: Path) -> None:
    sequences = kitti_step_sequences(synth_root, "train")
    dataset = FramePairDataset(sequences, ref_offsets=(0,), augment=AugmentConfig(crop=(64, 160)), seed=1)
    for i in range(6):
        sample = dataset[i]
        assert sample["key_image"].shape == (3, 64, 160) and sample["key_panoptic"].shape == (64, 160)
        assert np.array_equal(sample["key_image"], sample["ref_image"])  # same frame -> identical after augment
        assert np.array_equal(sample["key_panoptic"], sample["ref_panoptic"])
    # Labels are resized with nearest neighbour: no new ids appear.
    sample = dataset[0]
    original = set(np.unique(sequences[0].labels[0]())) | {255 * 1000}
    assert set(np.unique(sample["key_panoptic"])) <= original


def test_crops_past_the_image_are_padded_as_inference_pads() -> None:
    image = np.full((20, 30, 3), 7, np.uint8)
    label = np.full((20, 30), 13 * 1000 + 1, np.int32)
    out = augment_pair([(image, label), (image, label)], AugmentConfig(crop=(32, 40), scale_range=(1.0, 1.0),
                                                                      flip=False), np.random.default_rng(0), 1000)
    assert (out["key_image"][:, :20, :30] == 7).all()
    assert (out["key_image"][:, 20:, :] == np.array(PAD_VALUE, np.uint8)[:, None, None]).all()
    assert (out["key_image"][:, :, 30:] == np.array(PAD_VALUE, np.uint8)[:, None, None]).all()
    assert (out["key_panoptic"][20:] == 255 * 1000).all() and (out["key_panoptic"][:20, :30] == 13001).all()


def test_scene_frames_render_on_demand_as_the_sequence_does() -> None:
    images, labels = render_sequence(4, 2, SMALL)
    scene = SyntheticScene(4, 2, SMALL)
    for t in (5, 0, 3):
        image, label = scene.frame(t)
        assert np.array_equal(image, images[t]) and np.array_equal(label, labels[t])
    with pytest.raises(IndexError):
        scene.frame(SMALL.frames)


def test_synthetic_stream_never_renders_a_scene_twice() -> None:
    def numbers(rank: int, world: int, worker: int, workers: int, first: int = 0) -> list[int]:
        stream = SyntheticPairStream(synth=SMALL, augment=AugmentConfig(crop=(64, 96)), first_scene=first, rank=rank,
                                     world=world)
        it = stream.scene_numbers(worker, workers)
        return [next(it) for _ in range(50)]

    every = [n for rank in range(2) for worker in range(3) for n in numbers(rank, 2, worker, 3)]
    assert len(set(every)) == len(every) == 300 and min(every) == 0
    assert min(numbers(0, 1, 0, 1, first=5000)) == 5000
    stream = SyntheticPairStream(synth=SMALL, augment=AugmentConfig(crop=(64, 96), scale_range=(0.8, 1.2)),
                                 ref_offsets=(-1, 1), pool=2, pairs_per_scene=2)
    samples = [s for _, s in zip(range(6), stream, strict=False)]
    for s in samples:
        assert s["key_image"].shape == (3, 64, 96) and s["ref_panoptic"].shape == (64, 96)
        assert not np.array_equal(s["key_image"], s["ref_image"]), "the reference is another frame"
    # The same stream settings give the same samples (a run is reproducible).
    again = [s for _, s in zip(range(6), stream, strict=False)]
    assert all(np.array_equal(a["key_panoptic"], b["key_panoptic"]) for a, b in zip(samples, again, strict=True))


def test_cityscapes_vps_reader(tmp_path: Path) -> None:
    names = list(KITTI_STEP_CLASSES)
    categories = [{"id": i, "name": n, "isthing": int(i >= 11)} for i, n in enumerate(names)]
    annotations = []
    for frame in (5, 10):
        ids = np.zeros((2, 3), np.int64)
        ids[0] = 0 * 1000        # road (stuff)
        ids[1, :2] = 13 * 1000 + 7  # car instance 7, same id in both frames
        ids[1, 2] = 11 * 1000    # a person crowd segment
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        stem = f"0001_{frame:04d}_frankfurt_000000_{frame:06d}"
        (tmp_path / "val/img").mkdir(parents=True, exist_ok=True)
        (tmp_path / "val/panoptic_video").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / f"val/img/{stem}_leftImg8bit.png"), np.zeros((2, 3, 3), np.uint8))
        cv2.imwrite(str(tmp_path / f"val/panoptic_video/{stem}_gtFine_color.png"), rgb[:, :, ::-1])
        annotations.append({"file_name": f"{stem}_gtFine_color.png", "image_id": stem, "segments_info": [
            {"id": 0, "category_id": 0, "iscrowd": 0}, {"id": 13007, "category_id": 13, "iscrowd": 0},
            {"id": 11000, "category_id": 11, "iscrowd": 1}]})
    (tmp_path / "panoptic_gt_val_city_vps.json").write_text(json.dumps(
        {"images": [], "annotations": annotations[::-1], "categories": categories}))
    (sequence,) = cityscapes_vps_sequences(tmp_path, "val", names)
    assert sequence.name == "0001" and [p.name[:9] for p in sequence.images] == ["0001_0005", "0001_0010"]
    for load in sequence.labels:
        assert load().tolist() == [[0, 0, 0], [13007, 13007, 11000]]
    with pytest.raises(DatasetError, match="not in the config's class_names"):
        cityscapes_vps_sequences(tmp_path, "val", names[:5])


def test_held_out_or_passes_given_data_through_and_generates_the_held_out_set_otherwise(tmp_path: Path) -> None:
    from vknet_data.synth import HELD_OUT_FIRST, held_out_or

    with held_out_or(tmp_path, sequences=1) as data:
        assert data == tmp_path and not any(tmp_path.iterdir())     # nothing generated into the user's folder
    with held_out_or(None, sequences=1) as data:
        generated = data
        frames = sorted((data / "images" / "val" / f"{HELD_OUT_FIRST:04d}").iterdir())
        assert len(frames) == 30
    assert not generated.exists()                                    # the temporary set is gone afterwards
