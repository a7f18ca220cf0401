"""Camera + ground-truth rosbags: write them from KITTI-STEP / raw-KITTI folders, read them back as frames.

Bag layout written by :func:`write_bag` (rosbag2, version 8 so that ROS 2 Humble can read it; mcap or sqlite3):

  /camera/image_raw        sensor_msgs/Image        rgb8 or bgr8
  /camera/camera_info      sensor_msgs/CameraInfo   from the calibration file (KITTI P2)
  /ground_truth/panoptic   sensor_msgs/Image        32SC1, class * divisor + instance (void 255, crowd = instance 0)
  /camera/depth/image_raw  sensor_msgs/Image        16UC1 millimetres, 0 = none (REP 118), registered to the image;
                                                    where the folder has depth/<split>/<seq>/ (`vknet synth --depth`)

All three messages of a frame carry the same header stamp, which is also the bag time. Sequences follow each
other with a gap of ``SEQUENCE_GAP_S`` so that anything replaying the bag (the Pipeline, the node) resets its
tracker between them, by the same rule it uses for a live camera (time gap > ``reset_gap_s``).

:class:`BagReader` reads those bags, rosbag2 bags recorded from a camera, and ROS 1 bags such as kitti2bag's,
all through ``rosbags``. A bag whose file was cut short (a crashed recorder, a partial copy) is reported with a
clear message; for mcap the messages before the damage are still recovered and used (rosbags cannot open an
mcap without its footer, so the file is streamed record by record with the ``mcap`` library, up to the last
complete chunk of about 1 MiB). A cut sqlite3 or ROS 1 bag cannot be salvaged: a :class:`BagError` says so.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vknet_model.errors import VKNetError
from vknet_model.resets import video_break
from vknet_ros.conversions import ImageConversionError, compressed_msg_to_rgb, image_msg_to_labels, image_msg_to_rgb

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

_LOG = logging.getLogger(__name__)

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GT_TOPIC = "/ground_truth/panoptic"
DEPTH_TOPIC = "/camera/depth/image_raw"
FRAME_ID = "camera"
SEQUENCE_GAP_S = 2.0          # > the pipeline's default reset_gap_s (1 s)
DEFAULT_START_NS = 1_700_000_000 * 10**9  # stamps of synthetic / KITTI-STEP bags start here (no real clock)
SEQUENCES_KEY = "vknet.sequences"  # custom_data entry: comma-separated sequence names in bag order
MCAP_MAGIC = b"\x89MCAP0\r\n"
_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/Image")
_COMPRESSED_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/CompressedImage")


class BagError(VKNetError, ValueError):
    """A bag that cannot be written or read as asked; the message names the bag and what to do."""


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics (3x4 projection P, as in KITTI's calib files) for camera_info."""

    width: int
    height: int
    projection: tuple[float, ...]  # 12 values, row-major 3x4


@dataclass(frozen=True)
class SequenceSource:
    """One sequence to write: image files in order, their stamps, optional ground-truth loaders."""

    name: str
    images: tuple[Path, ...]
    stamps_ns: tuple[int, ...]
    labels: tuple[Callable[[], np.ndarray], ...] | None = None
    camera: Camera | None = None
    depths: tuple[Path, ...] | None = None  # 16-bit millimetre PNGs registered to the images


@dataclass(frozen=True)
class BagFrame:
    """One camera frame read from a bag, with its ground truth when the bag has it."""

    sequence: str
    index: int  # position within the sequence
    stamp_ns: int
    frame_id: str
    image: np.ndarray  # RGB uint8 [H, W, 3]
    panoptic: np.ndarray | None  # int32 [H, W], class * divisor + instance

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns * 1e-9


