"""Registered depth + a panoptic result -> labeled 3D points and 3D objects (no ROS).

What a 3D mapper (Hydra, nvblox, voxblox++) or a planner reads from a segmenter: every
valid depth pixel back-projected through the colour camera's pinhole model (plumb-bob or
rational-polynomial distortion undone with OpenCV) carrying its colour, class, instance and
segment; and per thing segment a centroid and an axis-aligned box that depth outliers and
the mixed pixels on its border do not drag around (:func:`objects_3d` says how).

Depth must be registered to the colour camera and have exactly the colour image's size:
a resize would interpolate across object borders and mix labels, so it is refused.
Points are in the camera's optical frame (x right, y down, z forward), in metres.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy import ndimage

DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
# Bytes of one point of the node's PointCloud2 (ovseg_ros.mapping.POINT_FIELDS): x, y, z
# (float32), rgba, label, instance (uint32), unpadded: PCL matches fields by name, not offset.
POINT_STEP = 24


class BadDepth(ValueError):
    """Depth (or its camera) that cannot give correct points; the text says what to send."""


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of the camera the depth is registered to. ``distortion`` is OpenCV's
    order: plumb-bob ``(k1, k2, p1, p2, k3)``, or rational-polynomial with ``k4, k5, k6``
    after them; empty (or all zero) means a rectified image. Frozen, so that its rays are
    computed once per camera and stride (:meth:`rays`)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: Tuple[float, ...] = ()

    def __post_init__(self):
        if not (int(self.width) > 0 and int(self.height) > 0):
            raise BadDepth(f"camera size {self.width}x{self.height}: width and height must be positive "
                           f"(a camera_info with width/height 0 is not calibrated)")
        if not (np.isfinite([self.fx, self.fy, self.cx, self.cy]).all() and self.fx > 0 and self.fy > 0):
            raise BadDepth(f"camera fx={self.fx}, fy={self.fy}: focal lengths must be positive and finite "
                           f"(K is all zero in an uncalibrated camera_info: calibrate the camera)")
        if len(self.distortion) not in (0, 4, 5, 8):
            raise BadDepth(f"distortion has {len(self.distortion)} coefficients; give plumb_bob's 5 "
                           f"(k1, k2, p1, p2, k3), rational_polynomial's 8, or none for a rectified image")
        # Normalise: exact ints, floats, and () for no distortion (one cache entry, fast path).
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        d = tuple(float(v) for v in self.distortion)
        object.__setattr__(self, "distortion", d if any(d) else ())

    @classmethod
    def from_camera_info(cls, width: int, height: int, K: Sequence[float], D: Sequence[float] = (),
                         distortion_model: str = "plumb_bob") -> "PinholeCamera":
        """From a ``sensor_msgs/CameraInfo``'s fields (``K`` row-major 3x3). Models:
        ``plumb_bob`` and ``rational_polynomial`` (what OpenCV undoes); any model with an
        empty or all-zero ``D`` (a rectified image). Others (``equidistant``, ...) are refused:
        subscribe to the rectified image and its camera_info instead."""
        K = np.asarray(K, np.float64).ravel()
        if K.size != 9:
            raise BadDepth(f"K has {K.size} values; camera_info's K is 9 (3x3 row-major)")
        if K[1] != 0 or K[3] != 0 or K[6] != 0 or K[7] != 0 or K[8] != 1:
            raise BadDepth(f"K {K.tolist()} is not [fx 0 cx; 0 fy cy; 0 0 1] (skew or a projective row): "
                           f"only pinhole intrinsics without skew are supported")
        D = tuple(float(v) for v in D)
        if any(D):
            if distortion_model == "plumb_bob" and len(D) in (4, 5):
                pass
            elif distortion_model == "rational_polynomial" and len(D) in (5, 8):
                pass
            else:
                raise BadDepth(f"distortion_model {distortion_model!r} with {len(D)} coefficients is not "
                               f"supported (plumb_bob: 5, rational_polynomial: 8); use the rectified "
                               f"image (image_rect) and its camera_info, whose D is zero")
        return cls(width, height, K[0], K[4], K[2], K[5], D)

    @property
    def matrix(self) -> np.ndarray:
        """K as a 3x3 float64 array (what OpenCV takes)."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)

    def rays(self, stride: int = 1) -> np.ndarray:
        """float32 [ceil(H/stride), ceil(W/stride), 2]: undistorted normalised coordinates
        (x/z, y/z) of the pixel centres (u, v) = (stride*j, stride*i). Cached and read-only:
        a camera's rays never change, and undistortion is the costly part."""
        return _rays(self, _check_stride(stride))

    def grid_size(self, stride: int = 1) -> Tuple[int, int]:
        """(H', W') of the strided pixel grid."""
        s = _check_stride(stride)
        return -(-self.height // s), -(-self.width // s)


def _check_stride(stride) -> int:
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1 (1: every pixel, 2: every other row and "
                         f"column), got {stride!r}")
    return int(stride)


@lru_cache(maxsize=32)
def _rays(camera: PinholeCamera, stride: int) -> np.ndarray:
    v, u = np.mgrid[0:camera.height:stride, 0:camera.width:stride].astype(np.float64)
    if not camera.distortion:
        rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy], -1)
    else:   # iterate to convergence: OpenCV's default 5 iterations leave errors in the corners
        criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 50, 1e-9)
        pts = np.stack([u, v], -1).reshape(-1, 1, 2)
        rays = cv2.undistortPoints(pts, camera.matrix, np.asarray(camera.distortion, np.float64),
                                   criteria=criteria).reshape(u.shape + (2,))
    rays = np.ascontiguousarray(rays, np.float32)
    rays.flags.writeable = False
    return rays


