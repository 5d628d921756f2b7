"""Aspect-preserving inputs (issue 15, section 1): the preset's input size bounds the longer
side, batches of several sizes are padded, and padding never reaches a segment or a mask
token; ``resize: square`` keeps the old squashing, and square inputs give its numbers."""
import copy

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from ovseg_core.build import build_segmenter
from ovseg_core.config import load_preset
from ovseg_core.modeling.classifiers import (MaskAdapterClassifier, MaskAttentionClassifier, MaskCropClassifier,
                                             MaskPoolingClassifier)
from ovseg_core.modeling.clip_encoder import MaskCLIPEncoder
from ovseg_core.resize import OFF_LOGIT, batch_for_stage, crop_resize, fitted_size, move_masks
from ovseg_core.shapes import generate_scene, load_classes
from ovseg_core.structures import MaskProposals
from ovseg_core.text import ClassEmbeddings
from ovseg_core.weights import register_clip_configs


def tiny(resize):
    torch.manual_seed(0)   # the same random weights in both modes
    return build_segmenter("tiny", device="cpu", overrides={
        "inference.overlap_threshold": 0.0, "clip.resize": resize, "proposals.resize": resize})


@pytest.fixture(scope="module")
def tiny_pair():
    return tiny("longest_side"), tiny("square")


@pytest.fixture(scope="module")
def shapes():
    return build_segmenter("shapes", device="cpu")


@pytest.fixture(scope="module")
def shapes_vocab():
    return load_classes().vocabulary_text()


@pytest.fixture(scope="module")
def clip():
    register_clip_configs()
    torch.manual_seed(0)
    return open_clip.create_model("ovseg-tiny-vit", pretrained=None).eval()   # patch 16, 64 px


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def class_agreement(a, b) -> float:
    """Share of pixels whose panoptic segments (or no segment) have the same class in a and b."""
    def classes(r):
        # a segment may lie wholly outside a cropped segment_map: size the table by both
        lut = np.full(max([int(r.segment_map.max())] + [s.id for s in r.segments]) + 1, -1)
        for s in r.segments:
            lut[s.id] = s.class_index
        return lut[r.segment_map]
    return float((classes(a) == classes(b)).mean())


# ---- geometry ---------------------------------------------------------------------------
def test_the_input_size_bounds_the_longer_side():
    assert fitted_size((60, 120), (128, 128), "longest_side") == (64, 128)
    assert fitted_size((120, 60), (128, 128), "longest_side") == (128, 64)
    assert fitted_size((1080, 1920), (896, 896), "longest_side") == (504, 896)
    assert fitted_size((200, 200), (96, 128), "longest_side") == (96, 96)   # fits inside an [H, W] size
    assert fitted_size((60, 120), (128, 128), "square") == (128, 128)


def test_a_batch_of_sizes_is_padded_bottom_right_with_the_pad_value():
    images = [torch.rand(3, 30, 60), torch.rand(3, 64, 64)]
    batch, sizes = batch_for_stage(images, (64, 64), "longest_side", multiple=16,
                                   pad_value=torch.tensor([0.1, 0.2, 0.3]))
    assert batch.shape == (2, 3, 64, 64) and sizes == [(32, 64), (64, 64)]
    assert torch.equal(batch[0, :, 32:], torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 32, 64))
    assert torch.equal(batch[1], images[1])
    # rounded up to the patch: no content is dropped by the patch grid
    batch, sizes = batch_for_stage([torch.rand(3, 50, 100)], (64, 64), "longest_side", multiple=16)
    assert batch.shape == (1, 3, 32, 64) and sizes == [(32, 64)]
    batch, sizes = batch_for_stage([torch.rand(3, 30, 100)], (64, 64), "longest_side", multiple=16)
    assert batch.shape == (1, 3, 32, 64) and sizes == [(19, 64)]
    assert batch[0, :, 19:].abs().sum() == 0


def test_masks_are_cropped_to_the_image_and_moved_between_frames():
    masks = torch.randn(2, 3, 16, 16)
    # the whole frame is the image: a plain resize, bit for bit
    assert torch.equal(crop_resize(masks[0], (1.0, 1.0), (40, 50)),
                       F.interpolate(masks[0][None], size=(40, 50), mode="bilinear", align_corners=False)[0])
    # image in the top half: only its rows come back, stretched over the output
    top = torch.zeros(1, 16, 16)
    top[:, :8] = 5.0
    top[:, 8:] = -5.0
    assert torch.allclose(crop_resize(top, (0.5, 1.0), (30, 60)), torch.tensor(5.0))
    # moving onto another frame: the image lands in its part, the rest is off
    moved = move_masks(top[None], [(0.5, 1.0)], [(0.25, 0.5)])
    assert torch.allclose(moved[0, 0, :4, :8], torch.tensor(5.0))
    assert (moved[0, 0, 4:] == OFF_LOGIT).all() and (moved[0, 0, :, 8:] == OFF_LOGIT).all()
    assert move_masks(masks, [(1.0, 1.0)] * 2, [(1.0, 1.0)] * 2) is masks


