"""msg <-> numpy conversions on hand-built images with known pixel values."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("sensor_msgs", reason="ROS 2 messages are not installed: run `make setup`")

from sensor_msgs.msg import Image
from std_msgs.msg import Header

from tests.conftest import forged_jpeg_size
from vknet_ros.conversions import (
    REFUSAL_REASONS,
    ImageConversionError,
    bgr_to_serialized_image,
    checked_intrinsics,
    compressed_msg_to_rgb,
    decode_camera_image,
    decode_compressed,
    decode_image,
    image_msg_to_labels,
    image_msg_to_rgb,
    label_dtype,
    labels_to_serialized_image,
    rgb_to_image_msg,
)


def _msg(encoding: str, height: int, width: int, step: int, data: bytes) -> Image:
    return Image(header=Header(frame_id="cam"), height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=step, data=data)


@pytest.mark.parametrize(("encoding", "pixel"), [
    ("rgb8", [10, 20, 30]), ("bgr8", [30, 20, 10]), ("rgba8", [10, 20, 30, 99]), ("bgra8", [30, 20, 10, 99]),
])
def test_colour_encodings_decode_to_rgb(encoding: str, pixel: list[int]) -> None:
    height, width = 2, 3
    data = bytes(pixel) * (height * width)
    rgb = image_msg_to_rgb(_msg(encoding, height, width, width * len(pixel), data))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb == np.array([10, 20, 30], np.uint8)).all()


def test_mono8_is_replicated_to_three_channels() -> None:
    rgb = image_msg_to_rgb(_msg("mono8", 1, 2, 2, bytes([7, 200])))
    assert rgb.tolist() == [[[7, 7, 7], [200, 200, 200]]]


def test_row_padding_is_skipped() -> None:
    # 2x2 rgb8 with step 8: 6 pixel bytes then 2 padding bytes per row.
    data = bytes([1, 2, 3, 4, 5, 6, 0xEE, 0xEE, 7, 8, 9, 10, 11, 12, 0xEE, 0xEE])
    rgb = image_msg_to_rgb(_msg("rgb8", 2, 2, 8, data))
    assert rgb.reshape(-1).tolist() == list(range(1, 13))


def test_last_row_may_omit_its_padding() -> None:
    data = bytes([1, 2, 3, 0, 4, 5, 6])  # step 4, the last row has only its 3 pixel bytes
    assert image_msg_to_rgb(_msg("rgb8", 2, 1, 4, data)).reshape(-1).tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("msg", "reason"), [
    (_msg("mono16", 2, 2, 4, bytes(8)), "not a camera colour image"),
    (_msg("yuv422", 2, 2, 4, bytes(8)), "unsupported encoding"),
    (_msg("rgb8", 0, 0, 0, b""), "empty image"),
    (_msg("rgb8", 2, 2, 5, bytes(12)), "step 5 is smaller"),
    (_msg("rgb8", 2, 2, 6, bytes(11)), "image data holds 11 bytes"),
    (_msg("rgb8", 100_000, 100_000, 300_000, b""), "exceeds"),
])
def test_malformed_images_raise_with_reason(msg: Image, reason: str) -> None:
    with pytest.raises(ImageConversionError, match=reason):
        image_msg_to_rgb(msg)


def test_rgb_round_trip_through_bgr8() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = rgb_to_image_msg(rgb, Header(frame_id="cam"), encoding="bgr8")
    assert msg.encoding == "bgr8" and msg.step == 9
    assert bytes(msg.data)[:3] == bytes([2, 1, 0])
    assert (image_msg_to_rgb(msg) == rgb).all()


def _label_msg(labels: np.ndarray, header: Header, encoding: str) -> Image:
    """What a subscriber receives for the node's serialised label image."""
    from rclpy.serialization import deserialize_message

    return deserialize_message(labels_to_serialized_image(labels, header, encoding), Image)


@pytest.mark.parametrize("encoding", ["mono8", "16UC1", "32SC1"])
def test_label_round_trip(encoding: str) -> None:
    top = {"mono8": 255, "16UC1": 13_999, "32SC1": 2**31 - 1}[encoding]
    labels = np.array([[0, 1], [top, 7]], dtype=np.int64)
    msg = _label_msg(labels, Header(), encoding)
    assert (image_msg_to_labels(msg) == labels).all()


def test_labels_already_in_the_encoding_dtype_go_out_unchanged() -> None:
    labels = np.array([[0, 65_535], [18_999, 7]], dtype=np.uint16)  # the full range: nothing to check
    msg = _label_msg(labels, Header(), "16UC1")
    assert msg.step == 4 and msg.is_bigendian == 0
    assert np.array_equal(image_msg_to_labels(msg), labels)
    labels[0, 0] = 5
    assert image_msg_to_labels(msg)[0, 0] == 0, "the message owns its data"


