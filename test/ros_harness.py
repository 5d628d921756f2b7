"""Skip or fail the ROS tests when ROS 2 is not set up.

`make test` sources tools/ros_env.sh after `make ros` and sets OVSEG_REQUIRE_ROS=1, so
there a missing build is a failure; a bare `pytest` without ROS skips these tests.
"""
import os

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
