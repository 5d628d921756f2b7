"""Hand-worked cases for the Mask2Former panoptic merge and semantic inference.

Masks are built from per-column logits repeated over 2 rows: +5 / -5 are "clearly
in / out" (sigmoid 0.9933 / 0.0067); smaller logits set up the contested pixels.
Classes: cat, dog (things), sky (stuff); probability column 3 is void."""
import numpy as np
import pytest
import torch

from ovseg_core.postprocess import panoptic_merge, semantic_map, semantic_scores, split_components
from ovseg_core.structures import MaskProposals

NAMES = ["cat", "dog", "sky"]
IS_THING = [True, True, False]
CAT, DOG, SKY, VOID = range(4)


def probs(*rows):
    """Each row (label, score): score on label, the rest spread over the other columns."""
    out = torch.zeros(len(rows), 4)
    for q, (label, score) in enumerate(rows):
        out[q] = (1 - score) / 3
        out[q, label] = score
    return out


def masks(*columns):
    """Each entry: per-column logits of one query; 2 identical rows."""
    return torch.tensor(columns, dtype=torch.float32)[:, None, :].repeat(1, 2, 1)


def merge(p, m, **kw):
    return panoptic_merge(p, m, NAMES, IS_THING, **kw)


def cols(seg_map, seg_id):
    assert (seg_map[0] == seg_map[1]).all()
    return np.flatnonzero(seg_map[0] == seg_id).tolist()


def test_object_mask_threshold_drops_low_score_query():
    p = probs((CAT, 0.9), (DOG, 0.7))
    m = masks([5, 5, -5, -5], [-5, -5, 5, 5])
    seg_map, segs = merge(p, m)
    # Without the dog the cat wins every pixel, but only its own mask becomes the segment.
    assert seg_map.tolist() == [[1, 1, 0, 0]] * 2
    assert [(s.id, s.class_name) for s in segs] == [(1, "cat")]


def test_void_labelled_query_dropped():
    p = probs((VOID, 0.95), (CAT, 0.9))
    m = masks([5, 5, 5, 5], [5, 5, -5, -5])
    seg_map, segs = merge(p, m)
    assert seg_map.tolist() == [[1, 1, 0, 0]] * 2
    assert [(s.id, s.class_name, s.score) for s in segs] == [(1, "cat", pytest.approx(0.9))]


def test_overlapping_things_split_by_score_times_mask():
    p = probs((CAT, 0.9), (DOG, 0.85))
    m = masks([5, 5, 5, 5, 5, 5, 2, 2, -5, -5, -5, -5],
              [-5, -5, -5, -5, -5, -5, 2, 3, 5, 5, 5, 5])
    # Column 6: equal masks, cat's higher score wins (0.793 > 0.749).
    # Column 7: dog's stronger mask wins (0.85 * 0.953 = 0.810 > 0.793).
    # Cat keeps 14 of its 16 mask pixels, dog 10 of 12: both above 0.8.
    seg_map, segs = merge(p, m)
    assert cols(seg_map, 1) == list(range(0, 7))
    assert cols(seg_map, 2) == list(range(7, 12))
    assert [(s.id, s.class_index, s.is_thing, s.area, s.bbox) for s in segs] == [
        (1, CAT, True, 14, (0, 0, 7, 2)), (2, DOG, True, 10, (7, 0, 5, 2))]
    assert segs[0].score == pytest.approx(0.9) and segs[1].score == pytest.approx(0.85)
    assert seg_map.dtype == np.int32 and seg_map.shape == (2, 12)


def test_query_keeping_too_little_of_its_mask_is_dropped():
    p = probs((CAT, 0.95), (DOG, 0.9))
    m = masks([5, 5, 5, 5, 5, 5, -5, -5], [-5, -5, 5, 5, 5, 5, 5, 5])
    # The dog wins only columns 6-7: 4 of its 12 mask pixels (0.33).
    seg_map, segs = merge(p, m)
    assert seg_map.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0]] * 2
    assert [s.class_name for s in segs] == ["cat"]
    seg_map, segs = merge(p, m, overlap_threshold=0.3)
    assert seg_map.tolist() == [[1, 1, 1, 1, 1, 1, 2, 2]] * 2
    assert [(s.class_name, s.area) for s in segs] == [("cat", 12), ("dog", 4)]


