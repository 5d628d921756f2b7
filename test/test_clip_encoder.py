"""The mask-token CLIP encoder: MaskCLIP's attention rule, SMART's parts, Query Projection Tuning."""
import copy

import open_clip
import pytest
import torch

from ovseg_core.modeling.classifiers import MaskAttentionClassifier
from ovseg_core.modeling.clip_encoder import MaskCLIPEncoder
from ovseg_core.text import ClassEmbeddings
from ovseg_core.structures import MaskProposals
from ovseg_core.trainable import add_lora, apply_trainable
from ovseg_core.weights import register_clip_configs


@pytest.fixture(scope="module")
def clip():
    register_clip_configs()
    torch.manual_seed(0)
    return open_clip.create_model("ovseg-tiny-vit", pretrained=None).eval()


def make_encoder(clip, **kwargs):
    return MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64, **kwargs).eval()


def full_masks(b, q, size=16):
    return torch.full((b, q, size, size), 10.0)


def test_full_mask_token_equals_clip_image_embedding(clip):
    enc = make_encoder(clip)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = clip.encode_image(images)
        out = enc(images, full_masks(2, 3))
    assert torch.allclose(out["masks"], expected[:, None].expand(-1, 3, -1), atol=1e-4)
    assert torch.allclose(out["image"], expected, atol=1e-5)


def test_mask_tokens_leave_clip_outputs_unchanged(clip):
    enc = make_encoder(clip)
    images = torch.randn(1, 3, 64, 64)
    masks = torch.randn(1, 5, 16, 16) * 5
    with torch.no_grad():
        plain = enc(images)
        with_masks = enc(images, masks)
    assert torch.equal(plain["image"], with_masks["image"])
    assert torch.equal(plain["tokens"], with_masks["tokens"])


def test_mask_token_ignores_pixels_outside_its_patches(clip):
    """A mask token reads only its own patches (and CLS). Through depth, CLIP's patch
    tokens mix globally (CLS and patches attend as in plain CLIP, by design), so the
    exact invariance holds for the mask tokens' own attention: one block."""
    enc = make_encoder(clip)
    enc.blocks = enc.blocks[:1]
    images = torch.randn(1, 3, 64, 64)
    # Mask 0 covers the top-left 2x2 patches (32x32 px); mask 1 covers everything.
    masks = torch.full((1, 2, 64, 64), -10.0)
    masks[0, 0, :32, :32] = 10.0
    masks[0, 1] = 10.0
    changed = images.clone()
    changed[..., 40:, 40:] = torch.randn_like(changed[..., 40:, 40:])  # outside mask 0's patches
    with torch.no_grad():
        a = enc(images, masks)["masks"][0]
        b = enc(changed, masks)["masks"][0]
    assert torch.allclose(a[0], b[0], atol=1e-6)
    assert not torch.allclose(a[1], b[1], atol=1e-3)


def test_attention_bias_rule(clip):
    enc = make_encoder(clip)
    masks = torch.full((1, 2, 64, 64), -10.0)
    masks[0, 0, 17, 33] = 10.0  # one pixel in patch (row 1, col 2)
    bias = enc.attention_bias(masks, (64, 64))[0, 0]  # [Q, 1 + 16]
    assert bias.shape == (2, 17)
    assert bias[0, 0] == 0 and bias[1, 0] == 0  # CLS always allowed
    allowed = (bias[0, 1:] == 0).nonzero().flatten().tolist()
    assert allowed == [1 * 4 + 2]
    assert torch.isinf(bias[1, 1:]).all()  # empty mask: only CLS


def test_position_embeddings_interpolate_to_any_size(clip):
    enc = make_encoder(clip)
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 96, 128), torch.randn(1, 4, 24, 32))
    assert out["masks"].shape == (1, 4, 64)
    assert out["tokens"].shape == (1, 6, 8, 64)
    # At the native size nothing is interpolated: same as the stored table.
    assert enc.position_embedding(enc.native_grid) is enc.positional_embedding


def test_state_dict_round_trip_is_exact(clip):
    enc = make_encoder(clip)
    original = {k[len("visual."):]: v for k, v in clip.state_dict().items() if k.startswith("visual.")}
    torch.manual_seed(1)
    scrambled = {k: torch.randn_like(v) for k, v in original.items()}
    enc.load_open_clip_state_dict(scrambled)
    saved = enc.open_clip_state_dict()
    assert set(saved) == set(scrambled)
    for k in scrambled:
        assert torch.equal(saved[k], scrambled[k]), k
    with pytest.raises(ValueError, match="missing"):
        enc.load_open_clip_state_dict({k: v for k, v in scrambled.items() if "ln_post" not in k})