@dataclass
class BagWriteReport:
    path: Path
    sequences: int = 0
    frames: int = 0
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class BagReadReport:
    """What a read saw; ``damage`` is set when the file was cut short or corrupt and reading stopped early."""

    path: Path
    image_topic: str = ""
    gt_topic: str | None = None
    messages: int = 0
    frames: int = 0
    frames_without_gt: int = 0
    undecodable: int = 0        # image or ground-truth messages that deserialised but hold no usable picture
    unreadable: int = 0         # records that could not be deserialised (a corrupt string, a short buffer)
    gt_without_image: int = 0   # ground-truth messages with no image at their stamp
    index_images: int | None = None  # image messages the bag's index lists (None: no index, e.g. a salvaged file)
    image_messages: int = 0     # image messages actually read
    sequences: list[str] = field(default_factory=list)
    damage: str | None = None
    skipped: list[str] = field(default_factory=list)  # damaged chunks skipped, reading went on after them
    errors: list[str] = field(default_factory=list)

    @property
    def lost_images(self) -> int:
        """Image messages the index lists that were never read: damaged records the storage skipped, or the
        part of the file after damage. Zero when the bag has no index to compare with."""
        return max(0, self.index_images - self.image_messages) if self.index_images is not None else 0

    def problems(self) -> list[str]:
        """One line per way frames went missing or unpaired (empty for a clean read)."""
        lines = []
        if self.lost_images:
            lines.append(f"{self.lost_images} of the {self.index_images} image messages the bag's index lists were "
                         f"never read (damaged records)")
        if self.skipped:
            lines.append(f"{len(self.skipped)} damaged part(s) skipped, reading went on: {'; '.join(self.skipped[:3])}")
        if self.unreadable:
            lines.append(f"{self.unreadable} record(s) could not be deserialised, first: {self.errors[0]}")
        if self.gt_without_image:
            lines.append(f"{self.gt_without_image} ground-truth message(s) on {self.gt_topic} have no image at "
                         f"their stamp")
        if self.frames_without_gt:
            lines.append(f"{self.frames_without_gt} frame(s) have no ground truth on {self.gt_topic}")
        if self.undecodable:
            lines.append(f"{self.undecodable} frame(s) could not be decoded")
        if self.damage:
            lines.append(f"the bag is damaged ({self.damage}); reading stopped there, the {self.frames} readable "
                         f"frames before it are used")
        return lines


def ros2_typestore() -> Typestore:
    """The ROS 2 message definitions the bags are written and read with."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def parse_kitti_projection(text: str, keys: Sequence[str] = ("P2:", "P_rect_02:")) -> tuple[float, ...] | None:
    """The 3x4 projection of the left colour camera from a KITTI calib file (odometry or raw layout)."""
    for line in text.splitlines():
        for key in keys:
            if line.startswith(key):
                values = [float(v) for v in line[len(key):].split()]
                if len(values) != 12:
                    raise BagError(f"calibration line {key} has {len(values)} values, expected 12")
                return tuple(values)
    return None


def kitti_step_sources(root: str | Path, split: str, *, rate_hz: float = 10.0, label_divisor: int = 1000,
                       start_ns: int = DEFAULT_START_NS, with_labels: bool = True) -> list[SequenceSource]:
    """Sequences of a KITTI-STEP-layout folder with stamps at ``rate_hz`` and a gap between sequences."""
    import cv2

    from vknet_data.datasets import DatasetError, kitti_step_sequences

    if rate_hz <= 0:
        raise BagError(f"--rate must be positive, got {rate_hz}")
    try:
        sequences = kitti_step_sequences(root, split, label_divisor)
    except DatasetError as exc:
        raise BagError(str(exc)) from exc
    period = round(1e9 / rate_hz)
    sources, stamp = [], start_ns
    for seq in sequences:
        first = cv2.imread(str(seq.images[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise BagError(f"cannot read image {seq.images[0]}")
        calib = Path(root) / "calib" / split / f"{seq.name}.txt"
        projection = parse_kitti_projection(calib.read_text()) if calib.is_file() else None
        if projection is None:
            _LOG.warning("no calibration for sequence %s (%s): camera_info gets a centred pinhole guess",
                         seq.name, calib)
            projection = _guess_projection(first.shape[1], first.shape[0])
        stamps = tuple(stamp + i * period for i in range(len(seq)))
        sources.append(SequenceSource(seq.name, seq.images, stamps, seq.labels if with_labels else None,
                                      Camera(first.shape[1], first.shape[0], projection),
                                      _depth_files(Path(root) / "depth" / split / seq.name, seq.images)))
        stamp = stamps[-1] + round(SEQUENCE_GAP_S * 1e9)
    return sources


def _depth_files(folder: Path, images: Sequence[Path]) -> tuple[Path, ...] | None:
    """The sequence's depth PNGs, one per image by name; None without a depth folder."""
    if not folder.is_dir():
        return None
    depths = tuple(folder / image.name for image in images)
    missing = [str(p) for p in depths if not p.is_file()]
    if missing:
        raise BagError(f"{len(missing)} depth image(s) missing in {folder}, e.g. {missing[0]}")
    return depths


