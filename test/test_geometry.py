"""Depth -> labeled points and 3D objects, against the known geometry of ShapesWorld scenes
with rendered depth (every segment a fronto-parallel plane at a known distance).

Tolerances: a point's depth within 1% of its plane's (16UC1 quantises to 1 mm, 0.1% at
1 m); a thing's centroid within 2 cm of the true centroid of its visible surface (things
at 1-5 m; the 1 px erosion moves the mean of an occluded shape by a fraction of a pixel,
about 1 cm at 5 m with this 277 px focal length); the distortion round trip within 1e-3 px.
"""
import cv2
import numpy as np
import pytest

from ovseg_core.geometry import (BadDepth, PinholeCamera, backproject, depth_in_meters, encode_depth,
                                 objects_3d)
from ovseg_core.shapes import generate_scene
from ovseg_core.shapes.world import render_depth

SIZE, RADIUS = (240, 320), (15, 50)


def _scene(seed, **depth_options):
    scene = generate_scene(seed, size=SIZE, radius=RADIUS, num_things=(3, 6))
    depth, camera, truth = render_depth(scene, **depth_options)
    return scene, depth, camera, truth


def _things(scene):
    things = [s for s in scene.segments if s["isthing"]]
    return [s["id"] for s in things], [s["category_id"] - 1 for s in things]


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_every_point_lies_on_its_true_surface_and_carries_its_pixels_label(encoding):
    for seed in range(3):
        scene, depth, camera, truth = _scene(seed, holes=0.05)
        d = depth_in_meters(encode_depth(depth, encoding), encoding)
        semantic = scene.semantic_map()
        pts = backproject(d, camera, scene.image, semantic, scene.segment_map, scene.segment_map)
        seg = scene.segment_map.reshape(-1)[pts.pixels]
        true_z = np.array([truth[i].depth for i in seg])
        assert len(pts) == np.isfinite(depth).sum() > 0.9 * depth.size       # holes give no point
        assert np.all(np.abs(pts.xyz[:, 2] - true_z) <= 0.01 * true_z)
        v, u = np.divmod(pts.pixels, camera.width)                             # the pinhole model itself
        np.testing.assert_allclose(pts.xyz[:, 0], (u - camera.cx) / camera.fx * pts.xyz[:, 2], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pts.xyz[:, 1], (v - camera.cy) / camera.fy * pts.xyz[:, 2], rtol=1e-5, atol=1e-6)
        assert np.array_equal(pts.label, semantic.reshape(-1)[pts.pixels])
        assert np.array_equal(pts.segment, seg) and np.array_equal(pts.instance, seg)
        assert np.array_equal(pts.rgb, scene.image.reshape(-1, 3)[pts.pixels])
        assert pts.xyz.dtype == np.float32 and pts.label.dtype == np.uint32 and pts.segment.dtype == np.int32


def test_organized_cloud_has_a_nan_point_where_depth_is_missing_and_the_same_valid_points():
    scene, depth, camera, _ = _scene(7, holes=0.1)
    dense = backproject(depth, camera, scene.image, scene.semantic_map(), None, scene.segment_map)
    org = backproject(depth, camera, scene.image, scene.semantic_map(), None, scene.segment_map, organized=True)
    assert org.organized == SIZE and len(org) == SIZE[0] * SIZE[1] and dense.organized is None
    hole = np.isnan(depth).reshape(-1)
    assert np.isnan(org.xyz[hole]).all() and np.isfinite(org.xyz[~hole]).all()
    np.testing.assert_array_equal(org.xyz[dense.pixels], dense.xyz)
    assert np.array_equal(org.label, scene.semantic_map().reshape(-1)) and not org.instance.any()


def test_16uc1_and_32fc1_give_the_same_cloud_to_a_millimetre():
    scene, depth, camera, _ = _scene(3, holes=0.02)
    clouds = [backproject(depth_in_meters(encode_depth(depth, enc), enc), camera, scene.image,
                          scene.semantic_map(), None, None) for enc in ("16UC1", "32FC1")]
    assert np.array_equal(clouds[0].pixels, clouds[1].pixels)
    assert np.array_equal(clouds[0].label, clouds[1].label)
    ray_len = np.linalg.norm(clouds[1].xyz / clouds[1].xyz[:, 2:], axis=1)
    assert np.all(np.linalg.norm(clouds[0].xyz - clouds[1].xyz, axis=1) <= 0.0005 * ray_len + 1e-6)


