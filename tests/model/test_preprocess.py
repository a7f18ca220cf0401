"""Letterboxing on constant images with hand-computed geometry."""

from __future__ import annotations

import numpy as np
import pytest

from vknet_model.preprocess import PAD_VALUE, Letterbox, letterbox


def test_kitti_frame_into_the_tiny_input() -> None:
    image = np.full((375, 1242, 3), (10, 20, 30), dtype=np.uint8)
    tensor, box = letterbox(image, (192, 640))
    # scale = min(192/375, 640/1242) = 0.512 -> content 192 x round(1242 * 0.512) = 636 columns.
    assert box.scale == pytest.approx(0.512)
    assert box.resized == (192, 636)
    assert tensor.shape == (1, 3, 192, 640) and tensor.dtype == np.uint8
    assert (tensor[0, :, :, :636] == np.array([10, 20, 30], np.uint8)[:, None, None]).all()
    assert (tensor[0, :, :, 636:] == np.array(PAD_VALUE, np.uint8)[:, None, None]).all()


def test_same_size_is_a_pure_transpose() -> None:
    image = np.arange(32 * 64 * 3, dtype=np.uint32).astype(np.uint8).reshape(32, 64, 3)
    tensor, box = letterbox(image, (32, 64))
    assert box.scale == 1.0 and box.resized == (32, 64)
    assert np.array_equal(tensor[0].transpose(1, 2, 0), image)


def test_letterbox_into_a_reused_buffer_equals_a_fresh_one() -> None:
    buffer = np.full((1, 3, 192, 640), 77, dtype=np.uint8)
    for shape in ((375, 1242, 3), (500, 300, 3)):  # the second one pads where the first had content
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        fresh, box = letterbox(image, (192, 640))
        reused, reused_box = letterbox(image, (192, 640), out=buffer)
        assert reused is buffer and reused_box == box and np.array_equal(reused, fresh)
    with pytest.raises(ValueError, match="out must be uint8"):
        letterbox(image, (192, 640), out=np.zeros((1, 3, 192, 641), np.uint8))


def test_a_bgr_frame_gives_the_network_input_of_the_same_rgb_frame() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    for target in ((192, 640), (375, 1242)):  # resized, and a pure copy
        expected, box = letterbox(rgb, target)
        got, bgr_box = letterbox(bgr, target, channel_order="bgr")
        assert bgr_box == box and np.array_equal(got, expected)
    with pytest.raises(ValueError, match="channel_order"):
        letterbox(rgb, (32, 32), channel_order="rgba")


def test_tall_image_pads_the_right() -> None:
    _, box = letterbox(np.zeros((200, 100, 3), np.uint8), (64, 128))
    assert box.resized == (64, 32) and box.scale == pytest.approx(0.32)


def test_grid_indices_map_every_source_pixel_to_its_cell() -> None:
    box = Letterbox.fit((8, 16), (8, 16))  # identity geometry
    rows, cols = box.grid_indices(4)
    assert rows.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert cols.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    box = Letterbox.fit((4, 8), (8, 16))  # upscaled x2: each source pixel covers 2 network pixels
    rows, cols = box.grid_indices(4)
    assert rows.tolist() == [0, 0, 1, 1] and cols.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_boxes_back_to_source_pixels() -> None:
    box = Letterbox.fit((375, 1242), (192, 640))
    back = box.boxes_to_source(np.array([[0.0, 0.0, 636.0, 192.0], [318.0, 96.0, 700.0, 192.0]]))
    np.testing.assert_allclose(back[0], [0, 0, 1242, 375])
    np.testing.assert_allclose(back[1], [621, 187.5, 1242, 375])  # clipped at the right edge


@pytest.mark.parametrize("bad", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5), np.uint8),
                                 np.zeros((5, 5, 3), np.float32), np.zeros((5, 5, 4), np.uint8)])
def test_bad_images_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="image"):
        letterbox(bad, (32, 32))
