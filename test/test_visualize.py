"""Overlays people can read: upscaled small frames, see-through fills, labels that never
overlap (ovseg_core.visualize)."""
import numpy as np
import pytest

from ovseg_core.structures import PanopticResult, Segment
from ovseg_core.visualize import (drawing_size, label_boxes, overlay, segment_colors, upscale,
                                  upscale_labels)


def result_of(seg: np.ndarray, things=None, names=None) -> PanopticResult:
    """A result listing every id of `seg` (class index = id - 1; `things`: ids that are things)."""
    ids = [int(i) for i in np.unique(seg) if i]
    names = names or [f"class {i}" for i in range(max(ids))]
    things = set(ids if things is None else things)
    segments = []
    for i in ids:
        ys, xs = np.nonzero(seg == i)
        segments.append(Segment(i, i - 1, names[i - 1], 0.5 + (i % 5) / 10, i in things, len(ys),
                                (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)))
    return PanopticResult(seg.astype(np.int32), segments, np.zeros_like(seg, np.int32), names,
                          [i + 1 in things for i in range(len(names))])


def crowded(seed: int) -> PanopticResult:
    """128 px: a stuff floor and 40 small overlapping squares, far more labels than room."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((128, 128), np.int32)
    seg[80:] = 1
    for i in range(2, 42):
        x, y = rng.integers(0, 120, 2)
        s = rng.integers(3, 16)
        seg[y:y + s, x:x + s] = i
    return result_of(seg, things=range(2, 42))


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_boxes_never_overlap_on_a_crowded_result(seed):
    result = crowded(seed)
    image = np.random.default_rng(seed).integers(60, 200, (128, 128, 3), dtype=np.uint8)
    boxes = label_boxes(image, result)
    listed = {s.id for s in result.segments if s.area}
    assert set(boxes) <= listed
    assert len(boxes) >= len(listed) // 2, "most labels find a place (inside, or with a leader line)"
    items = list(boxes.values())
    for i, a in enumerate(items):
        assert 0 <= a[0] < a[2] <= 512 and 0 <= a[1] < a[3] <= 512
        for b in items[i + 1:]:
            assert not overlaps(a, b), (a, b)
    # and it is what overlay draws: the same call, the boxes darkened
    out = overlay(image, result)
    x0, y0, x1, y1 = boxes[1]
    assert out[y0:y1, x0:x1].mean() < 100


def test_labels_sit_on_their_segments_when_there_is_room():
    seg = np.zeros((96, 128), np.int32)
    seg[:40] = 1            # sky
    seg[40:] = 2            # ground
    seg[50:90, 10:60] = 3   # a thing
    seg[50:90, 70:120] = 4  # another
    result = result_of(seg, things=[3, 4])
    boxes = label_boxes(np.full((96, 128, 3), 128, np.uint8), result)
    assert set(boxes) == {1, 2, 3, 4}
    up = upscale_labels(seg, drawing_size(seg.shape))
    for seg_id, (x0, y0, x1, y1) in boxes.items():
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        assert up[cy, cx] == seg_id, f"label of {seg_id} is not centred on its segment"


def test_upscaled_overlay_has_the_requested_size_and_is_never_downscaled():
    seg = np.zeros((96, 128), np.int32)
    seg[20:70, 30:90] = 1
    result = result_of(seg)
    image = np.full((96, 128, 3), 90, np.uint8)
    assert overlay(image, result).shape == (384, 512, 3)
    assert overlay(image, result, min_size=300).shape == (225, 300, 3)
    assert overlay(image, result, min_size=0).shape == (96, 128, 3)
    assert overlay(image, result, min_size=100).shape == (96, 128, 3)   # never smaller
    assert drawing_size((100, 75), 512) == (512, 384)


def stripes(length: int) -> np.ndarray:
    """[length] ids: stripes 1..6 pixels wide at shifting offsets, one gap pixel more apart."""
    ids, x, k = np.zeros(length, np.int32), 1, 1
    while x + k < length:
        ids[x:x + k] = k
        x, k = x + 2 * k + 1, k % 6 + 1
    return ids


@pytest.mark.parametrize("shape", [(96, 128), (75, 100), (50, 37)])    # x4, x5.12, x10.24
def test_upscaled_label_edges_stay_on_the_image_edges(shape):
    """The label map's edges are where the smoothly upscaled image has them (cv2.resize's
    plain INTER_NEAREST is a pixel off at non-integer factors), and the drawing follows the map."""
    h, w = shape
    for seg in (np.broadcast_to(stripes(w), shape).copy(), np.broadcast_to(stripes(h)[:, None], shape).copy()):
        image = np.where(seg[..., None] > 0, 255, 0).astype(np.uint8).repeat(3, -1)
        up_image, up = upscale(image, seg, 512)
        assert up.shape == up_image.shape[:2] == drawing_size(shape) and max(up.shape) == 512
        value = up_image[..., 0].astype(float)
        clear = np.abs(value - 127.5) > 25            # not half-way on a blurred edge
        assert ((value > 127.5) == (up > 0))[clear].all()
        # on a flat image every segment pixel changes and nothing else
        flat = np.full((h, w, 3), 100, np.uint8)
        out = overlay(flat, result_of(seg), labels=False)
        assert ((out != 100).any(-1) == (up > 0)).all()


def test_the_image_shows_through_the_fill_and_outlines_are_solid():
    rng = np.random.default_rng(3)
    image = rng.integers(40, 220, (128, 128, 3), dtype=np.uint8)
    seg = np.zeros((128, 128), np.int32)
    seg[:, :] = 1                      # stuff everywhere ...
    seg[40:100, 30:90] = 2             # ... and a thing
    result = result_of(seg, things=[2])
    colors = segment_colors(result)
    out = overlay(image, result, labels=False, min_size=0)
    inside = np.zeros_like(seg, bool)
    inside[45:95, 35:85] = True        # away from the outline
    fill = out[inside].astype(int)
    assert (np.abs(fill - colors[2]).sum(-1) > 0).all(), "not a flat color"
    assert (np.abs(fill - image[inside]).sum(-1) > 0).all(), "the segment is colored"
    # moderate: the image's texture is still there
    assert np.corrcoef(fill[:, 0], image[inside][:, 0].astype(int))[0, 1] > 0.8

    def opacity(mask, seg_id):
        img, o = image[mask].astype(float), out[mask].astype(float)
        return np.median(((o - img) / (colors[seg_id] - img + 1e-9))[np.abs(colors[seg_id] - img) > 30])
    stuff = np.zeros_like(seg, bool)
    stuff[5:30, 5:120] = True
    assert 0.25 < opacity(inside, 2) < 0.7
    assert opacity(stuff, 1) < opacity(inside, 2), "stuff lighter than things"
    # the thing's outline: full color on its edge, nothing drawn outside it or at the image border
    assert (out[40, 50] == colors[2]).all() and (out[70, 30] == colors[2]).all()
    assert not (out[39, 50] == colors[2]).all()
    assert not (out[0, 5:120] == colors[1]).all(-1).any(), "no outline along the image border"


def test_class_colors_are_distinct_and_stuff_paler():
    seg = np.repeat(np.arange(1, 11, dtype=np.int32), 10)[None].repeat(8, 0)
    result = result_of(seg, things=range(1, 6))
    colors = segment_colors(result)[1:]
    assert len({tuple(c) for c in colors}) == 10
    things, stuff = colors[:5].astype(int), colors[5:].astype(int)
    assert stuff.min(-1).mean() > things.min(-1).mean(), "stuff mixed towards white"


def test_labels_can_be_names_only_and_a_broken_bbox_is_harmless():
    seg = np.zeros((64, 64), np.int32)
    seg[10:50, 10:50] = 1
    result = result_of(seg)
    image = np.full((64, 64, 3), 100, np.uint8)
    with_score, name_only = label_boxes(image, result)[1], label_boxes(image, result, scores=False)[1]
    assert name_only[2] - name_only[0] < with_score[2] - with_score[0]
    result.segments.append(Segment(7, 0, "class 0", 0.9, True, 5, (60, 60, 4, 4)))   # not in the map
    assert set(label_boxes(image, result)) == {1}