def test_overlap_ratio_counts_all_argmax_pixels_like_mask2former():
    p = probs((CAT, 0.9), (DOG, 0.95))
    m = masks([5, 5, 5, 5, -1, -1, -1, -1], [5, 5, -5, -5, -5, -5, -5, -5])
    # The dog takes columns 0-1 of the cat's mask; the cat still wins columns 2-7
    # (0.9 * 0.269 beats 0.95 * 0.0067 outside its mask). Mask2Former compares those
    # 12 won pixels with the 8 of its mask, 1.5 >= 0.8, so the cat stays with only
    # columns 2-3, half of its mask.
    seg_map, segs = merge(p, m)
    assert seg_map.tolist() == [[2, 2, 1, 1, 0, 0, 0, 0]] * 2
    assert [(s.id, s.class_name, s.area) for s in segs] == [(1, "cat", 4), (2, "dog", 4)]


def test_stuff_of_one_class_merges_things_stay_separate():
    p = probs((SKY, 0.85), (CAT, 0.9), (SKY, 0.9), (CAT, 0.95))
    m = masks([5, 5, -5, -5, -5, -5, -5, -5], [-5, -5, 5, 5, -5, -5, -5, -5],
              [-5, -5, -5, -5, 5, 5, -5, -5], [-5, -5, -5, -5, -5, -5, 5, 5])
    seg_map, segs = merge(p, m)
    assert seg_map.tolist() == [[1, 1, 2, 2, 1, 1, 3, 3]] * 2
    assert [(s.id, s.class_name, s.is_thing, s.area, s.bbox) for s in segs] == [
        (1, "sky", False, 8, (0, 0, 6, 2)),
        (2, "cat", True, 4, (2, 0, 2, 2)),
        (3, "cat", True, 4, (6, 0, 2, 2))]
    assert [s.score for s in segs] == pytest.approx([0.9, 0.9, 0.95])


def test_bbox_and_area_of_irregular_segment():
    m = torch.full((1, 5, 6), -5.0)
    m[0, 1, 2] = m[0, 2, 1:4] = m[0, 3, 3] = 5.0
    seg_map, segs = merge(probs((CAT, 0.9)), m)
    assert (seg_map == 1).sum() == 5
    assert (segs[0].area, segs[0].bbox) == (5, (1, 1, 3, 3))


@pytest.mark.parametrize("p", [torch.zeros(0, 4), probs((CAT, 0.5), (DOG, 0.8))])
def test_empty_result(p):
    seg_map, segs = merge(p, torch.zeros(p.shape[0], 3, 5))
    assert segs == [] and seg_map.shape == (3, 5) and seg_map.dtype == np.int32
    assert not seg_map.any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    p = probs((CAT, 0.9), (DOG, 0.85))
    m = masks([5, 5, 5, 5, 5, 5, 2, 2, -5, -5, -5, -5],
              [-5, -5, -5, -5, -5, -5, 2, 3, 5, 5, 5, 5])
    seg_map, segs = merge(p.to(dtype), m.to(dtype))
    expected, _ = merge(p, m)
    assert (seg_map == expected).all() and len(segs) == 2
    assert semantic_scores(p.to(dtype), m.to(dtype)).dtype == torch.float32


def test_rejects_vocabulary_size_mismatch():
    with pytest.raises(ValueError):
        panoptic_merge(probs((CAT, 0.9)), masks([5]), NAMES[:2], IS_THING[:2])


def test_semantic_two_classes():
    p = torch.tensor([[0.7, 0.1, 0.2], [0.2, 0.6, 0.2]])
    m = torch.tensor([[[20.0, 0.0]], [[0.0, 20.0]]])  # sigmoid 1 / 0.5
    # pixel 0: class0 0.7 + 0.2*0.5 = 0.8, class1 0.1 + 0.6*0.5 = 0.4
    # pixel 1: class0 0.35 + 0.2 = 0.55, class1 0.05 + 0.6 = 0.65
    scores = semantic_scores(p, m)
    assert scores.shape == (2, 1, 2)
    assert scores[:, 0].tolist() == [pytest.approx([0.8, 0.55]), pytest.approx([0.4, 0.65])]
    sem = semantic_map(p, m)
    assert sem.dtype == np.int32 and sem.tolist() == [[0, 1]]


