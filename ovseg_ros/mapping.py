"""What 3D mappers read, built from a panoptic result (and a registered depth image):
labeled point clouds, vision_msgs detections and label info, instance/colour/mask images.

The geometry is ovseg_core.geometry's; this module only lays results out as the messages
Hydra, nvblox, PCL and vision_msgs consumers expect. It imports message packages
(sensor_msgs, vision_msgs) but not rclpy.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from ovseg_core.structures import PanopticResult

# The node's outputs for mappers, as kinds of ovseg_ros.convert.output_topic.
MAPPER_OUTPUTS = ("points", "objects", "detections", "label_info", "semantic_color", "instance", "mask",
                  "mask/camera_info")
# (class << 16) | instance is semantic_inference's packing; SemanticKITTI's is the reverse.
INSTANCE_PACKINGS = ("class_instance", "instance_class")

# PCL's PointXYZRGBL fields by name (pcl::fromROSMsg matches names, not offsets), plus the
# instance: x, y, z float32; rgba uint32 (a<<24 | r<<16 | g<<8 | b); label, instance uint32.
_FLOAT32, _UINT32 = 7, 6
POINT_FIELDS = (("x", 0, _FLOAT32), ("y", 4, _FLOAT32), ("z", 8, _FLOAT32), ("rgba", 12, _UINT32),
                ("label", 16, _UINT32), ("instance", 20, _UINT32))
POINT_STEP = 24    # ovseg_core.geometry.POINT_STEP counts bytes with it (a test keeps the two equal)
_POINT_DTYPE = np.dtype({"names": [f[0] for f in POINT_FIELDS],
                         "formats": ["<f4", "<f4", "<f4", "<u4", "<u4", "<u4"],
                         "offsets": [f[1] for f in POINT_FIELDS], "itemsize": POINT_STEP})


def instance_numbers(result: PanopticResult) -> np.ndarray:
    """uint32 [H, W]: 1, 2, ... for the thing segments of each class (in segment order), 0 for
    stuff and unlabeled pixels, so (label, instance) names a thing within one frame."""
    lut = np.zeros(int(np.max(result.segment_map, initial=0)) + 1, np.uint32)
    counts: Dict[int, int] = {}
    for s in result.segments:
        if s.is_thing:
            counts[s.class_index] = counts.get(s.class_index, 0) + 1
            lut[s.id] = counts[s.class_index]
    return lut[np.asarray(result.segment_map)]


def pack_instances(labels: np.ndarray, instances: np.ndarray, packing: str) -> np.ndarray:
    """int32 [H, W] for a 32SC1 image; labels and instances must fit in 16 bits each."""
    if packing not in INSTANCE_PACKINGS:
        raise ValueError(f"instance packing {packing!r}: choose {' or '.join(INSTANCE_PACKINGS)}")
    labels, instances = np.asarray(labels, np.int64), np.asarray(instances, np.int64)
    if labels.max(initial=0) > 0xFFFF or instances.max(initial=0) > 0x7FFF:
        raise ValueError("instance image: labels and instances must fit in 16 bits")
    high, low = (labels, instances) if packing == "class_instance" else (instances, labels)
    return ((high << 16) | low).astype(np.int32)


def unpack_instances(packed: np.ndarray, packing: str):
    """The inverse of :func:`pack_instances`: (labels, instances)."""
    packed = np.asarray(packed).astype(np.int64) & 0xFFFFFFFF
    high, low = packed >> 16, packed & 0xFFFF
    return (high, low) if packing == "class_instance" else (low, high)


def label_colors(labels: np.ndarray, colors: Dict[int, Sequence[int]]) -> np.ndarray:
    """uint8 [H, W, 3]: each label's exact colour (no blending), black for labels without one."""
    labels = np.asarray(labels, np.int64)
    lut = np.zeros((max(int(labels.max(initial=0)), max(colors, default=0)) + 1, 3), np.uint8)
    for label, color in colors.items():
        lut[label] = color
    return lut[labels]


def class_mask(result: PanopticResult, masked_classes: Sequence[str], class_synonyms: Sequence[Sequence[str]]):
    """uint8 [H, W]: 255 on segments whose class (by name or synonym) is listed, else 0
    (nvblox's dynamic/people mask convention: non-zero is masked)."""
    wanted = {w.casefold() for w in masked_classes}
    hit = [any(w.casefold() in wanted for w in (name, *syn))
           for name, syn in zip(result.class_names, class_synonyms)]
    lut = np.zeros(int(np.max(result.segment_map, initial=0)) + 1, np.uint8)
    for s in result.segments:
        if hit[s.class_index]:
            lut[s.id] = 255
    return lut[np.asarray(result.segment_map)]


