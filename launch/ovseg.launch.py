"""ros2 launch ovseg ovseg.launch.py [config:=FILE] [namespace:=NS] [cameras:="['/a/image_raw', ...]"]
[device:=cuda] [preset:=NAME]

Starts the segmentation node with a parameter file; arguments given here override the
file's values. Needs launch_ros (a ROS 2 installation); without it use
`ovseg-node --params-file FILE`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _node(context):
    overrides = {}
    for key in ("cameras", "device", "preset"):
        value = LaunchConfiguration(key).perform(context)
        if value:
            # cameras is a YAML list ("['/a/image_raw', '/b/image_raw']"); the others strings.
            overrides[key] = _yaml_list(value) if key == "cameras" else value
    return [Node(
        package="ovseg", executable="ovseg_node", name="ovseg",
        namespace=LaunchConfiguration("namespace"), output="screen", emulate_tty=True,
        parameters=[LaunchConfiguration("config"), overrides])]


def _yaml_list(text):
    import yaml
    value = yaml.safe_load(text)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"cameras:={text!r} must be a topic or a YAML list of topics")
    return value


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory("ovseg"), "config", "ovseg_node.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="node parameter file (see config/ovseg_node.yaml)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="image topics, a YAML list; empty: the config file's"),
        DeclareLaunchArgument("device", default_value="", description="cpu, cuda, cuda:N; empty: config"),
        DeclareLaunchArgument("preset", default_value="", description="model preset; empty: config"),
        OpaqueFunction(function=_node),
    ])
