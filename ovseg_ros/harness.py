"""Run the node in its own process and talk to it over real ROS topics: used by the
tests, `make demo` and the node benchmark. Needs rclpy and our built interfaces on the
paths (tools/ros_env.sh).

`python -m ovseg_ros.harness ovseg ovseg.launch.py name:=value ...` runs a launch file
the way `ros2 launch` does, for machines with launch_ros but without ros2cli (these)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

REPO = Path(__file__).resolve().parent.parent


def isolated_env() -> dict:
    """A DDS domain of its own on loopback, so parallel runs never see each other."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(20, 99)))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    # Large frames through shared memory (see the profile); tools/ros_env.sh sets it too, so
    # this process's own participants (loaded once per process) use the same transports.
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_frames.xml"))
    return env


class NodeProcess:
    """`python -m ovseg_ros.node --params-file F` with the given parameters; its log goes to
    a file next to the params file. ``command`` replaces the `python -m ovseg_ros.node` part
    (e.g. the installed `ovseg-node` script), ``cwd`` the repository as working folder."""

    def __init__(self, tmp_path: Path, command=None, cwd=None, **params):
        # Encoded vocabularies go next to the run, not into the user's cache, unless asked.
        params.setdefault("embedding_cache_dir", str(tmp_path / "embeddings"))
        self.params_file = tmp_path / "params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = tmp_path / "node.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            list(command or [sys.executable, "-m", "ovseg_ros.node"]) + ["--params-file", str(self.params_file)],
            cwd=cwd or REPO, env=os.environ.copy(), stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Probe:
    """An rclpy node in the test process, spun in a thread; records what it receives."""

    def __init__(self, name: str = "probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self.context.ok():
                    raise

    def subscribe(self, msg_type, topic: str, qos=10):
        with self.lock:
            self.received[topic] = []

        def store(msg, topic=topic):
            with self.lock:
                self.received[topic].append((time.monotonic(), msg))
        return self.node.create_subscription(msg_type, topic, store, qos)

    def messages(self, topic: str) -> list:
        with self.lock:
            return [m for _, m in self.received.get(topic, [])]

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition", node=None):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            if node is not None and not node.alive():
                raise AssertionError(f"node died while waiting for {what}:\n{node.output()[-3000:]}")
            time.sleep(0.05)
        log = f"\nnode log:\n{node.output()[-3000:]}" if node is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")

    def close(self):
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(5)


def share_file(package: str, name: str) -> Path:
    """NAME under the package's share directory (what `ros2 launch PACKAGE NAME` runs)."""
    from ament_index_python.packages import get_package_share_directory
    share = Path(get_package_share_directory(package))
    found = sorted(Path(folder) / name for folder, _, files in os.walk(share, followlinks=True) if name in files)
    if not found:
        raise FileNotFoundError(f"no file {name!r} under {share}")
    return found[0]


def run_launch(path: Path, arguments: Sequence[str]) -> int:
    """What `ros2 launch FILE name:=value ...` does: include the file with its arguments in
    a LaunchService and run it until it ends or SIGINT/SIGTERM arrives."""
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import AnyLaunchDescriptionSource
    pairs = []
    for argument in arguments:
        name, sep, value = argument.partition(":=")
        if not sep:
            raise SystemExit(f"launch arguments are name:=value, got {argument!r}")
        pairs.append((name, value))
    # A process started in the background inherits SIGINT as ignored, and launch then never
    # stops on Ctrl-C / SIGINT: handle it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    service = LaunchService(argv=list(arguments))
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(AnyLaunchDescriptionSource(str(path)), launch_arguments=pairs)]))
    return service.run()


class LaunchProcess:
    """A launch file run by :func:`run_launch` in its own process (a real process tree:
    launch, then the nodes it starts), in a process group of its own as in a terminal;
    output goes to ``tmp_path/launch.log``."""

    def __init__(self, tmp_path: Path, arguments: Dict[str, str], launch: Sequence[str] = ("ovseg", "ovseg.launch.py"),
                 env: Optional[dict] = None, cwd: Optional[Path] = None):
        self.log_path = tmp_path / "launch.log"
        self.log = open(self.log_path, "w")
        command = [sys.executable, "-m", "ovseg_ros.harness", *launch] + [f"{k}:={v}" for k, v in arguments.items()]
        self.proc = subprocess.Popen(command, cwd=cwd or tmp_path, env=env or os.environ.copy(),
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def processes(self) -> List:
        """Every live process of the tree below launch (psutil.Process)."""
        import psutil
        try:
            return [p for p in psutil.Process(self.proc.pid).children(recursive=True) if p.is_running()]
        except psutil.NoSuchProcess:
            return []

    def node_pids(self) -> List[int]:
        import psutil
        pids = []
        for p in self.processes():
            try:
                if any("ovseg_node" in part for part in p.cmdline()):
                    pids.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return pids

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.flush()

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """Ctrl-C: SIGINT to the whole process group, as a terminal sends it (launch then
        leaves the nodes to stop on their own SIGINT, escalating to SIGTERM after 5 s); then
        make sure nothing of the tree is left (kill stragglers)."""
        import psutil
        tree = self.processes()
        code = None
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _, left = psutil.wait_procs(tree, timeout=5)
        for p in left:
            p.kill()
        self.log.close()
        return code


if __name__ == "__main__":
    args = sys.argv[1:]
    by_path = bool(args) and args[0].endswith(".py")
    if not args or args[0] in ("-h", "--help") or (not by_path and len(args) < 2):
        print("usage: python -m ovseg_ros.harness PACKAGE LAUNCH_FILE [name:=value ...]\n"
              "       python -m ovseg_ros.harness PATH/TO/FILE.launch.py [name:=value ...]")
        sys.exit(0 if args else 2)
    if by_path:
        sys.exit(run_launch(Path(args[0]), args[1:]))
    sys.exit(run_launch(share_file(args[0], args[1]), args[2:]))
