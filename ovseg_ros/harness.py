"""Run the node in its own process and talk to it over real ROS topics: used by the
tests, `make demo` and the node benchmark. Needs rclpy and our built interfaces on the
paths (tools/ros_env.sh)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

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