def test_semantic_map_in_bands_equals_at_once():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(6, 5), -1)
    logits = torch.randn(6, 37, 23)
    whole = semantic_scores(probs, logits).argmax(0).numpy()
    np.testing.assert_array_equal(semantic_map(probs, logits, max_elements=4 * 23 * 3), whole)


def blob_masks():
    """[1, 3, 12, 12] logits: query 0 two squares apart (4x4 and 3x3) with a soft rim,
    query 1 one square, query 2 a square plus a 1-pixel speck."""
    m = torch.full((1, 3, 12, 12), -6.0)
    m[0, 0, 0:6, 0:6] = -1.0                 # soft rim around the first square, below 0
    m[0, 0, 1:5, 1:5] = 4.0
    m[0, 0, 8:11, 8:11] = 3.0
    m[0, 1, 6:10, 0:4] = 5.0
    m[0, 2, 0:5, 7:12] = 2.0
    m[0, 2, 11, 0] = 2.0
    return m


def test_split_components_gives_each_connected_part_its_own_proposal():
    m = blob_masks()
    obj = torch.tensor([[0.9, 0.8, 0.7]])
    out = split_components(MaskProposals(m, obj), min_fraction=0.1, min_pixels=2)
    # query 0 became two proposals; 1 and 2 stay whole (2's speck is under min_pixels)
    assert out.masks.shape == (1, 4, 12, 12)
    assert out.objectness[0].tolist() == pytest.approx([0.8, 0.7, 0.9, 0.9])
    assert torch.equal(out.masks[0, 0], m[0, 1]) and torch.equal(out.masks[0, 1], m[0, 2])
    first, second = out.masks[0, 2] > 0, out.masks[0, 3] > 0
    assert first.sum() == 16 and bool(first[1:5, 1:5].all())
    assert second.sum() == 9 and bool(second[8:11, 8:11].all())
    # the parts tile the original logits exactly: every pixel's logit goes to one part
    parts = torch.stack([out.masks[0, 2], out.masks[0, 3]])
    assert torch.equal(parts.max(0).values, m[0, 0])
    assert ((parts > -20).sum(0) == 1).all()
    # the soft rim went with the square it surrounds
    assert out.masks[0, 2][0, 0] == -1.0 and out.masks[0, 3][0, 0] == -20.0


def test_split_components_keeps_small_parts_with_the_nearest_kept_one():
    m = blob_masks()
    obj = torch.tensor([[0.9, 0.8, 0.7]])
    # at 0.6 of the largest part, the 3x3 square (9 < 0.6 * 16) is not a proposal of its own
    out = split_components(MaskProposals(m, obj), min_fraction=0.6, min_pixels=2)
    assert torch.equal(out.masks, m) and torch.equal(out.objectness, obj)
    assert torch.equal(split_components(MaskProposals(m, obj), min_fraction=0.0).masks, m)


def test_split_components_pads_a_batch_with_empty_proposals():
    m = torch.cat([blob_masks(), torch.full((1, 3, 12, 12), -6.0)])
    m[1, 0, 2:6, 2:6] = 5.0
    obj = torch.full((2, 3), 0.9)
    out = split_components(MaskProposals(m, obj), min_fraction=0.1, min_pixels=2)
    assert out.masks.shape == (2, 4, 12, 12)
    assert torch.equal(out.masks[1, :3], m[1]) and out.objectness[1, 3] == 0
    assert (out.masks[1, 3] < 0).all()


def test_split_components_lets_the_merge_name_each_part():
    """Two things of one look that one query covers become two segments."""
    m = blob_masks()[0, :1]
    p = probs((CAT, 0.9))
    seg_map, segments = merge(p, m, overlap_threshold=0.5)
    assert len(segments) == 1
    out = split_components(MaskProposals(m[None], torch.ones(1, 1)), 0.1, 2)
    seg_map, segments = merge(probs((CAT, 0.9), (DOG, 0.9)), out.masks[0], overlap_threshold=0.5)
    assert [s.class_name for s in segments] == ["cat", "dog"]
    assert [s.area for s in segments] == [16, 9]