def test_the_resize_key_is_checked():
    for key in ("clip.resize", "proposals.resize"):
        with pytest.raises(ValueError, match=f"{key} is 'stretch'; choose one of square, longest_side"):
            load_preset("tiny", {key: "stretch"})
    assert load_preset("tiny").clip.resize == "longest_side" == load_preset("shapes").proposals.resize


# ---- square inputs: the old numbers -------------------------------------------------------
def test_square_inputs_give_the_square_modes_numbers(tiny_pair):
    aspect, square = tiny_pair
    batch = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    for x in (batch, batch[:1, :, :96, :96]):
        pa, la = aspect.predict(x, "car; road [stuff]; person")
        pb, lb = square.predict(x, "car; road [stuff]; person")
        assert torch.equal(pa.masks, pb.masks) and torch.equal(la, lb)
        _, la = aspect.logits(x, "car; road [stuff]; person", return_adapted_masks=True)
        _, lb = square.logits(x, "car; road [stuff]; person", return_adapted_masks=True)
        assert all(torch.equal(a, b) for a, b in zip(la, lb))
    image = np.random.default_rng(2).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    a, b = aspect(image, "car; road [stuff]"), square(image, "car; road [stuff]")
    assert a.segments and [s.__dict__ for s in a.segments] == [s.__dict__ for s in b.segments]
    np.testing.assert_array_equal(a.segment_map, b.segment_map)
    np.testing.assert_array_equal(a.semantic_map, b.semantic_map)


# ---- the acceptance ---------------------------------------------------------------
def test_a_2to1_image_and_the_same_content_in_a_padded_square_give_the_same_segments(shapes, shapes_vocab):
    """The 2:1 image, padded in the batch, is the padded square that Mask2Former sees; the
    classifier reads only its content. With squashing the two are seen at different scales."""
    squashing = copy.copy(shapes)
    squashing.clip_resize = squashing.proposal_resize = "square"
    squashing.classifier = copy.copy(shapes.classifier)
    squashing.classifier.resize = "square"
    pad = shapes.proposals.pixel_mean.flatten().view(3, 1, 1)
    agreement = {"aspect": [], "square": []}
    for seed in range(6):
        wide = as_tensor(generate_scene(1000 + seed, size=(64, 128)).image)
        padded = pad.repeat(1, 128, 128)
        padded[:, :64] = wide
        for name, seg in (("aspect", shapes), ("square", squashing)):
            a, b = seg([wide, padded], shapes_vocab)
            assert a.segment_map.shape == (64, 128) and b.segment_map.shape == (128, 128)
            b.segment_map, b.semantic_map = b.segment_map[:64], b.semantic_map[:64]
            agreement[name].append(class_agreement(a, b))
    aspect, square = np.array(agreement["aspect"]), np.array(agreement["square"])
    assert aspect.min() >= 0.85 and aspect.mean() >= 0.95, agreement
    assert square.mean() <= aspect.mean() - 0.1, agreement


def test_cameras_of_different_sizes_each_get_their_own_correctly_sized_result(shapes, shapes_vocab):
    sizes = [(120, 160), (160, 120), (64, 128), (128, 128)]
    images = [generate_scene(2000 + i, size=s).image for i, s in enumerate(sizes)]
    results = shapes(images, shapes_vocab)
    for image, result in zip(images, results):
        assert result.segment_map.shape == result.semantic_map.shape == image.shape[:2]
        for s in result.segments:
            x, y, w, h = s.bbox
            assert s.area == (result.segment_map == s.id).sum() > 0
            assert x + w <= image.shape[1] and y + h <= image.shape[0]
    # The square camera fills the padded frame: the batch does not change it.
    alone = shapes(images[3], shapes_vocab)
    assert class_agreement(alone, results[3]) >= 0.99
    # A padded camera is its padded frame, whatever else shares the batch.
    blank = np.zeros((128, 128, 3), np.uint8)
    for i in range(3):
        pair = shapes([images[i], blank], shapes_vocab)[0]
        assert class_agreement(pair, results[i]) >= 0.99


