#!/usr/bin/env bash
# Build our ROS 2 interfaces with colcon, against the ROS 2 wheels in the venv; the Python
# packages are not copied (the venv's editable install of this checkout is the only copy).
# Usage: tools/build_ros.sh VENV  -> install/ (use tools/ros_env.sh).
#
# The package is staged in build/ros/src/ovseg as links to the tracked files: CMake refuses
# exported include folders inside the source tree, and the venv's numpy headers are inside
# the repository when the venv is ./.venv.
set -euo pipefail
VENV=$(cd "${1:-.venv}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAGE="$ROOT/build/ros/src/ovseg"
rm -rf "$STAGE" && mkdir -p "$STAGE"
for f in package.xml CMakeLists.txt msg srv launch config weights tools; do
    ln -s "$ROOT/$f" "$STAGE/$f"
done
"$VENV/bin/python" "$ROOT/tools/fix_ros_wheels.py" "$VENV"
cd "$ROOT"
PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" \
    "$VENV/bin/colcon" --log-base build/ros/log build \
    --base-paths build/ros/src --build-base build/ros/build --install-base install \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DOVSEG_INSTALL_PYTHON=OFF
# The Python code runs from the editable source only: remove copies an older build made
# (colcon never deletes installed files), so they cannot shadow it.
rm -rf "$ROOT"/install/ovseg/lib/python3*/site-packages/{ovseg_core,ovseg_ros}{,-*.egg-info}
