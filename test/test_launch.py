"""launch/ovseg.launch.py run for real: a LaunchService in its own process starts the node
(the installed `ovseg_node` executable), and a probe drives it over ROS topics. Each test
stops the tree with SIGINT and checks that no process is left behind."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from ros_harness import image_msg, require_launch, require_ros
from source_tree import copy_source_tree

require_ros()
require_launch()

import psutil  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from ovseg.msg import LabelSpace, PanopticResult, Status  # noqa: E402
from ovseg_ros.convert import header_stamp_ns as stamp_ns  # noqa: E402
from ovseg_ros.harness import REPO, LaunchProcess, Probe, isolated_env, share_file  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Small and fast: the tiny preset (random weights) on the CPU at 64 px.
FAST = {"preset": "tiny", "device": "cpu", "input_size": 64, "input_qos": "reliable", "input_qos_depth": 10,
        "status_period": 0.2}


def fresh_domain():
    """A DDS domain per test: the previous test's node must not show up in this one's graph."""
    os.environ.pop("ROS_DOMAIN_ID", None)
    os.environ.update(isolated_env())


def params_file(tmp_path, **params):
    params.setdefault("embedding_cache_dir", str(tmp_path / "embeddings"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def frame_msg(stamp: int):
    return image_msg(stamp, 48, 64)


def compressed_msg(stamp: int):
    import cv2
    raw = frame_msg(stamp)
    pixels = np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.width, 3)
    msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", pixels[..., ::-1])[1].tobytes())
    msg.header = raw.header
    return msg


def answer(probe, launched, publisher, out_topic, stamp, make=frame_msg, timeout=120.0) -> PanopticResult:
    """Publish a frame (again each second, as a camera would: nothing guarantees that the
    node's subscription has matched yet) until its result arrives on ``out_topic``."""
    end, sent = time.monotonic() + timeout, 0.0
    while time.monotonic() < end:
        hits = [m for m in probe.messages(out_topic) if stamp_ns(m.header) == stamp]
        if hits:
            return hits[0]
        if not launched.alive():
            raise AssertionError(f"launch ended (rc {launched.proc.returncode}):\n{launched.output()[-3000:]}")
        if time.monotonic() - sent > 1.0:
            publisher.publish(make(stamp))
            sent = time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no result for frame {stamp} on {out_topic}:\n{launched.output()[-3000:]}")


def call(probe, launched, client, request, timeout=60.0):
    assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} never appeared"
    future = client.call_async(request)
    probe.wait_for(future.done, timeout=timeout, what=f"the reply of {client.srv_name}")
    return future.result()


@pytest.fixture
def session(tmp_path):
    """Starts launch trees and a probe; at the end stops each tree with SIGINT and checks
    that it exits cleanly with no process left."""
    fresh_domain()
    started = []
    probe = Probe()

    def start(arguments, **kwargs):
        run = tmp_path / f"launch{len(started)}"
        run.mkdir()
        launched = LaunchProcess(run, {k: str(v) for k, v in arguments.items()}, **kwargs)
        started.append(launched)
        return launched

    yield probe, start
    probe.close()
    for launched in started:
        tree = launched.processes()
        code = launched.stop()
        out = launched.output()
        assert code == 0, f"launch exited with {code}:\n{out[-3000:]}"
        assert "escalating to 'SIGTERM'" not in out, f"a node ignored SIGINT:\n{out[-3000:]}"
        assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], \
            f"processes left behind after SIGINT: {tree}"