def _guess_projection(width: int, height: int) -> tuple[float, ...]:
    focal = 721.5377 * width / 1242.0  # KITTI's left colour camera, scaled to the image width
    return (focal, 0.0, width / 2, 0.0, 0.0, focal, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0)


def _camera_info(store: Typestore, camera: Camera, header: Any) -> Any:
    cls = store.types["sensor_msgs/msg/CameraInfo"]
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False)
    p = np.array(camera.projection, dtype=np.float64)
    k = np.array([p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10]], dtype=np.float64)
    return cls(header=header, height=camera.height, width=camera.width, distortion_model="plumb_bob",
               d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)


def write_bag(out: str | Path, sources: Sequence[SequenceSource], *, storage: str = "mcap", encoding: str = "rgb8",
              progress: bool = True) -> BagWriteReport:
    """Write ``sources`` into a new rosbag2 folder ``out`` (version 8); return what was written.

    The bag is written in a hidden folder beside ``out`` and renamed to ``out`` only once complete: a failed
    or interrupted write leaves nothing that a rerun would refuse ("already exists") or a reader would take
    for a bag.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
    from tqdm import tqdm

    out = Path(out)
    if storage not in ("mcap", "sqlite3"):
        raise BagError(f"storage must be mcap or sqlite3, got {storage!r}")
    if encoding not in ("rgb8", "bgr8"):
        raise BagError(f"image encoding must be rgb8 or bgr8, got {encoding!r}")
    if out.exists():
        raise BagError(f"{out} already exists: rosbag2 writes a new folder, choose another --out or remove it")
    if not sources:
        raise BagError("nothing to write: no sequences")
    store = ros2_typestore()
    report = BagWriteReport(out)
    start = time.perf_counter()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    total = sum(len(s.images) for s in sources)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise BagError(f"cannot write {out}: {exc}") from exc
    writer = Writer(staging / out.name, version=8, storage_plugin=plugin)  # the file inside keeps out's name
    writer.set_custom_data(SEQUENCES_KEY, ",".join(s.name for s in sources))
    try:
        # The context manager writes metadata.yaml on success and aborts the storage on any error.
        with writer, tqdm(total=total, unit="frame", desc=f"bag {out.name}", disable=not progress) as bar:
            topics = {IMAGE_TOPIC: "sensor_msgs/msg/Image", CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo"}
            if any(s.labels is not None for s in sources):
                topics[GT_TOPIC] = "sensor_msgs/msg/Image"
            if any(s.depths is not None for s in sources):
                topics[DEPTH_TOPIC] = "sensor_msgs/msg/Image"
            conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in topics.items()}
            for source in sources:
                if len(source.stamps_ns) != len(source.images):
                    raise BagError(f"sequence {source.name}: {len(source.images)} images, "
                                   f"{len(source.stamps_ns)} stamps")
                for i, stamp in enumerate(source.stamps_ns):
                    for topic, msg in _frame_messages(store, source, i, encoding).items():
                        writer.write(conns[topic], stamp, store.serialize_cdr(msg, topics[topic]))
                        report.messages += 1
                    report.frames += 1
                    bar.update(1)
                report.sequences += 1
        if storage == "mcap":
            _rewrite_with_checksums(next((staging / out.name).glob("*.mcap")))
        (staging / out.name).rename(out)
    except (OSError, WriterError) as exc:
        raise BagError(f"cannot write {out}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.bytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    report.seconds = time.perf_counter() - start
    return report


def _rewrite_with_checksums(file: Path) -> None:
    """Rewrite an mcap file record for record with CRC-32s over every chunk and the data section.

    The rosbags writer leaves every CRC at 0 ("none"), so a flipped byte in a stored image went unnoticed and
    a flipped byte in a record header silently lost a frame. The mcap library's writer computes them, and both
    rosbags and the mcap reader check a non-zero CRC when reading.
    """
    from mcap.records import Channel, Header, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader
    from mcap.writer import CompressionType, Writer

    checked = file.with_name(file.name + ".crc")
    schema_ids: dict[int, int] = {}
    channel_ids: dict[int, int] = {}
    with file.open("rb") as source, checked.open("wb") as target:
        writer = Writer(target, compression=CompressionType.NONE, enable_crcs=True, enable_data_crcs=True)
        for record in StreamReader(source).records:
            if isinstance(record, Header):
                writer.start(profile=record.profile, library=record.library)
            elif isinstance(record, Schema):
                schema_ids[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel):
                channel_ids[record.id] = writer.register_channel(record.topic, record.message_encoding,
                                                                 schema_ids.get(record.schema_id, 0), record.metadata)
            elif isinstance(record, Message):
                writer.add_message(channel_ids[record.channel_id], record.log_time, record.data, record.publish_time,
                                   record.sequence)
            elif isinstance(record, Metadata):
                writer.add_metadata(record.name, record.metadata)
        writer.finish()
    checked.replace(file)


def _frame_messages(store: Typestore, source: SequenceSource, i: int, encoding: str) -> dict[str, Any]:
    """Topic -> message of frame ``i`` of ``source``: the image, its camera_info and its ground truth (the
    last two when the source has them), all with one header."""
    import cv2

    from vknet_data.datasets import DatasetError

    path, stamp = source.images[i], source.stamps_ns[i]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BagError(f"cannot read image {path} (missing, truncated or not an image)")
    pixels = bgr if encoding == "bgr8" else bgr[:, :, ::-1]
    image_cls = store.types["sensor_msgs/msg/Image"]
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=FRAME_ID)
    height, width = pixels.shape[:2]
    messages = {IMAGE_TOPIC: image_cls(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                                       step=width * 3, data=np.ascontiguousarray(pixels).reshape(-1))}
    if source.camera is not None:
        messages[CAMERA_INFO_TOPIC] = _camera_info(store, source.camera, header)
    if source.depths is not None:
        depth = cv2.imread(str(source.depths[i]), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.dtype != np.uint16 or depth.shape != (height, width):
            raise BagError(f"depth {source.depths[i]} is not a {width}x{height} 16-bit PNG (millimetres)")
        messages[DEPTH_TOPIC] = image_cls(header=header, height=height, width=width, encoding="16UC1",
                                          is_bigendian=0, step=width * 2,
                                          data=np.ascontiguousarray(depth, dtype="<u2").view(np.uint8).reshape(-1))
    if source.labels is not None:
        try:
            panoptic = source.labels[i]()
        except DatasetError as exc:
            raise BagError(str(exc)) from exc
        if panoptic.shape != (height, width):
            raise BagError(f"label of {path} is {panoptic.shape}, image is {(height, width)}")
        messages[GT_TOPIC] = image_cls(header=header, height=height, width=width, encoding="32SC1", is_bigendian=0,
                                       step=width * 4,
                                       data=np.ascontiguousarray(panoptic, dtype="<i4").view(np.uint8).reshape(-1))
    return messages


def _bag_paths(path: Path) -> Path:
    """A rosbag2 folder, a file inside one, or a ROS 1 ``.bag`` -> what ``AnyReader`` opens."""
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_file() and path.suffix in (".mcap", ".db3") and (path.parent / "metadata.yaml").is_file():
        return path.parent
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        # An mcap file is self-describing: a folder holding one (metadata.yaml lost, or never written by a
        # recorder other than ros2 bag) is read as that file.
        mcaps = sorted(path.glob("*.mcap"))
        if len(mcaps) == 1:
            return mcaps[0]
        raise BagError(f"{path} is a folder without metadata.yaml: not a rosbag2 bag" + (
            f" (and it holds {len(mcaps)} .mcap files: pass one of them)" if mcaps else ""))
    return path


def open_any_reader(path: str | Path) -> Any:
    """An opened rosbags ``AnyReader`` on a rosbag2 folder, a file inside one, or a ROS 1 ``.bag`` (for
    playing it message by message); BagError with the reason for anything it cannot open."""
    from rosbags.highlevel import AnyReader

    reader = AnyReader([_bag_paths(Path(path))], default_typestore=ros2_typestore())
    try:
        reader.open()
    except Exception as exc:  # rosbags meets damaged files with many types (see BagReader.frames)
        raise BagError(f"cannot open bag {path}: {type(exc).__name__}: {exc}") from exc
    return reader


def _sequence_names(path: Path) -> list[str]:
    """Sequence names recorded by :func:`write_bag` in the bag's custom data (empty for other bags)."""
    import yaml

    meta = path / "metadata.yaml"
    if not meta.is_file():
        return []
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        names = (info.get("custom_data") or {}).get(SEQUENCES_KEY, "")
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []
    return [n for n in str(names).split(",") if n]


