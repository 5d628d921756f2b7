"""Baseline classifiers, the Mask-Adapter head and the geometric ensemble."""
import copy
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from ovseg_core.modeling.classifiers import (GeometricEnsemble, MaskAdapterClassifier, MaskAttentionClassifier,
                                             MaskCropClassifier, MaskPoolingClassifier)
from ovseg_core.modeling.clip_encoder import MaskCLIPEncoder
from ovseg_core.structures import MaskProposals
from ovseg_core.text import ClassEmbeddings
from ovseg_core.weights import register_clip_configs


@pytest.fixture(scope="module")
def clip():
    register_clip_configs()
    torch.manual_seed(0)
    return open_clip.create_model("ovseg-tiny-vit", pretrained=None).eval()


@pytest.fixture
def text():
    torch.manual_seed(3)
    return ClassEmbeddings(F.normalize(torch.randn(4, 64), dim=-1), torch.tensor([0, 1, 2, 2]), 3)


def encoder(clip):
    return MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64).eval()


def proposals(b=2, q=3, size=32):
    masks = torch.full((b, q, size, size), -8.0)
    masks[:, 0, : size // 2] = 8.0
    masks[:, 1, :, : size // 2] = 8.0
    masks[:, 2] = 8.0
    return MaskProposals(masks, torch.ones(b, q))


@pytest.mark.parametrize("cls", [MaskAttentionClassifier, MaskPoolingClassifier, MaskCropClassifier,
                                 MaskAdapterClassifier])
def test_every_classifier_gives_logits_per_proposal(clip, text, cls):
    kwargs = dict(hidden=32, num_maps=4) if cls is MaskAdapterClassifier else {}
    clf = cls(encoder(clip), logit_scale=50.0, input_size=64, **kwargs).eval()
    with torch.no_grad():
        logits = clf(torch.rand(2, 3, 64, 64), proposals(), text)
    assert logits.shape == (2, 3, 3) and torch.isfinite(logits).all()
    assert logits.abs().max() <= 50.0 + 1e-4  # cosine logits are bounded by the scale


def test_logit_scale_is_clamped_at_100(clip):
    clf = MaskAttentionClassifier(encoder(clip), logit_scale=math.exp(6.0), input_size=64)
    assert clf.logit_scale == 100.0


def test_learned_void_adds_a_column(clip, text):
    clf = MaskAttentionClassifier(encoder(clip), logit_scale=10.0, input_size=64, learned_void=True).eval()
    with torch.no_grad():
        assert clf(torch.rand(1, 3, 64, 64), proposals(b=1), text).shape == (1, 3, 4)


def test_mask_pooling_binarises_and_pools_before_the_projection(clip, text):
    """FC-CLIP: binary mask (logit > 0) on the feature grid, mean of the patch tokens
    under it, then CLIP's head (ln_post, proj)."""
    clf = MaskPoolingClassifier(encoder(clip), logit_scale=10.0, input_size=64).eval()
    images = torch.rand(1, 3, 64, 64)
    grid_logits = torch.full((4, 4), -3.0)          # the tiny CLIP's grid at 64 px: 4 x 4 patches
    grid_logits[0, 0], grid_logits[0, 1], grid_logits[2, 3] = 3.0, 0.1, 9.0   # 0.1: inside, at full weight
    grid_logits[1, 1] = -0.1                                                    # outside, whatever sigmoid says
    inside = [(0, 0), (0, 1), (2, 3)]
    # The same mask at the grid and at 2x the grid (bilinear resize of constant 2 x 2 blocks is exact).
    masks = torch.stack([grid_logits, torch.full((4, 4), -1.0)])[None]          # second mask: empty
    fine = masks.repeat_interleave(2, -2).repeat_interleave(2, -1)
    with torch.no_grad():
        tokens = clf.encoder(clf.normalize(images))["tokens"][0]   # [4, 4, width]
        expected = clf.encoder.ln_post(torch.stack([tokens[r, c] for r, c in inside]).mean(0)) @ clf.encoder.proj
        for m in (masks, fine):
            got = clf.embed(images, MaskProposals(m, torch.ones(1, 2)), text)[0]
            assert torch.allclose(got[0], expected, atol=1e-5)
            assert torch.isfinite(got[1]).all()    # an empty mask pools zero features


def test_mask_crop_blanks_outside_the_mask_and_crops_the_box(clip):
    # Crop size = box size, so the crop is the box itself, with no resampling.
    clf = MaskCropClassifier(encoder(clip), logit_scale=10.0, input_size=(10, 20))
    image = torch.rand(3, 64, 64)
    masks = torch.full((1, 64, 64), -5.0)
    masks[0, 10:20, 30:50] = 5.0
    masks[0, 10, 30] = -5.0  # one pixel of the box outside the mask
    crop = clf.crops(image, masks)[0]
    expected = image[:, 10:20, 30:50].clone()
    expected[:, 0, 0] = clf.mean.view(3)  # blanked to CLIP's mean colour (0 after normalising)
    assert torch.allclose(crop, expected, atol=1e-6)


def test_mask_adapter_maps_are_distributions_and_see_the_mask(clip):
    clf = MaskAdapterClassifier(encoder(clip), logit_scale=10.0, input_size=64, hidden=32, num_maps=16).eval()
    # Give the head weights large enough for the mask to matter (ConvNeXt layer scale is 1e-6).
    for block in clf.adapter.blocks:
        block.gamma.data.fill_(1.0)
    tokens = torch.randn(1, 4, 4, 64)
    with torch.no_grad():
        maps = clf.adapter.activation_maps(tokens, proposals(b=1).masks)
    assert maps.shape == (1, 3, 16, 16)
    assert torch.allclose(maps.sum(-1), torch.ones(1, 3, 16), atol=1e-5)
    assert not torch.allclose(maps[0, 0], maps[0, 1], atol=1e-4)


def test_geometric_ensemble_matches_the_formula(clip, text):
    a = MaskPoolingClassifier(encoder(clip), logit_scale=30.0, input_size=64).eval()
    b = MaskAttentionClassifier(encoder(clip), logit_scale=30.0, input_size=64).eval()
    ens = GeometricEnsemble(a, b, alpha=0.3, beta=0.9).eval()
    images, props = torch.rand(1, 3, 64, 64), proposals(b=1)
    seen = torch.tensor([True, False, True])
    with torch.no_grad():
        pa = a(images, props, text).softmax(-1)
        pb = b(images, props, text).softmax(-1)
        got = ens(images, props, text, seen).exp()
    w = torch.tensor([0.3, 0.9, 0.3])
    assert got.shape == (1, 3, 3)
    assert torch.allclose(got, pa ** (1 - w) * pb ** w, atol=1e-5)
    with torch.no_grad():
        all_unseen = ens(images, props, text).exp()
    assert torch.allclose(all_unseen, pa ** 0.1 * pb ** 0.9, atol=1e-5)


def test_geometric_ensemble_drops_void_before_softmax_and_takes_void_from_the_first(clip, text):
    """FC-CLIP: softmax over the K classes of each half, the geometric mean per class,
    and the in-vocabulary classifier's void probability for void."""
    torch.manual_seed(5)
    a = MaskAttentionClassifier(encoder(clip), logit_scale=30.0, input_size=64, learned_void=True).eval()
    b = MaskPoolingClassifier(encoder(clip), logit_scale=30.0, input_size=64, learned_void=True).eval()
    images, props = torch.rand(1, 3, 64, 64), proposals(b=1)
    with torch.no_grad():
        # A void embedding close to the mask embeddings, so that p_void matters.
        a.void_embedding.copy_(a.embed(images, props, text)[0, 0])
        ens = GeometricEnsemble(a, b, alpha=0.4, beta=0.8)
        la, lb = a(images, props, text), b(images, props, text)
        got = ens(images, props, text, torch.tensor([True, True, False])).softmax(-1)
    k, w = 3, torch.tensor([0.4, 0.4, 0.8])
    geo = la[..., :k].softmax(-1) ** (1 - w) * lb[..., :k].softmax(-1) ** w
    geo = geo / geo.sum(-1, keepdim=True)
    p_void = la.softmax(-1)[..., k:]
    assert p_void.min() > 0.05, "the test needs a void probability that is not negligible"
    expected = torch.cat([geo * (1 - p_void), p_void], dim=-1)
    assert got.shape == (1, 3, 4)
    assert torch.allclose(got, expected, atol=1e-5)
    # The second half's void never enters: a different void there changes nothing.
    with torch.no_grad():
        b.void_embedding.normal_()
        assert torch.allclose(ens(images, props, text, torch.tensor([True, True, False])).softmax(-1),
                              expected, atol=1e-5)


def test_forward_returns_the_embeddings_and_adapted_masks_it_used(clip, text):
    enc = MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64, distribution_adapter_layers=2).eval()
    clf = MaskAttentionClassifier(enc, logit_scale=20.0, input_size=64, learned_void=True).eval()
    images, props = torch.rand(2, 3, 64, 64), proposals()
    with torch.no_grad():
        plain = clf(images, props, text)
        logits, embeddings = clf(images, props, text, return_embeddings=True)
        _, embeddings2, adapted = clf(images, props, text, return_embeddings=True, return_adapted_masks=True)
    assert torch.equal(logits, plain) and torch.equal(embeddings, embeddings2)
    assert embeddings.shape == (2, 3, 64)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    assert torch.allclose(logits[..., :3], text.logits(embeddings, clf.logit_scale), atol=1e-5)
    assert torch.equal(adapted, enc.adapted_masks(props.masks, (64, 64)))
    pooling = MaskPoolingClassifier(encoder(clip), logit_scale=20.0, input_size=64).eval()
    with torch.no_grad():
        assert pooling(images, props, text, return_adapted_masks=True)[1] is None


def test_mask_adapter_in_chunks_equals_at_once(clip):
    clf = MaskAdapterClassifier(encoder(clip), logit_scale=10.0, input_size=64, hidden=32, num_maps=4).eval()
    tokens, masks = torch.randn(2, 4, 4, 64), torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        assert torch.allclose(clf.adapter(tokens, masks, chunk=2), clf.adapter(tokens, masks, chunk=100), atol=1e-6)
