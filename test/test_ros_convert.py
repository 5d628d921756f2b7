"""Message conversion at the ROS edges, with rosbags' message classes (no ROS 2 needed)."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from ovseg_core.structures import PanopticResult, Segment
from ovseg_core.vocabulary import Vocabulary
from ovseg_ros.convert import (BadImage, SUPPORTED_ENCODINGS, label_array, label_image,
                               panoptic_message, to_rgb, vocabulary_from_request,
                               vocabulary_message)
from ovseg_ros.interfaces import rosbags_typestore, rosbags_types

TYPESTORE = rosbags_typestore()
T = rosbags_types(TYPESTORE)
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
CompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
HEADER = Header(stamp=Time(sec=7, nanosec=11), frame_id="cam")
RGB = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)


def image(encoding, pixels, step=None, bigendian=0):
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    row = pixels[0].nbytes
    step = row if step is None else step
    rows = np.zeros((height, step), np.uint8)
    rows[:, :row] = pixels.reshape(height, -1).view(np.uint8)
    return T.Image(header=HEADER, height=height, width=width, encoding=encoding,
                   is_bigendian=bigendian, step=step, data=rows.ravel())


@pytest.mark.parametrize("encoding,pixels,expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("8UC3", RGB[..., ::-1], RGB),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    ("bgra8", np.dstack([RGB[..., ::-1], np.zeros(RGB.shape[:2], np.uint8)]), RGB),
    ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, -1)),
    ("mono16", RGB[..., 0].astype("<u2") * 257, np.repeat(RGB[..., :1], 3, -1)),
    ("rgb16", RGB.astype("<u2") * 257, RGB),
])
def test_encodings_decode_to_rgb(encoding, pixels, expected):
    np.testing.assert_array_equal(to_rgb(image(encoding, pixels)), expected)


def test_padded_rows_and_big_endian_16_bit():
    np.testing.assert_array_equal(to_rgb(image("rgb8", RGB, step=RGB[0].nbytes + 6)), RGB)
    big = (RGB[..., 0].astype(">u2") * 257)
    np.testing.assert_array_equal(to_rgb(image("mono16", big, bigendian=1))[..., 0], RGB[..., 0])


def test_bayer_and_yuv_decode_plausibly():
    gray = np.full((8, 8), 120, np.uint8)    # a flat mosaic is flat gray whatever the pattern
    for enc in ("bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"):
        assert np.abs(to_rgb(image(enc, gray)).astype(int) - 120).max() <= 1
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200                 # RGGB: only the red sites lit -> reddish
    r, g, b = to_rgb(image("bayer_rggb8", mosaic)).reshape(-1, 3).mean(0)
    assert r > 3 * max(g, b)
    uyvy = np.full((4, 8, 2), 128, np.uint8)  # Y = U = V = 128 is mid gray
    assert np.abs(to_rgb(image("yuv422", uyvy)).astype(int) - 128).max() <= 2
    assert to_rgb(image("yuv422_yuy2", uyvy)).shape == (4, 8, 3)


def test_compressed_jpeg_and_png():
    for ext in (".png", ".jpg"):
        data = cv2.imencode(ext, RGB[..., ::-1])[1].ravel()
        decoded = to_rgb(CompressedImage(header=HEADER, format=ext[1:], data=data))
        assert decoded.shape == RGB.shape
        if ext == ".png":
            np.testing.assert_array_equal(decoded, RGB)


@pytest.mark.parametrize("msg,words", [
    (image("weird42", RGB), "unsupported image encoding 'weird42'"),
    (T.Image(header=HEADER, height=6, width=10, encoding="rgb8", is_bigendian=0, step=3,
             data=np.zeros(18, np.uint8)), "step 3 is smaller"),
    (T.Image(header=HEADER, height=0, width=0, encoding="rgb8", is_bigendian=0, step=0,
             data=np.zeros(0, np.uint8)), "empty image"),
    (T.Image(header=HEADER, height=6, width=10, encoding="rgb8", is_bigendian=0, step=30,
             data=np.zeros(100, np.uint8)), "needs 180 bytes, the message has 100"),
    (T.Image(header=HEADER, height=100000, width=100000, encoding="mono8", is_bigendian=0,
             step=100000, data=np.zeros(10, np.uint8)), "header is probably corrupt"),
    (CompressedImage(header=HEADER, format="jpeg", data=np.frombuffer(b"garbage!", np.uint8)),
     "could not be decoded"),
    (CompressedImage(header=HEADER, format="jpeg", data=np.zeros(0, np.uint8)), "empty CompressedImage"),
    (T.Image(header=HEADER, height=2, width=3, encoding="yuv422", is_bigendian=0, step=6,
             data=np.zeros(12, np.uint8)), "width must be even"),
])
def test_bad_images_raise_a_clear_error(msg, words):
    with pytest.raises(BadImage, match=words.replace("(", r"\(")):
        to_rgb(msg)


def test_every_supported_encoding_is_listed_once():
    assert len(set(SUPPORTED_ENCODINGS)) == len(SUPPORTED_ENCODINGS) >= 20


@pytest.mark.parametrize("top,encoding", [(5, "mono8"), (255, "mono8"), (256, "mono16"),
                                          (4095, "mono16"), (70000, "32SC1")])
def test_label_images_are_lossless_for_any_vocabulary_size(top, encoding):
    labels = np.arange(24).reshape(4, 6) * top // 23
    msg = label_image(labels, HEADER, T)
    assert msg.encoding == encoding
    np.testing.assert_array_equal(label_array(msg), labels)
    raw = TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image")   # and survives the wire
    np.testing.assert_array_equal(label_array(TYPESTORE.deserialize_cdr(raw, "sensor_msgs/msg/Image")), labels)


def test_panoptic_message_carries_the_result():
    seg = np.zeros((5, 7), np.int32)
    seg[1:3, 2:6] = 1
    seg[4, :] = 2
    result = PanopticResult(
        segment_map=seg, semantic_map=np.zeros_like(seg),
        segments=[Segment(1, 0, "car", 0.9, True, 8, (2, 1, 4, 2)),
                  Segment(2, 1, "road", 0.7, False, 7, (0, 4, 7, 1))],
        class_names=["car", "road"], class_is_thing=[True, False], vocabulary_version=4)
    msg = panoptic_message(result, HEADER, T)
    msg = TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(msg, "ovseg/msg/PanopticResult"),
                                    "ovseg/msg/PanopticResult")
    assert msg.header.stamp.sec == 7 and msg.header.frame_id == "cam"
    assert msg.id_image.encoding == "mono16"           # documented: always at least 16 bit
    np.testing.assert_array_equal(label_array(msg.id_image), seg)
    road = msg.segments[1]
    assert (road.id, road.class_index, road.class_name, road.is_thing, road.area) == (2, 1, "road", False, 7)
    assert (road.bbox.x_offset, road.bbox.y_offset, road.bbox.width, road.bbox.height) == (0, 4, 7, 1)
    assert abs(msg.segments[0].score - 0.9) < 1e-6
    assert list(msg.class_names) == ["car", "road"] and msg.vocabulary_version == 4


def test_vocabulary_round_trip_and_request_rules():
    vocab = Vocabulary.parse("person, child, girl; road [stuff]")
    msg = vocabulary_message(vocab, 3, HEADER, T)
    assert msg.version == 3 and [c.synonyms for c in msg.classes] == [["child", "girl"], []]
    assert vocabulary_from_request("", msg.classes) == vocab
    assert vocabulary_from_request("person, child, girl; road [stuff]", []) == vocab
    with pytest.raises(ValueError, match="not both"):
        vocabulary_from_request("car", msg.classes)
    with pytest.raises(ValueError, match="empty"):
        vocabulary_from_request("  ", [])


def test_label_space_file_maps_classes_by_name_or_synonym_and_refuses_bad_files(tmp_path):
    from ovseg_core.vocabulary import Vocabulary
    from ovseg_ros.convert import LabelSpace
    example = LabelSpace.load(Path(__file__).resolve().parent.parent / "config" / "label_space_example.yaml")
    ids = example.class_ids(Vocabulary.parse("automobile, car; road [stuff]; dragon"))
    assert ids.tolist() == [13, 1, example.unknown_id] and not example.wide
    bad = tmp_path / "bad.yaml"
    for text, words in [("labels: []", "unknown_id"),
                        ("unknown_id: 0\nlabels: [{name: a, id: 1}, {name: A, id: 2}]", "unique"),
                        ("unknown_id: 1\nlabels: [{name: a, id: 1}]", "unknown_id"),
                        ("unknown_id: 0\nlabels: [{name: a, id: 70000}]", "0..65535"),
                        ("unknown_id: 0\nlabels: [{name: a, id: 1, color: [1, 2]}]", "color")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=words):
            LabelSpace.load(bad)