@pytest.mark.parametrize("encoding", ["mono8", "16UC1", "32SC1"])
@pytest.mark.parametrize("frame_id", ["", "c", "ca", "cam", "cam0", "camera_optical_frame", "kamera_ü"])
def test_serialized_label_image_is_the_message_rclpy_would_send(encoding: str, frame_id: str) -> None:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = -7, 999_999_999  # a signed second and the largest nanosecond
    labels = np.random.default_rng(len(frame_id)).integers(0, 250, (3, 5))
    pixels = labels.astype(label_dtype(encoding))
    expected = Image(header=header, height=3, width=5, encoding=encoding, is_bigendian=0,
                     step=5 * pixels.itemsize, data=pixels.tobytes())
    got = _label_msg(labels, header, encoding)
    assert got == expected
    assert np.array_equal(image_msg_to_labels(got), labels)


def test_label_overflow_and_malformed_maps_are_refused() -> None:
    with pytest.raises(ValueError, match="outside 16UC1"):
        labels_to_serialized_image(np.array([[70_000]]), Header(), "16UC1")
    with pytest.raises(ValueError, match="outside 16UC1"):
        labels_to_serialized_image(np.array([[-1]], dtype=np.int16), Header(), "16UC1")  # same width, other range
    with pytest.raises(ValueError, match="label map"):
        labels_to_serialized_image(np.zeros((2, 2, 1), np.uint16), Header(), "16UC1")
    with pytest.raises(ValueError, match="label encoding"):
        labels_to_serialized_image(np.zeros((2, 2), np.uint16), Header(), "rgb8")


def test_decode_without_copy_is_a_view_of_the_message() -> None:
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    msg = rgb_to_image_msg(rgb, Header(frame_id="cam"))
    view = decode_image(msg, copy=False)
    assert np.array_equal(view, rgb) and np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    copied = decode_image(msg)
    assert np.array_equal(copied, rgb) and not np.shares_memory(copied, np.frombuffer(msg.data, np.uint8))
    # A padded rgb8 frame and a bgr8 one decode to the same pixels with or without the copy.
    padded = _msg("rgb8", 2, 2, 8, bytes([1, 2, 3, 4, 5, 6, 0xEE, 0xEE, 7, 8, 9, 10, 11, 12, 0xEE, 0xEE]))
    assert decode_image(padded, copy=False).reshape(-1).tolist() == list(range(1, 13))
    bgr = rgb_to_image_msg(rgb, Header(frame_id="cam"), encoding="bgr8")
    assert np.array_equal(decode_image(bgr, copy=False), rgb)


class _ReferenceBridge:
    """Stands in for cv_bridge's imgmsg_to_cv2(desired_encoding="rgb8") semantics on padded rows, to test that
    decode_image hands well-formed messages to the bridge and keeps the checks and the fallback its own."""

    def __init__(self) -> None:
        self.calls = 0

    def imgmsg_to_cv2(self, msg: Image, desired_encoding: str) -> np.ndarray:
        assert desired_encoding == "rgb8"
        self.calls += 1
        return image_msg_to_rgb(msg)


def test_decode_image_uses_the_bridge_only_for_complete_messages() -> None:
    from vknet_ros.conversions import decode_image

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = rgb_to_image_msg(rgb, Header(), "bgr8")
    bridge = _ReferenceBridge()
    np.testing.assert_array_equal(decode_image(msg, bridge), rgb)
    assert bridge.calls == 1
    short = Image(height=2, width=3, encoding="rgb8", step=12, data=bytes(12 + 9))  # last row without padding
    assert decode_image(short, bridge).shape == (2, 3, 3) and bridge.calls == 1
    with pytest.raises(ImageConversionError, match="16UC1"):
        decode_image(Image(height=1, width=1, encoding="16UC1", step=2, data=bytes(2)), bridge)
    assert bridge.calls == 1


