"""Skip or fail the ROS tests when ROS 2 is not set up.

`make test` sources tools/ros_env.sh after `make ros` and sets OVSEG_REQUIRE_ROS=1, so
there a missing build is a failure; a bare `pytest` without ROS skips these tests.
"""
import os
from pathlib import Path

import pytest


def require_ros():
    try:
        import rclpy  # noqa: F401
        from ovseg.msg import PanopticResult  # noqa: F401
    except ImportError as e:
        if os.environ.get("OVSEG_REQUIRE_ROS") == "1":
            raise RuntimeError(f"ROS 2 interfaces are not importable ({e}); run `make ros` and "
                               f"source tools/ros_env.sh (make test does both)") from e
        pytest.skip(f"ROS 2 not set up ({e}); run `make test` or `make ros && . tools/ros_env.sh`",
                    allow_module_level=True)


THIRD_PARTY = Path(os.environ.get("OVSEG_ROS_THIRD_PARTY", Path(__file__).resolve().parents[2] / "shared" / "third_party" / "ros"))


def require_launch():
    """launch and launch_ros (a ROS 2 installation, or `make ros` from the third-party folder).
    Under `make test` with that folder present, missing them is a failure, not a skip."""
    try:
        import launch_ros.actions  # noqa: F401
    except ImportError as e:
        if os.environ.get("OVSEG_REQUIRE_ROS") == "1" and THIRD_PARTY.is_dir():
            raise RuntimeError(f"launch_ros is not importable ({e}) although {THIRD_PARTY} exists; "
                               f"run `make ros` and source tools/ros_env.sh (make test does both)") from e
        pytest.skip(f"launch_ros not available ({e}): needs a ROS 2 installation or {THIRD_PARTY} "
                    f"(installed by `make ros`)", allow_module_level=True)


def image_msg(stamp: int, height: int = 24, width: int = 32):
    """A random rgb8 sensor_msgs/Image with this stamp (ns), the same pixels for the same stamp."""
    import numpy as np
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.header = Header(frame_id="cam")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    msg.data = np.random.default_rng(stamp % 997).integers(0, 255, (height, width, 3), np.uint8).tobytes()
    return msg
