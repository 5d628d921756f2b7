"""Loading weights: our safetensors deltas and open_clip CLIP checkpoints, and their errors."""
import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from ovseg_core.build import build_segmenter
from ovseg_core.config import CLIP_CONFIG_DIR
from ovseg_core.segmenter import image_to_tensor
from ovseg_core.weights import load_delta, register_clip_configs, save_delta

VOCAB = "car; road [stuff]; person; sky [stuff]"


@pytest.fixture(scope="module")
def street_batch(street_path):
    import cv2
    image = cv2.cvtColor(cv2.imread(str(street_path)), cv2.COLOR_BGR2RGB)
    return image_to_tensor(image, torch.device("cpu"))[None]


def probabilities(segmenter, batch):
    with torch.no_grad():
        return segmenter.predict(batch, VOCAB)[1]


def params(segmenter):
    return dict(segmenter.classifier.named_parameters())


@pytest.fixture(scope="module")
def delta(tmp_path_factory, build_tiny):
    """A perturbed tiny segmenter (seed 0) and its delta file."""
    seg = build_tiny(0)
    assert seg.trainable, "the tiny preset trains something"
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in params(seg).items():
            if name in seg.trainable:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    path = tmp_path_factory.mktemp("delta") / "tiny_delta.safetensors"
    save_delta(seg.classifier, seg.trainable, str(path), "tiny")
    return seg, path


# ---- deltas --------------------------------------------------------------------------

def test_delta_round_trip(delta, build_tiny, street_batch, tiny_segmenter):
    perturbed, path = delta
    loaded = build_tiny(0, weights=str(path))
    assert loaded.trainable == perturbed.trainable
    assert loaded.config.weights == str(path)
    mine, theirs, base = params(loaded), params(perturbed), params(tiny_segmenter)
    for name in perturbed.trainable:
        assert torch.equal(mine[name], theirs[name]), name
        assert not torch.equal(mine[name], base[name]), f"{name} was not perturbed"
    # Parameters outside the delta come from the (seeded) base model.
    frozen = [n for n in mine if n not in perturbed.trainable]
    assert frozen and all(torch.equal(mine[n], base[n]) for n in frozen)

    p_loaded = probabilities(loaded, street_batch)
    p_perturbed = probabilities(perturbed, street_batch)
    p_base = probabilities(tiny_segmenter, street_batch)
    torch.testing.assert_close(p_loaded, p_perturbed, rtol=0, atol=1e-6)
    assert not torch.allclose(p_loaded, p_base, atol=1e-4), "the delta must change the outputs"


def test_delta_holds_exactly_the_trainable_parameters(delta):
    from safetensors import safe_open
    seg, path = delta
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == seg.trainable
        assert f.metadata()["preset"] == "tiny"
        assert f.metadata()["format"].startswith("ovseg-delta/")


def _tensors(seg):
    return {n: p.detach().clone() for n, p in params(seg).items() if n in seg.trainable}


def _build_error(build_tiny, path, exc=ValueError):
    with pytest.raises(exc) as info:
        build_tiny(0, weights=str(path))
    message = str(info.value)
    assert str(path) in message, message
    assert "'tiny'" in message, message
    return message


def test_delta_missing_key(tmp_path, delta, build_tiny):
    seg, _ = delta
    tensors = _tensors(seg)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    path = tmp_path / "missing_key.safetensors"
    save_file(tensors, str(path), metadata={"format": "ovseg-delta/1", "preset": "tiny"})
    message = _build_error(build_tiny, path)
    assert "missing 1 key" in message and dropped in message


def test_delta_unexpected_key(tmp_path, delta, build_tiny):
    seg, _ = delta
    tensors = _tensors(seg)
    tensors["encoder.not_a_parameter"] = torch.zeros(3)
    path = tmp_path / "extra_key.safetensors"
    save_file(tensors, str(path), metadata={"format": "ovseg-delta/1", "preset": "other"})
    message = _build_error(build_tiny, path)
    assert "unexpected 1 key" in message and "encoder.not_a_parameter" in message
    assert "'other'" in message, "names the preset the delta was trained for"


def test_delta_wrong_shape(tmp_path, delta, build_tiny):
    seg, _ = delta
    tensors = _tensors(seg)
    key = next(n for n in sorted(tensors) if tensors[n].dim() == 2)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    path = tmp_path / "wrong_shape.safetensors"
    save_file(tensors, str(path))
    message = _build_error(build_tiny, path)
    assert key in message and "shape" in message


def test_delta_not_safetensors(tmp_path, build_tiny):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    message = _build_error(build_tiny, path)
    assert "safetensors" in message


def test_delta_from_torch_save_is_rejected(tmp_path, delta, build_tiny):
    seg, _ = delta
    path = tmp_path / "delta.pt"
    torch.save(_tensors(seg), path)
    _build_error(build_tiny, path)


