"""Training policies (the papers' Table 3 ablations): each trains exactly what it names."""
import copy
import re

import open_clip
import pytest
import torch
import torch.nn.functional as F

from ovseg_core.build import build_segmenter
from ovseg_core.modeling.classifiers import GeometricEnsemble, MaskAdapterClassifier, MaskAttentionClassifier
from ovseg_core.modeling.clip_encoder import MaskCLIPEncoder
from ovseg_core.structures import MaskProposals
from ovseg_core.text import ClassEmbeddings
from ovseg_core.trainable import POLICIES, apply_trainable, describe_trainable, format_trainable
from ovseg_core.weights import load_delta, register_clip_configs, save_delta

WIDTH, BLOCKS = 64, 2   # the tiny CLIP


@pytest.fixture(scope="module")
def clip():
    register_clip_configs()
    torch.manual_seed(0)
    return open_clip.create_model("ovseg-tiny-vit", pretrained=None).eval()


def smart(clip, **kwargs):
    """A SMART classifier: SMA in the last block, a two-conv adapter, a learned void."""
    torch.manual_seed(1)
    enc = MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64, sma_layers=[-1], distribution_adapter_layers=2)
    return MaskAttentionClassifier(enc, logit_scale=10.0, input_size=64, learned_void=True, **kwargs)


def inputs(b=2, q=4):
    torch.manual_seed(2)
    text = ClassEmbeddings(F.normalize(torch.randn(3, 64), dim=-1), torch.arange(3), 3)
    return torch.rand(b, 3, 64, 64), MaskProposals(torch.randn(b, q, 16, 16) * 4, torch.ones(b, q)), text


NEW = r"(\.sma\.|distribution_adapter\.|^void_embedding$)"
EXPECTED = {   # policy -> the CLIP parameters it trains, beside the new modules
    "frozen": None,
    "new_modules": r"$^",
    "query_projection": r"\.attn\.q_proj\.",
    "q": r"\.attn\.q_proj\.",
    "k": r"\.attn\.k_proj\.",
    "v": r"\.attn\.v_proj\.",
    "qk": r"\.attn\.[qk]_proj\.",
    "qv": r"\.attn\.[qv]_proj\.",
    "kv": r"\.attn\.[kv]_proj\.",
    "qkv": r"\.attn\.[qkv]_proj\.",
    "mlp": r"\.blocks\.\d+\.mlp\.",
    "full_clip": r"^encoder\.",
    "lora": r"\.lora_[AB]\.",
}


def test_every_policy_is_covered_here():
    assert set(EXPECTED) == set(POLICIES)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_trains_exactly_what_it_names(clip, policy):
    clf = smart(clip)
    text_tower = copy.deepcopy(clip)
    names = apply_trainable(clf, policy, text_tower, lora_rank=2)
    every = dict(clf.named_parameters())
    pattern = EXPECTED[policy]
    expected = set() if pattern is None else \
        {n for n in every if re.search(NEW, n) or re.search(pattern, n)}
    assert set(names) == expected
    assert {n for n, p in every.items() if p.requires_grad} == expected
    assert not any(p.requires_grad for p in text_tower.parameters())
    if policy in ("qk", "mlp"):   # the brief's examples, spelled out
        assert not any("v_proj" in n for n in names)
        assert any(".mlp." in n for n in names) == (policy == "mlp")
    if policy in ("query_projection", "q"):
        assert sum(n.endswith("q_proj.weight") for n in names) == BLOCKS


def test_unknown_policy_and_bad_rank_are_refused(clip):
    with pytest.raises(ValueError) as info:
        apply_trainable(smart(clip), "everything")
    assert "everything" in str(info.value) and all(p in str(info.value) for p in POLICIES)
    for rank in (0, -2, 1.5):
        with pytest.raises(ValueError, match="lora_rank"):
            apply_trainable(smart(clip), "lora", lora_rank=rank)


def test_lora_starts_as_the_identity_and_has_its_parameter_count(clip):
    clf = smart(clip).eval()
    images, props, text = inputs()
    with torch.no_grad():
        before = clf(images, props, text)
    names = apply_trainable(clf, "lora", lora_rank=3)
    with torch.no_grad():
        assert torch.equal(clf(images, props, text), before)
    params = dict(clf.named_parameters())
    lora = [n for n in names if ".lora_" in n]
    # q, k, v, out_proj in every block; A is [r, width] and B [width, r].
    assert len(lora) == BLOCKS * 4 * 2
    assert sum(params[n].numel() for n in lora) == BLOCKS * 4 * 2 * 3 * WIDTH
    assert all(torch.count_nonzero(params[n]) == 0 for n in lora if ".lora_B." in n)
    table = describe_trainable(clf, names)
    assert table["LoRA (q, k, v, out_proj)"] == {"tensors": 16, "parameters": 16 * 3 * WIDTH}


def test_lora_training_moves_only_lora_and_new_modules(clip):
    clf = smart(clip)
    names = apply_trainable(clf, "lora", lora_rank=2)
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-2, weight_decay=0.05)
    images, props, text = inputs()
    for _ in range(2):   # B starts at 0: A gets its first gradient on the second step
        opt.zero_grad()
        F.cross_entropy(clf(images, props, text).flatten(0, 1), torch.randint(0, 4, (8,))).backward()
        opt.step()
    moved = {n for n, p in clf.named_parameters() if not torch.equal(p, before[n])}
    assert moved <= set(names)
    assert any(".lora_A." in n for n in moved) and any(".lora_B." in n for n in moved)


