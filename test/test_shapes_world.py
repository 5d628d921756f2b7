"""ShapesWorld generator: determinism, exact ground truth, the class split, the CLI files."""
import json

import numpy as np
import pytest

from ovseg_core.panoptic_io import read_panoptic_png
from ovseg_core.shapes import camera_pan, generate_scene, load_classes, single_object_view
from ovseg_core.shapes.__main__ import main as shapes_cli


def test_a_seed_fixes_the_scene():
    a, b, c = generate_scene(7), generate_scene(7), generate_scene(8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.segment_map, b.segment_map)
    assert a.caption == b.caption and a.segments == b.segments
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ground_truth_is_exact_and_the_caption_names_every_segment(seed):
    scene = generate_scene(seed, size=(96, 160))
    h, w = scene.segment_map.shape
    assert scene.image.shape == (h, w, 3) and (h, w) == (96, 160)
    ids = {s["id"] for s in scene.segments}
    assert set(np.unique(scene.segment_map).tolist()) == ids  # every pixel belongs to a listed segment
    assert sum(s["area"] for s in scene.segments) == h * w
    names = load_classes().names
    for s in scene.segments:
        assert names[s["category_id"] - 1] == s["class_name"]
        assert s["isthing"] == (s["class_name"] in load_classes().things)
        assert s["class_name"] in scene.caption
        x, y, bw, bh = s["bbox"]
        inside = scene.segment_map[y:y + bh, x:x + bw] == s["id"]
        assert inside.sum() == s["area"] and inside[0].any() and inside[:, -1].any()
    assert any(s["isthing"] for s in scene.segments) and any(not s["isthing"] for s in scene.segments)


def test_a_drawn_thing_has_its_color():
    scene = generate_scene(3, things=["red circle"], stuff=["grass"])
    mask = scene.segment_map == scene.segment_of("red circle")["id"]
    mean = scene.image[mask].astype(float).mean(0)
    assert mean[0] > 150 and mean[1] < 90 and mean[2] < 90  # red, whatever the grass around it


def test_the_split_keeps_every_color_and_shape_in_seen_things():
    world = load_classes()
    unseen_things = world.unseen_of(world.things)
    assert len(unseen_things) == 6 and len(world.unseen_of(world.stuff)) == 2
    seen_things = world.seen(world.things)
    for color in world.colors:
        assert sum(t.startswith(color + " ") for t in seen_things) == 5
    for shape in world.shapes:
        assert sum(t.endswith(" " + shape) for t in seen_things) == 5
    assert "red circle" in seen_things


def test_restricting_to_seen_classes_never_draws_an_unseen_one():
    world = load_classes()
    seen = world.seen(world.names)
    drawn = {s["class_name"] for i in range(30) for s in generate_scene(i, classes=seen).segments}
    assert drawn and not drawn & world.unseen


def test_bad_class_names_and_sizes_are_refused():
    with pytest.raises(ValueError, match="split.json"):
        generate_scene(0, things=["pink circle"])
    with pytest.raises(ValueError, match="at least 32"):
        generate_scene(0, size=16)


def test_single_object_view_holds_one_thing():
    view = single_object_view(0, "blue star")
    assert [s["class_name"] for s in view.segments if s["isthing"]] == ["blue star"]


def test_single_object_view_is_centred():
    # Centred within 10% of the frame: the mask's centroid stays near the middle, so a
    # crop's shape label is never about a thing mostly outside the frame.
    for seed in range(20):
        view = single_object_view(seed, "red triangle", size=96, radius=(18, 30))
        sid = next(s["id"] for s in view.segments if s["isthing"])
        ys, xs = np.nonzero(view.segment_map == sid)
        assert abs(xs.mean() - 48) < 0.1 * 96 + 8 and abs(ys.mean() - 48) < 0.1 * 96 + 8
        # and almost all of it is inside: a triangle of circumradius r has area 1.30 r^2
        assert len(xs) > 0.9 * 1.299 * 18 ** 2


def test_camera_pan_frames_are_windows_of_one_scene():
    frames = camera_pan(4, num_frames=5, size=64, world_width=128)
    assert len(frames) == 5 and all(f.image.shape == (64, 64, 3) for f in frames)
    # 128 - 64 = 64 pixels in 4 steps of 16: consecutive frames overlap by 48 columns.
    assert np.array_equal(frames[0].image[:, 16:], frames[1].image[:, :48])
    for f in frames:
        assert set(np.unique(f.segment_map).tolist()) == {s["id"] for s in f.segments}


def test_cli_writes_a_coco_panoptic_dataset(tmp_path):
    assert shapes_cli(["dataset", str(tmp_path), "--num", "2", "--seed", "11", "--size", "64"]) == 0
    with open(tmp_path / "panoptic.json") as f:
        data = json.load(f)
    cats = {c["id"]: c for c in data["categories"]}
    assert len(cats) == 44 and cats[1]["name"] == "red circle" and cats[1]["isthing"] == 1
    assert {c["split"] for c in cats.values()} == {"seen", "unseen"}
    scene = generate_scene(11, size=64)
    ann = data["annotations"][0]
    ids = read_panoptic_png(str(tmp_path / "panoptic" / ann["file_name"]))
    assert np.array_equal(ids, scene.segment_map)
    assert [s["category_id"] for s in ann["segments_info"]] == [s["category_id"] for s in scene.segments]
    with open(tmp_path / "captions.json") as f:
        assert json.load(f)["annotations"][0]["caption"] == scene.caption


def test_cli_refuses_an_empty_stream(tmp_path, capsys):
    with pytest.raises(SystemExit):
        shapes_cli(["stream", str(tmp_path), "--frames", "0"])
    assert "at least 1" in capsys.readouterr().err
