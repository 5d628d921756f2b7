"""Draw a PanopticResult over its image for people to look at."""
from __future__ import annotations

import cv2
import numpy as np

from .structures import PanopticResult, Segment

_GOLDEN = 0.618033988749895


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


def _segment_colors(result: PanopticResult) -> np.ndarray:
    """[max_id + 1, 3] uint8 color per segment id (row 0 and unlisted ids black)."""
    num_classes = max([len(result.class_names)] + [s.class_index + 1 for s in result.segments])
    class_colors = palette(num_classes)
    max_id = max([int(result.segment_map.max(initial=0))] + [s.id for s in result.segments])
    lut = np.zeros((max_id + 1, 3), np.uint8)
    seen = {}
    for s in result.segments:
        nth = seen.get(s.class_index, 0)
        seen[s.class_index] = nth + 1
        lut[s.id] = _shade(class_colors[s.class_index], nth if s.is_thing else 0)
    return lut


def _boundaries(segment_map: np.ndarray) -> np.ndarray:
    """Pixels of a segment that touch a different id (4-neighbourhood)."""
    edge = np.zeros(segment_map.shape, bool)
    dy = segment_map[1:] != segment_map[:-1]
    dx = segment_map[:, 1:] != segment_map[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge & (segment_map > 0)


def _shade_edge(colors: np.ndarray) -> np.ndarray:
    """Boundaries in a darker version of the segment color: visible on the blend yet
    still tells which segment they belong to."""
    return (colors * 0.45).astype(np.uint8)


def _label_anchor(segment_map: np.ndarray, s: Segment) -> tuple:
    """A point well inside the segment (near its deepest pixels) and as close to its
    centroid as that allows, so the label sits on the segment even when it is not
    convex, and mid-segment rather than at one end of a long ridge."""
    x, y, w, h = s.bbox
    crop = (segment_map[y:y + h, x:x + w] == s.id).astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(crop, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= 0.8 * dist.max())
    ms, mx = np.nonzero(crop)
    best = np.argmin((ys - ms.mean()) ** 2 + (xs - mx.mean()) ** 2)
    return x + int(xs[best]), y + int(ys[best])


def _put_label(image: np.ndarray, text: str, center: tuple, scale: float) -> None:
    """White text with a dark outline, centred on `center` and kept inside the image.
    The outline is the dilated text mask: drawing the text twice with two thicknesses
    drifts apart, since OpenCV's glyph advance grows with thickness."""
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = thick + 1
    text_alpha = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(text_alpha, text, (pad, pad + th), font, scale, 255, thick, cv2.LINE_AA)
    outline_alpha = cv2.dilate(text_alpha, np.ones((2 * thick + 1,) * 2, np.uint8))

    h, w = image.shape[:2]
    bh, bw = text_alpha.shape
    x0 = int(np.clip(center[0] - bw // 2, 0, max(0, w - bw)))
    y0 = int(np.clip(center[1] - bh // 2, 0, max(0, h - bh)))
    crop = image[y0:y0 + bh, x0:x0 + bw]
    ch, cw = crop.shape[:2]
    outline = outline_alpha[:ch, :cw, None] / 255.0
    text_a = text_alpha[:ch, :cw, None] / 255.0
    blended = crop * (1 - outline)  # dark outline
    crop[:] = (blended * (1 - text_a) + 255 * text_a).round().astype(np.uint8)


def overlay(image_rgb: np.ndarray, result: PanopticResult, alpha: float = 0.5,
            labels: bool = True) -> np.ndarray:
    """Blend segment colors into the image, outline segments and label them
    "name score". Pixels outside every segment are untouched except under labels."""
    seg = result.segment_map
    if image_rgb.shape[:2] != seg.shape or image_rgb.ndim != 3:
        raise ValueError(f"image {image_rgb.shape} does not match segment map {seg.shape}")
    colors = _segment_colors(result)[seg]
    inside = seg > 0
    out = image_rgb.copy()
    out[inside] = (image_rgb[inside] * (1 - alpha) + colors[inside] * alpha).round().astype(np.uint8)
    edge = _boundaries(seg)
    out[edge] = _shade_edge(colors[edge])
    if labels:
        scale = max(0.4, min(seg.shape) / 900)
        for s in result.segments:
            if s.area > 0:
                _put_label(out, f"{s.class_name} {s.score:.2f}", _label_anchor(seg, s), scale)
    return out