class BagReader:
    """Frames (image + optional ground truth) of a bag in time order, split into sequences.

    Args:
        path: rosbag2 folder (mcap or sqlite3), a file inside one, or a ROS 1 ``.bag`` (kitti2bag).
        image_topic: camera topic; default: ``/camera/image_raw`` if present, else the only Image or
            CompressedImage topic whose name contains "image" (kitti2bag: the colour left camera).
        gt_topic: ground-truth panoptic topic; default ``/ground_truth/panoptic`` when the bag has it.
        reset_gap_s: a new sequence starts where the Pipeline would reset its tracker: the frame_id
            changes, time goes backwards or jumps forward by more than this.
    """

    def __init__(self, path: str | Path, *, image_topic: str | None = None, gt_topic: str | None = None,
                 reset_gap_s: float = 1.0) -> None:
        self.path = _bag_paths(Path(path))
        self.image_topic_arg, self.gt_topic_arg = image_topic, gt_topic
        self.reset_gap_ns = round(reset_gap_s * 1e9)
        self.report = BagReadReport(self.path)

    def _choose_topics(self, topics: dict[str, str]) -> tuple[str, str | None]:
        """topics: name -> message type. Returns (image topic, ground-truth topic or None)."""
        images = {t: ty for t, ty in topics.items() if ty in _IMAGE_TYPES + _COMPRESSED_TYPES}
        if self.image_topic_arg is not None:
            if self.image_topic_arg not in images:
                raise BagError(f"{self.path}: no image topic {self.image_topic_arg!r}; image topics: "
                               f"{sorted(images) or 'none'}")
            image_topic = self.image_topic_arg
        elif IMAGE_TOPIC in images:
            image_topic = IMAGE_TOPIC
        else:
            candidates = [t for t in images if "image" in t and t != GT_TOPIC and "depth" not in t]
            colour = [t for t in candidates if "color" in t or "colour" in t]
            preferred = sorted(c for c in colour if "left" in c) or sorted(colour) or sorted(candidates)
            if not preferred:
                raise BagError(f"{self.path}: no camera image topic; topics: {sorted(topics)}")
            image_topic = preferred[0]
            if len(candidates) > 1:
                _LOG.info("%s: using image topic %s of %s (choose with --image-topic)", self.path, image_topic,
                          sorted(candidates))
        if self.gt_topic_arg is not None and self.gt_topic_arg not in images:
            raise BagError(f"{self.path}: no ground-truth topic {self.gt_topic_arg!r}")
        gt_topic = self.gt_topic_arg or (GT_TOPIC if GT_TOPIC in images else None)
        return image_topic, gt_topic

    def frame_count(self) -> int | None:
        """Messages on the image topic by the bag's index (None for a bag that cannot be opened whole)."""
        from rosbags.highlevel import AnyReader

        try:
            with AnyReader([self.path], default_typestore=ros2_typestore()) as reader:
                image_topic, _ = self._choose_topics({c.topic: c.msgtype for c in reader.connections})
                return sum(c.msgcount for c in reader.connections if c.topic == image_topic) or None
        except Exception:  # a damaged bag: frames() reports it; a progress bar just has no total
            return None

    def frames(self) -> Iterator[BagFrame]:
        """Yield every frame; damaged files end the iteration early with ``report.damage`` set and logged."""
        from rosbags.highlevel import AnyReader, AnyReaderError
        from rosbags.rosbag2 import ReaderError

        try:
            reader = AnyReader([self.path], default_typestore=ros2_typestore())
            reader.open()
        except (AnyReaderError, ReaderError, OSError, ValueError, struct.error, TypeError) as exc:
            # (rosbags meets a file cut very short with struct.error or TypeError, not its own errors)
            salvage = self._salvage_source(exc)
            yield from self._assemble(salvage)
            return
        try:
            topics = {c.topic: c.msgtype for c in reader.connections}
            image_topic, gt_topic = self._choose_topics(topics)
            wanted = [c for c in reader.connections if c.topic in (image_topic, gt_topic)]
            self.report.image_topic, self.report.gt_topic = image_topic, gt_topic
            self.report.index_images = sum(c.msgcount for c in wanted if c.topic == image_topic)
            yield from self._assemble(self._indexed_messages(reader, wanted))
        finally:
            reader.close()

    def _indexed_messages(self, reader: Any, wanted: list[Any]) -> Iterator[tuple[str, object]]:
        """Messages of an opened bag in time order. A damaged mcap chunk (checksum or structure) is skipped
        and reading resumes after it, so one flipped byte costs that chunk's frames, not the rest of the bag;
        a record that does not deserialise is counted with its topic, time and position."""
        start: int | None = None
        last_time = -1
        position = 0
        while True:
            try:
                for conn, time_ns, raw in reader.messages(connections=wanted, start=start):
                    position += 1
                    last_time = time_ns
                    try:
                        msg = reader.deserialize(raw, conn.msgtype)
                    except Exception as exc:  # rosbags meets corrupt bytes with many types (UnicodeDecodeError...)
                        self._unreadable(conn.topic, f"record {position} on {conn.topic} at bag time {time_ns} ns: "
                                                     f"{type(exc).__name__}: {exc}")
                        continue
                    yield conn.topic, msg
                return
            except Exception as exc:  # rosbags' storage readers raise ReaderError, OverflowError, struct.error...
                why = f"{type(exc).__name__}: {exc}"
                resume = _chunk_end_after(self.path, last_time)
                if resume is None:
                    self._damaged(why)
                    return
                self.report.skipped.append(f"the chunk ending at bag time {resume} ns ({why})")
                _LOG.warning("%s: skipping a damaged chunk ending at bag time %d ns (%s)", self.path, resume, why)
                start = resume + 1
                last_time = resume

    def _unreadable(self, topic: str, detail: str) -> None:
        """A record read from storage that did not deserialise: counted (an image one as read, so it is not
        also reported lost) with where it was."""
        self.report.unreadable += 1
        self.report.errors.append(detail)
        if topic == self.report.image_topic:
            self.report.image_messages += 1

    def _damaged(self, why: str) -> None:
        self.report.damage = why

    def _salvage_source(self, exc: Exception) -> Iterator[tuple[str, object]]:
        """After a failed open: stream the mcap file record by record up to the damage (mcap only)."""
        if self.path.is_dir():
            files = sorted(self.path.glob("*.mcap"))
        else:
            files = [self.path] if self.path.suffix == ".mcap" else []
        if not files:
            raise BagError(f"cannot open bag {self.path}: {exc}. sqlite3 and ROS 1 bags cut short cannot be "
                           f"recovered (record to mcap: ros2 bag record -s mcap)") from exc
        return self._salvage_mcap(files, str(exc))

    def _salvage_mcap(self, files: list[Path], why: str) -> Iterator[tuple[str, object]]:
        from mcap.exceptions import McapError
        from mcap.records import Channel, Message, Schema
        from rosbags.typesys import get_types_from_msg

        store = ros2_typestore()
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}  # id -> (topic, message type)
        chosen: tuple[str, str | None] | None = None
        for file in files:
            with file.open("rb") as stream:
                try:
                    for position, record in enumerate(self._checked_records(file, stream), 1):
                        if isinstance(record, Schema):
                            schemas[record.id] = record.name
                            if record.name not in store.types and record.data:
                                store.register(get_types_from_msg(record.data.decode(), record.name))
                        elif isinstance(record, Channel):
                            channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))
                        elif isinstance(record, Message) and record.channel_id in channels:
                            topic, msgtype = channels[record.channel_id]
                            if chosen is None:
                                chosen = self._choose_topics({t: ty for t, ty in channels.values()})
                                self.report.image_topic, self.report.gt_topic = chosen
                            if topic not in chosen:
                                continue
                            try:
                                msg = store.deserialize_cdr(record.data, msgtype)
                            except Exception as exc:  # corrupt bytes that passed no CRC (none was written)
                                self._unreadable(topic, f"{file.name} record {position} on {topic} at bag time "
                                                        f"{record.log_time} ns: {type(exc).__name__}: {exc}")
                                continue
                            yield topic, msg
                except (McapError, EOFError, ValueError, KeyError, struct.error, TypeError) as exc:
                    # The mcap stream reader meets a cut-off record in many forms: struct.error for a short
                    # read, TypeError for an empty one, UnicodeDecodeError (a ValueError) for a cut string.
                    self._damaged(f"{why.rstrip('.')}; {file.name} ends at a cut-off or damaged record "
                                  f"({type(exc).__name__}: {exc})")
                    return
        self._damaged(why)

    def _checked_records(self, file: Path, stream: Any) -> Iterator[Any]:
        """The records of an mcap stream, chunks opened; a chunk whose CRC fails is skipped and noted, and a
        damaged signature alone does not cost the records behind it."""
        from mcap.records import Chunk
        from mcap.stream_reader import StreamReader, breakup_chunk

        damaged_magic = stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC
        if damaged_magic:
            self.report.skipped.append(f"{file.name} has a damaged mcap signature")
        stream.seek(len(MCAP_MAGIC) if damaged_magic else 0)
        for record in StreamReader(stream, skip_magic=damaged_magic, emit_chunks=True).records:
            if not isinstance(record, Chunk):
                yield record
                continue
            try:
                yield from breakup_chunk(record, validate_crc=True)
            except ValueError as exc:  # CRCValidationError, or a chunk whose inner records are cut
                self.report.skipped.append(f"{file.name}: the chunk ending at bag time {record.message_end_time} ns "
                                           f"({exc})")

    def _assemble(self, messages: Iterable[tuple[str, object]]) -> Iterator[BagFrame]:
        """Group messages by header stamp into frames and split the frames into sequences."""
        splitter = _SequenceSplitter(_sequence_names(self.path) if self.path.is_dir() else [], self.reset_gap_ns)
        group: dict[str, object] = {}
        group_stamp = -1
        for topic, msg in messages:
            self.report.messages += 1
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec  # type: ignore[attr-defined]
            if stamp != group_stamp and group:
                yield from self._frame(group, group_stamp, splitter)
                group = {}
            group_stamp = stamp
            if topic == self.report.gt_topic:
                group["gt"] = msg
            else:
                self.report.image_messages += 1
                group["image"] = msg
        if group:
            yield from self._frame(group, group_stamp, splitter)
        self.report.sequences = splitter.names_seen
        for line in self.report.problems():
            _LOG.warning("%s: %s", self.path, line)

    def _frame(self, group: dict[str, Any], stamp: int, splitter: _SequenceSplitter) -> Iterator[BagFrame]:
        image_msg, gt_msg = group.get("image"), group.get("gt")
        if image_msg is None:
            self.report.gt_without_image += 1
            return
        try:
            if type(image_msg).__name__.endswith("CompressedImage"):
                image = compressed_msg_to_rgb(image_msg)
            else:
                image = image_msg_to_rgb(image_msg)
            panoptic = image_msg_to_labels(gt_msg).astype(np.int32) if gt_msg is not None else None
        except ImageConversionError as exc:
            self.report.undecodable += 1
            self.report.errors.append(f"stamp {stamp}: {exc}")
            _LOG.warning("%s: skipping the frame at stamp %d: %s", self.path, stamp, exc)
            return
        sequence, index = splitter.place(stamp, image_msg.header.frame_id)
        if self.report.gt_topic is not None and panoptic is None:
            self.report.frames_without_gt += 1
        self.report.frames += 1
        yield BagFrame(sequence, index, stamp, image_msg.header.frame_id, image, panoptic)


