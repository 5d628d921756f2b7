"""Training recipes: one YAML file per run type in ``config/train/``, read strictly.

A recipe names a model preset, the preset keys it changes (the papers' ablations are
each one such key), and the data, matching, loss and optimisation settings. Unknown
keys are errors that name the file and the key, as for presets.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from ..config import REPO_CONFIG_DIR, _build, load_preset, set_dotted

RECIPE_DIR = REPO_CONFIG_DIR / "train"
METHODS = ("smart", "mask_adapter")


@dataclass
class DataConfig:
    dataset: str = "coco_panoptic"       # a reader of ovseg_core.datasets, or "shapes" (generated)
    root: Optional[str] = None           # the dataset's folder (--data-root overrides)
    split: str = "train"
    train_classes: List[str] = field(default_factory=list)    # only these are supervised (empty: all)
    exclude_classes: List[str] = field(default_factory=list)  # never supervised (zero-shot protocols)
    data_fraction: float = 1.0           # a fixed, seeded subset of the images (the papers' Figure 6)
    crop_size: int = 1024                # large-scale jittering: scale, then a fixed square crop
    scale_range: List[float] = field(default_factory=lambda: [0.1, 2.0])
    flip: bool = True
    num_workers: int = 2
    shapes_num_scenes: int = 100000      # dataset "shapes": scene i has seed shapes_seed + i
    shapes_seed: int = 0
    shapes_size: int = 128
    shapes_grey_share: float = 0.0       # a share of things repainted grey, named by the bare shape word
    shapes_hue_share: float = 0.0        # a share of things repainted in an off-palette hue ("pink star")


@dataclass
class MatcherConfig:
    type: str = "hungarian"              # hungarian (Mask2Former's mask costs) | iou
    cost_bce: float = 5.0
    cost_dice: float = 5.0
    iou_threshold: float = 0.7
    iou_pairs: str = "one_per_gt"        # iou matcher: one_per_gt (Mask-Adapter's code) | all (its eq. 5)


@dataclass
class LossConfig:
    ce: float = 2.0
    dice: float = 5.0
    bce: float = 5.0
    consistency: float = 5.0             # mask_adapter: 1 - cos(pred-mask, GT-mask embedding)
    void_weight: float = 0.1             # CE weight of the void target (Mask2Former's eos_coef)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    clip_lr_multiplier: float = 0.1      # on CLIP's pre-trained tensors (new modules get lr)
    batch_size: int = 16                 # global: split evenly over the processes
    max_iters: int = 25000
    warmup_iters: int = 250
    poly_power: float = 0.9
    grad_clip: float = 0.01              # max global gradient norm (0: off)


@dataclass
class MaskAdapterConfig:
    gt_warmup_iters: int = 0             # steps on ground-truth masks only, then mixed masks


@dataclass
class EvalConfig:
    dataset: Optional[str] = None        # a reader name, or "shapes" (generated scenes)
    root: Optional[str] = None
    split: str = "val"
    limit: int = 50
    every: int = 0                       # steps between validations (0: only at the end)
    shapes_seed: int = 300000
    shapes_size: int = 128


@dataclass
class Recipe:
    name: str = "unnamed"
    description: str = ""
    preset: str = "tiny"
    model: Dict[str, Any] = field(default_factory=dict)   # dotted preset keys this recipe changes
    method: str = "smart"                # smart | mask_adapter
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mask_adapter: MaskAdapterConfig = field(default_factory=MaskAdapterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint_every: int = 1000
    log_every: int = 10


def recipe_names() -> List[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str, overrides: Optional[Dict[str, Any]] = None) -> Recipe:
    """A recipe by name (``config/train/NAME.yaml``) or path, with ``{"section.key": v}``
    overrides checked like the file's keys."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"training recipe {name_or_path!r} not found ({path}); "
                         f"available: {', '.join(recipe_names())}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of keys, got a {type(data).__name__}")
    data.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        if dotted.startswith("model."):  # a preset key: model.classifier.trainable=qkv
            data["model"] = {**(data.get("model") or {}), dotted[len("model."):]: value}
            continue
        set_dotted(data, dotted, value)
    model = data.pop("model", None) or {}
    if not isinstance(model, dict):
        raise ValueError(f"{path}: model: expected a mapping of dotted preset keys "
                         f"(classifier.trainable: qkv), got {model!r}")
    recipe = _build(Recipe, data, str(path))
    recipe.model = dict(model)
    validate(recipe, str(path))
    return recipe


def validate(recipe: Recipe, where: str) -> None:
    """Checks that types alone cannot: choices, ranges, and that the model overrides are
    real preset keys (by loading the preset with them)."""
    def fail(key, why):
        raise ValueError(f"{where}: {key}: {why}")
    if recipe.method not in METHODS:
        fail("method", f"{recipe.method!r} is not one of {METHODS}")
    if recipe.matcher.type not in ("hungarian", "iou"):
        fail("matcher.type", f"{recipe.matcher.type!r}; choose hungarian or iou")
    if recipe.matcher.iou_pairs not in ("one_per_gt", "all"):
        fail("matcher.iou_pairs", f"{recipe.matcher.iou_pairs!r}; choose one_per_gt or all")
    if not 0 < recipe.data.data_fraction <= 1:
        fail("data.data_fraction", f"{recipe.data.data_fraction} is not in (0, 1]")
    lo, hi = (recipe.data.scale_range + [0, 0])[:2]
    if len(recipe.data.scale_range) != 2 or not 0 < lo <= hi:
        fail("data.scale_range", f"{recipe.data.scale_range}; give [min, max] with 0 < min <= max")
    if recipe.data.crop_size < 32:
        fail("data.crop_size", f"{recipe.data.crop_size} is below 32 pixels")
    if recipe.optim.batch_size < 1 or recipe.optim.max_iters < 1:
        fail("optim", "batch_size and max_iters must be >= 1")
    if recipe.data.train_classes and recipe.data.exclude_classes:
        both = sorted(set(recipe.data.train_classes) & set(recipe.data.exclude_classes))
        if both:
            fail("data.exclude_classes", f"{both} are also in train_classes")
    try:
        model_preset(recipe)
    except ValueError as err:
        fail("model", str(err))


def model_preset(recipe: Recipe):
    """The preset this recipe trains: its file plus the recipe's ``model`` keys."""
    return load_preset(recipe.preset, dict(recipe.model))


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)
