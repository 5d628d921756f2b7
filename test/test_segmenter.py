"""The whole pipeline on the tiny preset: batching, vocabulary caching, oracle masks, bad input."""
import numpy as np
import pytest
import torch

from ovseg_core.build import build_segmenter
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.structures import PanopticResult


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return build_segmenter("tiny", device="cpu", overrides={"inference.overlap_threshold": 0.0})


def image(h=96, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_result_has_input_resolution_and_consistent_segments(segmenter):
    result = segmenter(image(90, 130), "car; road [stuff]; person,child")
    assert isinstance(result, PanopticResult)
    assert result.segment_map.shape == (90, 130) and result.segment_map.dtype == np.int32
    assert result.semantic_map.shape == (90, 130)
    assert result.class_names == ["car", "road", "person"] and result.class_is_thing == [True, False, True]
    assert result.segments, "overlap threshold 0 keeps every winning query"
    for s in result.segments:
        pixels = result.segment_map == s.id
        assert s.area == pixels.sum() > 0
        assert result.class_names[s.class_index] == s.class_name
    assert set(np.unique(result.segment_map)) - {0} == {s.id for s in result.segments}


def test_batch_equals_one_by_one(segmenter):
    """Cameras of one size need no padding, so a batch is the images one by one (cameras
    of several sizes: each is its padded frame, test_aspect.py)."""
    images = [image(96, 128, 1), image(96, 128, 2)]
    vocab = "car; road [stuff]"
    batched = segmenter(images, vocab)
    for im, got in zip(images, batched):
        alone = segmenter(im, vocab)
        np.testing.assert_array_equal(got.segment_map, alone.segment_map)
        np.testing.assert_array_equal(got.semantic_map, alone.semantic_map)


def test_a_vocabulary_is_text_encoded_once(segmenter, monkeypatch):
    calls = []
    model = segmenter.text_encoder.model
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    segmenter.text_encoder.cache.clear()
    segmenter(image(), "tree; sky [stuff]")
    first = len(calls)
    assert first > 0
    for _ in range(3):
        segmenter(image(), "tree; sky [stuff]")
        segmenter([image(), image()], "tree;  sky [stuff]")  # same vocabulary, other spacing
    assert len(calls) == first
    segmenter(image(), "tree; sky [stuff]; bench")
    assert len(calls) > first


def test_oracle_masks_are_classified_and_returned(segmenter):
    h, w = 64, 64
    gt = np.zeros((2, h, w), dtype=bool)
    gt[0, :32] = True
    gt[1, 32:] = True
    props = OracleProposals()([gt])
    result = segmenter(image(h, w), "car; road [stuff]", proposals=props)
    covered = result.segment_map > 0
    assert covered.all()  # two full-confidence masks tile the image
    top = np.unique(result.segment_map[:32]); bottom = np.unique(result.segment_map[32:])
    assert len(top) == 1 and len(bottom) == 1


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 10), dtype=np.uint8), "RGB"),
    (np.zeros((10, 10, 3), dtype=np.float64), "uint8"),
    (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
    ("not an image", "numpy array or torch tensor"),
])
def test_bad_images_get_clear_errors(segmenter, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        segmenter(bad, "car")


def test_bad_vocabulary_gets_a_clear_error(segmenter):
    with pytest.raises(ValueError, match="empty"):
        segmenter(image(), " ; ")


def test_torch_images_are_accepted(segmenter):
    t = torch.from_numpy(image()).permute(2, 0, 1).float() / 255
    a = segmenter(t, "car; road [stuff]")
    b = segmenter(image(), "car; road [stuff]")
    np.testing.assert_array_equal(a.segment_map, b.segment_map)
    batch = segmenter(torch.stack([t, t]), "car; road [stuff]")
    assert len(batch) == 2


@pytest.mark.parametrize("split, segments", [(0.0, 1), (0.1, 2)])
def test_inference_split_components_splits_a_proposal_of_two_parts(split, segments):
    """The preset key reaches the pipeline: one proposal on two squares apart names them
    as one segment, or (split) as two."""
    from ovseg_core.structures import MaskProposals
    torch.manual_seed(0)
    seg = build_segmenter("tiny", device="cpu", overrides={"inference.overlap_threshold": 0.0,
                                                           "inference.split_components": split})

    def two_squares(batch):
        m = torch.full((batch.shape[0], 1, 16, 16), -8.0)
        m[:, 0, 2:6, 2:6] = m[:, 0, 10:14, 10:14] = 8.0
        return MaskProposals(m, torch.ones(batch.shape[0], 1))

    seg.proposals = two_squares
    result = seg(image(64, 64), "car")
    assert len(result.segments) == segments
    assert abs(sum(s.area for s in result.segments) - 2 * 16 * 16) < 32     # bilinear borders