def test_applying_lora_twice_keeps_the_trained_lora(clip):
    clf = smart(clip)
    names = apply_trainable(clf, "lora", lora_rank=2)
    with torch.no_grad():
        for n, p in clf.named_parameters():
            if ".lora_B." in n:
                p.fill_(0.5)
    assert apply_trainable(clf, "lora", lora_rank=2) == names
    assert all((p == 0.5).all() for n, p in clf.named_parameters() if ".lora_B." in n)
    with pytest.raises(ValueError, match="rank"):
        apply_trainable(clf, "lora", lora_rank=4)


def test_lora_delta_round_trip_through_a_preset(tmp_path):
    overrides = {"classifier.trainable": "lora", "classifier.lora_rank": 2}
    def build(**kwargs):   # the tiny preset's CLIP is random: the same seed gives the same base weights
        torch.manual_seed(0)
        return build_segmenter("tiny", device="cpu", **kwargs)
    trained = build(overrides=overrides)
    assert trained.trainable and all(".lora_" in n or ".sma." in n or "distribution_adapter" in n
                                     for n in trained.trainable)
    params = dict(trained.classifier.named_parameters())
    torch.manual_seed(3)
    with torch.no_grad():
        for n in trained.trainable:
            params[n].add_(torch.randn_like(params[n]) * 0.1)
    path = tmp_path / "lora.safetensors"
    save_delta(trained.classifier, trained.trainable, str(path), "tiny")
    loaded = build(overrides=overrides, weights=str(path))
    fresh = build(overrides=overrides)
    images, props, text = inputs()
    with torch.no_grad():
        expected = trained.classifier(images, props, text)
        assert torch.equal(loaded.classifier(images, props, text), expected)
        assert not torch.allclose(fresh.classifier(images, props, text), expected, atol=1e-4)
    # A delta of another rank does not fit.
    with pytest.raises(ValueError, match="wrong shapes"):
        build(overrides={**overrides, "classifier.lora_rank": 3}, weights=str(path))


def test_lora_follows_dtype_and_device_moves(clip):
    clf = smart(clip)
    apply_trainable(clf, "lora", lora_rank=2)
    clf.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in clf.parameters())
    if torch.cuda.is_available():
        clf.to("cuda")
        images, props, text = inputs()
        text = ClassEmbeddings(text.embeddings.cuda().double(), text.owner.cuda(), text.num_classes)
        out = clf(images.cuda().double(), MaskProposals(props.masks.cuda(), props.objectness.cuda()), text)
        out.sum().backward()
        assert all(p.device.type == "cuda" for p in clf.parameters())


def test_the_out_of_vocabulary_half_of_an_ensemble_stays_frozen(clip):
    torch.manual_seed(4)
    second = MaskAdapterClassifier(MaskCLIPEncoder(copy.deepcopy(clip.visual), text_dim=64), logit_scale=10.0,
                                   input_size=64, hidden=16, num_maps=4)
    ens = GeometricEnsemble(smart(clip), second)
    for policy in ("query_projection", "full_clip", "lora"):
        names = apply_trainable(ens, policy, lora_rank=2)
        assert names and all(n.startswith("first.") for n in names)
        assert not any(p.requires_grad for p in ens.second.parameters())
    # Its own head (Mask-Adapter) may train, its CLIP never.
    names = apply_trainable(ens, "query_projection", second_policy="new_modules")
    second_names = [n for n in names if n.startswith("second.")]
    assert second_names and all(n.startswith("second.adapter.") for n in second_names)
    with pytest.raises(ValueError, match="frozen CLIP"):
        apply_trainable(ens, "query_projection", second_policy="full_clip")


def test_describe_trainable_groups_add_up(clip):
    clf = smart(clip)
    names = apply_trainable(clf, "full_clip")
    table = describe_trainable(clf, names)
    assert sum(r["parameters"] for r in table.values()) == sum(p.numel() for p in clf.parameters())
    assert sum(r["tensors"] for r in table.values()) == len(names)
    assert {"CLIP query projections (f_q)", "CLIP MLPs", "SMA (g_q, g_k, g_v)", "Distribution Adapter",
            "void embedding", "CLIP other (embeddings, norms, proj)"} <= set(table)
    assert "other" not in table
    assert "trainable total" in format_trainable(table)
    with pytest.raises(ValueError, match="not parameters"):
        describe_trainable(clf, ["encoder.no_such_weight"])


def test_ovseg_params_counts_any_policy(capsys):
    from ovseg_core.cli import main
    assert main(["params", "--preset", "tiny", "--trainable", "lora", "--lora-rank", "2"]) == 0
    out = capsys.readouterr().out
    assert "policy lora, rank 2" in out
    assert f"{BLOCKS * 4 * 2 * 2 * WIDTH:,}" in out      # the LoRA line of the tiny CLIP
    assert main(["params", "--preset", "tiny", "--trainable", "everything"]) == 2
    assert "everything" in capsys.readouterr().err