def depth_in_meters(depth: np.ndarray, encoding: str) -> np.ndarray:
    """float32 [H, W] metres, NaN where the sensor gave no depth. ``16UC1``/``mono16``:
    uint16 millimetres, 0 = no depth; ``32FC1``: float32 metres, <= 0, NaN and inf = no depth
    (the REP 118 conventions). A frame with no valid pixel at all is refused."""
    if encoding in ("16UC1", "mono16"):
        want = np.uint16
    elif encoding == "32FC1":
        want = np.float32
    else:
        raise BadDepth(f"depth encoding {encoding!r} is not supported; send 16UC1 (uint16 millimetres) "
                       f"or 32FC1 (float32 metres)")
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.dtype != want:
        raise BadDepth(f"{encoding} depth must be a [H, W] {np.dtype(want).name} array; got "
                       f"{depth.dtype} {list(depth.shape)} (does the message's encoding match its data?)")
    if want is np.uint16:
        out = depth.astype(np.float32) * np.float32(0.001)
        out[depth == 0] = np.nan
    else:
        out = depth.copy()
        out[~(out > 0) | np.isinf(out)] = np.nan    # ~(x > 0) also catches NaN
    if np.isnan(out).all():
        raise BadDepth(f"the {encoding} depth image has no valid pixel (all 0, NaN or inf): is the "
                       f"sensor covered or too close, or is the encoding wrong?")
    return out