def test_arguments_override_the_parameter_file_and_the_node_answers_where_they_say(session, tmp_path):
    probe, start = session
    profile = tmp_path / "my_dds_profile.xml"
    profile.write_text((REPO / "config" / "fastdds_large_frames.xml").read_text())
    config = params_file(tmp_path, **{**FAST, "preset": "vitb16_swint", "cameras": ["/wrong/image_raw"],
                                      "vocabulary": "tree; sky [stuff]", "device": "cuda"})
    launched = start({"config": config, "namespace": "robot", "cameras": "['/cam_a/image_raw']",
                      "preset": "tiny", "device": "cpu", "vocabulary": "car; road [stuff]",
                      "use_sim_time": "true", "log_level": "debug", "dds_profile": profile})
    camera = probe.node.create_publisher(Image, "/cam_a/image_raw", RELIABLE)
    probe.subscribe(PanopticResult, "/robot/ovseg/cam_a/panoptic", RELIABLE)
    result = answer(probe, launched, camera, "/robot/ovseg/cam_a/panoptic", 1_000_000_001)
    assert list(result.class_names) == ["car", "road"]
    assert result.id_image.height == 48 and result.id_image.width == 64

    client = probe.node.create_client(GetParameters, "/robot/ovseg/get_parameters")
    names = ["use_sim_time", "cameras", "preset", "device", "input_size", "vocabulary"]
    values = call(probe, launched, client, GetParameters.Request(names=names)).values
    got = dict(zip(names, values))
    assert got["use_sim_time"].bool_value is True
    assert list(got["cameras"].string_array_value) == ["/cam_a/image_raw"]
    assert (got["preset"].string_value, got["device"].string_value) == ("tiny", "cpu")
    assert got["vocabulary"].string_value == "car; road [stuff]"
    assert got["input_size"].integer_value == 64            # not an argument: the file's value

    (pid,) = launched.node_pids()
    assert psutil.Process(pid).environ()["FASTDDS_DEFAULT_PROFILES_FILE"] == str(profile)
    assert "[DEBUG]" in launched.output()                    # log_level:=debug reached the node's rcl


def test_autostart_false_waits_for_lifecycle_transitions(session, tmp_path):
    probe, start = session
    config = params_file(tmp_path, **FAST, cameras=["/cam/image_raw"], vocabulary="car; road [stuff]")
    launched = start({"config": config, "autostart": "false"})
    probe.subscribe(Status, "/ovseg/status")
    probe.subscribe(PanopticResult, "/ovseg/cam/panoptic", RELIABLE)
    probe.wait_for(lambda: probe.messages("/ovseg/status"), what="a status while unconfigured", timeout=120)
    time.sleep(1.0)
    assert {m.state for m in probe.messages("/ovseg/status")} == {"unconfigured"}
    assert probe.node.count_subscribers("/cam/image_raw") == 0     # it takes no frames yet

    client = probe.node.create_client(ChangeState, "/ovseg/change_state")
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        reply = call(probe, launched, client, ChangeState.Request(transition=Transition(id=transition)), 120)
        assert reply.success, launched.output()[-3000:]
    probe.wait_for(lambda: probe.messages("/ovseg/status")[-1].state == "active", what="active")
    camera = probe.node.create_publisher(Image, "/cam/image_raw", RELIABLE)
    assert list(answer(probe, launched, camera, "/ovseg/cam/panoptic", 7).class_names) == ["car", "road"]


def test_respawn_brings_a_killed_node_back(session, tmp_path):
    probe, start = session
    config = params_file(tmp_path, **FAST, cameras=["/cam/image_raw"], vocabulary="car; road [stuff]")
    launched = start({"config": config, "respawn": "true"})
    camera = probe.node.create_publisher(Image, "/cam/image_raw", RELIABLE)
    probe.subscribe(PanopticResult, "/ovseg/cam/panoptic", RELIABLE)
    answer(probe, launched, camera, "/ovseg/cam/panoptic", 11)
    (first,) = launched.node_pids()
    os.kill(first, signal.SIGKILL)
    probe.wait_for(lambda: launched.node_pids() and launched.node_pids() != [first], timeout=60,
                   what="the node to be started again")
    answer(probe, launched, camera, "/ovseg/cam/panoptic", 12)
    assert launched.output().count("process started with pid") == 2


@pytest.mark.parametrize("argument, says", [
    ({"preset": "no_such_preset"}, "unknown preset 'no_such_preset'"),
    ({"cameras": "{front: 1}"}, "must be a name or a YAML list of names"),
    ({"config": "/nonexistent/params.yaml"}, "no such parameter file"),
], ids=["unknown-preset", "cameras-not-a-list", "missing-config"])
def test_a_bad_argument_fails_at_launch_with_one_line(tmp_path, argument, says):
    fresh_domain()
    launched = LaunchProcess(tmp_path, argument)
    try:
        code = launched.wait(60)
    finally:
        launched.stop()
    out = launched.output()
    assert code != 0, out
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and says in errors[0], out
    assert "Traceback" not in out and "process started" not in out, out