def _chunk_end_after(path: Path, time_ns: int) -> int | None:
    """The end time of the first mcap chunk holding messages after ``time_ns``, by the file's chunk index
    (None: not an mcap with a readable index, or no such chunk)."""
    from mcap.reader import make_reader

    files = sorted(path.glob("*.mcap")) if path.is_dir() else [path] if path.suffix == ".mcap" else []
    for file in files:
        try:
            with file.open("rb") as stream:
                summary = make_reader(stream).get_summary()
        except Exception:  # the index itself is damaged: nothing to resume by
            continue
        ends = sorted(c.message_end_time for c in (summary.chunk_indexes if summary else [])
                      if c.message_end_time > time_ns)
        if ends:
            return ends[0]
    return None


class _SequenceSplitter:
    """Names frames' sequences by the Pipeline's reset rule (:func:`vknet_model.resets.video_break`)."""

    def __init__(self, names: list[str], reset_gap_ns: int) -> None:
        self.names, self.reset_gap_ns = names, reset_gap_ns
        self.names_seen: list[str] = []
        self.last_stamp: int | None = None
        self.last_frame_id = ""
        self.index = 0

    def place(self, stamp: int, frame_id: str) -> tuple[str, int]:
        last = self.last_stamp
        if last is None or video_break(last / 1e9, self.last_frame_id, stamp / 1e9, frame_id, self.reset_gap_ns / 1e9):
            k = len(self.names_seen)
            self.names_seen.append(self.names[k] if k < len(self.names) else f"{k:04d}")
            self.index = 0
        else:
            self.index += 1
        self.last_stamp, self.last_frame_id = stamp, frame_id
        return self.names_seen[-1], self.index