@pytest.mark.skipif(importlib.util.find_spec("cv_bridge") is None,
                    reason="cv_bridge is not installed (no PyPI wheels); the numpy path is tested above")
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_cv_bridge_and_numpy_paths_agree(encoding: str) -> None:
    from vknet_ros.conversions import cv_bridge

    channels = {"mono8": 1, "rgba8": 4, "bgra8": 4}.get(encoding, 3)
    data = np.random.default_rng(0).integers(0, 255, (5, 7, channels), dtype=np.uint8)
    msg = Image(height=5, width=7, encoding=encoding, step=7 * channels, data=data.tobytes())
    np.testing.assert_array_equal(np.asarray(cv_bridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")),
                                  image_msg_to_rgb(msg))


def test_camera_frames_decode_as_views_in_their_own_channel_order() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    for encoding, order in (("rgb8", "rgb"), ("bgr8", "bgr")):
        msg = rgb_to_image_msg(rgb, Header(), encoding)
        pixels, got = decode_camera_image(msg)
        assert got == order and not pixels.flags.owndata  # a view of msg.data, not a converted copy
        assert np.array_equal(pixels[:, :, ::-1] if order == "bgr" else pixels, rgb)
    # Other colour encodings are converted to RGB.
    bgra = _msg("bgra8", 1, 2, 8, bytes([3, 2, 1, 9, 6, 5, 4, 9]))
    pixels, order = decode_camera_image(bgra)
    assert order == "rgb" and pixels.tolist() == [[[1, 2, 3], [4, 5, 6]]]
    with pytest.raises(ImageConversionError, match="16UC1"):
        decode_camera_image(_msg("16UC1", 1, 1, 2, bytes(2)))


def test_serialized_bgr_image_is_the_message_rclpy_would_send() -> None:
    from rclpy.serialization import deserialize_message

    bgr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    header = Header(frame_id="camera_ü")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = deserialize_message(bgr_to_serialized_image(bgr, header), Image)
    assert (msg.header, msg.height, msg.width, msg.encoding) == (header, 5, 7, "bgr8")
    assert (msg.step, msg.is_bigendian) == (21, 0)
    assert bytes(msg.data) == bgr.tobytes()
    assert bytes(msg.data) == bytes(rgb_to_image_msg(np.ascontiguousarray(bgr[:, :, ::-1]), header, "bgr8").data)
    with pytest.raises(ValueError, match="uint8"):
        bgr_to_serialized_image(np.zeros((2, 2), np.uint8), header)


def _png_claiming(height: int, width: int) -> bytes:
    """A real small PNG whose IHDR claims another size (CRC recomputed, so the header reads as valid)."""
    import struct
    import zlib

    import cv2

    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def test_compressed_images_are_sized_from_their_header_before_decoding() -> None:
    import time
    import tracemalloc

    import cv2
    from sensor_msgs.msg import CompressedImage

    jpeg = cv2.imencode(".jpg", np.full((40, 60, 3), 90, np.uint8))[1].tobytes()
    assert compressed_msg_to_rgb(CompressedImage(format="jpeg", data=jpeg)).shape == (40, 60, 3)
    bombs = {"jpeg": forged_jpeg_size(jpeg, 30_000, 30_000), "png": _png_claiming(16_384, 16_384)}
    for fmt, data in bombs.items():
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(ImageConversionError, match="claims") as refused:
            compressed_msg_to_rgb(CompressedImage(format=fmt, data=data))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert refused.value.reason == "too_large" and time.perf_counter() - start < 1.0
        assert peak < 10 * 2**20, f"{fmt}: {peak} bytes allocated before refusing"
    # The header check applies the caller's limit too.
    with pytest.raises(ImageConversionError) as small_limit:
        compressed_msg_to_rgb(CompressedImage(format="jpeg", data=jpeg), max_pixels=40 * 60 - 1)
    assert small_limit.value.reason == "too_large"
    for data, reason in ((b"", "empty"), (b"GIF89a....", "undecodable"), (jpeg[:30], "undecodable"),
                         (jpeg[: len(jpeg) // 2], "undecodable")):
        with pytest.raises(ImageConversionError) as exc:
            compressed_msg_to_rgb(CompressedImage(format="jpeg", data=data))
        assert exc.value.reason == reason, (data[:10], str(exc.value))


def _camera_like_jpeg_and_png() -> tuple[np.ndarray, bytes, bytes]:
    import cv2

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 320, dtype=np.uint8)[None, :, None]
    bgr = (rng.random((96, 320, 3)) * 50).astype(np.uint8) + ramp
    return bgr, cv2.imencode(".jpg", bgr)[1].tobytes(), cv2.imencode(".png", bgr)[1].tobytes()


def test_byte_flipped_jpegs_are_reported_damaged_not_passed_as_frames(capfd: pytest.CaptureFixture[str]) -> None:
    """OpenCV decoded 32 of 32 flipped JPEGs to partial pictures (libjpeg only warns) and printed a line to
    stderr for each; every one must now carry its damage, and nothing may reach stderr."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    bgr, jpeg, _ = _camera_like_jpeg_and_png()
    image, damage = decode_compressed(CompressedImage(format="jpeg", data=jpeg))
    assert damage == "" and image.shape == bgr.shape
    opencv = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(image.astype(int) - opencv).mean() < 1  # BGR, as OpenCV decodes
    rng = np.random.default_rng(1)
    damaged = 0
    for _ in range(32):
        flipped = bytearray(jpeg)
        for position in rng.integers(700, len(jpeg) - 2, 20):
            flipped[position] ^= 0xFF
        msg = CompressedImage(format="jpeg", data=bytes(flipped))
        try:
            partial, damage = decode_compressed(msg, keep_damaged=True)
        except ImageConversionError as exc:  # damage beyond what libjpeg can recover from
            assert exc.reason == "undecodable"
            damaged += 1
            continue
        assert damage.startswith("damaged JPEG") and partial.shape == bgr.shape
        with pytest.raises(ImageConversionError) as refused:
            compressed_msg_to_rgb(msg)
        assert refused.value.reason == "corrupt_compressed"
        damaged += 1
    assert damaged == 32
    cut = decode_compressed(CompressedImage(format="jpeg", data=jpeg[: 2 * len(jpeg) // 3]), keep_damaged=True)[1]
    assert "Premature end" in cut
    assert capfd.readouterr().err == ""


def test_pngs_are_checked_and_only_8_bit_ones_decode(capfd: pytest.CaptureFixture[str]) -> None:
    import cv2
    from sensor_msgs.msg import CompressedImage

    bgr, _, png = _camera_like_jpeg_and_png()
    image, damage = decode_compressed(CompressedImage(format="png", data=png))
    assert damage == "" and np.array_equal(image, bgr)
    grey = cv2.imencode(".png", bgr[:, :, 0])[1].tobytes()
    grey_image = decode_compressed(CompressedImage(format="png", data=grey))[0]
    assert np.array_equal(grey_image, np.repeat(bgr[:, :, :1], 3, 2))
    deep = cv2.imencode(".png", bgr[:, :, 0].astype(np.uint16) * 257)[1].tobytes()
    with pytest.raises(ImageConversionError, match="not 8-bit") as sixteen:
        decode_compressed(CompressedImage(format="png", data=deep))
    assert sixteen.value.reason == "encoding"
    rng = np.random.default_rng(2)
    for _ in range(16):
        flipped = bytearray(png)
        for position in rng.integers(40, len(png) - 2, 3):
            flipped[position] ^= 0xFF
        with pytest.raises(ImageConversionError) as refused:
            decode_compressed(CompressedImage(format="png", data=bytes(flipped)))
        assert refused.value.reason == "undecodable"
    with pytest.raises(ImageConversionError) as truncated:
        decode_compressed(CompressedImage(format="png", data=png[: len(png) // 2]))
    assert truncated.value.reason == "undecodable"
    assert capfd.readouterr().err == ""


def test_every_refusal_carries_a_fixed_reason() -> None:
    cases = [_msg("16UC1", 1, 1, 2, bytes(2)), _msg("rgb8", 0, 0, 0, b""), _msg("rgb8", 2, 2, 5, bytes(12)),
             _msg("rgb8", 2, 2, 6, bytes(11)), _msg("rgb8", 9000, 9000, 27000, b"")]
    reasons = []
    for msg in cases:
        with pytest.raises(ImageConversionError) as exc:
            image_msg_to_rgb(msg)
        reasons.append(exc.value.reason)
    assert reasons == ["encoding", "empty", "step", "truncated", "too_large"]
    assert set(reasons) <= set(REFUSAL_REASONS)
    with pytest.raises(ValueError, match="unknown refusal reason"):
        ImageConversionError("x", "made up")


def test_camera_info_checks() -> None:
    from sensor_msgs.msg import CameraInfo

    k = [700.0, 0.0, 620.0, 0.0, 710.0, 187.0, 0.0, 0.0, 1.0]
    assert checked_intrinsics(CameraInfo(width=1242, height=375, k=k)) == (((700.0, 710.0, 620.0, 187.0),
                                                                            (1242, 375)), "")
    bad = {"nan cx": ([*k[:2], float("nan"), *k[3:]], 1242, 375), "tiny fx": ([1e-300, *k[1:]], 1242, 375),
           "zero K": ([0.0] * 9, 1242, 375), "no size": (k, 0, 0)}
    for name, (kk, w, h) in bad.items():
        intrinsics, why = checked_intrinsics(CameraInfo(width=w, height=h, k=kk))
        assert intrinsics is None and why, name
    p = [float("inf")] + [0.0] * 11
    assert checked_intrinsics(CameraInfo(width=1242, height=375, k=k, p=p))[0] is None
