"""Pure conversions between ROS 2 image messages and numpy arrays (no node, no spinning).

Images are decoded by viewing ``msg.data`` through ``np.frombuffer`` (cv_bridge has no PyPI wheels; where
it is installed, :func:`decode_image` uses it after the same checks); outgoing data is assigned as ``bytes``
because assigning an ndarray to ``msg.data`` costs about 70 ms per 1.4 MB frame in rclpy against 0.2 ms for
bytes (rclpy copies ``bytes`` into its ``array.array`` with one memcpy, and iterates over anything else).
Decoding only reads fields, so it works on any object shaped like the message: rclpy messages and the ones
``rosbags`` deserialises from bags (the bag tools use it without ROS installed); only the encoders import
``sensor_msgs``.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from vknet_model.depth3d import DEPTH_ENCODINGS, depth_in_metres
from vknet_model.errors import VKNetError

if TYPE_CHECKING:
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from std_msgs.msg import Header

# encoding -> (channels, channel order as it must be read to get RGB)
_COLOUR_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
# Output encodings for label images: encoding -> numpy dtype.
_LABEL_ENCODINGS: dict[str, np.dtype] = {
    "mono8": np.dtype(np.uint8),
    "16UC1": np.dtype(np.uint16),
    "32SC1": np.dtype(np.int32),
}
# A guard against messages that claim absurd sizes (a corrupt header must not make us allocate GBs).
MAX_PIXELS = 8192 * 8192
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG modes that are 8-bit grey or colour (with or without alpha or a palette).
_PNG_MODES = ("L", "LA", "P", "PA", "RGB", "RGBA", "1")


# Why an input message was refused: the node counts refusals under these fixed codes (a count keyed by message
# text would grow with every distinct bad message an attacker sends) and logs the detail.
REFUSAL_REASONS = ("encoding", "empty", "too_large", "step", "truncated", "undecodable", "corrupt_compressed")
# (fx, fy, cx, cy) in pixels and the (width, height) they belong to.
Intrinsics = tuple[tuple[float, float, float, float], tuple[int, int]]


class ImageConversionError(VKNetError, ValueError):
    """An image message that cannot be decoded; the message says why, in terms a user can act on, and
    ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, message: str, reason: str) -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """Decode an 8-bit ``sensor_msgs/Image`` to an RGB array.

    Args:
        msg: image with encoding rgb8, bgr8, rgba8, bgra8 or mono8 and any row padding (``step``).

    Returns:
        uint8 array [H, W, 3] in RGB order. It is a copy, safe to keep after the message is gone.

    Raises:
        ImageConversionError: unsupported encoding (16-bit and float images are rejected with the
            reason), empty or oversized image, ``step`` too small, or ``data`` shorter than declared.
    """
    return _to_rgb(msg, *_checked(msg))


def _to_rgb(msg: Image, channels: int, order: tuple[int, ...], data: np.ndarray, copy: bool = True) -> np.ndarray:
    """The numpy decode of a message :func:`_checked` accepted (an rgb8 one as a view of its data unless
    ``copy``)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    # View the buffer as [H, step] (padding included), then cut the padding off each row.
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, width * channels), strides=(step, 1))
    pixels = rows.reshape(height, width, channels)
    if order == (0, 1, 2) and channels == 3:
        return pixels.copy() if copy else pixels
    return np.ascontiguousarray(pixels[:, :, list(order)])


def _checked(msg: Image) -> tuple[int, tuple[int, ...], np.ndarray]:
    """Channels, RGB channel order and the data buffer of a decodable message; raises the reason otherwise."""
    encoding = msg.encoding
    if encoding not in _COLOUR_ENCODINGS:
        if encoding in ("mono16", "16UC1", "16SC1", "32FC1", "32SC1", "64FC1", "rgb16", "bgr16"):
            raise ImageConversionError(
                f"encoding {encoding!r} is not a camera colour image: vknet needs 8-bit rgb8, bgr8, "
                f"rgba8, bgra8 or mono8 (a depth or 16-bit image was probably remapped to the input)", "encoding")
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r}: expected one of {sorted(_COLOUR_ENCODINGS)}", "encoding")
    channels, order = _COLOUR_ENCODINGS[encoding]
    data = _checked_layout(msg, channels, "image")
    return channels, order, data


def _checked_layout(msg: Image, pixel_bytes: int, what: str) -> np.ndarray:
    """The data buffer (uint8) of an image whose size, step and length agree; raises the reason otherwise.

    Shared by colour and depth images, so that both refuse the same forgeries under the same reasons.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty {what} ({width}x{height})", "empty")
    if height * width > MAX_PIXELS:
        raise ImageConversionError(f"{what} of {width}x{height} exceeds the {MAX_PIXELS}-pixel limit", "too_large")
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(f"{what} step {step} is smaller than a row of {width} x {pixel_bytes} bytes = "
                                   f"{row_bytes} ({msg.encoding})", "step")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    needed = step * (height - 1) + row_bytes
    if data.size < needed:
        raise ImageConversionError(f"{what} data holds {data.size} bytes, {width}x{height} {msg.encoding} with step "
                                   f"{step} needs {needed}", "truncated")
    return data


