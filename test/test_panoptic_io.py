"""COCO panoptic PNG/JSON round trips and the overlay drawing."""
import json

import numpy as np
import pytest

from ovseg_core.panoptic_io import (categories, id_to_rgb, panoptic_annotation, read_panoptic_png,
                                    rgb_to_id, segments_info, write_panoptic_json,
                                    write_panoptic_png)
from ovseg_core.structures import PanopticResult, Segment
from ovseg_core.visualize import overlay, palette

NAMES = ["cat", "road"]
IS_THING = [True, False]


def make_result():
    """64x64: cat instance 1 top-left, cat instance 70000 top-right, road bottom-left
    (id 300), bottom-right uncovered."""
    seg = np.zeros((64, 64), np.int32)
    seg[:32, :32], seg[:32, 32:], seg[32:, :32] = 1, 70000, 300
    segments = [Segment(1, 0, "cat", 0.9, True, 1024, (0, 0, 32, 32)),
                Segment(70000, 0, "cat", 0.8, True, 1024, (32, 0, 32, 32)),
                Segment(300, 1, "road", 0.7, False, 1024, (0, 32, 32, 32))]
    return PanopticResult(seg, segments, np.zeros_like(seg), NAMES, IS_THING)


def test_id_rgb_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 70000, 256 ** 3 - 1]])
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb[1, 2].tolist() == [112, 17, 1]  # 70000 = 112 + 17*256 + 1*65536
    back = rgb_to_id(rgb)
    assert back.dtype == np.int32 and (back == ids).all()
    with pytest.raises(ValueError):
        id_to_rgb(np.array([256 ** 3]))


def test_png_round_trip(tmp_path):
    result = make_result()
    write_panoptic_png(tmp_path / "a.png", result)
    ids = read_panoptic_png(tmp_path / "a.png")
    assert ids.dtype == np.int32 and (ids == result.segment_map).all()


def test_json_matches_map(tmp_path):
    result = make_result()
    info = segments_info(result)
    assert {s["id"] for s in info} == set(np.unique(result.segment_map)) - {0}
    assert info[2] == {"id": 300, "category_id": 2, "area": 1024, "bbox": [0, 32, 32, 32],
                       "iscrowd": 0, "score": pytest.approx(0.7)}
    cats = categories(NAMES, IS_THING)
    assert [(c["id"], c["name"], c["isthing"]) for c in cats] == [(1, "cat", 1), (2, "road", 0)]
    path = tmp_path / "panoptic.json"
    write_panoptic_json(path, [{"id": 7, "file_name": "a.jpg", "height": 64, "width": 64}],
                        [panoptic_annotation(7, "a.png", result)], cats)
    data = json.loads(path.read_text())
    assert set(data) == {"images", "annotations", "categories"}
    ann = data["annotations"][0]
    assert (ann["image_id"], ann["file_name"]) == (7, "a.png")
    assert [s["id"] for s in ann["segments_info"]] == [1, 70000, 300]
    with pytest.raises(ValueError):
        write_panoptic_json(path, [], [{"image_id": 7}], cats)


def test_palette_deterministic_and_distinct():
    colors = palette(30)
    assert colors.shape == (30, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 30
    assert (palette(5) == colors[:5]).all()  # a class keeps its color as the vocabulary grows
    assert not (palette(5, seed=1) == colors[:5]).all()


def test_overlay_colors_segments_only():
    image = np.full((64, 64, 3), 100, np.uint8)
    result = make_result()
    out = overlay(image, result, labels=False, min_size=0)
    assert out.shape == image.shape and out.dtype == np.uint8
    inside = result.segment_map > 0
    assert (out[inside] != image[inside]).any(-1).all()
    assert (out[~inside] == image[~inside]).all()
    # Two instances of one class: different shades, away from boundaries.
    assert (out[10, 10] != out[10, 50]).any()
    labelled = overlay(image, result, min_size=0)
    assert (labelled != out).any()
    with pytest.raises(ValueError):
        overlay(image[:10], result)


def test_overlay_class_color_is_stable_across_frames():
    """The same class gets the same color whatever else is in the frame."""
    image = np.full((64, 64, 3), 100, np.uint8)
    full = overlay(image, make_result(), labels=False, min_size=0)
    only_road = make_result()
    only_road.segments = only_road.segments[2:]
    only_road.segment_map = np.where(only_road.segment_map == 300, 300, 0).astype(np.int32)
    assert (overlay(image, only_road, labels=False, min_size=0)[48, 16] == full[48, 16]).all()


def test_dump_json_is_strict_and_atomic(tmp_path):
    from ovseg_core.panoptic_io import dump_json, write_text_atomic

    path = tmp_path / "sub" / "r.json"
    dump_json({"pq": 0.5}, path)
    assert json.loads(path.read_text()) == {"pq": 0.5}
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        dump_json({"pq": float("inf")}, path)
    # a write that fails half-way (an unencodable character) leaves the previous file
    # and no temporary behind
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "x" * 10000 + "\udc80")
    assert json.loads(path.read_text()) == {"pq": 0.5}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_read_panoptic_png_names_a_bad_file(tmp_path):
    from PIL import Image
    from ovseg_core.panoptic_io import InputError

    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gray)
    with pytest.raises(InputError, match=f"^{gray}: panoptic PNG has PIL mode L, expected RGB or RGBA"):
        read_panoptic_png(gray)
    with pytest.raises(InputError, match=f"^{tmp_path / 'none.png'}: panoptic PNG does not exist"):
        read_panoptic_png(tmp_path / "none.png")
