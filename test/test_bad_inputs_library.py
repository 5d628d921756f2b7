"""Issue 15, section 2 (library): images the Segmenter would misread are refused with a
message that says what to change; numpy images are always channels-last; a 4-D numpy
batch works like a 4-D torch batch; a vocabulary per image is refused clearly; loading
weights leaves the caller's ``logging.disable`` level alone."""
import logging

import numpy as np
import pytest
import torch

from ovseg_core.segmenter import image_to_tensor
from ovseg_core.weights import create_clip

CPU = torch.device("cpu")


def test_numpy_images_are_channels_last_even_when_three_rows_high():
    image = np.random.default_rng(0).integers(0, 256, (3, 7, 3), dtype=np.uint8)   # 3 rows, 7 columns
    t = image_to_tensor(image, CPU)
    assert t.shape == (3, 3, 7)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), image / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match=r"channels last.*transpose\(1, 2, 0\)"):
        image_to_tensor(np.zeros((3, 7, 5), np.uint8), CPU)


@pytest.mark.parametrize("image,needle", [
    (torch.full((3, 4, 5), 200.0), r"must lie in \[0, 1\].*divide 0..255 values by 255"),
    (torch.tensor(float("nan")).expand(3, 4, 5), "NaN or infinite"),
    (torch.ones(3, 4, 5, dtype=torch.bool), "got torch.bool"),
    (torch.ones(3, 4, 5, dtype=torch.int64), r"got torch.int64.*\.to\(torch.uint8\)"),
    (torch.zeros(4, 5, 4), r"drop the alpha channel"),
    (np.zeros((4, 5, 4), np.uint8), r"drop the alpha channel"),
    (np.zeros((4, 5), np.uint8), r"repeat the channel"),
])
def test_images_that_would_be_misread_are_refused(image, needle):
    with pytest.raises(ValueError, match=needle) as err:
        image_to_tensor(image, CPU)
    assert "repeat" not in str(err.value) or "alpha" not in needle


def test_float_images_in_range_pass_and_slight_overshoot_is_clamped():
    t = image_to_tensor(torch.full((4, 5, 3), 1.0005), CPU)
    assert t.shape == (3, 4, 5) and t.max() == 1.0
    assert torch.equal(image_to_tensor(torch.full((3, 4, 5), 0.5), CPU), torch.full((3, 4, 5), 0.5))


@pytest.fixture(scope="module")
def segmenter():
    from ovseg_core.build import build_segmenter
    torch.manual_seed(0)
    return build_segmenter("tiny", device="cpu", overrides={"inference.overlap_threshold": 0.0})


def test_a_4d_numpy_batch_equals_the_list(segmenter):
    batch = np.random.default_rng(1).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    vocab = "car; road [stuff]"
    as_array = segmenter(batch, vocab)
    as_list = segmenter(list(batch), vocab)
    assert len(as_array) == 2
    for a, b in zip(as_array, as_list):
        assert a.segment_map.shape == (40, 56)
        np.testing.assert_array_equal(a.segment_map, b.segment_map)


@pytest.mark.parametrize("vocabulary", [
    ["car; road [stuff]", "person; sky [stuff]"],            # one text per image
    [["car", "road"], ["person", "sky"]],                    # one name list per image
])
def test_a_vocabulary_per_image_is_refused_clearly(segmenter, vocabulary):
    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    with pytest.raises(TypeError, match="one vocabulary serves the whole batch.*call once per vocabulary"):
        segmenter(images, vocabulary)


def test_a_name_list_is_still_one_vocabulary(segmenter):
    result = segmenter([np.zeros((32, 32, 3), np.uint8)] * 2, ["car", "road"])
    assert [r.class_names for r in result] == [["car", "road"]] * 2


@pytest.mark.parametrize("level", [logging.INFO, logging.CRITICAL])
def test_loading_weights_keeps_the_callers_logging_disable_level(level):
    logging.disable(level)
    try:
        create_clip("ovseg-tiny-vit", None, "tiny")
        assert logging.root.manager.disable == level
    finally:
        logging.disable(logging.NOTSET)