@functools.cache
def cv_bridge() -> Any | None:
    """A ``cv_bridge.CvBridge`` when cv_bridge is installed (apt ROS), else None (the PyPI wheels have none)."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def decode_image(msg: Image, bridge: Any | None = None, *, copy: bool = True) -> np.ndarray:
    """The node's decoder: the same checks as :func:`image_msg_to_rgb`, then cv_bridge's conversion where it is
    installed (the reference ROS users know) and the numpy path otherwise. Both give identical pixels
    (tests/ros/test_conversions.py compares them where cv_bridge exists).

    Args:
        copy: False lets an rgb8 image come back as a view of ``msg.data`` (no copy of a camera
            frame); it is valid while the message is, which is how the node uses it.
    """
    channels, order, data = _checked(msg)
    bridge = bridge if bridge is not None else cv_bridge()
    if bridge is None or data.size < int(msg.step) * int(msg.height):  # cv_bridge needs every row padded
        return _to_rgb(msg, channels, order, data, copy)
    return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))


def decode_camera_image(msg: Image) -> tuple[np.ndarray, str]:
    """The node's decoder: (uint8 [H, W, 3], its channel order "rgb" or "bgr").

    An rgb8 or bgr8 frame comes back as a view of ``msg.data`` in its own channel order (valid while the
    message is): the pipeline folds the order into the copy it makes for the network, and the overlay reads
    it as it is, so a camera frame is never converted. Other encodings are decoded to RGB by
    :func:`decode_image`. Raises :class:`ImageConversionError` as :func:`image_msg_to_rgb` does.
    """
    channels, order, data = _checked(msg)
    if channels == 3:
        return _to_rgb(msg, channels, (0, 1, 2), data, copy=False), ("bgr" if order == (2, 1, 0) else "rgb")
    return decode_image(msg), "rgb"


def rgb_to_image_msg(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """Encode an RGB uint8 array [H, W, 3] as an rgb8 or bgr8 ``sensor_msgs/Image``."""
    from sensor_msgs.msg import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    if encoding == "bgr8":
        rgb = rgb[:, :, ::-1]
    elif encoding != "rgb8":
        raise ValueError(f"colour output encoding must be rgb8 or bgr8, got {encoding!r}")
    height, width = rgb.shape[:2]
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * 3, data=np.ascontiguousarray(rgb).tobytes())


def label_dtype(encoding: str) -> np.dtype:
    """The numpy dtype of a label image encoding (mono8, 16UC1, 32SC1)."""
    if encoding not in _LABEL_ENCODINGS:
        raise ValueError(f"label encoding must be one of {sorted(_LABEL_ENCODINGS)}, got {encoding!r}")
    return _LABEL_ENCODINGS[encoding]


def labels_to_serialized_image(labels: np.ndarray, header: Header, encoding: str) -> bytes:
    """Encode a label map [H, W] (semantic or panoptic ids) as a mono8, 16UC1 or 32SC1 ``sensor_msgs/Image``,
    already serialised: the CDR bytes, which ``Publisher.publish`` takes as they are.

    The node's label images go out this way because building the Python message would copy the pixels twice
    more (into its ``array.array``, then into rclpy's C message) and rmw would then serialise them once more.
    A map already in the encoding's dtype (the node's pipeline builds it so) needs no range check and no
    converted copy. tests/ros/test_conversions.py deserialises the bytes with rclpy and compares every field.

    Raises:
        ValueError: unknown encoding, or a label that does not fit the encoding's range (silently
            wrapping ids would corrupt every downstream consumer).
    """
    pixels = _label_pixels(labels, encoding)
    return _serialized_image(pixels, header, encoding)


def bgr_to_serialized_image(bgr: np.ndarray, header: Header) -> bytes:
    """Encode a BGR uint8 [H, W, 3] array (the overlay) as a serialised bgr8 ``sensor_msgs/Image``, like
    :func:`labels_to_serialized_image`."""
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {bgr.dtype} {list(bgr.shape)}")
    return _serialized_image(np.ascontiguousarray(bgr), header, "bgr8")


def _serialized_image(pixels: np.ndarray, header: Header, encoding: str) -> bytes:
    """CDR of a ``sensor_msgs/Image`` holding C-contiguous little-endian ``pixels`` [H, W] or [H, W, C]."""
    height, width = pixels.shape[:2]
    # Plain CDR, little endian (encapsulation 0x0001): each field aligned to its size from the body's start.
    body = bytearray(struct.pack("<iI", header.stamp.sec, header.stamp.nanosec))
    _cdr_string(body, header.frame_id)
    body += bytes(-len(body) % 4) + struct.pack("<II", height, width)
    _cdr_string(body, encoding)
    body.append(0)  # is_bigendian
    body += bytes(-len(body) % 4) + struct.pack("<II", pixels.nbytes // height, pixels.nbytes)  # step, data length
    return b"".join((b"\x00\x01\x00\x00", body, pixels))  # type: ignore[arg-type]  # join takes any buffer


def _cdr_string(body: bytearray, text: str) -> None:
    """Append a CDR string: uint32 length counting the terminating NUL, the UTF-8 bytes, the NUL."""
    raw = text.encode() + b"\0"
    body += struct.pack("<I", len(raw)) + raw


def _label_pixels(labels: np.ndarray, encoding: str) -> np.ndarray:
    """The label map as a C-contiguous little-endian array of the encoding's dtype (is_bigendian 0 on every
    host), after the range check; raises ValueError as :func:`labels_to_serialized_image` documents."""
    dtype = label_dtype(encoding)
    if labels.ndim != 2:
        raise ValueError(f"expected a label map [H, W], got shape {list(labels.shape)}")
    info = np.iinfo(dtype)
    if labels.dtype != dtype and labels.size and (int(labels.min()) < info.min or int(labels.max()) > info.max):
        raise ValueError(f"labels span [{labels.min()}, {labels.max()}], outside {encoding}'s "
                         f"[{info.min}, {info.max}]")
    return np.ascontiguousarray(labels, dtype=dtype.newbyteorder("<"))


def checked_intrinsics(msg: CameraInfo) -> tuple[Intrinsics | None, str]:
    """The intrinsics of a usable ``sensor_msgs/CameraInfo``, else (None, why).

    Usable: K and P finite, fx and fy above 1e-3 pixels, a non-zero image size. A NaN principal point had given
    NaN marker coordinates and fx = 1e-300 coordinates beyond 1e6 m.
    """
    values = [float(v) for v in (*msg.k, *msg.p)]
    if len(msg.k) != 9 or not all(math.isfinite(v) for v in values):
        return None, "camera_info K or P is not 9/12 finite numbers"
    fx, fy, cx, cy = float(msg.k[0]), float(msg.k[4]), float(msg.k[2]), float(msg.k[5])
    if fx <= 1e-3 or fy <= 1e-3:
        return None, f"camera_info focal lengths fx={fx:g}, fy={fy:g} are not above 1e-3 pixels"
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        return None, f"camera_info has no image size ({width}x{height})"
    return ((fx, fy, cx, cy), (width, height)), ""


def image_msg_to_labels(msg: Image) -> np.ndarray:
    """Decode a mono8 / 16UC1 / 32SC1 label image to an int array [H, W] (the inverse of the above)."""
    if msg.encoding not in _LABEL_ENCODINGS:
        raise ImageConversionError(f"label encoding {msg.encoding!r} is not one of {sorted(_LABEL_ENCODINGS)}",
                                   "encoding")
    dtype = _LABEL_ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height * width == 0 or step < width * dtype.itemsize or len(msg.data) < step * height:
        raise ImageConversionError(f"malformed {msg.encoding} image {width}x{height}, step {step}, "
                                   f"{len(msg.data)} bytes", "truncated")
    rows = np.frombuffer(msg.data, dtype=np.uint8)[: step * height].reshape(height, step)
    wire_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    return rows[:, : width * dtype.itemsize].copy().view(wire_dtype).reshape(height, width)


def depth_msg_to_metres(msg: Image) -> np.ndarray:
    """A REP 118 depth image (16UC1 millimetres or 32FC1 metres, either byte order, any row padding) as
    float32 metres [H, W] with NaN where there is no depth (0, NaN, inf or negative).

    Raises:
        ImageConversionError: another encoding ("encoding"), an empty or oversized image, a step below a row,
            or data shorter than declared, under the same reasons as colour images.
    """
    encoding = msg.encoding
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(f"depth encoding {encoding!r} is not 16UC1 (millimetres) or 32FC1 (metres), "
                                   f"REP 118", "encoding")
    dtype = np.dtype(np.uint16 if encoding == "16UC1" else np.float32)
    data = _checked_layout(msg, dtype.itemsize, "depth image")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * dtype.itemsize
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))
    values = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    return depth_in_metres(values.reshape(height, width), encoding)


def compressed_msg_to_rgb(msg: CompressedImage, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG ``sensor_msgs/CompressedImage`` to RGB uint8 [H, W, 3]; errors as
    :func:`decode_compressed` (a damaged JPEG is refused)."""
    return np.ascontiguousarray(decode_compressed(msg, max_pixels)[0][:, :, ::-1])


