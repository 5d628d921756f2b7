"""Presets: one YAML file per model in ``config/presets/``, read into typed dataclasses.

Unknown keys are errors (a typo must not silently fall back to a default), and every
error names the file and the key.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from .data_dir import find_data_dir

# The repository's config/ in a checkout, share/ovseg/config when installed (data_dir.py).
REPO_CONFIG_DIR = find_data_dir("config/presets") / "config"
PRESET_DIR = REPO_CONFIG_DIR / "presets"
CLIP_CONFIG_DIR = REPO_CONFIG_DIR / "clip"
# The folder that holds config/ and the shipped weights/; presets name files under it
# as ${OVSEG_DATA}/weights/..., so they work from any working directory.
DATA_DIR = REPO_CONFIG_DIR.parent
# How an input is fitted to the model size (ovseg_core.resize); here so that reading a
# preset needs no torch (the launch file checks presets before it starts the node).
RESIZE_MODES = ("square", "longest_side")
RUNTIMES = ("torch", "onnxruntime")      # what runs the networks (ovseg_core/export/runtime.py)


@dataclass
class ClipConfig:
    model: str = "ViT-B-16"              # open_clip model name; ours live in config/clip/*.json
    pretrained: Optional[str] = None     # open_clip tag (needs a network or its cache) or a local file
    input_size: Union[int, List[int]] = 896  # classifier input (pos. embeddings interpolated)
    resize: str = "longest_side"         # longest_side: fit inside input_size, keep the aspect ratio;
                                         # square: squash to input_size (the old behaviour)


@dataclass
class ProposalConfig:
    model: Optional[str] = "tiny"        # Mask2Former architecture name (random weights) ...
    pretrained: Optional[str] = None     # ... or a save_pretrained directory / hub id
    input_size: Union[int, List[int]] = 640
    resize: str = "longest_side"         # as clip.resize, for the mask generator


@dataclass
class ClassifierConfig:
    type: str = "mask_attention"         # mask_attention | mask_pooling | mask_crop | mask_adapter
    sma_layers: List[int] = field(default_factory=list)
    sma_residual: bool = True
    distribution_adapter_layers: int = 0  # Distribution Adapter convs: 0 none, 1-3 (2: the paper's)
    learned_void: bool = False
    trainable: str = "frozen"            # see ovseg_core.trainable.POLICIES
    lora_rank: int = 8                   # trainable: lora only
    adapter_hidden: int = 256            # mask_adapter only
    adapter_maps: int = 16               # mask_adapter only
    crop_chunk: int = 32                 # mask_crop only


@dataclass
class EnsembleConfig:
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    alpha: float = 0.4                   # weight of this (second) classifier on seen classes
    beta: float = 0.8                    # ... and on unseen classes
    seen_classes: List[str] = field(default_factory=list)


@dataclass
class TextConfig:
    chunk_size: int = 256
    trainable: bool = False              # train the CLIP text tower too (the papers' ablation); its
                                         # tensors then join the delta (under text_tower.)
    cache_size: int = 8


@dataclass
class InferenceConfig:
    object_mask_threshold: float = 0.0   # FC-CLIP's evaluation setting; 0.8 is Mask2Former's COCO default
    overlap_threshold: float = 0.8
    split_components: float = 0.0        # > 0: a proposal of several connected parts becomes one proposal
                                         # per part of at least this fraction of its largest (0: off)


@dataclass
class OnnxConfig:
    dir: Optional[str] = None            # the folder `ovseg export --out` wrote (runtime: onnxruntime)
    providers: List[str] = field(default_factory=list)  # ONNX Runtime execution providers, in order;
                                         # empty: CUDA on a CUDA device, else CPU (docs/deployment.md)


@dataclass
class PresetConfig:
    name: str = "unnamed"
    description: str = ""
    clip: ClipConfig = field(default_factory=ClipConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    ensemble: Optional[EnsembleConfig] = None
    text: TextConfig = field(default_factory=TextConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    weights: Optional[str] = None        # our trained delta (safetensors) on top of the base weights
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    precision: str = "auto"              # auto (bf16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    runtime: str = "torch"               # torch | onnxruntime (the networks of an ONNX export, onnx.dir)
    onnx: OnnxConfig = field(default_factory=OnnxConfig)


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        inner = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        target = hint if dataclasses.is_dataclass(hint) else (inner[0] if inner else None)
        if target and value is None and type(None) not in typing.get_args(hint):
            raise ValueError(f"{where}.{key}: is a section and cannot be null; "
                             f"leave it out for the defaults")
        if not target and isinstance(value, dict):
            raise ValueError(f"{where}.{key}: expected a value, not a section {value}")
        if not target and isinstance(value, str) and (hint is float or float in typing.get_args(hint)):
            value = _yaml_float(value)
        if not target and not _fits(value, hint):
            raise ValueError(f"{where}.{key}: {value!r} is not a {_type_name(hint)}")
        kwargs[key] = _build(target, value, f"{where}.{key}") if target and value is not None else value
    return cls(**kwargs)


def _yaml_float(text: str):
    """PyYAML reads ``1e-3`` (no dot) as a string (YAML 1.1); a float field takes it as
    the number everyone means. Anything else stays a string (and fails the type check)."""
    try:
        return float(text)
    except ValueError:
        return text


def _fits(value: Any, hint) -> bool:
    """Whether a YAML value fits a field's annotation (str, int, float, bool, lists, unions)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if origin in (list, List):
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else hint.__name__


