"""Our interface definitions (msg/, srv/) for tools that run without a ROS 2 installation.

The rosbag tool reads and writes our messages through the `rosbags` library, which
builds message types from the .msg text; this module finds those files (in the source
tree, a pip prefix or a colcon install) and registers them. No rclpy import.
"""
from __future__ import annotations

from pathlib import Path

from ovseg_core.data_dir import PACKAGE, find_data_dir

from .convert import MessageTypes, numpy_buffer

MESSAGES = ("VocabularyClass", "Segment", "PanopticResult", "Vocabulary", "CameraStatus", "Status")


def interface_dir() -> Path:
    """The folder holding msg/, found by ovseg's one rule for shared files (a checkout, the
    prefix the code was installed into, the ament index)."""
    return find_data_dir("msg/PanopticResult.msg")


def rosbags_typestore(store: str = "ROS2_KILTED"):
    """A rosbags typestore with the standard ROS 2 types plus ours."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(getattr(Stores, store))
    root = interface_dir() / "msg"
    types = {}
    for name in MESSAGES:
        types.update(get_types_from_msg((root / f"{name}.msg").read_text(), f"{PACKAGE}/msg/{name}"))
    typestore.register(types)
    return typestore


def rosbags_types(typestore) -> MessageTypes:
    t = typestore.types
    return MessageTypes(
        Image=t["sensor_msgs/msg/Image"], RegionOfInterest=t["sensor_msgs/msg/RegionOfInterest"],
        Segment=t[f"{PACKAGE}/msg/Segment"], PanopticResult=t[f"{PACKAGE}/msg/PanopticResult"],
        VocabularyClass=t[f"{PACKAGE}/msg/VocabularyClass"], Vocabulary=t[f"{PACKAGE}/msg/Vocabulary"],
        buffer=numpy_buffer)


__all__ = ["interface_dir", "rosbags_typestore", "rosbags_types"]