def decode_compressed(msg: CompressedImage, max_pixels: int = MAX_PIXELS, *,
                      keep_damaged: bool = False) -> tuple[np.ndarray, str]:
    """Decode a JPEG/PNG ``sensor_msgs/CompressedImage`` to BGR uint8 [H, W, 3] (OpenCV's order, which the node
    takes as it is), and what damage the decoder found ("" for none; only ever set with ``keep_damaged``).

    The format comes from the data's signature (``msg.format`` is free text). The size is read from the header
    before any pixel is decoded: a 630-byte JPEG can claim 30000x30000 pixels, and decoding it first took 5.6 GB.
    JPEGs go through libjpeg-turbo in strict mode (simplejpeg), which reports what libjpeg only warns about: a
    byte-flipped or truncated JPEG still decodes to a partial picture, which OpenCV returned as a good frame
    (32 of 32 flipped files) while printing an unthrottled line to stderr. With ``keep_damaged`` that partial
    picture is returned with the damage; without, the JPEG is refused before a second decode is spent on it.
    PNGs go through Pillow, which checks the chunk CRCs and zlib stream and prints nothing.

    Raises:
        ImageConversionError: ``empty`` data; ``too_large`` over ``max_pixels``; ``encoding`` for a PNG that is
            not 8-bit grey/colour (16-bit PNGs are depth or raw sensor data, not camera colour);
            ``corrupt_compressed`` for a JPEG whose header reads but whose data is damaged (unless kept);
            ``undecodable`` for data that is neither JPEG nor PNG or yields no picture at all.
    """
    data = bytes(msg.data)
    if not data:
        raise ImageConversionError(f"compressed image ({msg.format!r}) holds no data", "empty")
    if data.startswith(_JPEG_SIGNATURE):
        return _decode_jpeg(data, msg.format, max_pixels, keep_damaged)
    if data.startswith(_PNG_SIGNATURE):
        return _decode_png(data, msg.format, max_pixels), ""
    raise ImageConversionError(f"compressed image ({msg.format!r}, {len(data)} bytes) is neither JPEG nor PNG "
                               f"(starts {data[:8].hex()})", "undecodable")


