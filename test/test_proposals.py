import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ovseg_core.modeling.proposals import (MASK2FORMER_ARCHS, Mask2FormerProposals, OracleProposals,
                                           build_config)
from ovseg_core.structures import MaskProposals

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def proposer():
    torch.manual_seed(0)
    return Mask2FormerProposals.from_arch("tiny")


@pytest.fixture(scope="module")
def saved_dir(proposer, tmp_path_factory):
    path = tmp_path_factory.mktemp("m2f") / "tiny"
    proposer.save_pretrained(path)
    return path


def _raw_model_output(proposer, images, padded_hw):
    """What the HF model gives for ImageNet-normalised images zero-padded (after normalising) to padded_hw."""
    x = (images - IMAGENET_MEAN) / IMAGENET_STD
    x = F.pad(x, (0, padded_hw[1] - x.shape[-1], 0, padded_hw[0] - x.shape[-2]))
    with torch.no_grad():
        return proposer.model(pixel_values=x)


def _copy_checkpoint(src, dst):
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_shapes_dtypes_and_objectness_from_no_object_probability(proposer):
    images = torch.rand(2, 3, 128, 128)
    out = proposer(images)
    assert isinstance(out, MaskProposals)
    assert proposer.num_queries == 20
    assert out.masks.shape == (2, 20, 32, 32) and out.masks.dtype == torch.float32
    assert out.objectness.shape == (2, 20) and out.objectness.dtype == torch.float32
    assert ((out.objectness >= 0) & (out.objectness <= 1)).all()
    ref = _raw_model_output(proposer, images, (128, 128))
    torch.testing.assert_close(out.masks, ref.masks_queries_logits)
    expected = 1 - ref.class_queries_logits.softmax(-1)[..., -1]
    torch.testing.assert_close(out.objectness, expected)
    # Images in the batch are processed independently.
    torch.testing.assert_close(proposer(images[1:]).masks, out.masks[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw, mask_hw", [((100, 140), (25, 35)), ((101, 141), (26, 36))])
def test_odd_sizes_are_padded_to_32_and_cropped_back(proposer, hw, mask_hw):
    images = torch.rand(1, 3, *hw)
    out = proposer(images)
    assert out.masks.shape == (1, 20, *mask_hw)
    padded = tuple(-(-s // 32) * 32 for s in hw)
    ref = _raw_model_output(proposer, images, padded)
    torch.testing.assert_close(out.masks, ref.masks_queries_logits[..., :mask_hw[0], :mask_hw[1]])


def test_rejects_non_float_or_non_rgb_images(proposer):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        proposer(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        proposer(torch.rand(3, 64, 64))


def test_low_precision_still_gives_float32(proposer):
    images = torch.rand(1, 3, 64, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = proposer(images)
    assert out.masks.dtype == torch.float32 and out.objectness.dtype == torch.float32
    assert out.masks.shape == (1, 20, 16, 24) and torch.isfinite(out.masks).all()
    bf16 = Mask2FormerProposals.from_arch("tiny").to(torch.bfloat16)
    out = bf16(images)
    assert out.masks.dtype == torch.float32 and out.objectness.dtype == torch.float32
    assert torch.isfinite(out.masks).all()


def test_frozen_and_stays_in_eval_under_parent_train(proposer):
    assert all(not p.requires_grad for p in proposer.parameters())
    parent = torch.nn.Sequential(proposer, torch.nn.Linear(2, 2))
    parent.train()
    assert parent[1].training
    assert not any(m.training for m in proposer.modules())
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    with torch.enable_grad():
        out = proposer(images)
    assert out.masks.grad_fn is None and out.objectness.grad_fn is None
    # Normalisation constants are not checkpoint state.
    assert not any(k.startswith("pixel_") for k in proposer.state_dict())


def test_save_then_load_gives_identical_outputs(proposer, saved_dir):
    loaded = Mask2FormerProposals.from_pretrained(saved_dir)
    assert loaded.num_queries == proposer.num_queries
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
    images = torch.rand(2, 3, 96, 80)
    a, b = proposer(images), loaded(images)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.objectness, b.objectness)


_PRE_V5_SWIN_NAMES = [  # the layout of the hub's Mask2Former checkpoints, saved by transformers 4.x
    ("encoder.swin.encoder.", "encoder.encoder."), ("encoder.swin.embeddings.", "encoder.embeddings."),
    ("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"), ("attention.o_proj", "attention.output.dense"),
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]


def test_loads_pre_v5_checkpoint_layout(proposer, saved_dir, tmp_path):
    """Old Swin key names are converted by transformers; the unused swin.layernorm and the
    loss buffer may be absent without failing the load."""
    path = _copy_checkpoint(saved_dir, tmp_path / "legacy")
    legacy = {}
    for key, value in load_file(path / "model.safetensors").items():
        if "swin.layernorm" in key or key.startswith("criterion."):
            continue
        if "pixel_level_module.encoder." in key:
            for new, old in _PRE_V5_SWIN_NAMES:
                key = key.replace(new, old)
        legacy[key] = value
    save_file(legacy, path / "model.safetensors", metadata={"format": "pt"})
    loaded = Mask2FormerProposals.from_pretrained(path)
    images = torch.rand(1, 3, 64, 96)
    assert torch.equal(loaded(images).masks, proposer(images).masks)


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        Mask2FormerProposals.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        Mask2FormerProposals.from_pretrained("./no/such/checkpoint")


def test_directory_without_weights_or_config(saved_dir, tmp_path):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((saved_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError) as e:
        Mask2FormerProposals.from_pretrained(no_weights)
    assert str(no_weights) in str(e.value) and "model.safetensors" in str(e.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        Mask2FormerProposals.from_pretrained(empty)
    assert str(empty) in str(e.value) and "config.json" in str(e.value)


def test_deleted_tensor_is_named(saved_dir, tmp_path):
    path = _copy_checkpoint(saved_dir, tmp_path / "deleted")
    weights = load_file(path / "model.safetensors")
    gone = "model.pixel_level_module.decoder.adapter_1.1.weight"
    del weights[gone]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError) as e:
        Mask2FormerProposals.from_pretrained(path)
    message = str(e.value)
    assert str(path) in message and gone in message and "missing" in message


def test_config_that_does_not_fit_the_weights_is_named(saved_dir, tmp_path):
    path = _copy_checkpoint(saved_dir, tmp_path / "resized")
    config = json.loads((path / "config.json").read_text())
    config["hidden_dim"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as e:
        Mask2FormerProposals.from_pretrained(path)
    message = str(e.value)
    assert str(path) in message and "class_predictor.weight" in message
    assert "(134, 32)" in message and "(134, 64)" in message  # checkpoint vs config shapes


def test_unknown_arch_keys_and_names_raise():
    with pytest.raises(ValueError, match="hiden_dim") as e:
        Mask2FormerProposals.from_arch("tiny", hiden_dim=64)
    assert "hidden_dim" in str(e.value)  # lists the valid keys
    with pytest.raises(ValueError, match="embed_dims") as e:
        Mask2FormerProposals.from_arch("tiny", backbone_config={"embed_dims": 32})
    assert "embed_dim'" in str(e.value)
    with pytest.raises(ValueError, match="swin-tiny"):
        Mask2FormerProposals.from_arch("swin-huge")
    bad = dict(MASK2FORMER_ARCHS["tiny"], num_querys=5)
    with pytest.raises(ValueError, match="num_querys"):
        build_config(bad)


def test_arch_overrides_and_table_is_not_mutated():
    p = Mask2FormerProposals.from_arch("tiny", num_queries=7, backbone_config={"window_size": 2})
    assert p.num_queries == 7 and p.model.config.backbone_config.window_size == 2
    assert p(torch.rand(1, 3, 64, 64)).masks.shape == (1, 7, 16, 16)
    assert MASK2FORMER_ARCHS["tiny"]["num_queries"] == 20
    assert MASK2FORMER_ARCHS["tiny"]["backbone_config"]["window_size"] == 4


@pytest.mark.parametrize("name, embed, window, depths, last_dim", [
    ("swin-tiny", 96, 7, [2, 2, 6, 2], 768), ("swin-base", 128, 12, [2, 2, 18, 2], 1024)])
def test_hub_arch_configs(name, embed, window, depths, last_dim):
    config = build_config(MASK2FORMER_ARCHS[name])
    swin = config.backbone_config
    assert (swin.embed_dim, swin.window_size, list(swin.depths), swin.hidden_size) == (embed, window, depths, last_dim)
    assert swin.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert (config.num_queries, config.num_labels, config.hidden_dim, config.decoder_layers) == (100, 133, 256, 10)


def test_oracle_pads_to_max_segments():
    h, w = 6, 5
    first = np.zeros((2, h, w), dtype=bool)
    first[0, :3] = True
    first[1, 3:, 2:] = True
    second = torch.zeros((1, h, w), dtype=torch.uint8)
    second[0, 1:4, 1:4] = 1
    out = OracleProposals()([first, second])
    assert out.masks.shape == (2, 2, h, w) and out.masks.dtype == torch.float32
    assert set(out.masks.unique().tolist()) == {-20.0, 20.0}
    assert torch.equal(out.objectness, torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(out.masks[0].sigmoid() > 0.5, torch.from_numpy(first))
    assert torch.equal(out.masks[1, 0].sigmoid() > 0.5, second[0].bool())
    assert (out.masks[1, 1] == -20).all()  # padding is an empty mask


def test_oracle_image_without_segments_and_bad_sizes():
    out = OracleProposals()([np.zeros((0, 4, 4), dtype=np.uint8)])
    assert out.masks.shape == (1, 1, 4, 4) and (out.masks == -20).all()
    assert torch.equal(out.objectness, torch.zeros(1, 1))
    with pytest.raises(ValueError, match="same H, W"):
        OracleProposals()([np.zeros((1, 4, 4)), np.zeros((1, 4, 5))])
    with pytest.raises(ValueError):
        OracleProposals()([])
