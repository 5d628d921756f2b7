"""Dataset readers on fixture datasets written in each supported layout: classes, thing
flags and segment counts come back right, GT is in class indices, and a wrong path
fails with a message that shows the expected layout."""
import json

import numpy as np
import pytest

from dataset_fixtures import (mapillary_config, write_ade150, write_cityscapes, write_coco, write_mapillary,
                              write_semantic_folder)
from ovseg_core.datasets import DATASETS, DatasetLayoutError, load_dataset
from ovseg_core.vocabulary import Vocabulary

COCO_NAMES = ["person", "car", "wall-other-merged", "sky-other-merged", "door-stuff"]
COCO_THING = [True, True, False, False, False]


def check_panoptic(data, written):
    """Segments (class indices, crowd) and maps equal what the fixture wrote."""
    assert len(data) == len(written)
    for i, (seg, segments, sem) in enumerate(written):
        got_map, got = data.load_panoptic(i)
        np.testing.assert_array_equal(got_map, seg)
        assert [(s["id"], s["category_id"], s["iscrowd"]) for s in got] == \
            [(s["id"], s["category"], s["iscrowd"]) for s in segments]
        np.testing.assert_array_equal(data.load_semantic(i), sem)
        assert data.load_image(i).shape == seg.shape + (3,)
        index, classes = data.gt_segment_index(i)
        assert classes == [s["category"] for s in segments]
        for j, s in enumerate(segments, start=1):
            np.testing.assert_array_equal(index == j, seg == s["id"])
        np.testing.assert_array_equal(index == 0, ~np.isin(seg, [s["id"] for s in segments]))


def test_coco_panoptic(tmp_path):
    written = write_coco(tmp_path, COCO_NAMES, COCO_THING)
    data = load_dataset("coco_panoptic", tmp_path)
    assert data.names == COCO_NAMES and data.is_thing == COCO_THING
    assert data.has_panoptic and data.has_semantic
    check_panoptic(data, written)
    assert any(s["iscrowd"] for _, segs, _ in written for s in segs)
    # prompts drop COCO's -merged/-other/-stuff tags
    assert data.vocabulary().names == ["person", "car", "wall", "sky", "door"]