def test_untrained_sma_and_adapter_start_from_the_baseline(clip):
    base = make_encoder(clip)
    smart = make_encoder(clip, sma_layers=[-1], distribution_adapter_layers=2)
    images, masks = torch.randn(1, 3, 64, 64), torch.randn(1, 4, 16, 16) * 4
    text = torch.randn(5, 64)
    with torch.no_grad():
        expected = base(images, masks)["masks"]
        got = smart(images, masks, text)["masks"]
        assert torch.allclose(got, expected, atol=1e-5)
        # Once g_v is non-zero, the vocabulary changes the mask embeddings.
        torch.nn.init.normal_(smart.blocks[-1].sma.g_v.weight, std=0.5)
        a = smart(images, masks, text)["masks"]
        b = smart(images, masks, torch.randn(5, 64))["masks"]
    assert not torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="text embeddings"):
        smart(images, masks)


def test_query_projection_tuning_moves_only_q_and_new_modules(clip):
    text_tower = copy.deepcopy(clip)
    enc = MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64, sma_layers=[-1], distribution_adapter_layers=2)
    clf = MaskAttentionClassifier(enc, logit_scale=10.0, input_size=64, learned_void=True)
    trainable = apply_trainable(clf, "query_projection", text_tower)
    assert trainable and all(".attn.q_proj." in n or ".sma." in n or "distribution_adapter" in n
                             or n == "void_embedding" for n in trainable)
    assert sum(".attn.q_proj.weight" in n for n in trainable) == len(enc.blocks)
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    text_before = {n: p.detach().clone() for n, p in text_tower.named_parameters()}
    # Everything goes to the optimizer, as a careless training script would do.
    opt = torch.optim.AdamW(list(clf.parameters()) + list(text_tower.parameters()), lr=1e-2, weight_decay=0.05)
    emb = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    text = ClassEmbeddings(emb, torch.arange(3), 3)
    proposals = MaskProposals(torch.randn(2, 4, 16, 16) * 4, torch.ones(2, 4))
    clf.train()
    logits = clf(torch.rand(2, 3, 64, 64), proposals, text)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.randint(0, 4, (8,))).backward()
    opt.step()
    # g_v starts at zero, so g_q/g_k have no gradient on the very first step.
    moved = {n for n, p in clf.named_parameters() if not torch.equal(p, before[n])}
    assert moved <= set(trainable)
    assert any(".attn.q_proj." in n for n in moved)
    assert any(".sma.g_v." in n for n in moved)
    for n, p in clf.named_parameters():
        if n not in trainable:
            assert torch.equal(p, before[n]), n
    for n, p in text_tower.named_parameters():
        assert torch.equal(p, text_before[n]), n


def test_attention_bias_is_the_same_in_chunks_and_at_once(clip):
    enc = make_encoder(clip, distribution_adapter_layers=2)
    torch.nn.init.normal_(enc.distribution_adapter.conv2.weight, std=0.3)  # a "trained" adapter
    torch.nn.init.constant_(enc.distribution_adapter.conv2.bias, 4.0)
    torch.manual_seed(0)
    masks = torch.randn(2, 9, 40, 40) * 2 - 7  # sparse: few patches allowed
    with torch.no_grad():
        enc.bias_chunk = 4
        chunked = enc.attention_bias(masks, (64, 64))
        enc.bias_chunk = 100
        at_once = enc.attention_bias(masks, (64, 64))
    assert torch.equal(chunked, at_once)
    # The adapter changes which patches are allowed once it is trained.
    plain = make_encoder(clip).attention_bias(masks, (64, 64))
    assert not torch.equal(plain, at_once)


def test_attention_bias_with_no_proposals(clip):
    enc = make_encoder(clip)
    assert enc.attention_bias(torch.zeros(1, 0, 16, 16), (64, 64)).shape == (1, 1, 0, 17)


def test_untrained_adapter_keeps_the_exact_patch_rule_on_fine_masks(clip):
    # Masks finer than 4 samples per patch are max-pooled before the adapter; at
    # initialisation (identity adapter) the bias must equal the plain rule exactly.
    torch.manual_seed(0)
    masks = torch.randn(1, 6, 50, 70) * 2 - 5
    with torch.no_grad():
        plain = make_encoder(clip).attention_bias(masks, (48, 80))
        adapted = make_encoder(clip, distribution_adapter_layers=2).attention_bias(masks, (48, 80))
    assert torch.equal(plain, adapted)
    assert (plain == 0).any() and torch.isinf(plain).any()


def test_position_embedding_gets_its_gradient_after_an_evaluation_at_the_same_size(clip):
    """Training and evaluation interleave: a resized table cached by a no-grad pass must
    never be handed to a pass that trains positional_embedding."""
    enc = make_encoder(clip)
    clf = MaskAttentionClassifier(enc, logit_scale=10.0, input_size=96)   # 6 x 6 grid, native is 4 x 4
    apply_trainable(clf, "full_clip")
    images, masks = torch.randn(1, 3, 96, 96), torch.randn(1, 3, 24, 24) * 4
    with torch.no_grad():
        enc(images, masks)
        # Serving still reuses the resized table.
        assert enc.position_embedding((6, 6)) is enc.position_embedding((6, 6))
    out = enc(images, masks)
    (out["masks"].square().sum() + out["image"].square().sum()).backward()
    grad = enc.positional_embedding.grad
    assert grad is not None and grad.abs().sum() > 0