def test_every_ground_truth_thing_gets_its_centroid_within_2cm_despite_flying_pixels_and_outliers():
    checked = 0
    for seed in range(6):
        scene, depth, camera, truth = _scene(seed, holes=0.03, outliers=0.02, mixed_borders=True)
        ids, classes = _things(scene)
        objects = objects_3d(depth, camera, scene.segment_map, ids, classes)
        assert {i for i in ids if truth[i].num_pixels >= 40} <= {o.segment_id for o in objects}
        for o in objects:
            t = truth[o.segment_id]
            assert 1 <= t.depth <= 5
            assert np.linalg.norm(o.centroid - t.centroid) <= 0.02, (seed, o, t)
            assert abs(o.median_depth - t.depth) <= 0.01 * t.depth
            # The box is the flat object's, not stretched towards the background by flying pixels.
            assert t.depth * 0.98 <= o.box_min[2] <= o.box_max[2] <= t.depth * 1.02
            assert np.all(o.box_min <= o.centroid) and np.all(o.centroid <= o.box_max)
            assert o.class_index == classes[ids.index(o.segment_id)] and o.num_points >= 10
            checked += 1
        # Without erosion and outlier rejection the same depth drags the boxes away.
        naive = objects_3d(depth, camera, scene.segment_map, ids, classes, erode_px=0, mad_k=np.inf,
                           min_tolerance=np.inf)
        assert any(o.box_max[2] > 1.1 * truth[o.segment_id].depth for o in naive)
    assert checked >= 15


def test_box_spans_the_visible_surface_less_the_eroded_border():
    from scipy import ndimage
    scene, depth, camera, truth = _scene(11)
    ids, classes = _things(scene)
    objects = objects_3d(depth, camera, scene.segment_map, ids, classes, erode_px=1)
    assert len(objects) >= 3
    given = objects_3d(depth, camera, scene.segment_map, ids, classes, bboxes=[
        s["bbox"] for s in scene.segments if s["isthing"]])          # the segments' own boxes: same result
    assert [(o.segment_id, o.num_points) for o in given] == [(o.segment_id, o.num_points) for o in objects]
    np.testing.assert_array_equal(np.array([o.centroid for o in given]), np.array([o.centroid for o in objects]))
    for o in objects:
        mask = scene.segment_map == o.segment_id
        z = truth[o.segment_id].depth
        for m, exact in ((mask, False), (ndimage.binary_erosion(mask, np.ones((3, 3)), border_value=0), True)):
            ys, xs = np.nonzero(m)
            lo = np.array([(xs.min() - camera.cx) / camera.fx, (ys.min() - camera.cy) / camera.fy, 1]) * z
            hi = np.array([(xs.max() - camera.cx) / camera.fx, (ys.max() - camera.cy) / camera.fy, 1]) * z
            if exact:   # min/max of the eroded mask's points
                np.testing.assert_allclose(o.box_min, lo, atol=1e-5)
                np.testing.assert_allclose(o.box_max, hi, atol=1e-5)
                assert o.num_points == m.sum()
            else:       # inside the whole visible surface's box
                assert np.all(o.box_min >= lo - 1e-5) and np.all(o.box_max <= hi + 1e-5)


def test_stride_takes_every_other_row_and_column_of_the_same_points():
    scene = generate_scene(5, size=(121, 161))          # odd sizes: the grid keeps the last row
    depth, camera, _ = render_depth(scene, holes=0.05)
    full = backproject(depth, camera, scene.image, scene.semantic_map(), None, scene.segment_map, organized=True)
    half = backproject(depth, camera, scene.image, scene.semantic_map(), None, scene.segment_map, stride=2,
                       organized=True)
    assert half.organized == camera.grid_size(2) == (61, 81) == camera.rays(2).shape[:2]
    grid = np.arange(121 * 161).reshape(121, 161)[::2, ::2].reshape(-1)
    np.testing.assert_array_equal(half.xyz, full.xyz[grid])
    assert np.array_equal(half.segment, full.segment[grid])
    dense = backproject(depth, camera, scene.image, scene.semantic_map(), None, None, stride=2)
    assert len(dense) == np.isfinite(depth[::2, ::2]).sum()
    ids, classes = _things(scene)
    by_stride = [objects_3d(depth, camera, scene.segment_map, ids, classes, stride=s, min_points=4) for s in (1, 2)]
    for a, b in zip(*by_stride):
        assert a.segment_id == b.segment_id and b.num_points < a.num_points
        assert np.linalg.norm(a.centroid - b.centroid) < 0.05
    with pytest.raises(ValueError, match="stride"):
        backproject(depth, camera, scene.image, scene.semantic_map(), stride=0)