def test_coco_wrong_path_names_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"(?s)panoptic_val2017\.json does not exist.*Expected layout"):
        load_dataset("coco_panoptic", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("coco", tmp_path)


@pytest.mark.parametrize("semantic", ["raw", "d2"])
def test_ade20k_150_panoptic_and_semantic(tmp_path, semantic):
    written = write_ade150(tmp_path, semantic=semantic)
    data = load_dataset("ade20k_150", tmp_path)
    assert len(data.classes) == 150 and sum(data.is_thing) == 100
    assert data.classes[1].prompts == ("building", "edifice")
    check_panoptic(data, written)       # semantic labels read from the label PNGs
    vocab = data.vocabulary()
    assert vocab.classes[12].synonyms[:2] == ("person", "individual")
    assert Vocabulary.parse(vocab.to_text()) == vocab


def test_ade20k_150_semantic_only(tmp_path):
    written = write_ade150(tmp_path, semantic="raw", panoptic=False)
    data = load_dataset("ade20k_150", tmp_path / "ADEChallengeData2016")   # the folder itself works too
    assert not data.has_panoptic and data.has_semantic and len(data.classes) == 150
    for i, (_, _, sem) in enumerate(written):
        np.testing.assert_array_equal(data.load_semantic(i), sem)
    index, classes = data.gt_segment_index(0)     # one region per class without panoptic GT
    assert sorted(classes) == sorted(set(np.unique(written[0][2]).tolist()) - {255})
    assert index.max() == len(classes)


def test_ade20k_150_wrong_path(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"(?s)images.validation does not exist.*annotations_detectron2"):
        load_dataset("ade20k_150", tmp_path)


@pytest.mark.parametrize("name,count,folder,sub,ext,ignore,class_file", [
    ("ade20k_847", 847, "ADE20K_2021_17_01", ("images_detectron2", "annotations_detectron2"), ".tif", 65535,
     "classes.txt"),
    ("pascal_context_459", 459, "pascal_ctx_d2", ("images", "annotations_ctx459"), ".tif", 65535, "labels.txt"),
    ("pascal_context_59", 59, "pascal_ctx_d2", ("images", "annotations_ctx59"), ".png", 255, None),
])
def test_semantic_datasets(tmp_path, name, count, folder, sub, ext, ignore, class_file):
    base = tmp_path / folder
    written = write_semantic_folder(base / sub[0] / "validation", base / sub[1] / "validation", count, ext,
                                    ignore=ignore)
    if class_file:
        with pytest.raises(DatasetLayoutError, match=f"(?s)no class list found.*{count} names"):
            load_dataset(name, tmp_path)
        lines = [f"{k + 1}: thing{k}" if class_file == "labels.txt" else f"thing{k}, object {k}"
                 for k in range(count)]
        (base / class_file).write_text("\n".join(lines) + "\n")
    data = load_dataset(name, tmp_path)
    assert len(data.classes) == count and data.ignore_label == ignore
    assert not data.has_panoptic
    for i, label in enumerate(written):
        np.testing.assert_array_equal(data.load_semantic(i), label)
    if name == "pascal_context_59":
        assert data.names[0] == "aeroplane" and sum(data.is_thing) == 20
        assert data.vocabulary().classes[0].synonyms == ("aeroplane", "airplane")
    else:
        assert data.names[3] == "thing3"
    with pytest.raises(DatasetLayoutError, match="Expected layout"):
        load_dataset(name, tmp_path / "missing")


def test_class_file_with_wrong_count(tmp_path):
    base = tmp_path / "ADE20K_2021_17_01"
    base.mkdir()
    (base / "classes.txt").write_text("wall\nfloor\n")
    with pytest.raises(ValueError, match="lists 2 classes, expected 847"):
        load_dataset("ade20k_847", tmp_path)


def test_cityscapes(tmp_path):
    written = write_cityscapes(tmp_path)
    data = load_dataset("cityscapes", tmp_path)
    assert len(data.classes) == 19 and sum(data.is_thing) == 8
    assert data.names[:2] == ["road", "sidewalk"] and data.classes[0].dataset_id == 7
    check_panoptic(data, written)
    assert data.samples[1].image_path.parent.name == "lindau"
    with pytest.raises(DatasetLayoutError, match=r"(?s)cityscapes_panoptic_val\.json does not exist.*leftImg8bit"):
        load_dataset("cityscapes", tmp_path / "x")


@pytest.mark.parametrize("version,nested", [("1.2", False), ("1.2", True), ("2.0", True), ("2.0", False)])
def test_mapillary_layouts(tmp_path, version, nested):
    written = write_mapillary(tmp_path, version, nested)
    data = load_dataset(f"mapillary_vistas_v{version}", tmp_path)
    expected = {"1.2": (65, 37), "2.0": (123, 60)}[version]
    assert (len(data.classes), sum(data.is_thing)) == expected
    assert data.names[:2] == ["Label 0", "Label 1"] and "Unlabeled" not in data.names
    check_panoptic(data, written)     # Unlabeled segments read as void, its label as ignore
    assert sum(len(segs) for _, segs, _ in written) == sum(len(data.load_panoptic(i)[1]) for i in range(len(data)))


def test_mapillary_both_versions_nested(tmp_path):
    """The v2.0 download holds both versions; each reader takes its own."""
    write_mapillary(tmp_path, "1.2", nested=True)
    write_mapillary(tmp_path, "2.0", nested=True)
    assert len(load_dataset("mapillary_vistas_v1.2", tmp_path).classes) == 65
    assert len(load_dataset("mapillary_vistas_v2.0", tmp_path).classes) == 123


def test_mapillary_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"(?s)config\.json.*flat layout.*config_v1\.2\.json.*nested"):
        load_dataset("mapillary_vistas_v1.2", tmp_path)
    write_mapillary(tmp_path, "1.2")
    (tmp_path / "config.json").write_text(json.dumps(mapillary_config("2.0")))
    with pytest.raises(ValueError, match="124 labels; v1.2 has 66"):
        load_dataset("mapillary_vistas_v1.2", tmp_path)


def test_every_dataset_has_a_layout_error(tmp_path):
    for name in DATASETS:
        with pytest.raises(DatasetLayoutError, match="Expected layout"):
            load_dataset(name, tmp_path / "empty")