def test_delta_missing_file(tmp_path, build_tiny):
    _build_error(build_tiny, tmp_path / "nope.safetensors", FileNotFoundError)


def test_failed_delta_load_leaves_the_module_untouched(tmp_path, delta, build_tiny):
    seg, _ = delta
    tensors = _tensors(seg)
    tensors["encoder.not_a_parameter"] = torch.zeros(3)
    path = tmp_path / "extra_key.safetensors"
    save_file(tensors, str(path))
    fresh = build_tiny(0)
    before = {n: p.detach().clone() for n, p in params(fresh).items()}
    with pytest.raises(ValueError):
        load_delta(fresh.classifier, fresh.trainable, str(path), "tiny")
    assert all(torch.equal(before[n], p) for n, p in params(fresh).items())


# ---- CLIP checkpoints ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip():
    register_clip_configs()
    torch.manual_seed(1234)
    return open_clip.create_model("ovseg-tiny-vit")


def test_clip_checkpoint_loads_into_the_encoder(tmp_path, tiny_clip, tiny_segmenter):
    state = tiny_clip.state_dict()
    path = tmp_path / "tiny_clip.pt"
    torch.save(state, path)
    seg = build_segmenter("tiny", device="cpu", overrides={"clip.pretrained": str(path)})
    loaded = seg.classifier.encoder.open_clip_state_dict()
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    assert sorted(loaded) == sorted(visual)
    for key, value in visual.items():
        assert torch.equal(loaded[key], value), key
    # ... and it differs from a random build, so the comparison means something.
    random = tiny_segmenter.classifier.encoder.open_clip_state_dict()
    assert not torch.equal(random["proj"], visual["proj"])
    # The text tower comes from the checkpoint too.
    text_model = seg.text_encoder.model
    assert torch.equal(text_model.token_embedding.weight, state["token_embedding.weight"])
    assert torch.equal(text_model.text_projection, state["text_projection"])


def _tiny_clip_variant(tmp_path, name: str, **vision_cfg) -> torch.nn.Module:
    """A random CLIP of the tiny preset's config with some vision settings changed."""
    config = json.loads((CLIP_CONFIG_DIR / "ovseg-tiny-vit.json").read_text())
    config["vision_cfg"].update(vision_cfg)
    config_dir = tmp_path / "clip_configs"
    config_dir.mkdir()
    (config_dir / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(config_dir)
    return open_clip.create_model(name)


def test_clip_checkpoint_of_another_architecture(tmp_path, tiny_clip):
    wide = _tiny_clip_variant(tmp_path, "ovseg-test-wide-vit", width=96)
    path = tmp_path / "wide_clip.pt"
    torch.save(wide.state_dict(), path)
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides={"clip.pretrained": str(path)})
    message = str(info.value)
    assert str(path) in message and "ovseg-tiny-vit" in message and "'tiny'" in message
    assert "size mismatch" in message or "shape" in message


def test_clip_checkpoint_missing_a_key(tmp_path, tiny_clip):
    state = tiny_clip.state_dict()
    del state["visual.proj"]
    path = tmp_path / "partial_clip.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides={"clip.pretrained": str(path)})
    message = str(info.value)
    assert str(path) in message and "ovseg-tiny-vit" in message and "visual.proj" in message


def test_clip_checkpoint_missing_file(tmp_path):
    path = tmp_path / "no_such_clip.pt"
    with pytest.raises(FileNotFoundError) as info:
        build_segmenter("tiny", device="cpu", overrides={"clip.pretrained": str(path)})
    message = str(info.value)
    assert str(path) in message and "'tiny'" in message
    assert "--clip-weights" not in message, "no such option exists"


def test_mask2former_directory_missing_a_tensor_names_preset_file_and_key(tmp_path):
    from safetensors.torch import load_file, save_file
    from ovseg_core.modeling.proposals import Mask2FormerProposals
    Mask2FormerProposals.from_arch("tiny").save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(str(weights))
    dropped = next(k for k in sorted(tensors) if "class_predictor" in k)
    del tensors[dropped]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        build_segmenter("tiny", device="cpu", overrides={"proposals.pretrained": str(tmp_path)})
    message = str(err.value)
    assert "tiny" in message and str(tmp_path) in message and "class_predictor" in message


def test_fp16_clip_checkpoint_of_another_patch_size_names_the_tensors(tmp_path):
    """open_clip fails such a load deep inside (resizing fp16 position embeddings on the
    CPU); the error must still say which tensors differ."""
    other = _tiny_clip_variant(tmp_path, "ovseg-test-patch-vit", patch_size=8)  # the tiny preset's is 16
    path = tmp_path / "clip.safetensors"
    save_file({k: v.half().contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides={"clip.pretrained": str(path)})
    message = str(info.value)
    assert str(path) in message and "visual.conv1.weight" in message and "vs model" in message, message