# --- postprocess (banded, at the proposals' resolution) against the reference -------------
# ``reference_postprocess`` is the post-processing as it was (every proposal resized to the
# image, then the merge and the semantic map above); ``postprocess`` must give the same
# segment map, segments and semantic map bit for bit. ``max_bytes=1`` forces its banded
# path even on these small images, and a reference that raises proves it was taken. One
# torch thread and image widths that are multiples of 64 keep the reference's own sigmoid
# on torch's vector path everywhere (its scalar tail can differ by an ulp, which would make
# the reference itself depend on the thread count at exact ties).

from unittest import mock  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ovseg_core.postprocess as pp  # noqa: E402
from ovseg_core.resize import crop_resize  # noqa: E402

REFERENCE = pp.reference_postprocess


class one_thread:
    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def blob_logits(rng, q, h, w, step=None, max_radius=None):
    """[q, h, w] logits of round blobs (k * (1 - distance / radius)); ``step`` rounds them,
    so that different queries tie exactly."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(q):
        cy, cx = rng.uniform(-1, h), rng.uniform(-1, w)
        radius = rng.uniform(1.0, max_radius or max(h, w) / 2)
        k = rng.choice([1.0, 4.0, 8.0, 30.0])
        out.append(k * (1 - np.hypot(yy - cy, xx - cx) / radius))
    logits = np.stack(out).astype(np.float32)
    if step:
        logits = np.round(logits / step) * step
    return torch.from_numpy(logits)


def class_probs(rng, q, k, tie_scores=False):
    """[q, k + 1] rows: a peak on a random class (or void), its height from a small set when
    ``tie_scores`` (so scores tie), the rest spread evenly."""
    heights = [0.5, 0.85, 0.9, 0.95] if tie_scores else None
    out = np.zeros((q, k + 1), np.float32)
    for i in range(q):
        label = rng.integers(0, k + 1)
        top = rng.choice(heights) if heights else rng.uniform(0.3, 1.0)
        out[i] = (1 - top) / k
        out[i, label] = top
    return torch.from_numpy(out)


def both(probs, logits, valid, size, k, band, **kw):
    names, is_thing = [f"c{i}" for i in range(k)], [i % 2 == 0 for i in range(k)]
    expected = REFERENCE(probs, logits, valid, size, names, is_thing, **kw)
    with mock.patch.object(pp, "reference_postprocess", side_effect=AssertionError("took the reference path")):
        got = pp.postprocess(probs, logits, valid, size, names, is_thing, max_bytes=1, band=band, **kw)
    return expected, got


def assert_same(expected, got):
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1] == expected[1]
    np.testing.assert_array_equal(got[2], expected[2])
    assert got[0].dtype == got[2].dtype == np.int32


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), q=st.integers(4, 10), h=st.integers(3, 20), w=st.integers(3, 40),
       height=st.integers(1, 70), width=st.sampled_from([64, 128, 192]), k=st.integers(1, 5),
       valid=st.sampled_from([(1.0, 1.0), (0.75, 1.0), (1.0, 0.6), (0.55, 0.8)]),
       band=st.integers(1, 70), step=st.sampled_from([None, None, 0.5, 2.0]), tie_scores=st.booleans(),
       duplicates=st.integers(0, 3), thresholds=st.sampled_from([(0.8, 0.8), (0.3, 0.8), (0.5, 0.0), (0.0, 1.0)]))
def test_postprocess_equals_reference(seed, q, h, w, height, width, k, valid, band, step, tie_scores, duplicates,
                                      thresholds):
    """Random blobs, ties of scores and of logits, repeated queries (the first must win),
    padded frames, every band width: bit-identical to the reference."""
    if height + width <= 128:
        height = 129 - width
    rng = np.random.default_rng(seed)
    logits, probs = blob_logits(rng, q, h, w, step), class_probs(rng, q, k, tie_scores)
    for _ in range(duplicates):
        src, dst = sorted(rng.choice(q, 2, replace=False))
        logits[dst], probs[dst] = logits[src], probs[src]
    with one_thread():
        expected, got = both(probs, logits, valid, (height, width), k, band,
                             object_mask_threshold=thresholds[0], overlap_threshold=thresholds[1])
    assert_same(expected, got)


def overlap_ratios(probs, logits, size, object_mask_threshold):
    """Each kept query's won / own-mask area, computed as panoptic_merge does."""
    scores, labels = probs.max(-1)
    keep = (labels != probs.shape[1] - 1) & (scores > object_mask_threshold)
    masks = crop_resize(logits, (1.0, 1.0), size)[keep].sigmoid()
    winner = (scores[keep][:, None, None] * masks).argmax(0)
    won = torch.bincount(winner.flatten(), minlength=len(masks))
    own = (masks >= 0.5).flatten(1).sum(1)
    return [a / b for a, b in zip(won.tolist(), own.tolist()) if b]


