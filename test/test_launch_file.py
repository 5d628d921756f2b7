"""launch/ovseg.launch.py needs launch_ros, which PyPI does not have: check what can be
checked here (it parses, declares the promised arguments and starts our executable)."""
import ast
from pathlib import Path

LAUNCH = Path(__file__).resolve().parent.parent / "launch" / "ovseg.launch.py"


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def test_launch_file_declares_the_arguments_and_starts_the_installed_node():
    tree = ast.parse(LAUNCH.read_text())
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"config", "namespace", "cameras", "device"} <= declared
    (node,) = _calls(tree, "Node")
    kwargs = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
    assert kwargs["package"] == "ovseg" and kwargs["executable"] == "ovseg_node"
    cmake = (LAUNCH.parent.parent / "CMakeLists.txt").read_text()
    assert "tools/ovseg_node DESTINATION lib/${PROJECT_NAME}" in cmake   # what ros2 launch runs
