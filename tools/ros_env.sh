# Source me (bash): puts the venv's ROS 2 wheels and our built interfaces on the paths.
# `. tools/ros_env.sh [VENV]`; made by `make ros`.
_OVSEG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_OVSEG_VENV=$(cd "${1:-$_OVSEG_ROOT/.venv}" && pwd)
export PATH="$_OVSEG_VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$_OVSEG_ROOT/install/ovseg:$_OVSEG_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export LD_LIBRARY_PATH="$_OVSEG_ROOT/install/ovseg/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$_OVSEG_ROOT/install/ovseg/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
unset _OVSEG_ROOT _OVSEG_VENV