@pytest.mark.parametrize("model, D", [("plumb_bob", [-0.28, 0.07, 1e-3, -5e-4, 0.01]),
                                      ("rational_polynomial", [0.3, -0.1, 1e-3, 2e-3, 0.01, 0.5, -0.05, 0.02])])
def test_distortion_round_trip_through_opencv_projection(model, D):
    K = [520.0, 0, 318.5, 0, 515.0, 243.2, 0, 0, 1]
    camera = PinholeCamera.from_camera_info(640, 480, K, D, model)
    assert camera.distortion == tuple(D)
    for stride in (1, 3):
        rays = camera.rays(stride)
        v, u = np.mgrid[0:480:stride, 0:640:stride]
        z = np.random.default_rng(stride).uniform(0.5, 8, u.shape)
        points = np.concatenate([rays * z[..., None], z[..., None]], -1).reshape(-1, 3)
        pixels, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), camera.matrix, np.asarray(D))
        err = np.abs(pixels.reshape(u.shape + (2,)) - np.stack([u, v], -1))
        assert err.max() < 1e-3, err.max()
    # A distorted camera bends the rays: the pinhole formula alone would be pixels off at the edge.
    pinhole = PinholeCamera.from_camera_info(640, 480, K)
    assert np.abs(camera.rays(1)[0, 0] - pinhole.rays(1)[0, 0]).max() * 520 > 5
    assert camera.rays(1) is camera.rays(1) and not camera.rays(1).flags.writeable   # cached, shared


def test_camera_info_without_distortion_and_refusals():
    cam = PinholeCamera.from_camera_info(4, 3, [2, 0, 1.5, 0, 2, 1, 0, 0, 1], [0.0] * 5, "plumb_bob")
    assert cam.distortion == () and cam == PinholeCamera(4, 3, 2, 2, 1.5, 1)
    np.testing.assert_allclose(cam.rays()[2, 3], [(3 - 1.5) / 2, (2 - 1) / 2])
    assert PinholeCamera.from_camera_info(4, 3, [2, 0, 1.5, 0, 2, 1, 0, 0, 1], [], "equidistant").distortion == ()
    for args, words in [((4, 3, [2, 0, 1.5, 0, 2, 1, 0, 0, 1], [0.1, 0, 0, 0], "equidistant"), "image_rect"),
                        ((4, 3, [2, 0, 1.5, 0, 2, 1, 0, 0, 1], [0.1] * 8, "plumb_bob"), "plumb_bob: 5"),
                        ((4, 3, [0] * 9), "not \\[fx 0 cx"),
                        ((4, 3, [0, 0, 1.5, 0, 0, 1, 0, 0, 1]), "calibrate"),
                        ((0, 0, [2, 0, 1.5, 0, 2, 1, 0, 0, 1]), "positive"),
                        ((4, 3, [2, 0, 1.5, 0, 2, 1]), "9")]:
        with pytest.raises(BadDepth, match=words):
            PinholeCamera.from_camera_info(*args)


def test_depth_encodings_and_invalid_readings():
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    for enc in ("16UC1", "mono16"):
        out = depth_in_meters(mm, enc)
        assert out.dtype == np.float32 and np.isnan(out[0, 0])
        np.testing.assert_allclose(out[[0, 1, 1], [1, 0, 1]], [1.0, 1.5, 65.535], rtol=1e-6)
    m = np.array([[0.0, -1.0, np.inf], [np.nan, 2.5, 1e-3]], np.float32)
    out = depth_in_meters(m, "32FC1")
    assert np.isnan(out[0]).all() and np.isnan(out[1, 0]) and out[1, 1] == 2.5 and out[1, 2] == np.float32(1e-3)
    assert np.isinf(m[0, 2])                                            # the input is not modified
    with pytest.raises(BadDepth, match="'bgr8'.*16UC1.*32FC1"):
        depth_in_meters(mm, "bgr8")
    with pytest.raises(BadDepth, match="uint16 array; got float32"):
        depth_in_meters(m, "16UC1")
    with pytest.raises(BadDepth, match="float32 array; got uint16"):
        depth_in_meters(mm, "32FC1")
    with pytest.raises(BadDepth, match="no valid pixel"):
        depth_in_meters(np.zeros((4, 4), np.uint16), "16UC1")
    with pytest.raises(BadDepth, match="no valid pixel"):
        depth_in_meters(np.full((4, 4), np.nan, np.float32), "32FC1")