def preset_names() -> List[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str, overrides: Optional[Dict[str, Any]] = None) -> PresetConfig:
    """A preset by name (``config/presets/NAME.yaml``) or by path, with optional
    ``{"section.key": value}`` overrides checked like the file's own keys."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and not path.is_file():
        raise ValueError(f"preset file {path} does not exist; "
                         f"available presets: {', '.join(preset_names())}")
    if path.suffix not in (".yaml", ".yml"):
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ValueError(f"unknown preset {name_or_path!r}: no file {path}; "
                         f"available presets: {', '.join(preset_names())}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset is a mapping of keys, got a {type(data).__name__}")
    data.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    cfg = _build(PresetConfig, data, str(path))
    for section in ("clip", "proposals"):
        mode = getattr(cfg, section).resize
        if mode not in RESIZE_MODES:
            raise ValueError(f"{path}: {section}.resize is {mode!r}; choose one of {', '.join(RESIZE_MODES)} "
                             f"(longest_side keeps the aspect ratio, square squashes to input_size)")
    if cfg.runtime not in RUNTIMES:
        raise ValueError(f"{path}: runtime is {cfg.runtime!r}; choose one of {', '.join(RUNTIMES)} "
                         f"(onnxruntime serves an `ovseg export` folder named by onnx.dir)")
    for key, meaning in (("object_mask_threshold", "a proposal's least objectness"),
                         ("overlap_threshold", "the least share of a mask a segment keeps"),
                         ("split_components", "the least size of a kept part, as a fraction of the largest; 0 "
                                              "turns splitting off")):
        value = getattr(cfg.inference, key)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{path}: inference.{key} is {value}; it is {meaning}, between 0 and 1")
    return cfg


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Sets ``section.key`` in a loaded YAML mapping (an override), making missing sections;
    the result is then checked like the file's own keys."""
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def parse_overrides(items) -> Dict[str, Any]:
    """Command-line ``KEY=VALUE`` items (``--set``) -> {dotted key: YAML-parsed value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY (section.key)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def size_pair(size: Union[int, List[int]]) -> Tuple[int, int]:
    """A preset's ``input_size`` (S or [H, W]) as (H, W)."""
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"an input size is S or [H, W], got {size}")
    return int(size[0]), int(size[1])


def resolve_path(value: Optional[str]) -> Optional[str]:
    """Expands ~ and $VARS in paths from presets; ${OVSEG_DATA} is DATA_DIR unless the
    environment sets it."""
    if not value:
        return value
    data = os.environ.get("OVSEG_DATA", str(DATA_DIR))
    value = value.replace("${OVSEG_DATA}", data)
    return os.path.expandvars(os.path.expanduser(value))
