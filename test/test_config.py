"""Presets: strict YAML keys, dotted overrides, the shipped presets, and build-time checks."""
import dataclasses

import open_clip
import pytest
import yaml

from ovseg_core.build import build_segmenter, resolve_precision
from ovseg_core.config import (PRESET_DIR, ClipConfig, InferenceConfig, PresetConfig, load_preset,
                               preset_names)
from ovseg_core.modeling.classifiers import CLASSIFIERS
from ovseg_core.trainable import POLICIES
from ovseg_core.weights import register_clip_configs


def write_preset(tmp_path, data, name="custom"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def field_names(cls):
    return [f.name for f in dataclasses.fields(cls)]


# ---- strict keys ---------------------------------------------------------------------

def test_unknown_top_level_key(tmp_path):
    path = write_preset(tmp_path, {"clip": {"model": "ovseg-tiny-vit"}, "wieghts": "x.safetensors"})
    with pytest.raises(ValueError) as info:
        load_preset(str(path))
    message = str(info.value)
    assert "wieghts" in message and str(path) in message
    assert all(name in message for name in field_names(PresetConfig))


def test_unknown_nested_key(tmp_path):
    path = write_preset(tmp_path, {"clip": {"model": "ovseg-tiny-vit", "inptu_size": 224}})
    with pytest.raises(ValueError) as info:
        load_preset(str(path))
    message = str(info.value)
    assert "inptu_size" in message and str(path) in message and "clip" in message
    assert all(name in message for name in field_names(ClipConfig))


def test_unknown_key_in_ensemble_classifier(tmp_path):
    path = write_preset(tmp_path, {"ensemble": {"classifier": {"type": "mask_pooling", "sma_layer": [1]}}})
    with pytest.raises(ValueError, match="sma_layer"):
        load_preset(str(path))


def test_section_must_be_a_mapping(tmp_path):
    path = write_preset(tmp_path, {"inference": 0.5})
    with pytest.raises(ValueError) as info:
        load_preset(str(path))
    assert "inference" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("data, words", [({"clip": None}, ["clip", "null"]),
                                         ({"weights": {"path": "x"}}, ["weights", "section"]),
                                         ({"inference": {"overlap_threshold": {"a": 1}}},
                                          ["overlap_threshold", "section"])])
def test_null_section_or_section_for_a_value(tmp_path, data, words):
    path = write_preset(tmp_path, data)
    with pytest.raises(ValueError) as info:
        load_preset(str(path))
    assert str(path) in str(info.value) and all(w in str(info.value) for w in words)


def test_optional_section_may_be_null(tmp_path):
    assert load_preset(str(write_preset(tmp_path, {"ensemble": None}))).ensemble is None


def test_preset_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- clip\n- proposals\n")
    with pytest.raises(ValueError, match="mapping"):
        load_preset(str(path))


def test_missing_preset_file_is_named(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ValueError) as info:
        load_preset(str(path))
    message = str(info.value)
    assert str(path) in message and "absent.yaml.yaml" not in message
    assert all(name in message for name in preset_names())


def test_preset_file_by_path_takes_its_name_and_defaults(tmp_path):
    path = write_preset(tmp_path, {"clip": {"model": "ovseg-tiny-vit", "input_size": [96, 128]}},
                        name="mine")
    cfg = load_preset(str(path))
    assert cfg.name == "mine"
    assert cfg.clip == ClipConfig(model="ovseg-tiny-vit", input_size=[96, 128])
    assert cfg.inference == InferenceConfig()
    assert cfg.ensemble is None


def test_ensemble_section_builds_nested_dataclasses(tmp_path):
    path = write_preset(tmp_path, {"ensemble": {"alpha": 0.7, "seen_classes": ["car"],
                                                "classifier": {"type": "mask_adapter"}}})
    cfg = load_preset(str(path))
    assert cfg.ensemble.alpha == 0.7 and cfg.ensemble.seen_classes == ["car"]
    assert cfg.ensemble.classifier.type == "mask_adapter"
    assert cfg.ensemble.classifier.trainable == "frozen"


# ---- overrides -----------------------------------------------------------------------

def test_dotted_overrides():
    cfg = load_preset("tiny", {"inference.overlap_threshold": 0.25, "classifier.sma_layers": [0, 1],
                               "clip.input_size": 96, "precision": "bf16"})
    assert cfg.inference.overlap_threshold == 0.25
    assert cfg.inference.object_mask_threshold == load_preset("tiny").inference.object_mask_threshold
    assert cfg.classifier.sma_layers == [0, 1]
    assert cfg.clip.input_size == 96
    assert cfg.clip.model == "ovseg-tiny-vit", "other keys of an overridden section stay"
    assert cfg.precision == "bf16"


def test_an_exponent_without_a_dot_is_a_number_and_a_word_is_still_refused():
    # PyYAML reads "1e-3" as a string (YAML 1.1); `--set ...=1e-3` means the number
    from ovseg_core.config import parse_overrides
    cfg = load_preset("tiny", parse_overrides(["inference.overlap_threshold=5e-1"]))
    assert cfg.inference.overlap_threshold == 0.5
    with pytest.raises(ValueError, match="overlap_threshold: 'high' is not a float"):
        load_preset("tiny", {"inference.overlap_threshold": "high"})


def test_override_creates_an_absent_section():
    cfg = load_preset("tiny", {"ensemble.beta": 0.9})
    assert cfg.ensemble is not None and cfg.ensemble.beta == 0.9
    assert cfg.ensemble.classifier.type == "mask_attention"


def test_overrides_do_not_leak_between_loads():
    shipped = yaml.safe_load((PRESET_DIR / "tiny.yaml").read_text())["inference"]["overlap_threshold"]
    assert load_preset("tiny", {"inference.overlap_threshold": shipped + 0.1}).inference.overlap_threshold \
        == pytest.approx(shipped + 0.1)
    assert load_preset("tiny").inference.overlap_threshold == shipped


@pytest.mark.parametrize("key, bad", [("inference.overlap_treshold", "overlap_treshold"),
                                      ("clip.inptu_size", "inptu_size"),
                                      ("wieghts", "wieghts"),
                                      ("nosection.key", "nosection")])
def test_unknown_override_keys_are_rejected(key, bad):
    with pytest.raises(ValueError) as info:
        load_preset("tiny", {key: 1})
    message = str(info.value)
    assert bad in message and "tiny.yaml" in message and "valid keys" in message


@pytest.mark.parametrize("key, value", [("inference.split_components", 1.5), ("inference.split_components", -0.1),
                                        ("inference.overlap_threshold", 2.0),
                                        ("inference.object_mask_threshold", -1.0)])
def test_an_inference_threshold_out_of_range_is_named(key, value):
    """A fraction above 1 would silently turn splitting (or every segment) off."""
    with pytest.raises(ValueError, match=rf"{key} is {value}; .*between 0 and 1"):
        load_preset("shapes", {key: value})
    assert load_preset("shapes", {key: 0.0}) is not None


def test_override_below_a_value_is_rejected():
    with pytest.raises(ValueError, match="device"):
        load_preset("tiny", {"device.index": 0})


# ---- preset names --------------------------------------------------------------------

def test_unknown_preset_lists_available():
    with pytest.raises(ValueError) as info:
        load_preset("no_such_preset")
    message = str(info.value)
    assert "no_such_preset" in message
    assert all(name in message for name in preset_names())


def test_preset_names_are_the_shipped_files():
    names = preset_names()
    assert "tiny" in names
    assert names == sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", preset_names())
def test_shipped_presets_load(name):
    cfg = load_preset(name)
    assert cfg.name == name
    assert cfg.description, f"preset {name} has no description"
    register_clip_configs()
    assert cfg.clip.model in open_clip.list_models()
    for classifier in [cfg.classifier] + ([cfg.ensemble.classifier] if cfg.ensemble else []):
        assert classifier.type in CLASSIFIERS
        assert classifier.trainable in POLICIES
    assert cfg.precision in ("auto", "fp32", "fp16", "bf16")
    assert cfg.device == "auto" or cfg.device.startswith(("cpu", "cuda"))
    assert cfg.proposals.model or cfg.proposals.pretrained


def test_tiny_preset_builds(tiny_segmenter):
    seg = tiny_segmenter
    cfg = load_preset("tiny")
    assert seg.config.name == "tiny" and seg.name == "tiny"
    assert seg.device.type == "cpu" and seg.amp_dtype is None
    assert seg.clip_size == (cfg.clip.input_size,) * 2
    assert seg.proposal_size == (cfg.proposals.input_size,) * 2
    assert type(seg.classifier) is CLASSIFIERS[cfg.classifier.type]
    assert seg.trainable and all(p.requires_grad == (n in seg.trainable)
                                 for n, p in seg.classifier.named_parameters())
    assert not any(p.requires_grad for p in seg.proposals.parameters())


# ---- errors found when building ------------------------------------------------------

def test_unknown_classifier_type():
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides={"classifier.type": "mask_magic"})
    message = str(info.value)
    assert "mask_magic" in message and "'tiny'" in message
    assert all(name in message for name in CLASSIFIERS)


