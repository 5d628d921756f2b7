"""ShapesWorld generator: determinism, exact ground truth, the class split, the CLI files,
the layout variants."""
import hashlib
import json

import cv2
import numpy as np
import pytest

from ovseg_core.panoptic_io import read_panoptic_png
from ovseg_core.shapes import (LAYOUT_VARIANTS, camera_pan, describe_layout, generate_scene, layout_scene,
                               load_classes, single_object_view, variant_scene)
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


# ------------------------------------------------------------------ layout variants (issue 13, section 2)

def _digest(scenes):
    """Image, ground truth and caption of scenes, hashed."""
    h = hashlib.sha256()
    for s in scenes:
        h.update(s.image.tobytes())
        h.update(s.segment_map.tobytes())
        h.update(json.dumps(s.segments, sort_keys=True).encode())
        h.update(s.caption.encode())
    return h.hexdigest()[:16]


def test_default_layout_options_draw_the_same_scenes_bit_for_bit():
    """The layout options' defaults leave every standard scene, and every later draw of a
    shared generator, as they were before the options existed (digests taken then, with
    this environment's numpy and OpenCV): shipped numbers and training batches depend on it."""
    world = load_classes()
    assert _digest([generate_scene(i) for i in range(12)]) == "b3af1b4c28e2cc28"
    assert _digest([generate_scene(100000 + i, size=(96, 160)) for i in range(4)]) == "e8905d57023fe8b2"
    rng = np.random.default_rng(5)      # a generator shared across scenes (as training batches draw them)
    assert _digest([generate_scene(rng, num_things=(1, 6), classes=world.seen(world.names))]) == "ffd0f130dbd3820d"
    assert _digest([single_object_view(i, "blue star") for i in range(3)]) == "ef378d9a338ce905"
    assert _digest(camera_pan(4, 3, size=64, world_width=128)) == "7d09073a13844bd3"
    explicit = dict(outline="thin_dark", stuff_layout="bands", noise=0.0, jpeg=None)
    assert _digest([generate_scene(i, **explicit) for i in range(12)]) == "b3af1b4c28e2cc28"
    assert _digest([layout_scene(i, "standard") for i in range(12)]) == "b3af1b4c28e2cc28"


@pytest.mark.parametrize("options", [dict(outline="none"), dict(outline="white"), dict(outline="thick"),
                                     dict(noise=6.0), dict(jpeg=60), dict(noise=3.0, jpeg=75, outline="white")])
def test_outline_noise_and_jpeg_change_the_image_only(options):
    """Outlines, noise and JPEG leave the scene's ground truth and caption exactly those of
    the standard scene of the same seed; only pixels change, and not by much."""
    for seed in (0, 1, 2):
        plain, varied = generate_scene(seed), generate_scene(seed, **options)
        assert np.array_equal(plain.segment_map, varied.segment_map)
        assert plain.segments == varied.segments and plain.caption == varied.caption
        assert not np.array_equal(plain.image, varied.image)
        assert np.abs(plain.image.astype(float) - varied.image).mean() < 12


def test_outline_styles_paint_the_border_inside_the_mask():
    """thin_dark / white: a 1 px border; thick: 2 px, dark (0.45 x the thing's color);
    none: the fill reaches the edge. The border is part of the thing's ground truth."""
    def border_pixels(outline, width):
        scene = generate_scene(3, things=["blue square"], stuff=["sand"], radius=(20, 20), outline=outline)
        mask = scene.segment_map == scene.segment_of("blue square")["id"]
        k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
        ring = mask & ~cv2.erode(mask.astype(np.uint8), k).astype(bool)
        return scene.image[ring].astype(float), scene.image[mask & ~ring].astype(float)

    thin, inside = border_pixels("thin_dark", 1)
    assert thin.mean() < 0.6 * inside.mean()
    thick, _ = border_pixels("thick", 2)
    assert thick.mean() < 0.6 * inside.mean()
    white, _ = border_pixels("white", 1)
    assert (white == 255).all()
    none, inside = border_pixels("none", 1)
    assert abs(none[:, 2].mean() - inside[:, 2].mean()) < 25     # blue to the edge


