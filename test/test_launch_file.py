"""launch/ovseg.launch.py needs launch_ros, which PyPI does not have: check what can be
checked here (it parses, declares the promised arguments, maps them onto parameters the
node declares, and starts our executable)."""
import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "ovseg.launch.py"


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _constant(tree, name):
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name]
    return ast.literal_eval(node.value)


def _declared(tree) -> set:
    """Arguments declared by name, plus those declared in a loop over MAPPER_ARGUMENTS."""
    named = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument") if isinstance(c.args[0], ast.Constant)}
    return named | set(_constant(tree, "MAPPER_ARGUMENTS"))


def test_launch_file_declares_the_arguments_and_starts_the_installed_node():
    tree = ast.parse(LAUNCH.read_text())
    declared = _declared(tree)
    assert {"config", "namespace", "cameras", "device", "use_sim_time", "autostart", "log_level",
            "vocabulary", "weights", "respawn", "dds_profile"} <= declared
    (node,) = _calls(tree, "Node")
    kwargs = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
    assert kwargs["package"] == "ovseg" and kwargs["executable"] == "ovseg_node"
    assert {"respawn", "ros_arguments", "additional_env"} <= set(kwargs)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "tools/ovseg_node DESTINATION lib/${PROJECT_NAME}" in cmake   # what ros2 launch runs
    assert "install(DIRECTORY launch config" in cmake                     # the DDS profile goes too


def test_every_parameter_argument_is_declared_by_the_node_and_in_the_launch_file():
    """A misspelled argument would set a parameter nobody reads (rclpy ignores it)."""
    import re
    tree = ast.parse(LAUNCH.read_text())
    arguments = _constant(tree, "PARAMETER_ARGUMENTS")
    declared = _declared(tree)
    assert set(arguments) <= declared
    assert set(_constant(tree, "BOOL_ARGUMENTS")) | set(_constant(tree, "LIST_ARGUMENTS")) <= set(arguments)
    # The node's parameter names, read from node.py's PARAMETERS table (no rclpy needed).
    node_tree = ast.parse((ROOT / "ovseg_ros" / "node.py").read_text())
    (table,) = [n.value for n in node_tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", None) == "PARAMETERS"]
    parameters = {k.value for k in table.keys} | {"use_sim_time"}   # rclpy declares use_sim_time
    assert set(arguments) <= parameters, set(arguments) - parameters
    params_file = yaml.safe_load((ROOT / "config" / "ovseg_node.yaml").read_text())["/**"]["ros__parameters"]
    assert set(arguments) - {"use_sim_time"} <= set(params_file)
    profile = re.search(r'"config", "(fastdds[^"]+\.xml)"', LAUNCH.read_text()).group(1)
    assert (ROOT / "config" / profile).is_file()