def encode_depth(depth_m: np.ndarray, encoding: str) -> np.ndarray:
    """The inverse of :func:`depth_in_meters`: ``16UC1``/``mono16`` rounds to uint16
    millimetres (NaN and out of range -> 0), ``32FC1`` is float32 metres (NaN kept)."""
    depth_m = np.asarray(depth_m, np.float32)
    if encoding in ("16UC1", "mono16"):
        mm = np.round(depth_m * 1000.0)
        return np.where(np.isfinite(mm) & (mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)
    if encoding == "32FC1":
        return depth_m.copy()
    raise BadDepth(f"depth encoding {encoding!r} is not supported; choose 16UC1 or 32FC1")


def _wh(shape) -> str:
    return f"{shape[1]}x{shape[0]}"


def _check_sizes(depth_m: np.ndarray, camera: PinholeCamera, **images) -> None:
    """Same size everywhere, never resized: interpolating depth or labels mixes objects."""
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2 or not np.issubdtype(depth_m.dtype, np.floating):
        raise BadDepth(f"depth_m must be a [H, W] float array of metres (see depth_in_meters); got "
                       f"{depth_m.dtype} {list(depth_m.shape)}")
    for name, image in images.items():
        if image is not None and np.asarray(image).shape[:2] != depth_m.shape:
            raise BadDepth(f"depth is {_wh(depth_m.shape)} but the image is {_wh(np.asarray(image).shape)} "
                           f"({name}); register depth to the colour camera and publish it at the colour image's "
                           f"size (depth not registered to the colour camera is refused, never resized: "
                           f"resizing would mix labels)")
    if (camera.height, camera.width) != depth_m.shape:
        raise BadDepth(f"depth is {_wh(depth_m.shape)} but the camera_info is {camera.width}x{camera.height}; "
                       f"use the camera_info of the colour camera the depth is registered to")


@dataclass
class LabeledPoints:
    """One frame's labeled points (camera optical frame, metres). Organized
    (``organized = (H', W')``): one point per strided pixel, row-major, NaN xyz where depth is
    invalid. Dense (``organized = None``): valid points only; ``pixels`` is then each point's
    flat index in the strided grid (to look up anything else about it). An organized cloud
    at stride 1 may share memory with the images it came from (no copy of 2 M points)."""

    xyz: np.ndarray        # (N, 3) float32
    rgb: np.ndarray        # (N, 3) uint8
    label: np.ndarray      # (N,) uint32
    instance: np.ndarray   # (N,) uint32
    segment: np.ndarray    # (N,) int32
    organized: Optional[Tuple[int, int]]
    pixels: Optional[np.ndarray] = None   # (N,) int64, dense clouds

    def __len__(self) -> int:
        return len(self.xyz)

    @property
    def nbytes(self) -> int:
        """Bytes of the PointCloud2 data (POINT_STEP per point)."""
        return len(self.xyz) * POINT_STEP


def _label_image(image, name: str):
    """An integer [H, W] image, or None (the field is then 0)."""
    if image is None:
        return None
    image = np.asarray(image)
    if image.ndim != 2 or not (np.issubdtype(image.dtype, np.integer) or image.dtype == bool):
        raise ValueError(f"{name} must be an integer [H, W] image; got {image.dtype} {list(image.shape)}")
    return image


def _field(values: Optional[np.ndarray], n: int, dtype, name: str) -> np.ndarray:
    """Picked values as a point field; labels and instances are uint32, so >= 0."""
    if values is None:
        return np.zeros(n, dtype)
    if dtype is np.uint32 and values.size and np.issubdtype(values.dtype, np.signedinteger) and values.min() < 0:
        raise ValueError(f"{name} must be >= 0 (they become uint32 point fields); got {values.min()}")
    return values.astype(dtype, copy=False)


def backproject(depth_m: np.ndarray, camera: PinholeCamera, image_rgb: np.ndarray, labels: np.ndarray,
                instances: Optional[np.ndarray] = None, segments: Optional[np.ndarray] = None, stride: int = 1,
                organized: bool = False) -> LabeledPoints:
    """Every ``stride``-th pixel (rows and columns) with valid depth -> a point
    ``depth * (x/z, y/z, 1)`` carrying its colour, label, instance and segment (None: 0).
    All images are at the colour image's size, which depth and camera must equal exactly
    (anything else is refused: see the module docstring). Invalid depth (NaN, see
    :func:`depth_in_meters`) gives no point (dense) or a NaN point (organized)."""
    stride = _check_stride(stride)
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image_rgb must be uint8 [H, W, 3]; got {image_rgb.dtype} {list(image_rgb.shape)}")
    fields = {name: _label_image(im, name) for name, im in
              (("labels", labels), ("instances", instances), ("segments", segments))}
    _check_sizes(depth_m, camera, image=image_rgb, **fields)
    types = {"labels": np.uint32, "instances": np.uint32, "segments": np.int32}
    rays = camera.rays(stride)
    grid = rays.shape[:2]
    depth_m = np.asarray(depth_m)
    d = depth_m[::stride, ::stride]
    if organized:
        z = d.astype(np.float32).reshape(-1)
        xyz = np.empty((z.size, 3), np.float32)
        np.multiply(rays.reshape(-1, 2), z[:, None], out=xyz[:, :2])
        xyz[:, 2] = z                          # NaN depth -> NaN x, y, z
        picked = {k: None if v is None else v[::stride, ::stride].reshape(-1) for k, v in fields.items()}
        return LabeledPoints(xyz, image_rgb[::stride, ::stride].reshape(-1, 3),
                             *(_field(picked[k], z.size, types[k], k) for k in types), grid)
    idx = np.flatnonzero(np.isfinite(d) & (d > 0))
    # Gather from the full-size images (no strided copies) with np.take on 1-D arrays, a
    # pixel's two rays and three colours viewed as one item: several times faster than
    # fancy-indexing rows.
    full = idx if stride == 1 else (idx // grid[1]) * (stride * camera.width) + (idx % grid[1]) * stride
    z = np.take(depth_m.reshape(-1), full).astype(np.float32, copy=False)
    xy = np.take(rays.reshape(-1, 2).view(np.complex64).reshape(-1), idx).view(np.float32).reshape(-1, 2)
    xyz = np.empty((idx.size, 3), np.float32)
    np.multiply(xy, z[:, None], out=xyz[:, :2])
    xyz[:, 2] = z
    colors = np.ascontiguousarray(image_rgb).reshape(-1, 3).view(np.dtype((np.void, 3))).reshape(-1)
    picked = {k: None if v is None else np.take(v.reshape(-1), full) for k, v in fields.items()}
    return LabeledPoints(xyz, np.take(colors, full).view(np.uint8).reshape(-1, 3),
                         *(_field(picked[k], idx.size, types[k], k) for k in types), None, idx)


@dataclass
class Object3D:
    """One thing segment in 3D (camera optical frame, metres): the mean of its kept
    points, the min/max corners of their axis-aligned box, how many there were and their
    median depth (see :func:`objects_3d` for which points are kept)."""

    segment_id: int
    class_index: int
    centroid: np.ndarray   # (3,)
    box_min: np.ndarray    # (3,)
    box_max: np.ndarray    # (3,)
    num_points: int
    median_depth: float

    @property
    def size(self) -> np.ndarray:
        return self.box_max - self.box_min

    @property
    def center(self) -> np.ndarray:
        """The box's centre (not the centroid)."""
        return (self.box_min + self.box_max) / 2


MAD_SIGMA = 1.4826   # MAD -> standard deviation for Gaussian noise


def objects_3d(depth_m: np.ndarray, camera: PinholeCamera, id_image: np.ndarray, segment_ids: Sequence[int],
               class_indices: Sequence[int], erode_px: int = 1, stride: int = 1, min_points: int = 10,
               mad_k: float = 3.0, min_tolerance: float = 0.02,
               bboxes: Optional[Sequence[Sequence[int]]] = None) -> List[Object3D]:
    """A 3D object per given segment of ``id_image`` (the segment map) with at least
    ``min_points`` kept points, in the order given; segments with fewer are left out.

    Which pixels count, in order:

    1. the segment's mask eroded by ``erode_px`` (a (2e+1)-square kernel): the pixels on
       an object's border mix foreground and background depth ("flying pixels") and may be
       mislabeled; if erosion leaves fewer than ``min_points`` valid pixels (a thin
       object), the whole mask is used;
    2. every ``stride``-th row and column (the grid of :func:`backproject`), valid depth only;
    3. depth outliers rejected by the median absolute deviation along depth: a point is
       kept if ``|z - median(z)| <= max(mad_k * 1.4826 * MAD, min_tolerance * median(z))``
       (the floor keeps a flat, fronto-parallel object whose MAD is ~0 from losing its
       sensor noise).

    The centroid is the mean of the kept points; the box is their min and max per axis
    (no percentiles: after steps 1-3 the kept points are trusted, and percentiles would cut
    the true extent); ``median_depth`` is the median z of the kept points. ``bboxes``
    (COCO ``(x, y, w, h)`` per segment, as ``Segment.bbox`` has them) saves the one pass
    over the image that otherwise finds them."""
    stride = _check_stride(stride)
    _check_sizes(depth_m, camera, id_image=id_image)
    if len(segment_ids) != len(class_indices) or bboxes is not None and len(bboxes) != len(segment_ids):
        raise ValueError(f"{len(segment_ids)} segment ids, {len(class_indices)} class indices"
                         f"{'' if bboxes is None else f', {len(bboxes)} bboxes'}: give one of each per segment")
    if erode_px < 0:
        raise ValueError(f"erode_px must be >= 0, got {erode_px}")
    depth_m = np.asarray(depth_m)
    ids = np.asarray(id_image)
    width = camera.width
    flat_rays = camera.rays(1).reshape(-1, 2).view(np.complex64).reshape(-1)   # x + iy: one item per pixel
    if bboxes is None:   # one pass over the image; the work per segment is then on its crop
        found = ndimage.find_objects(ids if ids.min() >= 0 else np.where(ids > 0, ids, 0))
        boxes = [found[i - 1] if 0 < i <= len(found) else None for i in map(int, segment_ids)]
    else:
        boxes = [(slice(max(0, int(y)), int(y) + int(h)), slice(max(0, int(x)), int(x) + int(w)))
                 for x, y, w, h in bboxes]
    kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8) if erode_px else None
    out = []
    for sid, cls, box in zip(map(int, segment_ids), class_indices, boxes):
        if box is None:
            continue
        ys, xs = box
        mask = ids[ys, xs] == sid
        d = depth_m[ys, xs]
        usable = np.isfinite(d) & (d > 0)
        if stride > 1:
            on_grid = np.zeros_like(mask)
            on_grid[(-ys.start) % stride::stride, (-xs.start) % stride::stride] = True
            usable &= on_grid
        keep = mask & usable
        if kernel is not None:
            # The crop's edge is not the object's: pad with background before eroding.
            e = erode_px
            eroded = cv2.erode(np.pad(mask, e).astype(np.uint8), kernel)[e:-e, e:-e].view(bool)
            if np.count_nonzero(eroded & usable) >= min_points:
                keep = eroded & usable
        rows, cols = np.nonzero(keep)
        if rows.size < min_points:
            continue
        z = d[rows, cols].astype(np.float64)
        med = float(np.median(z))
        dev = np.abs(z - med)
        mad = float(np.median(dev))
        inlier = dev <= max(mad_k * MAD_SIGMA * mad if mad > 0 else 0.0, min_tolerance * med)
        if np.count_nonzero(inlier) < min_points:
            continue
        z = z[inlier]
        ray = np.take(flat_rays, (rows[inlier] + ys.start) * width + cols[inlier] + xs.start)
        # One 1-D array per axis: reductions over (N, 3) along axis 0 are several times slower.
        axes = (ray.real * z, ray.imag * z, z)
        out.append(Object3D(sid, int(cls), np.array([a.mean() for a in axes]), np.array([a.min() for a in axes]),
                            np.array([a.max() for a in axes]), int(z.size), float(np.median(z))))
    return out
