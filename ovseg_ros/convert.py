"""Message <-> numpy conversion at the ROS edges, shared by the node (rclpy messages) and
the rosbag tool (rosbags dataclasses).

Nothing here imports rclpy: functions read message fields by name and build messages
through a :class:`MessageTypes` table, so one implementation serves both libraries.
The hand-written part is the raw `sensor_msgs/Image` decoding, because ROS 2's
`cv_bridge` is not available from PyPI (and the PyPI `cv-bridge` is ROS 1's).
"""
from __future__ import annotations

import array
import re
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from ovseg_core.label_space import LabelSpace  # noqa: F401  (the node and tools import it from here)
from ovseg_core.structures import PanopticResult
from ovseg_core.vocabulary import VocabClass, Vocabulary


class BadImage(ValueError):
    """A message that cannot become an RGB image; the text says what to send instead."""


# encoding -> (channels, numpy dtype, OpenCV conversion to RGB or None)
_ENCODINGS = {
    "rgb8": (3, np.uint8, None),
    "bgr8": (3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": (4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "8UC3": (3, np.uint8, cv2.COLOR_BGR2RGB),   # cv_bridge treats 8UC3 as BGR
    "8UC4": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "rgb16": (3, np.uint16, None),
    "bgr16": (3, np.uint16, cv2.COLOR_BGR2RGB),
    "rgba16": (4, np.uint16, cv2.COLOR_RGBA2RGB),
    "bgra16": (4, np.uint16, cv2.COLOR_BGRA2RGB),
    "mono16": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "16UC1": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": (1, np.uint8, cv2.COLOR_BayerBG2RGB),  # OpenCV names Bayer by the 2nd row
    "bayer_bggr8": (1, np.uint8, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, np.uint8, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, np.uint8, cv2.COLOR_BayerGB2RGB),
    "yuv422": (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
# Larger than any camera we know of (a 100 MP frame); guards against a corrupt width/height.
MAX_PIXELS = 100_000_000


def _buffer(data: Any) -> np.ndarray:
    """rclpy gives array.array/bytes, rosbags gives a numpy array: view either as uint8."""
    return np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()


def image_to_rgb(msg) -> np.ndarray:
    """`sensor_msgs/Image` -> HxWx3 uint8 RGB (16-bit images keep their top 8 bits)."""
    encoding = msg.encoding.strip()
    spec = _ENCODINGS.get(encoding) or _ENCODINGS.get(encoding.lower())
    if spec is None:
        raise BadImage(f"unsupported image encoding {msg.encoding!r}; send one of "
                       f"{', '.join(SUPPORTED_ENCODINGS)} (or a CompressedImage)")
    channels, dtype, conversion = spec
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise BadImage(f"empty image ({width}x{height}); the camera driver sent no pixels")
    if height * width > MAX_PIXELS:
        raise BadImage(f"image of {width}x{height} exceeds {MAX_PIXELS} pixels; "
                       f"the header is probably corrupt")
    if channels == 2 and width % 2:
        raise BadImage(f"{encoding} packs two pixels in four bytes, so its width must be even; "
                       f"got {width}")
    row = width * channels * np.dtype(dtype).itemsize
    if step < row:
        raise BadImage(f"step {step} is smaller than a {encoding} row of width {width} "
                       f"({row} bytes); fix the publisher's step")
    data = _buffer(msg.data)
    if data.size < step * (height - 1) + row:
        raise BadImage(f"{encoding} image {width}x{height} with step {step} needs "
                       f"{step * height} bytes, the message has {data.size}")
    rows = data[:step * height].reshape(height, step) if data.size >= step * height \
        else np.concatenate([data, np.zeros(step * height - data.size, np.uint8)]).reshape(height, step)
    pixels = rows[:, :row]
    if np.dtype(dtype).itemsize > 1:
        order = ">" if getattr(msg, "is_bigendian", 0) else "<"
        pixels = pixels.copy().view(np.dtype(dtype).newbyteorder(order)).astype(np.uint16)
        pixels = (pixels >> 8).astype(np.uint8)
    image = pixels.reshape(height, width, channels)
    if conversion is None:   # a copy: the message's buffer is read-only (torch warns on those)
        return image.copy()
    return cv2.cvtColor(np.ascontiguousarray(image), conversion)


def compressed_to_rgb(msg) -> np.ndarray:
    """`sensor_msgs/CompressedImage` (JPEG, PNG, ...) -> HxWx3 uint8 RGB."""
    data = _buffer(msg.data)
    if data.size == 0:
        raise BadImage(f"empty CompressedImage (format {msg.format!r}); the publisher sent no bytes")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # always 3-channel BGR, 8 bit
    if image is None:
        raise BadImage(f"CompressedImage of {data.size} bytes (format {msg.format!r}) could not "
                       f"be decoded; send JPEG or PNG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_rgb(msg) -> np.ndarray:
    """Either image message type -> RGB; CompressedImage is recognised by its `format`."""
    return compressed_to_rgb(msg) if hasattr(msg, "format") else image_to_rgb(msg)


@dataclass
class MessageTypes:
    """The message classes to build with: rclpy's generated ones or a rosbags typestore's.

    ``buffer`` turns a contiguous numpy array into what the library wants in a uint8[]
    field (rclpy: array.array, set without a per-byte loop; rosbags: a numpy array).
    """

    Image: Callable
    RegionOfInterest: Callable
    Segment: Callable
    PanopticResult: Callable
    VocabularyClass: Callable
    Vocabulary: Callable
    buffer: Callable[[np.ndarray], Any]


def rclpy_buffer(data: np.ndarray) -> array.array:
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(data).tobytes())
    return out


def numpy_buffer(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(data).view(np.uint8).ravel()


def label_image(labels: np.ndarray, header, types: MessageTypes, wide: bool = False):
    """Lossless label/id image: mono8 up to 255 (unless ``wide``), mono16 up to 65535,
    else 32SC1 (the encodings ROS tools read; never JPEG)."""
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    if labels.min(initial=0) < 0:
        raise ValueError("label images hold non-negative labels")
    if top <= 255 and not wide:
        encoding, data = "mono8", labels.astype(np.uint8)
    elif top <= 65535:
        encoding, data = "mono16", labels.astype("<u2")
    else:
        encoding, data = "32SC1", labels.astype("<i4")
    height, width = data.shape
    return types.Image(header=header, height=height, width=width, encoding=encoding,
                       is_bigendian=0, step=width * data.itemsize, data=types.buffer(data))


# The semantic image's value for pixels that the panoptic result leaves unlabeled: the
# largest value of its encoding (mono8 for up to 255 classes, so 0..254 are classes).
SEMANTIC_VOID_MONO8, SEMANTIC_VOID_MONO16 = 255, 65535


def semantic_void(num_classes: int) -> int:
    return SEMANTIC_VOID_MONO8 if num_classes <= 255 else SEMANTIC_VOID_MONO16


def semantic_labels(result: PanopticResult, class_ids=None, void=None) -> np.ndarray:
    """The one rule for a pixel's label (semantic image, clouds, instance images): its class
    index, or with ``class_ids`` (a label space) the class's fixed id; ``void`` (default:
    :func:`semantic_void`) where the panoptic result has no segment."""
    labels = np.asarray(result.semantic_map).astype(np.int64)
    if class_ids is not None:
        labels = np.asarray(class_ids, np.int64)[labels]
    else:
        void = semantic_void(len(result.class_names))
    return np.where(np.asarray(result.segment_map) == 0, void, labels)


def semantic_image(result: PanopticResult, header, types: MessageTypes, class_ids=None,
                   void=None, wide=None, labels=None):
    """Class index per pixel, void (see :func:`semantic_void`) where the panoptic result
    has no segment, so the two outputs agree on what is labeled. With ``class_ids`` (a
    label space) each class index is written as its fixed id, void as ``void``. The
    encoding depends on the vocabulary or label space only, never on a frame's content.
    ``labels``: :func:`semantic_labels` of the same arguments, when the caller has them already."""
    if class_ids is None:
        wide = len(result.class_names) > 255
    if labels is None:
        labels = semantic_labels(result, class_ids, void)
    return label_image(labels, header, types, wide=wide)


_IMAGE_SUFFIXES = {"image_raw", "image", "image_rect", "image_color", "image_rect_color", "compressed"}
OUTPUT_LAYOUTS = ("node", "camera")


def camera_namespace(topic: str) -> str:
    """"/front/image_raw/compressed" -> "/front": the camera's topic without image suffixes."""
    parts = [p for p in topic.strip("/").split("/") if p]
    while parts and parts[-1] in _IMAGE_SUFFIXES:
        parts.pop()
    return ("/" if topic.startswith("/") else "") + "/".join(parts)


def camera_info_topic(topic: str) -> str:
    """"/front/image_raw" -> "/front/camera_info": image_transport's camera_info beside an image."""
    namespace = camera_namespace(topic)
    return f"{namespace}/camera_info" if namespace else "camera_info"


def camera_name(topic: str, index: int) -> str:
    """"/front/image_raw" -> "front": output topics read like the camera's namespace."""
    name = camera_namespace(topic).strip("/")
    return re.sub(r"[^A-Za-z0-9_/]", "_", name) if name else f"camera{index}"


def output_topic(kind: str, camera_topic: str, name: str, layout: str = "node",
                 node_namespace: str = "~") -> str:
    """The one naming rule for our per-camera outputs (node and bag tool).

    layout "node": NODE/NAME/KIND, e.g. /ovseg/front/panoptic (the node's ``~``);
    layout "camera": beside the camera's topics, CAMERA/ovseg/KIND, e.g. /front/ovseg/panoptic.
    """
    if layout == "node":
        return f"{node_namespace}/{name}/{kind}"
    if layout == "camera":
        namespace = camera_namespace(camera_topic)
        if not namespace.strip("/"):
            raise ValueError(f"camera topic {camera_topic!r} has no namespace to put outputs in; "
                             f"use output_layout node or a topic like /front/image_raw")
        return f"{namespace}/ovseg/{kind}"
    raise ValueError(f"output layout {layout!r} is not one of {', '.join(OUTPUT_LAYOUTS)}")


def vocabulary_changes(current, new) -> bool:
    """The one rule (node and bag tool) for when a vocabulary request makes a new version:
    when it differs from the active one; re-sending the active one changes nothing."""
    return current is None or new != current


def rgb_image(image: np.ndarray, header, types: MessageTypes):
    height, width = image.shape[:2]
    return types.Image(header=header, height=height, width=width, encoding="rgb8",
                       is_bigendian=0, step=width * 3, data=types.buffer(image))


def _single_channel(msg, dtypes: dict, what: str) -> np.ndarray:
    """An [H, W] array of a one-channel image in one of ``dtypes`` (encoding -> dtype)."""
    if msg.encoding not in dtypes:
        raise BadImage(f"{msg.encoding!r} is not a {what} encoding; send one of {', '.join(dtypes)}")
    dtype = np.dtype(dtypes[msg.encoding]).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = _buffer(msg.data)
    if height <= 0 or width <= 0 or step < width * dtype.itemsize or data.size < step * height:
        raise BadImage(f"{what} {width}x{height} ({msg.encoding}, step {step}) does not fit its "
                       f"{data.size} bytes; fix the publisher's width, height or step")
    rows = data[:step * height].reshape(height, step)
    return rows[:, :width * dtype.itemsize].copy().view(dtype).astype(dtype.newbyteorder("="))


def label_array(msg) -> np.ndarray:
    """Inverse of :func:`label_image` (for subscribers and tests)."""
    dtypes = {"mono8": np.uint8, "8UC1": np.uint8, "mono16": np.uint16, "16UC1": np.uint16,
              "32SC1": np.int32}
    return _single_channel(msg, dtypes, "label image").astype(np.int64)


# Registered depth as ROS publishes it: 16UC1 millimetres (0: no reading) or 32FC1 metres.
DEPTH_DTYPES = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}


def depth_array(msg) -> np.ndarray:
    """`sensor_msgs/Image` depth -> [H, W] uint16 (millimetres) or float32 (metres)."""
    return _single_channel(msg, DEPTH_DTYPES, "depth image")


def panoptic_message(result: PanopticResult, header, types: MessageTypes):
    """PanopticResult -> our PanopticResult message; the header is the input image's."""
    segments = [types.Segment(
        id=int(s.id), class_index=int(s.class_index), class_name=s.class_name,
        score=float(s.score), is_thing=bool(s.is_thing), area=int(s.area),
        bbox=types.RegionOfInterest(x_offset=int(s.bbox[0]), y_offset=int(s.bbox[1]),
                                    width=int(s.bbox[2]), height=int(s.bbox[3]),
                                    do_rectify=False))
        for s in result.segments]
    # Always at least mono16, as the message documents, so readers need one code path.
    id_image = label_image(result.segment_map, header, types, wide=True)
    return types.PanopticResult(header=header, id_image=id_image, segments=segments,
                                class_names=list(result.class_names),
                                vocabulary_version=int(result.vocabulary_version or 0))


def vocabulary_message(vocabulary: Vocabulary, version: int, header, types: MessageTypes):
    classes = [types.VocabularyClass(name=c.name, synonyms=list(c.synonyms[1:]), is_thing=c.is_thing)
               for c in vocabulary.classes]
    return types.Vocabulary(header=header, classes=classes, version=int(version))


def vocabulary_from_classes(classes) -> Vocabulary:
    """A sequence of VocabularyClass messages -> Vocabulary (same checks as the text form)."""
    return Vocabulary(tuple(VocabClass(c.name, tuple(c.synonyms), bool(c.is_thing)) for c in classes))


def vocabulary_from_request(text: str, classes) -> Vocabulary:
    """The service/topic request: text in the user format, or class messages; not both."""
    if text.strip() and len(classes):
        raise ValueError("give either text or classes, not both")
    if len(classes):
        return vocabulary_from_classes(classes)
    return Vocabulary.parse(text)


def header_stamp_ns(header) -> int:
    """A header's stamp as one integer (ns), for ordering and matching frames."""
    stamp = header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