def _check_size(width: int, height: int, fmt: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageConversionError(f"compressed image ({fmt!r}) claims {width}x{height}, over the "
                                   f"{max_pixels}-pixel limit", "too_large")
    if width * height == 0:
        raise ImageConversionError(f"compressed image ({fmt!r}) claims {width}x{height}", "empty")


def _decode_jpeg(data: bytes, fmt: str, max_pixels: int, keep_damaged: bool) -> tuple[np.ndarray, str]:
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise ImageConversionError(f"compressed image ({fmt!r}, {len(data)} bytes) has no readable JPEG "
                                   f"header: {exc}", "undecodable") from exc
    _check_size(width, height, fmt, max_pixels)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True), ""
    except ValueError as strict_error:
        damage = f"damaged JPEG ({fmt!r}, {len(data)} bytes): {strict_error}"
        if not keep_damaged:
            raise ImageConversionError(damage, "corrupt_compressed") from strict_error
    try:  # what libjpeg makes of it anyway: a partial picture for recoverable damage
        return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False), damage
    except ValueError as exc:
        raise ImageConversionError(f"cannot decode JPEG ({fmt!r}, {len(data)} bytes): {exc}",
                                   "undecodable") from exc


def _decode_png(data: bytes, fmt: str, max_pixels: int) -> np.ndarray:
    import io
    import warnings

    from PIL import Image as PILImage

    with warnings.catch_warnings():
        # Pillow's own bomb guard warns (or raises) on huge sizes; the node's limit is applied here instead.
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            image = PILImage.open(io.BytesIO(data), formats=("PNG",))
        except PILImage.DecompressionBombError as exc:
            raise ImageConversionError(f"compressed image ({fmt!r}) claims an absurd size: {exc}",
                                       "too_large") from exc
        except Exception as exc:  # Pillow raises several types (UnidentifiedImageError, SyntaxError, struct.error)
            raise ImageConversionError(f"compressed image ({fmt!r}, {len(data)} bytes) has no readable PNG "
                                       f"header: {type(exc).__name__}: {exc}", "undecodable") from exc
        with image:
            _check_size(*image.size, fmt, max_pixels)
            if image.mode not in _PNG_MODES:
                raise ImageConversionError(f"PNG ({fmt!r}) of mode {image.mode} is not 8-bit grey or colour",
                                           "encoding")
            try:
                rgb = np.asarray(image.convert("RGB"))
            except Exception as exc:  # zlib, CRC and truncation errors surface here as OSError/SyntaxError
                raise ImageConversionError(f"cannot decode PNG ({fmt!r}, {len(data)} bytes): {type(exc).__name__}: "
                                           f"{exc}", "undecodable") from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])
