"""Draw a PanopticResult over its image for people to look at.

Small frames (ShapesWorld's are 128 px) are upscaled before anything is drawn, so that
outlines stay thin and labels are set at a real font size: the image smoothly, the label
map by nearest neighbour with the same pixel centres, so segment edges stay on the
image's edges. Segments get a see-through fill and a solid outline in their color (stuff
paler and fainter than things, so the objects stand out), and every label sits in a dark
box inside its segment where no other label is; where none is free it moves beside the
segment with a leader line, and the labels of tiny segments are left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .structures import PanopticResult, Segment

_GOLDEN = 0.618033988749895
DEFAULT_MIN_SIZE = 512        # longer side of a drawing, in pixels, unless the image is larger
STUFF_ALPHA = 0.6             # stuff fill opacity relative to things'
STUFF_LIGHTEN = 0.35          # stuff colors mixed this far towards white
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BOX_COLOR = np.array([18, 18, 24], np.float32)
_BOX_ALPHA = 0.78
_BOX_GAP = 2                  # pixels kept free between two label boxes


def palette(n: int, seed: int = 0) -> np.ndarray:
    """[n, 3] uint8 RGB colors. Color i does not depend on n, so a class keeps its
    color when the vocabulary grows; golden-ratio hue steps keep neighbours apart."""
    i = np.arange(n)
    hue = (seed * 0.1234 + i * _GOLDEN) % 1.0
    sat = 0.65 + 0.3 * ((i * 0.37) % 1.0)
    val = 0.75 + 0.25 * ((i * 0.53 + 0.5) % 1.0)
    hsv = np.stack([hue * 180, sat * 255, val * 255], -1).round().astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def _shade(color: np.ndarray, instance: int) -> np.ndarray:
    """Instance 0 keeps the class color; later ones alternate lighter / darker, each
    step further, so instances of one class stay recognisably that class."""
    if instance == 0:
        return color
    step = min(0.2 * ((instance + 1) // 2), 0.7)
    target = 255.0 if instance % 2 else 0.0
    return (color * (1 - step) + target * step).round().astype(np.uint8)


def segment_colors(result: PanopticResult) -> np.ndarray:
    """[max_id + 1, 3] uint8 color per segment id (row 0 and unlisted ids black): the
    class color, shaded per instance for things and paler for stuff."""
    num_classes = max([len(result.class_names)] + [s.class_index + 1 for s in result.segments])
    class_colors = palette(num_classes)
    max_id = max([int(result.segment_map.max(initial=0))] + [s.id for s in result.segments])
    lut = np.zeros((max_id + 1, 3), np.uint8)
    seen = {}
    for s in result.segments:
        color = class_colors[s.class_index]
        if s.is_thing:
            nth = seen.get(s.class_index, 0)
            seen[s.class_index] = nth + 1
            lut[s.id] = _shade(color, nth)
        else:
            lut[s.id] = (color * (1 - STUFF_LIGHTEN) + 255 * STUFF_LIGHTEN).round().astype(np.uint8)
    return lut


def drawing_size(shape: Tuple[int, ...], min_size: int = DEFAULT_MIN_SIZE) -> Tuple[int, int]:
    """(height, width) a drawing of an image of `shape` gets: the longer side brought up to
    `min_size`, the aspect ratio kept; never smaller than the image (0: the image's size)."""
    h, w = int(shape[0]), int(shape[1])
    if min_size <= 0 or max(h, w) >= min_size:
        return h, w
    f = min_size / max(h, w)
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def upscale_labels(label_map: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (height, width) with cv2.resize's pixel centres (the
    centre of output pixel x is input position (x + 0.5) * w / W - 0.5), so label edges
    fall where the smoothly resized image has them."""
    h, w = label_map.shape[:2]
    ys = np.minimum(((np.arange(size[0]) + 0.5) * (h / size[0])).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(size[1]) + 0.5) * (w / size[1])).astype(np.int64), w - 1)
    return label_map[ys[:, None], xs[None, :]]


def upscale(image_rgb: np.ndarray, segment_map: np.ndarray,
            min_size: int = DEFAULT_MIN_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """The image (bicubic) and its segment map (nearest, aligned) at :func:`drawing_size`."""
    size = drawing_size(segment_map.shape, min_size)
    if size == segment_map.shape[:2]:
        return image_rgb, segment_map
    image = cv2.resize(image_rgb, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    return image, upscale_labels(segment_map, size)


@dataclass
class _Label:
    segment_id: int
    text: str
    color: Tuple[int, int, int]
    box: Tuple[int, int, int, int]            # x0, y0, x1, y1 (exclusive)
    leader_from: Optional[Tuple[int, int]]    # the anchor inside the segment, when moved out


class _LabelPlacer:
    """The label boxes placed so far; a new one is accepted only where it overlaps none."""

    def __init__(self, height: int, width: int):
        self.h, self.w = height, width
        self.boxes = np.zeros((0, 4), np.int64)

    def clamp(self, cx: np.ndarray, cy: np.ndarray, bw: int, bh: int) -> np.ndarray:
        """[n, 4] boxes of size bw x bh centred on (cx, cy), moved inside the image."""
        x0 = np.clip(np.asarray(cx) - bw // 2, 0, max(0, self.w - bw))
        y0 = np.clip(np.asarray(cy) - bh // 2, 0, max(0, self.h - bh))
        return np.stack([x0, y0, x0 + bw, y0 + bh], -1).astype(np.int64)

    def free(self, boxes: np.ndarray) -> np.ndarray:
        """[n] bool: box n keeps _BOX_GAP pixels away from every placed box."""
        if not len(self.boxes):
            return np.ones(len(boxes), bool)
        b, p = boxes[:, None], self.boxes[None]
        g = _BOX_GAP
        hit = ((b[..., 0] < p[..., 2] + g) & (p[..., 0] < b[..., 2] + g)
               & (b[..., 1] < p[..., 3] + g) & (p[..., 1] < b[..., 3] + g))
        return ~hit.any(1)

    def add(self, box: np.ndarray) -> Tuple[int, int, int, int]:
        self.boxes = np.vstack([self.boxes, box[None]])
        return tuple(int(v) for v in box)


def _crop_of(seg: np.ndarray, s: Segment, shape_in: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """The segment's bbox (given for the original map) in `seg`'s pixels, one pixel wider
    on every side for the rounding: x0, y0, x1, y1."""
    H, W = seg.shape
    fy, fx = H / shape_in[0], W / shape_in[1]
    x, y, w, h = s.bbox
    x0, y0 = max(0, int(np.floor(x * fx)) - 1), max(0, int(np.floor(y * fy)) - 1)
    x1, y1 = min(W, int(np.ceil((x + w) * fx)) + 1), min(H, int(np.ceil((y + h) * fy)) + 1)
    return x0, y0, x1, y1


def _draw_outline(out: np.ndarray, segp: np.ndarray, margin: int, crop, seg_id: int,
                  color: np.ndarray, thickness: int) -> None:
    """An outline `thickness` pixels wide just inside the segment, from its OpenCV
    contours. `segp` is the map padded by `margin` with its edge values, so a segment is
    not outlined along the image border."""
    x0, y0, x1, y1 = crop
    mask = (segp[y0:y1 + 2 * margin, x0:x1 + 2 * margin] == seg_id).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    band = np.zeros_like(mask)
    cv2.drawContours(band, contours, -1, 1, 2 * thickness - 1)
    band = (band & mask)[margin:-margin, margin:-margin].astype(bool)
    out[y0:y1][:, x0:x1][band] = color


def _anchor(mask: np.ndarray) -> Tuple[int, int]:
    """A point well inside the mask (near its deepest pixels) and as close to its centroid
    as that allows, so the label sits on the segment even when it is not convex, and
    mid-segment rather than at one end of a long ridge."""
    dist = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= 0.8 * dist.max())
    my, mx = np.nonzero(mask)
    best = np.argmin((ys - my.mean()) ** 2 + (xs - mx.mean()) ** 2)
    return int(xs[best]), int(ys[best])


def _place(placer: _LabelPlacer, mask: np.ndarray, origin: Tuple[int, int], bw: int, bh: int,
           leader: bool):
    """(box, anchor or None) for a bw x bh label of the segment `mask` (a crop at `origin`
    of the drawing), or None where no free place is found. Tried in turn: positions inside
    the segment, from its anchor outwards, preferring boxes that stay on the segment; then
    (if `leader`) free places around the segment, nearest first, reached by a leader line."""
    ox, oy = origin
    ax, ay = _anchor(mask)
    stride = max(2, bh // 2)
    ys, xs = np.nonzero(mask[stride // 2::stride, stride // 2::stride])
    cx = np.concatenate([[ax], xs * stride + stride // 2]) + ox
    cy = np.concatenate([[ay], ys * stride + stride // 2]) + oy
    boxes = placer.clamp(cx, cy, bw, bh)
    # Share of each box on the segment, from the mask's integral image (boxes clipped to the crop).
    integral = cv2.integral(mask)
    mh, mw = mask.shape
    bx0, bx1 = np.clip(boxes[:, 0] - ox, 0, mw), np.clip(boxes[:, 2] - ox, 0, mw)
    by0, by1 = np.clip(boxes[:, 1] - oy, 0, mh), np.clip(boxes[:, 3] - oy, 0, mh)
    on = integral[by1, bx1] - integral[by0, bx1] - integral[by1, bx0] + integral[by0, bx0]
    share = on / float(bw * bh)
    distance = np.hypot(cx - (ax + ox), cy - (ay + oy)) / max(bw, bh)
    order = np.argsort(distance + 4.0 * (1.0 - share), kind="stable")
    free = placer.free(boxes[order])
    if free.any():
        return boxes[order[np.argmax(free)]], None
    if not leader:
        return None
    ax, ay = ax + ox, ay + oy
    # Ellipses around the anchor, the first just clear of the segment's box, then outwards.
    step = np.arange(0, 16)[:, None] * (bh / 2)
    angles = np.deg2rad(np.arange(-90, 270, 20))[None]     # upwards first, then clockwise
    rx, ry = (mw + bw) / 2 + step, (mh + bh) / 2 + step
    ring = placer.clamp((ax + rx * np.cos(angles)).round().astype(np.int64).ravel(),
                        (ay + ry * np.sin(angles)).round().astype(np.int64).ravel(), bw, bh)
    free = placer.free(ring)
    if free.any():
        return ring[np.argmax(free)], (ax, ay)
    return None


def _draw_leader(out: np.ndarray, label: _Label, line: int) -> None:
    """A line from the segment's anchor (a dot) to the nearest point of its moved label."""
    x0, y0, x1, y1 = label.box
    color = tuple(int(c) for c in label.color)
    ax, ay = label.leader_from
    tx, ty = int(np.clip(ax, x0, x1 - 1)), int(np.clip(ay, y0, y1 - 1))
    cv2.line(out, (ax, ay), (tx, ty), (0, 0, 0), line + 2, cv2.LINE_AA)
    cv2.line(out, (ax, ay), (tx, ty), color, line, cv2.LINE_AA)
    cv2.circle(out, (ax, ay), line + 2, (0, 0, 0), -1, cv2.LINE_AA)
    cv2.circle(out, (ax, ay), line + 1, color, -1, cv2.LINE_AA)


def _draw_label(out: np.ndarray, label: _Label, scale: float, thick: int, pad: int,
                swatch: int, text_height: int) -> None:
    """White text on a dark, slightly see-through box with a swatch of the segment color."""
    x0, y0, x1, y1 = label.box
    region = out[y0:y1, x0:x1]
    region[:] = (region * (1 - _BOX_ALPHA) + _BOX_COLOR * _BOX_ALPHA).round().astype(np.uint8)
    region[:, :swatch] = label.color
    cv2.putText(out, label.text, (x0 + swatch + pad, y0 + pad + text_height), _FONT, scale,
                (255, 255, 255), thick, cv2.LINE_AA)


def overlay(image_rgb: np.ndarray, result: PanopticResult, alpha: float = 0.45,
            labels: bool = True, min_size: int = DEFAULT_MIN_SIZE, scores: bool = True,
            font_scale: Optional[float] = None) -> np.ndarray:
    """The image with its segments drawn over it, as RGB uint8.

    Images whose longer side is under `min_size` pixels are upscaled to it first (bicubic;
    the segment map nearest, edges aligned; 0 or a larger image: drawn at the image's
    size). Segments are filled with their color at `alpha` (stuff paler, at STUFF_ALPHA
    of it) and outlined inside their edge at full color; pixels outside every segment
    are untouched except under labels. With `labels`, each segment is labelled with its
    class name (and score) in a dark box that no other label overlaps."""
    return _render(image_rgb, result, alpha, labels, min_size, scores, font_scale)[0]


def label_boxes(image_rgb: np.ndarray, result: PanopticResult,
                **kwargs) -> Dict[int, Tuple[int, int, int, int]]:
    """Segment id -> the box of its label as :func:`overlay` draws it with these arguments
    (x0, y0, x1, y1, ends exclusive, in the drawing's pixels); segments left unlabelled are
    missing. For callers that add their own annotations, and for tests."""
    kwargs["labels"] = True
    return {label.segment_id: label.box for label in _render(image_rgb, result, **kwargs)[1]}


def _render(image_rgb, result, alpha=0.45, labels=True, min_size=DEFAULT_MIN_SIZE, scores=True,
            font_scale=None) -> Tuple[np.ndarray, List[_Label]]:
    seg = result.segment_map
    if image_rgb.ndim != 3 or image_rgb.shape[:2] != seg.shape:
        raise ValueError(f"image {image_rgb.shape} does not match segment map {seg.shape}")
    image, up = upscale(image_rgb, seg, min_size)
    H, W = up.shape
    lut = segment_colors(result)
    alphas = np.zeros(len(lut), np.float32)
    for s in result.segments:
        alphas[s.id] = alpha if s.is_thing else alpha * STUFF_ALPHA
    a = alphas[up][..., None]
    out = (image * (1 - a) + lut[up] * a).round().astype(np.uint8)

    line = max(1, int(round(min(H, W) / 256)))            # outline width of things
    margin = line + 1
    segp = np.pad(up, margin, mode="edge")
    live = [s for s in result.segments if s.area > 0]
    crops = {s.id: _crop_of(up, s, seg.shape) for s in live}
    for s in sorted(live, key=lambda s: s.is_thing):      # things' outlines over stuff's
        _draw_outline(out, segp, margin, crops[s.id], s.id, lut[s.id],
                      line if s.is_thing else max(1, line // 2))
    if not labels:
        return out, []

    scale = font_scale or float(np.clip(max(H, W) / 1000, 0.5, 1.4))
    thick = 1 if scale < 0.9 else 2
    pad = max(2, int(round(4 * scale)))
    swatch = max(3, int(round(6 * scale)))
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    bh = th + base + 2 * pad
    placer = _LabelPlacer(H, W)
    placed: List[_Label] = []
    masks = {}
    for s in live:
        x0, y0, x1, y1 = crops[s.id]
        masks[s.id] = (up[y0:y1, x0:x1] == s.id).astype(np.uint8)
    area = {s.id: int(masks[s.id].sum()) for s in live}
    tiny = {i: a < bh * bh for i, a in area.items()}
    # The segments with fewest places first (small things, then stuff); tiny ones last,
    # and only where their own spot is free (a leader line to a speck is clutter).
    order = sorted((s for s in live if area[s.id]),
                   key=lambda s: (tiny[s.id], not s.is_thing, -area[s.id] if tiny[s.id] else area[s.id]))
    for s in order:
        text = f"{s.class_name} {s.score:.2f}" if scores else s.class_name
        (tw, _), _ = cv2.getTextSize(text, _FONT, scale, thick)
        bw = tw + 2 * pad + swatch
        x0, y0, _, _ = crops[s.id]
        spot = _place(placer, masks[s.id], (x0, y0), bw, bh, leader=not tiny[s.id])
        if spot is not None:
            box, leader_from = spot
            placed.append(_Label(s.id, text, tuple(lut[s.id]), placer.add(box), leader_from))
    for label in placed:                                  # leader lines under every box
        if label.leader_from is not None:
            _draw_leader(out, label, line)
    for label in placed:
        _draw_label(out, label, scale, thick, pad, swatch, th)
    return out, placed