def point_cloud(points, header):
    """sensor_msgs/PointCloud2 of ovseg_core.geometry.LabeledPoints: organized (H' x W', NaN
    where depth was invalid) or dense (1 x N)."""
    from sensor_msgs.msg import PointCloud2, PointField
    n = len(points.xyz)
    data = np.zeros(n, _POINT_DTYPE)
    data["x"], data["y"], data["z"] = points.xyz[:, 0], points.xyz[:, 1], points.xyz[:, 2]
    rgb = points.rgb.astype(np.uint32)
    data["rgba"] = (np.uint32(255) << 24) | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    data["label"], data["instance"] = points.label, points.instance
    height, width = points.organized if points.organized else (1, n)
    return PointCloud2(header=header, height=height, width=width, is_bigendian=False,
                       point_step=POINT_STEP, row_step=POINT_STEP * width,
                       fields=[PointField(name=name, offset=offset, datatype=kind, count=1)
                               for name, offset, kind in POINT_FIELDS],
                       is_dense=points.organized is None, data=data.tobytes())


def cloud_array(msg) -> np.ndarray:
    """A PointCloud2 written by :func:`point_cloud` back as a structured array (tests, bag tool)."""
    return np.frombuffer(bytes(msg.data), _POINT_DTYPE, count=msg.width * msg.height)


def _hypothesis(class_name: str, score: float, position=None):
    from vision_msgs.msg import ObjectHypothesisWithPose
    h = ObjectHypothesisWithPose()
    h.hypothesis.class_id, h.hypothesis.score = class_name, float(score)
    if position is not None:
        h.pose.pose.position.x, h.pose.pose.position.y, h.pose.pose.position.z = (float(v) for v in position)
        h.pose.pose.orientation.w = 1.0
    return h


def detections_2d(result: PanopticResult, header):
    """vision_msgs/Detection2DArray: one per segment (things and stuff), class name as
    class_id, segment id as id, its box in pixels."""
    from vision_msgs.msg import Detection2D, Detection2DArray
    out = Detection2DArray(header=header)
    for s in result.segments:
        x, y, w, h = s.bbox
        d = Detection2D(header=header, id=str(s.id), results=[_hypothesis(s.class_name, s.score)])
        d.bbox.center.position.x, d.bbox.center.position.y = x + w / 2.0, y + h / 2.0
        d.bbox.size_x, d.bbox.size_y = float(w), float(h)
        out.detections.append(d)
    return out


def detections_3d(result: PanopticResult, objects, header):
    """vision_msgs/Detection3DArray of ovseg_core.geometry.Object3D (in the camera's optical
    frame): box centre and size from the robust axis-aligned box, the centroid as the
    hypothesis pose, class name and score from the segment."""
    from vision_msgs.msg import Detection3D, Detection3DArray
    by_id = {s.id: s for s in result.segments}
    out = Detection3DArray(header=header)
    for o in objects:
        s = by_id[o.segment_id]
        d = Detection3D(header=header, id=str(s.id), results=[_hypothesis(s.class_name, s.score, o.centroid)])
        center, size = (o.box_min + o.box_max) / 2.0, o.box_max - o.box_min
        d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z = (float(v) for v in center)
        d.bbox.center.orientation.w = 1.0
        d.bbox.size.x, d.bbox.size.y, d.bbox.size.z = (float(v) for v in size)
        out.detections.append(d)
    return out


def label_info(names: Sequence[str], ids: Sequence[int], header, threshold: float = 0.0):
    """vision_msgs/LabelInfo: what each value of the label images means."""
    from vision_msgs.msg import LabelInfo, VisionClass
    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=int(i), class_name=n) for n, i in zip(names, ids)])


def typed_image(array: np.ndarray, encoding: str, header, types):
    """sensor_msgs/Image of an [H, W] or [H, W, C] array in the given encoding."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return types.Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                       step=width * array.itemsize * (array.shape[2] if array.ndim == 3 else 1),
                       data=types.buffer(array))


def missing_packages(outputs: Sequence[str]) -> List[str]:
    """The ROS message packages the given outputs need that are not importable."""
    needs = {"objects": "vision_msgs", "detections": "vision_msgs", "label_info": "vision_msgs",
             "points": "sensor_msgs", "depth": "message_filters"}
    missing = []
    for output in outputs:
        package = needs.get(output)
        if package is None or package in missing:
            continue
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
    return missing