@pytest.mark.parametrize("seed", range(4))
def test_postprocess_equals_reference_at_the_overlap_threshold(seed):
    """A query whose won / own area is exactly the threshold is kept, one ulp above is not:
    the banded areas must be the reference's to the pixel."""
    rng = np.random.default_rng(seed)
    k, size = 3, (40, 128)
    logits, probs = blob_logits(rng, 8, 10, 32), class_probs(rng, 8, k)
    ratios = sorted({r for r in overlap_ratios(probs, logits, size, 0.3) if 0 < r < 1})
    assert ratios, "the blobs should overlap"
    with one_thread():
        for ratio in ratios:
            for threshold in (ratio, float(np.nextafter(ratio, 2.0))):
                expected, got = both(probs, logits, (1.0, 1.0), size, k, band=13,
                                     object_mask_threshold=0.3, overlap_threshold=threshold)
                assert_same(expected, got)


def test_postprocess_equals_reference_at_camera_size_across_threads():
    """A 480x640 frame from 120x160 proposals, in the threads torch has: the path the node
    takes, with torch's default thread count."""
    rng = np.random.default_rng(7)
    logits, probs = blob_logits(rng, 30, 120, 160, max_radius=25), class_probs(rng, 30, 6)
    expected, got = both(probs, logits, (1.0, 1.0), (480, 640), 6, band=64, object_mask_threshold=0.5)
    assert_same(expected, got)
    assert len(got[1]) > 3


def test_postprocess_falls_back_to_the_reference_for_non_finite_logits():
    logits = torch.zeros(5, 10, 20)
    logits[1, 2, 3] = float("nan")
    probs = torch.full((5, 3), 1 / 3)
    with mock.patch.object(pp, "reference_postprocess", wraps=REFERENCE) as ref:
        pp.postprocess(probs, logits, (1.0, 1.0), (40, 200), ["a", "b"], [True, False], max_bytes=1)
    assert ref.call_count == 1


def test_postprocess_equals_reference_on_the_pipelines_proposals(tiny_segmenter):
    """The tiny preset's own proposals for two cameras of different sizes in one batch (so
    each is a padded part of the frame), at overlap threshold 0 so that many queries survive."""
    from ovseg_core.segmenter import class_probabilities, image_to_tensor
    rng = np.random.default_rng(0)
    images = [image_to_tensor(rng.integers(0, 255, shape, dtype=np.uint8), "cpu")
              for shape in ((90, 130, 3), (140, 200, 3))]
    with torch.no_grad():
        vocab, proposals, valid, logits = tiny_segmenter._logits(tiny_segmenter.layout(images),
                                                                 "car; road [stuff]; person; sky [stuff]", None)
    probs = class_probabilities(logits, proposals.objectness, len(vocab))
    assert valid[0] != (1.0, 1.0), "the smaller camera is padded"
    for p, m, v, im in zip(probs, proposals.masks, valid, images):
        for threshold in (0.0, 0.8):
            expected, got = both(p, m, v, im.shape[-2:], len(vocab), band=17, object_mask_threshold=0.0,
                                 overlap_threshold=threshold)
            assert_same(expected, got)
