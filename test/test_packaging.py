"""Dependencies declared the ROS way stay complete: every library setup.py needs comes to a
robot either from rosdep (a key in package.xml) or pinned from requirements.txt."""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# pip name -> the rosdep key (Ubuntu 24.04, Jazzy and Kilted) that installs it from apt.
ROSDEP_KEYS = {"numpy": "python3-numpy", "scipy": "python3-scipy", "opencv-python-headless": "python3-opencv",
               "pyyaml": "python3-yaml", "tqdm": "python3-tqdm", "pillow": "python3-pil"}


def install_requires():
    tree = ast.parse((ROOT / "setup.py").read_text())
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    (value,) = [k.value for k in call.keywords if k.arg == "install_requires"]
    return {re.split(r"[<>=!~ ;\[]", ast.literal_eval(v))[0].lower() for v in value.elts}


def requirements():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.txt: {line!r} is not pinned (NAME==VERSION)"
            pins[name.lower().replace("_", "-")] = version
    return pins


def package_xml_depends(tag):
    return {e.text.strip() for e in ET.parse(ROOT / "package.xml").getroot().iter(tag)}


def test_every_run_dependency_comes_from_rosdep_or_the_pinned_requirements():
    pins, keys = requirements(), package_xml_depends("exec_depend")
    missing = []
    for name in install_requires():
        key = ROSDEP_KEYS.get(name)
        if not (name.replace("_", "-") in pins or (key and key in keys)):
            missing.append(name)
    assert not missing, f"neither pinned in requirements.txt nor a rosdep key in package.xml: {missing}"
    assert {"torch", "torchvision", "open-clip-torch", "transformers", "safetensors", "peft", "rosbags"} <= set(pins)
    # No key for what rosdep cannot install reliably (Ubuntu's python3-torch is a CPU build).
    assert not {"python3-torch", "python3-torchvision"} & keys


def test_package_xml_declares_what_the_node_and_launch_file_import():
    keys = package_xml_depends("exec_depend") | package_xml_depends("depend")
    assert {"rclpy", "launch", "launch_ros", "ament_index_python", "lifecycle_msgs", "diagnostic_msgs",
            "rcl_interfaces", "sensor_msgs", "std_msgs"} <= keys
    imported = set()
    for path in [*(ROOT / "ovseg_ros").glob("*.py"), ROOT / "launch" / "ovseg.launch.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
    ros_packages = {m for m in imported if m.endswith("_msgs") or m in ("rclpy", "launch", "launch_ros",
                                                                        "ament_index_python", "message_filters")}
    assert ros_packages - {"ovseg"} <= keys, ros_packages - keys
