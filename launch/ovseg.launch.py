"""ros2 launch ovseg ovseg.launch.py [config:=FILE] [namespace:=NS] [cameras:="['/a/image_raw', ...]"]
[device:=cuda] [preset:=NAME] [weights:=FILE] [vocabulary:="car; road [stuff]"]
[autostart:=false] [use_sim_time:=true] [log_level:=debug] [respawn:=true] [dds_profile:=FILE|'']

Starts the segmentation node with a parameter file; arguments given here override the
file's values (empty: the file's). With a lifecycle manager (nav2_lifecycle_manager and
the like) pass autostart:=false so the manager drives configure/activate. dds_profile is
the Fast DDS XML profile for large frames (config/fastdds_large_frames.xml by default).
Needs launch_ros (a ROS 2 installation); without it use `ovseg-node --params-file FILE`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterFile

# Launch argument -> node parameter of the same name (test_launch_file.py checks that each
# is declared by the node or is ROS's use_sim_time). Booleans are parsed as YAML.
PARAMETER_ARGUMENTS = ("cameras", "device", "preset", "weights", "vocabulary", "autostart", "use_sim_time",
                       "depth_topics", "publish_points", "publish_objects", "publish_detections",
                       "publish_label_info", "publish_semantic_color", "publish_instance", "mask_classes")
LIST_ARGUMENTS = ("cameras", "depth_topics", "mask_classes")
# The outputs for 3D mappers that a boolean switches on (see config/ovseg_node.yaml).
MAPPER_ARGUMENTS = {"publish_points": "~/NAME/points, a labeled PointCloud2 (needs depth)",
                    "publish_objects": "~/NAME/objects, vision_msgs Detection3DArray (needs depth)",
                    "publish_detections": "~/NAME/detections, vision_msgs Detection2DArray",
                    "publish_label_info": "~/NAME/label_info, vision_msgs LabelInfo (latched)",
                    "publish_semantic_color": "~/NAME/semantic_color, rgb8 label colours",
                    "publish_instance": "~/NAME/instance, 32SC1 packed label and instance"}
BOOL_ARGUMENTS = ("autostart", "use_sim_time", "publish_points", "publish_objects", "publish_detections",
                  "publish_label_info", "publish_semantic_color", "publish_instance")


class LaunchArgumentError(ValueError):
    """A bad launch argument: launch prints the message as one line and starts nothing."""


def _node(context):
    import yaml
    config = LaunchConfiguration("config").perform(context)
    if not os.path.isfile(os.path.expanduser(config)):
        raise LaunchArgumentError(f"config:={config}: no such parameter file (the default is "
                                  f"{_default_config()}; see config/ovseg_node.yaml for every key)")
    overrides = {}
    for key in PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(key).perform(context)
        if value == "":
            continue
        if key in LIST_ARGUMENTS:
            overrides[key] = _yaml_list(key, value)
        elif key in BOOL_ARGUMENTS:
            overrides[key] = bool(yaml.safe_load(value))
        else:
            overrides[key] = value
    _check_presets(overrides.get("preset"), config)
    env = {}
    profile = LaunchConfiguration("dds_profile").perform(context)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    respawn = bool(yaml.safe_load(LaunchConfiguration("respawn").perform(context) or "false"))
    return [Node(
        package="ovseg", executable="ovseg_node", name="ovseg",
        namespace=LaunchConfiguration("namespace"), output="screen", emulate_tty=True,
        parameters=[ParameterFile(os.path.expanduser(config), allow_substs=True), overrides],
        ros_arguments=["--log-level", LaunchConfiguration("log_level").perform(context)],
        additional_env=env, respawn=respawn, respawn_delay=2.0)]


def _yaml_list(key, text):
    import yaml
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value) \
            or (key == "cameras" and not all(value)):
        raise LaunchArgumentError(f"{key}:={text!r} must be a name or a YAML list of names, "
                                  f"e.g. {key}:=\"{LIST_EXAMPLES[key]}\"")
    return value


LIST_EXAMPLES = {"cameras": "['/front/image_raw', '/rear/image_raw/compressed']",
                 "depth_topics": "['/front/depth_registered/image_rect', '']",
                 "mask_classes": "['person', 'dog']"}


def _check_presets(argument, config):
    """The preset the node will build (the argument's, else the parameter file's) must load:
    the node's own rule (ovseg_core.config, no torch), checked before the node starts."""
    import yaml
    from ovseg_core.config import load_preset
    presets = [("preset:=", argument)] if argument else []
    if not presets:
        with open(os.path.expanduser(config)) as f:
            data = yaml.safe_load(f) or {}
        for section in data.values() if isinstance(data, dict) else ():
            value = (section.get("ros__parameters") or {}).get("preset") if isinstance(section, dict) else None
            if isinstance(value, str) and "$(" not in value:
                presets.append((f"{config}: preset: ", value))
    for where, name in presets:
        try:
            load_preset(name)
        except (ValueError, OSError) as e:
            raise LaunchArgumentError(f"{where}{name}: {e}") from None


def _default_config():
    return os.path.join(get_package_share_directory("ovseg"), "config", "ovseg_node.yaml")


def generate_launch_description():
    share = get_package_share_directory("ovseg")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=_default_config(),
                              description="node parameter file (see config/ovseg_node.yaml)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="image topics, a YAML list; empty: the config file's"),
        DeclareLaunchArgument("device", default_value="", description="cpu, cuda, cuda:N; empty: config"),
        DeclareLaunchArgument("preset", default_value="", description="model preset; empty: config"),
        DeclareLaunchArgument("weights", default_value="", description="trained delta (.safetensors); empty: config"),
        DeclareLaunchArgument("vocabulary", default_value="",
                              description="initial vocabulary, e.g. 'car; road [stuff]'; empty: config"),
        DeclareLaunchArgument("autostart", default_value="",
                              description="true: configure+activate itself; false: a lifecycle manager does; "
                                          "empty: config"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: the node's clock follows /clock (bags, simulators)"),
        DeclareLaunchArgument("depth_topics", default_value="",
                              description="per camera, its registered depth image topic ('' for none), a YAML "
                                          "list; empty: config"),
        *[DeclareLaunchArgument(name, default_value="", description=f"true: {what}; empty: config")
          for name, what in MAPPER_ARGUMENTS.items()],
        DeclareLaunchArgument("mask_classes", default_value="",
                              description="classes masked in ~/NAME/mask for nvblox, a YAML list; empty: config"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart the node if it dies"),
        DeclareLaunchArgument("dds_profile", default_value=os.path.join(share, "config", "fastdds_large_frames.xml"),
                              description="Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE); '' for none"),
        OpaqueFunction(function=_node),
    ])