def test_stuff_layouts_partition_the_frame():
    """bands: stuff changes top to bottom; vertical: left to right; blobs: a partition with
    neither; every pixel belongs to exactly one listed segment in each."""
    stuff = ["sky", "grass", "road"]
    ids = {}
    for layout in ("bands", "vertical", "blobs"):
        scene = generate_scene(11, size=(96, 160), stuff=stuff, things=[], stuff_layout=layout)
        seg = scene.segment_map
        assert set(np.unique(seg).tolist()) == {s["id"] for s in scene.segments}
        assert sum(s["area"] for s in scene.segments) == seg.size
        assert {s["class_name"] for s in scene.segments} <= set(stuff)
        ids[layout] = (len(np.unique(seg[:, 0])), len(np.unique(seg[0])), len(np.unique(seg)))
    assert ids["bands"][:2] == (3, 1)            # the left column crosses every band, the top row one
    assert ids["vertical"][:2] == (1, 3)
    assert ids["blobs"][2] >= 2
    vertical = generate_scene(5, stuff_layout="vertical")
    bands = generate_scene(5)                     # the same draws, turned: the same things, same places
    for s in bands.segments:
        if s["isthing"]:
            assert np.array_equal(bands.segment_map == s["id"], vertical.segment_map == s["id"])


def test_layout_variants_keep_ground_truth_exact_and_the_classes_unchanged():
    """Each variant (scene s in LAYOUT_VARIANTS[s % 6]) has its size, exact ground truth
    over the same 44 classes, and no unseen class when the seen split is asked for."""
    world = load_classes()
    allowed = {"size", "radius", "outline", "stuff_layout", "noise", "jpeg"}
    assert len(LAYOUT_VARIANTS) == 6 and all(set(v) <= allowed for v in LAYOUT_VARIANTS)
    assert len({describe_layout(v) for v in LAYOUT_VARIANTS}) == 6
    sizes = {tuple(v["size"]) for v in LAYOUT_VARIANTS}
    assert len(sizes) >= 4 and any(h > w for h, w in sizes) and any(h < w for h, w in sizes)
    seen = world.seen(world.names)
    for seed in range(12):
        variant = LAYOUT_VARIANTS[seed % 6]
        restricted = layout_scene(seed, "variants", classes=seen)
        assert not {s["class_name"] for s in restricted.segments} & world.unseen
        for scene in (variant_scene(seed), restricted):
            h, w = variant["size"]
            assert scene.image.shape == (h, w, 3) and scene.segment_map.shape == (h, w)
            assert set(np.unique(scene.segment_map).tolist()) == {s["id"] for s in scene.segments}
            assert sum(s["area"] for s in scene.segments) == h * w
            for s in scene.segments:
                assert world.names[s["category_id"] - 1] == s["class_name"]
                assert s["isthing"] == (s["class_name"] in world.things) and s["class_name"] in scene.caption
                x, y, bw, bh = s["bbox"]
                assert (scene.segment_map[y:y + bh, x:x + bw] == s["id"]).sum() == s["area"]
                if s["isthing"]:
                    assert s["area"] >= 12
    assert load_classes() is world and len(world.names) == 44


def test_small_things_stay_whole_enough():
    """radius 5-10 px (10-20 px across): the smallest whole shape (a star or triangle of
    circumradius 5) has about 32 pixels, so the 12 px floor only drops slivers at the frame edge."""
    areas = [s["area"] for i in range(30) for s in generate_scene(i, radius=(5, 10)).segments if s["isthing"]]
    assert len(areas) > 40 and min(areas) >= 12 and np.median(areas) > 60


def test_bad_layout_options_are_refused():
    for bad in (dict(outline="dotted"), dict(stuff_layout="checkers"), dict(noise=-1), dict(jpeg=0),
                dict(jpeg=101), dict(jpeg=50.5)):
        with pytest.raises(ValueError):
            generate_scene(0, **bad)
    with pytest.raises(ValueError, match="standard, variants"):
        layout_scene(0, "mixed")


def test_cli_writes_layout_variants(tmp_path, capsys):
    assert shapes_cli(["dataset", str(tmp_path), "--num", "6", "--seed", "12", "--layout", "variants"]) == 0
    data = json.loads((tmp_path / "panoptic.json").read_text())
    assert [(im["height"], im["width"]) for im in data["images"]] == [
        tuple(LAYOUT_VARIANTS[(12 + i) % 6]["size"]) for i in range(6)]
    ann = data["annotations"][1]
    ids = read_panoptic_png(str(tmp_path / "panoptic" / ann["file_name"]))
    assert np.array_equal(ids, variant_scene(13).segment_map)
    with pytest.raises(SystemExit):
        shapes_cli(["dataset", str(tmp_path), "--layout", "variants", "--size", "64"])
    assert "own size" in capsys.readouterr().err