def test_zero_and_nan_depth_give_no_point_there():
    scene, depth, camera, _ = _scene(2)
    mm = encode_depth(depth, "16UC1")
    mm[:50] = 0
    f = depth.copy()
    f[:50] = np.nan
    f[50:60] = -1.0
    for d in (depth_in_meters(mm, "16UC1"), depth_in_meters(f, "32FC1")):
        pts = backproject(d, camera, scene.image, scene.semantic_map(), None, None)
        assert pts.pixels.min() >= 50 * camera.width and np.isfinite(pts.xyz).all() and (pts.xyz[:, 2] > 0).all()
    pts = backproject(depth_in_meters(f, "32FC1"), camera, scene.image, scene.semantic_map(), None, None)
    assert pts.pixels.min() == 60 * camera.width


def test_size_mismatches_are_refused_never_resized():
    scene, depth, camera, _ = _scene(1)
    labels = scene.semantic_map()
    with pytest.raises(BadDepth, match="depth is 160x120 but the image is 320x240.*register depth"):
        backproject(depth[::2, ::2], PinholeCamera(160, 120, 1, 1, 80, 60), scene.image, labels)
    with pytest.raises(BadDepth, match="depth is 320x240 but the image is 320x120 \\(labels\\)"):
        backproject(depth, camera, scene.image, labels[:120])
    with pytest.raises(BadDepth, match="camera_info is 640x480"):
        backproject(depth, PinholeCamera(640, 480, 1, 1, 320, 240), scene.image, labels)
    with pytest.raises(BadDepth, match="depth is 320x240 but the image is 160x120 \\(id_image\\)"):
        objects_3d(depth, camera, scene.segment_map[::2, ::2], [1], [0])
    with pytest.raises(BadDepth, match="float array of metres"):
        backproject(encode_depth(depth, "16UC1"), camera, scene.image, labels)
    negative = labels.copy()
    negative[5, 5] = -1
    with pytest.raises(ValueError, match="labels must be >= 0"):
        backproject(depth, camera, scene.image, negative)
    with pytest.raises(ValueError, match="uint8 \\[H, W, 3\\]; got float32"):
        backproject(depth, camera, scene.image.astype(np.float32), labels)
    with pytest.raises(ValueError, match="integer \\[H, W\\] image; got float64"):
        backproject(depth, camera, scene.image, labels.astype(float))


def test_render_depth_leaves_the_scene_and_its_random_stream_untouched():
    a = generate_scene(4, size=SIZE, radius=RADIUS)
    before = (a.image.copy(), a.segment_map.copy(), [dict(s) for s in a.segments], a.caption)
    depth, camera, truth = render_depth(a, holes=0.1, outliers=0.1, mixed_borders=True)
    b = generate_scene(4, size=SIZE, radius=RADIUS)
    for scene in (a, b):
        assert np.array_equal(scene.image, before[0]) and np.array_equal(scene.segment_map, before[1])
        assert scene.segments == before[2] and scene.caption == before[3]
    again, _, _ = render_depth(b, holes=0.1, outliers=0.1, mixed_borders=True)
    np.testing.assert_array_equal(again, depth)                       # its own seeded draws
    things = sorted(i for i, t in truth.items() if t.isthing)
    stuff = [t.depth for t in truth.values() if not t.isthing]
    assert [truth[i].depth for i in things] == sorted((truth[i].depth for i in things), reverse=True)
    assert all(1 <= truth[i].depth <= 5 for i in things) and all(6 <= z <= 12 for z in stuff)
    with pytest.raises(ValueError, match="scene's size"):
        render_depth(a, camera=PinholeCamera(10, 10, 1, 1, 5, 5))