def test_unknown_trainable_policy():
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides={"classifier.trainable": "everything"})
    message = str(info.value)
    assert "everything" in message and all(p in message for p in POLICIES)


@pytest.mark.parametrize("overrides, words", [
    ({"classifier.distribution_adapter_layers": 4}, ["distribution_adapter_layers", "(0, 1, 2, 3)"]),
    ({"classifier.trainable": "lora", "classifier.lora_rank": 0}, ["lora_rank", ">= 1"]),
    ({"ensemble.classifier.trainable": "full_clip"}, ["frozen CLIP", "new_modules"]),
])
def test_bad_classifier_settings_name_the_key_and_the_way_out(overrides, words):
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides=overrides)
    message = str(info.value)
    assert "'tiny'" in message and all(w in message for w in words), message


def test_the_old_adapter_switch_points_to_its_replacement():
    with pytest.raises(ValueError) as info:
        load_preset("tiny", {"classifier.distribution_adapter": True})
    assert "distribution_adapter_layers" in str(info.value)


def test_unknown_precision():
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides={"precision": "fp8"})
    message = str(info.value)
    assert "fp8" in message and all(p in message for p in ("fp32", "fp16", "bf16"))


def test_fp16_on_cpu_is_refused():
    import torch
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert resolve_precision("auto", torch.device("cpu")) is None


def test_sma_needs_the_mask_attention_classifier():
    with pytest.raises(ValueError, match="mask_attention"):
        build_segmenter("tiny", device="cpu", overrides={"classifier.type": "mask_pooling"})


def test_unknown_clip_model():
    with pytest.raises(ValueError) as info:
        build_segmenter("tiny", device="cpu", overrides={"clip.model": "ViT-Q-99"})
    assert "ViT-Q-99" in str(info.value) and "'tiny'" in str(info.value)


@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_unknown_device(device):
    with pytest.raises(ValueError, match="device"):
        build_segmenter("tiny", device=device)


@pytest.mark.parametrize("key, value", [
    ("inference.overlap_threshold", "high"),
    ("clip.input_size", "896"),
    ("classifier.sma_layers", [1.5]),
    ("classifier.learned_void", "yes"),
])
def test_wrongly_typed_values_are_refused(key, value):
    with pytest.raises(ValueError, match=key.split(".")[-1]):
        load_preset("tiny", {key: value})


def test_integers_are_accepted_where_floats_are_expected():
    assert load_preset("tiny", {"inference.overlap_threshold": 1}).inference.overlap_threshold == 1