def _parse_kitti_timestamp(text: str) -> int:
    """'2011-09-26 13:02:25.964389445' (raw KITTI, nanosecond digits) -> ns since the epoch (UTC)."""
    from datetime import datetime, timezone

    day, _, clock = text.strip().partition(" ")
    whole, _, fraction = clock.partition(".")
    base = datetime.strptime(f"{day} {whole}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(base.timestamp()) * 10**9 + int((fraction + "000000000")[:9])


def raw_kitti_sources(drive: str | Path, camera: str = "image_02") -> list[SequenceSource]:
    """One unlabelled sequence from a raw-KITTI drive folder (``<date>_drive_<n>_sync``).

    Reads ``<drive>/<camera>/data/*.png`` with ``<camera>/timestamps.txt`` (real stamps) and the
    projection ``P_rect_<cam>`` from ``<date>/calib_cam_to_cam.txt`` when present.
    """
    import cv2

    drive = Path(drive)
    data = drive / camera / "data"
    images = tuple(sorted(data.glob("*.png")))
    if not images:
        raise BagError(f"{data} holds no .png frames: expected a raw-KITTI drive folder "
                       f"(<date>_drive_<n>_sync/{camera}/data/0000000000.png)")
    stamps_file = drive / camera / "timestamps.txt"
    if not stamps_file.is_file():
        raise BagError(f"{stamps_file} is missing: raw KITTI ships one stamp per frame there")
    lines = [line for line in stamps_file.read_text().splitlines() if line.strip()]
    if len(lines) != len(images):
        raise BagError(f"{stamps_file} has {len(lines)} stamps for {len(images)} images")
    try:
        stamps = tuple(_parse_kitti_timestamp(line) for line in lines)
    except ValueError as exc:
        raise BagError(f"{stamps_file}: {exc}") from exc
    first = cv2.imread(str(images[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise BagError(f"cannot read image {images[0]}")
    calib = drive.parent / "calib_cam_to_cam.txt"
    key = f"P_rect_{camera[-2:]}:"
    projection = parse_kitti_projection(calib.read_text(), (key,)) if calib.is_file() else None
    if projection is None:
        _LOG.warning("no %s in %s: camera_info gets a centred pinhole guess", key, calib)
        projection = _guess_projection(first.shape[1], first.shape[0])
    return [SequenceSource(drive.name, images, stamps, None, Camera(first.shape[1], first.shape[0], projection))]