class PaddingProposals(torch.nn.Module):
    """Query 0 lies only on image 0's padding, query 1 covers each whole frame."""

    def __init__(self, image_rows: int):
        super().__init__()
        self.image_rows = image_rows

    def forward(self, images):
        b, _, h, w = images.shape
        masks = torch.full((b, 2, h // 4, w // 4), -10.0)
        masks[0, 0, self.image_rows // 4:] = 10.0
        masks[:, 1] = 10.0
        return MaskProposals(masks, torch.ones(b, 2))


def test_padding_is_never_part_of_a_segment_nor_of_a_mask_tokens_attention(tiny_pair):
    seg = copy.copy(tiny_pair[0])
    seg.proposals = PaddingProposals(image_rows=64)
    images = [np.full((64, 128, 3), 90, np.uint8), np.full((128, 128, 3), 30, np.uint8)]
    layout = seg.layout([as_tensor(im) for im in images])
    assert layout.proposal_sizes == [(64, 128), (128, 128)] and layout.proposal_batch.shape[-2:] == (128, 128)
    vocab = "car; person; bus"   # things only: two segments would never merge
    result = seg(images, vocab)[0]
    assert [s.area for s in result.segments] == [64 * 128]   # query 1 alone, over the whole image
    # Query 0's mask token sees no patch at all: it equals an empty mask's (CLS only).
    _, props, _, logits = seg._logits(layout, vocab, None)
    empty = props.masks.clone()
    empty[0, 0] = -10.0
    _, _, _, expected = seg._logits(layout, vocab, MaskProposals(empty, props.objectness))
    assert torch.allclose(logits[0, 0], expected[0, 0], atol=1e-5)


def test_whole_image_mask_token_equals_clip_cls_on_non_square_inputs(clip):
    enc = MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64).eval()
    images = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        for frame in (None, (64, 64)):      # own grid, or cut from the square frame's
            out = enc(images, torch.full((2, 3, 8, 16), 10.0), frame=frame)
            assert torch.allclose(out["masks"], out["image"][:, None].expand(-1, 3, -1), atol=1e-4)
        # the position embeddings a 2:1 image gets are those of the same rows of a square
        cut = enc.frame_position_embedding((2, 4), (64, 64))
        square = enc.position_embedding((4, 4))
        assert torch.equal(cut[0], square[0]) and torch.equal(cut[1:], square[1:].reshape(4, 4, -1)[:2].reshape(8, -1))
    # ... and through the classifier, the logits of a whole-image mask are CLS's
    text = ClassEmbeddings(F.normalize(torch.randn(4, 64), dim=-1), torch.tensor([0, 1, 2, 2]), 3)
    clf = MaskAttentionClassifier(enc, logit_scale=50.0, input_size=64, resize="longest_side").eval()
    image = torch.rand(1, 3, 40, 80)
    with torch.no_grad():
        logits = clf(image, MaskProposals(torch.full((1, 2, 10, 20), 10.0), torch.ones(1, 2)), text)
        cls = clf.clip(image)["image"]
    assert clf.input_shape(image) == (32, 64)
    assert torch.allclose(logits[0, 0], text.logits(F.normalize(cls, dim=-1), 50.0)[0], atol=1e-3)


def test_padding_patches_are_closed_to_mask_tokens_whatever_the_mask(clip):
    enc = MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64).eval()
    images = torch.randn(2, 3, 64, 64)
    sizes = [(32, 64), (64, 64)]        # image 0 fills the top half: its bottom two patch rows are padding
    everywhere = torch.full((2, 1, 16, 16), 10.0)
    content = everywhere.clone()
    content[0, :, 8:] = -10.0
    with torch.no_grad():
        a = enc(images, everywhere, image_sizes=sizes, frame=(64, 64))["masks"]
        b = enc(images, content, image_sizes=sizes, frame=(64, 64))["masks"]
        c = enc(images, content, frame=(64, 64))["masks"]
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a, c, atol=1e-6)     # the closure is the mask's own rule on its content
    bias = enc.padding_bias((64, 64), sizes)
    assert bias.shape == (2, 1, 1, 17) and bias[0, 0, 0, 0] == 0
    assert torch.isinf(bias[0, 0, 0, 9:]).all() and (bias[0, 0, 0, :9] == 0).all() and (bias[1] == 0).all()
    assert enc.padding_bias((64, 64), [(64, 64), (50, 64)]) is None   # a partly covered patch stays open


@pytest.mark.parametrize("cls", [MaskAttentionClassifier, MaskPoolingClassifier, MaskCropClassifier,
                                 MaskAdapterClassifier])
def test_every_classifier_takes_a_padded_batch_and_never_reads_the_padding_through_a_mask(clip, cls):
    torch.manual_seed(0)
    text = ClassEmbeddings(F.normalize(torch.randn(4, 64), dim=-1), torch.tensor([0, 1, 2, 2]), 3)
    clf = cls(MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64), logit_scale=50.0, input_size=64,
              resize="longest_side").eval()
    images = torch.rand(2, 3, 64, 64)
    sizes = [(32, 64), (64, 64)]
    everywhere = torch.full((2, 2, 16, 16), 10.0)
    content = everywhere.clone()
    content[0, :, 8:] = OFF_LOGIT
    with torch.no_grad():
        a = clf(images, MaskProposals(everywhere, torch.ones(2, 2)), text, image_sizes=sizes)
        b = clf(images, MaskProposals(content, torch.ones(2, 2)), text, image_sizes=sizes)
    assert a.shape == (2, 2, 3) and torch.isfinite(a).all()
    if cls in (MaskAttentionClassifier, MaskPoolingClassifier):   # the others read masks as given
        assert torch.allclose(a, b, atol=1e-4)