def test_frozen_position_embedding_is_resized_once(clip):
    enc = make_encoder(clip)
    enc.requires_grad_(False)
    assert torch.is_grad_enabled()
    assert enc.position_embedding((5, 7)) is enc.position_embedding((5, 7))
    enc.positional_embedding.requires_grad_(True)
    assert enc.position_embedding((5, 7)).requires_grad


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_untrained_adapter_of_any_depth_is_the_identity(clip, layers):
    enc = make_encoder(clip, distribution_adapter_layers=layers)
    convs = [m for m in enc.distribution_adapter.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == layers
    widths = [(c.in_channels, c.out_channels) for c in convs]
    assert widths == {1: [(1, 1)], 2: [(1, 8), (8, 1)], 3: [(1, 8), (8, 8), (8, 1)]}[layers]
    masks = torch.randn(2, 3, 16, 16) * 3
    with torch.no_grad():
        assert torch.equal(enc.adapted_masks(masks, (64, 64)), masks)


@pytest.mark.parametrize("layers", [-1, 4, True])
def test_adapter_layers_outside_0_to_3_are_refused(clip, layers):
    with pytest.raises(ValueError, match="distribution_adapter_layers"):
        make_encoder(clip, distribution_adapter_layers=layers)


def test_adapted_masks_are_what_the_attention_bias_pools(clip):
    enc = make_encoder(clip, distribution_adapter_layers=2)
    torch.nn.init.normal_(enc.distribution_adapter.conv2.weight, std=0.3)  # a "trained" adapter
    torch.nn.init.constant_(enc.distribution_adapter.conv2.bias, -1.0)
    torch.manual_seed(0)
    masks = torch.randn(2, 5, 40, 40) * 3   # finer than 4 samples per 16 px patch: pooled to 16 x 16 first
    with torch.no_grad():
        adapted = enc.adapted_masks(masks, (64, 64))
        bias = enc.attention_bias(masks, (64, 64))[:, 0, :, 1:]
    assert adapted.shape == (2, 5, 16, 16)
    allowed = torch.nn.functional.adaptive_max_pool2d(adapted.flatten(0, 1), (4, 4)).reshape(2, 5, 16) >= 0
    assert torch.equal(bias == 0, allowed)
    assert make_encoder(clip).adapted_masks(masks, (64, 64)) is None
    assert enc.adapted_masks(masks[:, :0], (64, 64)).shape == (2, 0, 16, 16)


def test_a_loss_on_adapted_masks_reaches_the_adapter_from_outside_the_mask(clip):
    """The attention bias is -inf outside a mask, so through it the adapter only learns to
    shrink masks; supervising its output directly gives it gradient everywhere."""
    enc = make_encoder(clip, distribution_adapter_layers=2).train()
    masks = torch.full((1, 1, 16, 16), -6.0)
    masks[..., :8, :8] = 6.0                      # the proposal: the top-left quarter
    target = torch.zeros(1, 1, 16, 16)
    target[..., :8, :] = 1.0                      # the ground truth: the whole top half
    outside = masks < 0
    adapted = enc.adapted_masks(masks, (64, 64))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(adapted[outside], target[outside])
    loss.backward()
    last = enc.distribution_adapter.conv2
    assert last.weight.grad.abs().sum() > 0 and last.bias.grad.abs().sum() > 0


def test_open_clip_export_merges_a_lora(clip):
    enc = make_encoder(clip)
    plain = enc.open_clip_state_dict()
    add_lora(enc, 2)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "lora_B" in name:
                p.normal_()
    merged = enc.open_clip_state_dict()
    assert set(merged) == set(plain)
    assert not torch.equal(merged["transformer.resblocks.0.attn.in_proj_weight"],
                           plain["transformer.resblocks.0.attn.in_proj_weight"])
    # The merged weights are the LoRA model's: plain open_clip with them gives its outputs.
    clip2 = copy.deepcopy(clip)
    clip2.visual.load_state_dict(merged)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(clip2.encode_image(images), enc(images)["image"], atol=1e-4)
    with pytest.raises(ValueError, match="LoRA"):
        enc.load_open_clip_state_dict(plain)


@pytest.mark.parametrize("size, out", [((32, 32), (8, 8)), ((48, 64), (6, 8)), ((30, 17), (8, 8)), ((8, 8), (8, 8))])
def test_max_pool_to_is_adaptive_max_pooling(size, out):
    """The exportable pooling (a plain max-pool where the size divides) keeps the windows."""
    import torch.nn.functional as F

    from ovseg_core.modeling.clip_encoder import max_pool_to
    x = torch.randn(3, 1, *size)
    assert torch.equal(max_pool_to(x, out), F.adaptive_max_pool2d(x, out))
