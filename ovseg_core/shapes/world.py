"""ShapesWorld: procedural scenes whose every class can be learned on a CPU.

Stuff regions (sky, grass, road with lane markings, brick wall, ...) are horizontal
bands with wavy borders, each filled with a procedural texture; things are outlined
"color shape" objects (``"red circle"``) that may overlap. Everything is drawn from one
``numpy.random.Generator``, so a seed fixes a scene (image, panoptic ground truth and
caption). Masks are drawn without anti-aliasing so that ground truth is exact.

Layout options of :func:`generate_scene` change how a scene looks, never its classes
(issue 13, section 2); their defaults draw today's scenes bit for bit:

- ``size`` (H, W) and ``radius`` (a thing's circumradius range, px; 5-30 gives things
  of about 10-60 px);
- ``outline``: ``"thin_dark"`` (the default: a 1 px border at 0.45 x the thing's color),
  ``"none"``, ``"white"`` (1 px) or ``"thick"`` (2 px, dark);
- ``stuff_layout``: ``"bands"`` (the default: horizontal bands), ``"vertical"`` (the
  same bands turned on their side: left to right, wavy borders) or ``"blobs"`` (a
  Voronoi partition of random sites with borders warped by smooth noise); every pixel
  still belongs to exactly one stuff segment;
- ``noise`` (Gaussian, sigma in gray levels) and ``jpeg`` (a JPEG quality): applied to the
  finished image only; ground truth and caption are those of the clean scene.

Outline, noise and JPEG draw nothing from the generator before the scene is finished,
and ``"vertical"`` draws what ``"bands"`` draws, so a scene with only those options
changed has the clean scene's things, classes and caption. Classes (and which classes a
seed draws) never depend on the layout options.

:data:`LAYOUT_VARIANTS` is a fixed set of these options for evaluation only (never
train on it); :func:`variant_scene` gives seed ``s`` the variant ``s % 6``:

0. 160x120 (W x H), white outlines;
1. 256x144, vertical stuff bands, thick outlines;
2. 128x128, small things (radius 5-10 px, 10-20 px across), JPEG quality 60;
3. 128x128, big things (radius 20-30 px, 40-60 px across), blob stuff, noise sigma 6;
4. 96x160 (portrait), no outlines;
5. 192x192, things of every size (radius 5-30 px), blob stuff, noise sigma 3, JPEG 75.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

SPLIT_FILE = Path(__file__).with_name("split.json")
Size = Union[int, Tuple[int, int]]


@dataclass(frozen=True)
class ShapesClasses:
    """The class list (things first, then stuff; category id = index + 1) and its split."""

    colors: Dict[str, Tuple[int, int, int]]
    shapes: Tuple[str, ...]
    stuff: Tuple[str, ...]
    unseen: frozenset

    @property
    def things(self) -> List[str]:
        return [f"{c} {s}" for c in self.colors for s in self.shapes]

    @property
    def names(self) -> List[str]:
        return self.things + list(self.stuff)

    @property
    def is_thing(self) -> List[bool]:
        return [True] * len(self.things) + [False] * len(self.stuff)

    def seen(self, names: Sequence[str]) -> List[str]:
        return [n for n in names if n not in self.unseen]

    def unseen_of(self, names: Sequence[str]) -> List[str]:
        return [n for n in names if n in self.unseen]

    def vocabulary_text(self, names: Optional[Sequence[str]] = None) -> str:
        """A vocabulary string for ``ovseg segment --vocab`` (stuff tagged)."""
        names = self.names if names is None else names
        return "; ".join(n if n not in self.stuff else f"{n} [stuff]" for n in names)

    def categories(self) -> List[dict]:
        """COCO-panoptic categories, with thing flags and the split."""
        from ..panoptic_io import categories
        cats = categories(self.names, self.is_thing)
        for c in cats:
            c["split"] = "unseen" if c["name"] in self.unseen else "seen"
        return cats


@lru_cache(maxsize=1)
def load_classes() -> ShapesClasses:
    with open(SPLIT_FILE) as f:
        data = json.load(f)
    classes = ShapesClasses(colors={k: tuple(v) for k, v in data["colors"].items()}, shapes=tuple(data["shapes"]),
                            stuff=tuple(data["stuff"]),
                            unseen=frozenset(data["unseen_things"]) | frozenset(data["unseen_stuff"]))
    unknown = sorted(classes.unseen - set(classes.names))
    if unknown:
        raise ValueError(f"{SPLIT_FILE}: unseen classes {unknown} are not ShapesWorld classes")
    return classes


# ----------------------------------------------------------------------------- textures

def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1] with features about ``cell`` pixels wide."""
    small = rng.random((max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _grain(rng, h, w, sigma):
    return rng.normal(0, sigma, (h, w, 1)).astype(np.float32)


def _rgb(color) -> np.ndarray:
    return np.asarray(color, np.float32).reshape(1, 1, 3)


def _sky(rng, h, w, rows):
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = _rgb((80, 140, 225)) * (1 - t) + _rgb((165, 205, 245)) * t
    cloud = np.clip((_smooth_noise(rng, h, w, 24) - 0.55) * 4, 0, 1)[..., None]
    return img * (1 - cloud) + 245 * cloud + _grain(rng, h, w, 2)


def _grass(rng, h, w, rows):
    base = _rgb((65, 145, 50)) * (0.75 + 0.5 * _smooth_noise(rng, h, w, 12))[..., None]
    blades = cv2.resize(rng.normal(0, 22, (max(2, h // 3), w)).astype(np.float32), (w, h))[..., None]
    return base + blades * _rgb((0.5, 1.0, 0.4))


def _water(rng, h, w, rows):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = 6 * _smooth_noise(rng, h, w, 32)
    waves = np.sin(0.9 * y + 0.15 * x + phase)[..., None]
    return _rgb((40, 105, 165)) + 22 * waves * _rgb((0.7, 0.9, 1.0)) + _grain(rng, h, w, 3)


def _sand(rng, h, w, rows):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ripples = np.sin(0.45 * x + 0.2 * y + 4 * _smooth_noise(rng, h, w, 24))[..., None]
    return _rgb((222, 196, 140)) + 10 * ripples + _grain(rng, h, w, 9)


def _road(rng, h, w, rows):
    img = _rgb((85, 85, 92)) + _grain(rng, h, w, 7) + 10 * _smooth_noise(rng, h, w, 16)[..., None]
    center = int(np.median(rows)) if len(rows) else h // 2
    paint = (240, 240, 235) if rng.random() < 0.5 else (240, 205, 40)
    dash, gap = int(rng.integers(8, 14)), int(rng.integers(6, 12))
    for x0 in range(-int(rng.integers(0, dash + gap)), w, dash + gap):
        cv2.rectangle(img, (x0, center - 1), (x0 + dash, center + 1), paint, thickness=-1)
    return img


def _brick_wall(rng, h, w, rows):
    img = np.empty((h, w, 3), np.float32)
    img[:] = _rgb((185, 180, 170))
    bh, bw = 8, 16
    for r, y0 in enumerate(range(0, h, bh)):
        off = (bw // 2) * (r % 2)
        for x0 in range(-off, w, bw):
            color = np.array((155, 62, 45), np.float32) * rng.uniform(0.8, 1.15)
            cv2.rectangle(img, (x0 + 1, y0 + 1), (x0 + bw - 1, y0 + bh - 1), color.tolist(), thickness=-1)
    return img + _grain(rng, h, w, 6)


def _snow(rng, h, w, rows):
    shade = _smooth_noise(rng, h, w, 20)[..., None]
    return _rgb((238, 240, 246)) - 25 * shade * _rgb((1.0, 0.8, 0.4)) + _grain(rng, h, w, 3)


def _wood_floor(rng, h, w, rows):
    img = np.empty((h, w, 3), np.float32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    plank_h = 10
    tone = rng.uniform(0.75, 1.2, size=h // plank_h + 1).astype(np.float32)[(y // plank_h).astype(int)]
    grain = np.sin(0.35 * x * (1 + 0.2 * np.sin(0.1 * y)) + 8 * _smooth_noise(rng, h, w, 20))
    img[:] = _rgb((150, 100, 55))
    img *= (tone * (0.9 + 0.1 * grain))[..., None]
    img[(y.astype(int) % plank_h) == 0] = (70, 45, 25)
    return img


TEXTURES = {"sky": _sky, "grass": _grass, "water": _water, "sand": _sand, "road": _road,
            "brick wall": _brick_wall, "snow": _snow, "wood floor": _wood_floor}


# ------------------------------------------------------------------------------ shapes

def _polygon(center, radius, angle, kind) -> np.ndarray:
    """Vertices of a shape of circumradius ``radius`` (circle: a 48-gon)."""
    if kind == "cross":
        a = 0.34
        pts = np.array([(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1), (-a, -1), (-a, -a), (-1, -a),
                        (-1, a), (-a, a), (-a, 1)], np.float32) / np.hypot(1, a)
    else:
        n, inner = {"circle": (48, None), "square": (4, None), "triangle": (3, None), "hexagon": (6, None),
                    "star": (10, 0.45)}[kind]
        t = np.arange(n) * 2 * np.pi / n - np.pi / 2
        r = np.ones(n, np.float32) if inner is None else np.where(np.arange(n) % 2 == 0, 1.0, inner)
        if kind == "square":
            t = t + np.pi / 4
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]], np.float32)
    return pts * radius + np.asarray(center, np.float32)


def _shape_mask(h, w, center, radius, angle, kind) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    pts = np.round(_polygon(center, radius, angle, kind) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


# ------------------------------------------------------------------------------ scenes

@dataclass
class Scene:
    """One generated image with COCO-panoptic ground truth and a caption.

    ``segment_map`` is int32 [H, W] (every pixel belongs to one segment); ``segments`` are
    COCO ``segments_info`` entries plus ``class_name`` and ``isthing``.
    """

    image: np.ndarray
    segment_map: np.ndarray
    segments: List[dict]
    caption: str
    seed: Optional[int] = None
    classes: ShapesClasses = field(default_factory=load_classes, repr=False)

    def masks(self) -> np.ndarray:
        """[N, H, W] bool, one per segment (the order of ``segments``), for oracle proposals."""
        ids = np.array([s["id"] for s in self.segments])
        return self.segment_map[None] == ids[:, None, None]

    def semantic_map(self) -> np.ndarray:
        """int32 [H, W] class index per pixel (category id - 1)."""
        lut = np.zeros(self.segment_map.max() + 1, np.int32)
        for s in self.segments:
            lut[s["id"]] = s["category_id"] - 1
        return lut[self.segment_map]

    def segment_of(self, class_name: str) -> dict:
        found = [s for s in self.segments if s["class_name"] == class_name]
        if not found:
            raise KeyError(f"no {class_name!r} in this scene; it has {[s['class_name'] for s in self.segments]}")
        return found[0]


def _size_pair(size: Size) -> Tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 32 or w < 32:
        raise ValueError(f"a ShapesWorld scene needs at least 32x32 pixels, got {h}x{w}")
    return int(h), int(w)


def _stuff_layout(rng, h, w, n) -> np.ndarray:
    """Band index per pixel: ``n`` horizontal bands with wavy borders."""
    borders = np.sort(rng.uniform(0.2, 0.8, n - 1)) * h
    x = np.arange(w, dtype=np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    band = np.zeros((h, w), np.int32)
    for b in borders:
        amp, freq, phase = rng.uniform(0, 0.06 * h), rng.uniform(0.01, 0.06), rng.uniform(0, 2 * np.pi)
        band += (rows >= b + amp * np.sin(freq * x + phase)[None]).astype(np.int32)
    return band


def _vertical_layout(rng, h, w, n) -> np.ndarray:
    """Band index per pixel: ``n`` vertical bands (left to right) with wavy borders; the
    draws of :func:`_stuff_layout`, turned on its side."""
    return np.ascontiguousarray(_stuff_layout(rng, w, h, n).T)


def _blob_layout(rng, h, w, n) -> np.ndarray:
    """Region index per pixel: the nearest of ``n`` random sites, each site's distance
    warped by its own smooth noise, so the borders between blobs wander."""
    if n == 1:
        return np.zeros((h, w), np.int32)
    sites = rng.uniform(0.1, 0.9, (n, 2)) * (h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = min(h, w)
    dist = [np.hypot(y - sy, x - sx) + 0.4 * scale * (_smooth_noise(rng, h, w, max(8, scale // 3)) - 0.5)
            for sy, sx in sites]
    return np.argmin(np.stack(dist), 0).astype(np.int32)


STUFF_LAYOUTS = {"bands": _stuff_layout, "vertical": _vertical_layout, "blobs": _blob_layout}
# outline style -> (width in px, color: None = 0.45 x the thing's own color)
OUTLINES = {"thin_dark": (1, None), "none": (0, None), "white": (1, (255.0, 255.0, 255.0)), "thick": (2, None)}


def _check_layout_options(outline: str, stuff_layout: str, noise: float, jpeg: Optional[int]) -> None:
    if outline not in OUTLINES:
        raise ValueError(f"outline {outline!r}: choose one of {', '.join(OUTLINES)}")
    if stuff_layout not in STUFF_LAYOUTS:
        raise ValueError(f"stuff_layout {stuff_layout!r}: choose one of {', '.join(STUFF_LAYOUTS)}")
    if not noise >= 0:
        raise ValueError(f"noise is a Gaussian sigma in gray levels, at least 0; got {noise}")
    if jpeg is not None and not (isinstance(jpeg, (int, np.integer)) and 1 <= jpeg <= 100):
        raise ValueError(f"jpeg is a JPEG quality 1..100 or None, got {jpeg!r}")


def _degrade(rng: np.random.Generator, image: np.ndarray, noise: float, jpeg: Optional[int]) -> np.ndarray:
    """Gaussian noise of sigma ``noise``, then a JPEG round trip at quality ``jpeg``."""
    if noise:
        image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).round().astype(np.uint8)
    if jpeg is not None:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(jpeg)])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return image


def _caption(rng, things: List[Tuple[str, float]], stuff: List[str]) -> str:
    """Names every thing (with a size word now and then) and every stuff region."""
    words = []
    for name, radius in things:
        size = rng.choice(["", "small ", "large "], p=[0.6, 0.2, 0.2]) if radius else ""
        if size == "small " and radius > 20 or size == "large " and radius < 16:
            size = ""
        phrase = f"{size}{name}"
        words.append(("an " if phrase[0] in "aeiou" else "a ") + phrase)
    rng.shuffle(words)
    stuff = list(stuff)
    rng.shuffle(stuff)
    ground = " and ".join(stuff)
    if not words:
        return f"a photo of {ground}."
    things_text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    opener = rng.choice(["a photo of ", "there is ", "this is a photo of "])
    return f"{opener}{things_text} on {ground}."


def generate_scene(seed: Union[int, np.random.Generator], size: Size = 128, num_things: Tuple[int, int] = (1, 5),
                   radius: Tuple[float, float] = (8, 26), num_stuff: Tuple[int, int] = (1, 3),
                   classes: Optional[Sequence[str]] = None, things: Optional[Sequence[str]] = None,
                   stuff: Optional[Sequence[str]] = None, min_visible: float = 0.5,
                   center_jitter: Optional[float] = None, outline: str = "thin_dark", stuff_layout: str = "bands",
                   noise: float = 0.0, jpeg: Optional[int] = None) -> Scene:
    """A scene from ``seed``. ``classes`` restricts what may be drawn (e.g. the seen
    split); ``things`` / ``stuff`` force exact lists instead of random draws. A thing is
    kept only if at least ``min_visible`` of it stays visible after later things are drawn
    over it, so every ground-truth thing is recognisable. ``center_jitter`` (a share of
    the frame) puts things near the centre instead of anywhere. ``outline``,
    ``stuff_layout``, ``noise`` and ``jpeg`` change the layout only (module docstring);
    their defaults give the standard scenes."""
    _check_layout_options(outline, stuff_layout, noise, jpeg)
    world = load_classes()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = _size_pair(size)
    allowed = set(world.names if classes is None else classes)
    unknown = sorted(allowed - set(world.names) | set(things or ()) - set(world.things)
                     | set(stuff or ()) - set(world.stuff))
    if unknown:
        raise ValueError(f"not ShapesWorld classes: {unknown}; see ovseg_core/shapes/split.json")
    thing_pool = [n for n in world.things if n in allowed]
    stuff_pool = [n for n in world.stuff if n in allowed]
    if stuff is None:
        if not stuff_pool:
            raise ValueError("a scene needs at least one allowed stuff class for its background")
        stuff = [str(n) for n in rng.choice(stuff_pool, size=min(len(stuff_pool), int(rng.integers(num_stuff[0],
                                                                                      num_stuff[1] + 1))),
                                replace=False)]
    if things is None:
        count = int(rng.integers(num_things[0], num_things[1] + 1)) if thing_pool else 0
        things = [str(n) for n in rng.choice(thing_pool, size=count)] if count else []

    band = STUFF_LAYOUTS[stuff_layout](rng, h, w, len(stuff))
    image = np.zeros((h, w, 3), np.float32)
    segment_map = np.zeros((h, w), np.int32)
    segments = []
    for i, name in enumerate(stuff):
        region = band == i
        if not region.any():
            continue
        image[region] = TEXTURES[name](rng, h, w, np.nonzero(region.any(1))[0])[region]
        segment_map[region] = i + 1
    stuff_ids = {i + 1: name for i, name in enumerate(stuff)}

    drawn = []  # (segment id, name, radius, full area)
    next_id = len(stuff) + 1
    for name in things:
        color_name, kind = name.split(" ", 1)
        r = float(rng.uniform(*radius))
        if center_jitter is None:
            center = (rng.uniform(r * 0.3, w - r * 0.3), rng.uniform(r * 0.3, h - r * 0.3))
        else:
            center = (w / 2 + rng.uniform(-1, 1) * center_jitter * w, h / 2 + rng.uniform(-1, 1) * center_jitter * h)
        mask = _shape_mask(h, w, center, r, rng.uniform(0, 2 * np.pi), kind)
        # Drawing over earlier things must leave each of them recognisable.
        if mask.sum() < 12 or any((segment_map[~mask] == sid).sum() < min_visible * area
                                  for sid, _, _, area in drawn):
            continue
        color = np.clip(np.array(world.colors[color_name], np.float32) + rng.normal(0, 10, 3), 0, 255)
        shade = 0.85 + 0.3 * _smooth_noise(rng, h, w, 32)[..., None]
        image[mask] = (color * shade)[mask]
        width, outline_color = OUTLINES[outline]
        if width:   # the border pixels inside the mask, so ground truth keeps them
            kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
            border = mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
            image[border] = color * 0.45 if outline_color is None else outline_color
        segment_map[mask] = next_id
        drawn.append((next_id, name, r, int(mask.sum())))
        next_id += 1

    image = np.clip(image, 0, 255).astype(np.uint8)
    cat = {n: i + 1 for i, n in enumerate(world.names)}
    ids, areas = np.unique(segment_map, return_counts=True)
    area_of = dict(zip(ids.tolist(), areas.tolist()))
    for sid, name in list(stuff_ids.items()) + [(d[0], d[1]) for d in drawn]:
        if area_of.get(sid, 0) == 0:
            continue
        ys, xs = np.nonzero(segment_map == sid)
        segments.append({"id": sid, "category_id": cat[name], "class_name": name, "isthing": int(sid not in stuff_ids),
                         "area": area_of[sid], "iscrowd": 0,
                         "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                  int(ys.max() - ys.min() + 1)]})
    visible_stuff = [s["class_name"] for s in segments if not s["isthing"]]
    caption = _caption(rng, [(d[1], d[2]) for d in drawn if area_of.get(d[0], 0)], visible_stuff)
    if noise or jpeg is not None:      # after the caption: the clean scene's draws are untouched
        image = _degrade(rng, image, noise, jpeg)
    return Scene(image=image, segment_map=segment_map, segments=segments, caption=caption,
                 seed=seed if isinstance(seed, int) else None, classes=world)


# Layout variants for evaluation only (never trained on): generate_scene options that
# change sizes, aspect ratios, thing sizes, outlines, the stuff partition and image
# quality, never the classes. Scene seed s uses variant s % len(LAYOUT_VARIANTS).
LAYOUT_VARIANTS: Tuple[dict, ...] = (
    dict(size=(120, 160), outline="white"),
    dict(size=(144, 256), stuff_layout="vertical", outline="thick"),
    dict(size=(128, 128), radius=(5, 10), jpeg=60),
    dict(size=(128, 128), radius=(20, 30), stuff_layout="blobs", noise=6.0),
    dict(size=(160, 96), outline="none"),
    dict(size=(192, 192), radius=(5, 30), stuff_layout="blobs", noise=3.0, jpeg=75),
)
LAYOUTS = ("standard", "variants")


def describe_layout(options: dict) -> str:
    """A short name for a set of generate_scene layout options, e.g. ``"160x120, white
    outline"`` (width x height)."""
    h, w = _size_pair(options.get("size", 128))
    parts = [f"{w}x{h}"]
    if "radius" in options:
        parts.append("radius {:g}-{:g} px".format(*options["radius"]))
    stuff = {"vertical": "vertical stuff bands", "blobs": "blob stuff"}
    outline = {"none": "no outline", "white": "white outline", "thick": "thick outline"}
    if options.get("stuff_layout", "bands") != "bands":
        parts.append(stuff[options["stuff_layout"]])
    if options.get("outline", "thin_dark") != "thin_dark":
        parts.append(outline[options["outline"]])
    if options.get("noise"):
        parts.append(f"noise {options['noise']:g}")
    if options.get("jpeg") is not None:
        parts.append(f"JPEG {options['jpeg']}")
    return ", ".join(parts)


def variant_scene(seed: int, **kwargs) -> Scene:
    """Scene ``seed`` drawn with layout variant ``seed % len(LAYOUT_VARIANTS)``;
    ``kwargs`` (e.g. ``classes``) go to :func:`generate_scene` and override the variant's."""
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"variant_scene needs an int seed (it picks the variant), got {type(seed).__name__}")
    return generate_scene(int(seed), **{**LAYOUT_VARIANTS[int(seed) % len(LAYOUT_VARIANTS)], **kwargs})


def layout_scene(seed: int, layout: str = "standard", size: Size = 128, **kwargs) -> Scene:
    """Scene ``seed`` of a named layout: ``"standard"`` (:func:`generate_scene` at
    ``size``) or ``"variants"`` (:func:`variant_scene`; each variant has its own size)."""
    if layout == "standard":
        return generate_scene(seed, size=size, **kwargs)
    if layout == "variants":
        return variant_scene(seed, **kwargs)
    raise ValueError(f"layout {layout!r}: choose one of {', '.join(LAYOUTS)}")


def single_object_view(seed: Union[int, np.random.Generator], name: str, size: Size = 128,
                       radius: Tuple[float, float] = (18, 40), center_jitter: float = 0.1) -> Scene:
    """One centred thing (within ``center_jitter`` of the frame) filling much of it, on
    one stuff background: what a crop around a single object looks like (CLIP's
    zero-shot test)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    world = load_classes()
    return generate_scene(rng, size=size, things=[name], stuff=[str(rng.choice(world.stuff))], radius=radius,
                          center_jitter=center_jitter)


# Named hues that are not in the palette (no class of the world has them). Drawn in every
# shape, they show color and shape varying independently, the way real CLIP's web images
# show stars of every color, without ever drawing an unseen thing (a palette color on a
# shape the split withholds from it). Training data only: never a class of the world.
EXTRA_HUES: Dict[str, Tuple[int, int, int]] = {"pink": (240, 125, 185), "brown": (125, 75, 35),
                                               "teal": (20, 150, 150)}


def _repaint(image: np.ndarray, mask: np.ndarray, color: str, paint: np.ndarray) -> np.ndarray:
    """``image`` with the thing of palette ``color`` under ``mask`` painted ``paint`` (RGB),
    its shading and outline kept (each pixel keeps its brightness relative to the color)."""
    out = image.astype(np.float32)
    shade = out[mask].mean(-1, keepdims=True) / np.asarray(load_classes().colors[color], np.float32).mean()
    out[mask] = np.clip(np.asarray(paint, np.float32) * shade, 0, 255)
    return out.astype(np.uint8)


def repaint_off_palette(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, color: str) -> np.ndarray:
    """``image`` with the thing of palette ``color`` under ``mask`` repainted in a grey or
    faint tint (channels within 12% of one grey level, so no palette hue), its shading and
    outline kept. A shape so painted has no color a class could be named by: named by its
    bare shape word, it teaches shape apart from color (the prior real CLIP has from the
    web, where stars come in every color) without ever drawing an unseen thing."""
    level = rng.uniform(30, 235)
    return _repaint(image, mask, color, np.clip(level * (1 + rng.uniform(-0.12, 0.12, 3)), 0, 255))


def repaint_extra_hue(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, color: str,
                      hue: str) -> np.ndarray:
    """``image`` with the thing of palette ``color`` under ``mask`` repainted in the named
    off-palette ``hue`` (:data:`EXTRA_HUES`, with the per-thing jitter palette colors get),
    shading and outline kept: a "pink star" to be named as such."""
    if hue not in EXTRA_HUES:
        raise ValueError(f"hue {hue!r} is not an extra hue; choose one of {', '.join(EXTRA_HUES)}")
    paint = np.clip(np.asarray(EXTRA_HUES[hue], np.float32) + rng.normal(0, 10, 3), 0, 255)
    return _repaint(image, mask, color, paint)


def repaint_for_training(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, name: str,
                         grey_share: float = 0.0, hue_share: float = 0.0) -> Tuple[np.ndarray, str]:
    """A seen thing ``name`` ("red circle") under ``mask``, for training data that shows
    shape apart from color: with probability ``grey_share`` repainted off the palette and
    named by its bare shape word ("circle"); otherwise, with probability ``hue_share``,
    repainted in a random extra hue and named by it ("teal circle"); otherwise unchanged.
    Returns the image and the name. The one rule for CLIP's region stage and SMART's data."""
    color, shape = name.split(" ")
    if grey_share > 0 and rng.random() < grey_share:
        return repaint_off_palette(rng, image, mask, color), shape
    if hue_share > 0 and rng.random() < hue_share:
        hue = str(rng.choice(list(EXTRA_HUES)))
        return repaint_extra_hue(rng, image, mask, color, hue), f"{hue} {shape}"
    return image, name


def pan_world(seed: int, size: int = 128, world_width: Optional[int] = None,
              num_things: Tuple[int, int] = (6, 12)) -> Scene:
    """The wide scene that :func:`camera_pan` crops its frames from."""
    return generate_scene(seed, size=(size, world_width or size * 4), num_things=num_things, num_stuff=(2, 3))


def pan_offsets(num_frames: int, size: int, world_width: int) -> List[int]:
    """The left column of each frame of a pan across a scene ``world_width`` wide."""
    step = (world_width - size) / max(1, num_frames - 1)
    return [int(round(i * step)) for i in range(num_frames)]


def camera_pan(seed: int, num_frames: int, size: int = 128, world_width: Optional[int] = None,
               num_things: Tuple[int, int] = (6, 12)) -> List[Scene]:
    """Frames of a camera panning left to right across one wide scene, as a robot's
    camera stream would show them; each frame carries its cropped ground truth."""
    wide = pan_world(seed, size, world_width, num_things)
    frames = []
    for x0 in pan_offsets(num_frames, size, wide.image.shape[1]):
        seg = wide.segment_map[:, x0:x0 + size]
        present = set(np.unique(seg).tolist())
        segments = []
        for s in wide.segments:
            if s["id"] in present:
                ys, xs = np.nonzero(seg == s["id"])
                segments.append({**s, "area": int(len(xs)), "bbox": [int(xs.min()), int(ys.min()),
                                                                     int(xs.max() - xs.min() + 1),
                                                                     int(ys.max() - ys.min() + 1)]})
        frames.append(Scene(image=np.ascontiguousarray(wide.image[:, x0:x0 + size]), segment_map=seg.copy(),
                            segments=segments, caption=wide.caption, seed=seed, classes=wide.classes))
    return frames


# ------------------------------------------------------------------------------- depth

@dataclass(frozen=True)
class SurfaceTruth:
    """What one segment of a rendered depth image truly is: a fronto-parallel plane at
    ``depth`` (metres); ``centroid`` is the mean 3D point of its visible pixels (camera
    optical frame), ``num_pixels`` how many there are."""

    segment_id: int
    class_name: str
    isthing: bool
    depth: float
    centroid: np.ndarray
    num_pixels: int


def render_depth(scene: Scene, camera=None, stuff_depth: Tuple[float, float] = (6.0, 12.0),
                 thing_depth: Tuple[float, float] = (1.0, 5.0), seed: Optional[int] = None, hfov_deg: float = 60.0,
                 holes: float = 0.0, outliers: float = 0.0, mixed_borders: bool = False):
    """A depth image registered to ``scene.image``: ``(depth_m, camera, truth)``.

    Every stuff segment is a fronto-parallel plane at its own distance in ``stuff_depth``
    and every thing one in front of it in ``thing_depth``, things drawn later (on top in the
    image) nearer, so the depth agrees with the occlusions. ``camera`` (a
    :class:`~ovseg_core.geometry.PinholeCamera` of the scene's size; default: no distortion,
    ``hfov_deg`` wide, principal point at the centre) only sets the truth's 3D centroids: a
    fronto-parallel plane has the same depth along every ray. ``truth`` maps segment id ->
    :class:`SurfaceTruth`, computed before any corruption.

    Sensor faults for tests (all off by default): ``holes`` (share of pixels with no depth:
    NaN, 0 once encoded as 16UC1), ``outliers`` (share of pixels at a random depth
    0.2-30 m) and ``mixed_borders`` (each segment's border pixels take a depth between
    theirs and their neighbour's, as flying pixels do).

    The draws come from their own generator (``seed``, default the scene's seed), never
    the scene's: the scene and everything made from it stay bit for bit what they were."""
    from ..geometry import PinholeCamera
    h, w = scene.segment_map.shape
    if camera is None:
        f = (w / 2) / np.tan(np.radians(hfov_deg) / 2)
        camera = PinholeCamera(w, h, f, f, (w - 1) / 2, (h - 1) / 2)
    if (camera.height, camera.width) != (h, w):
        raise ValueError(f"camera is {camera.width}x{camera.height} but the scene is {w}x{h}; give a camera "
                         f"of the scene's size")
    for name, (lo, hi) in (("stuff_depth", stuff_depth), ("thing_depth", thing_depth)):
        if not 0 < lo <= hi:
            raise ValueError(f"{name} is a (near, far) range in metres with 0 < near <= far; got {(lo, hi)}")
    for name, share in (("holes", holes), ("outliers", outliers)):
        if not 0 <= share <= 1:
            raise ValueError(f"{name} is a share of pixels in [0, 1]; got {share}")
    rng = np.random.default_rng([0 if seed is None and scene.seed is None else (scene.seed if seed is None else seed),
                                 0x0DE97])
    things = sorted(s["id"] for s in scene.segments if s["isthing"])
    plane = {s["id"]: float(rng.uniform(*stuff_depth)) for s in scene.segments if not s["isthing"]}
    plane.update(zip(things, np.sort(rng.uniform(*thing_depth, len(things)))[::-1].tolist()))
    lut = np.full(int(scene.segment_map.max()) + 1, np.nan, np.float32)
    for sid, z in plane.items():
        lut[sid] = z
    depth = lut[scene.segment_map]

    rays = camera.rays(1).reshape(-1, 2).astype(np.float64)
    flat = scene.segment_map.reshape(-1)
    count = np.bincount(flat, minlength=lut.size)
    sums = np.stack([np.bincount(flat, rays[:, k], minlength=lut.size) for k in range(2)], 1)
    truth = {}
    for s in scene.segments:
        sid, z = s["id"], plane[s["id"]]
        centroid = np.array([*(z * sums[sid] / count[sid]), z])
        truth[sid] = SurfaceTruth(sid, s["class_name"], bool(s["isthing"]), z, centroid, int(count[sid]))

    if mixed_borders:
        kernel = np.ones((3, 3), np.uint8)
        seg = scene.segment_map.astype(np.float32)
        border = cv2.dilate(seg, kernel) != cv2.erode(seg, kernel)
        far, near = cv2.dilate(depth, kernel), cv2.erode(depth, kernel)
        other = np.where(far - depth > depth - near, far, near)
        t = rng.uniform(0.2, 0.8, depth.shape).astype(np.float32)
        depth = np.where(border, depth + t * (other - depth), depth).astype(np.float32)
    if outliers:
        hit = rng.random(depth.shape) < outliers
        depth[hit] = rng.uniform(0.2, 30.0, int(hit.sum()))
    if holes:
        depth[rng.random(depth.shape) < holes] = np.nan
    return depth, camera, truth
