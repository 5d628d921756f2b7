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