def test_the_robot_example_file_serves_three_compressed_cameras_beside_each_camera(session):
    probe, start = session
    example = share_file("ovseg", "robot_example.yaml")
    launched = start({"config": example, "preset": "tiny", "device": "cpu"})
    cameras = yaml.safe_load(example.read_text())["/**"]["ros__parameters"]["cameras"]
    probe.subscribe(LabelSpace, "/ovseg/label_space", LATCHED)
    publishers = {}
    for topic in cameras:                         # sensor_data QoS: best effort
        publishers[topic] = probe.node.create_publisher(CompressedImage, f"{topic}/compressed", 10)
        probe.subscribe(PanopticResult, f"/{topic.split('/')[1]}/ovseg/panoptic", 10)
    for i, topic in enumerate(cameras):
        out = f"/{topic.split('/')[1]}/ovseg/panoptic"
        result = answer(probe, launched, publishers[topic], out, 100 + i, make=compressed_msg)
        assert "car" in result.class_names
    # $(find-pkg-share ovseg) in the file was resolved: the label space loaded and is latched.
    probe.wait_for(lambda: probe.messages("/ovseg/label_space"), what="the label space")
    space = probe.messages("/ovseg/label_space")[-1]
    assert dict(zip(space.names, space.ids))["car"] == 13


def _workspace_env(tmp_path):
    """The environment of a robot with ROS 2 installed (here: the venv's wheels and the
    third-party packages `make ros` built) and no ovseg yet: this checkout's own install/ovseg
    and its source are off every path."""
    env = dict(os.environ)
    own = str(REPO / "install" / "ovseg")
    for key in ("AMENT_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "CMAKE_PREFIX_PATH"):
        kept = [p for p in env.get(key, "").split(os.pathsep) if p and not p.startswith(own) and p != str(REPO)]
        env[key] = os.pathsep.join(kept)
    env["CMAKE_PREFIX_PATH"] = env["AMENT_PREFIX_PATH"]
    return env


def test_a_colcon_workspace_install_launches_from_another_folder(session, tmp_path):
    """The robot's path: the repository in a workspace's src/, a plain `colcon build`
    (Python installed with the interfaces, no editable install), the workspace sourced,
    the launch file run from another folder with the shapes preset."""
    probe, start = session
    ws = tmp_path / "ws"
    copy_source_tree(ws / "src" / "ovseg")
    env = _workspace_env(tmp_path)
    build = subprocess.run(
        ["colcon", "build", "--packages-select", "ovseg", "--cmake-args",
         f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    site = next((ws / "install" / "ovseg" / "lib").glob("python3*/site-packages"))
    assert (site / "ovseg_core" / "config.py").is_file() and not (site / "config").exists()

    # `source install/setup.bash` as a user does, then what `ros2 launch ovseg ovseg.launch.py` runs.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sourced = subprocess.run(["bash", "-c", f"source {ws}/install/setup.bash && env -0"], cwd=elsewhere, env=env,
                             capture_output=True, check=True).stdout.decode().split("\0")
    robot_env = dict(line.split("=", 1) for line in sourced if "=" in line)
    where = subprocess.run([sys.executable, "-c", "import ovseg_core, ovseg_ros.harness as h; "
                            "print(ovseg_core.__file__); print(h.share_file('ovseg', 'ovseg.launch.py'))"],
                           cwd=elsewhere, env=robot_env, capture_output=True, text=True, check=True).stdout.split()
    assert all(w.startswith(str(ws / "install")) for w in where), where

    launched = start({"preset": "shapes", "device": "cpu", "cameras": "['/cam/image_raw']",
                      "vocabulary": "red circle; blue square; grass [stuff]"}, env=robot_env, cwd=elsewhere)
    camera = probe.node.create_publisher(Image, "/cam/image_raw", 10)   # the default file: sensor_data QoS
    probe.subscribe(PanopticResult, "/ovseg/cam/panoptic", 10)
    result = answer(probe, launched, camera, "/ovseg/cam/panoptic", 21, timeout=180)
    assert list(result.class_names) == ["red circle", "blue square", "grass"]
    assert f"ovseg_ros from {site}" in launched.output()
