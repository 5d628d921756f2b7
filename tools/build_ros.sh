#!/usr/bin/env bash
# Build our ROS 2 interfaces with colcon, against the ROS 2 wheels in the venv; the Python
# packages are not copied (the venv's editable install of this checkout is the only copy).
# Usage: tools/build_ros.sh VENV  -> install/ (use tools/ros_env.sh).
#
# The ROS packages a robot gets from its ROS installation but PyPI lacks (launch, launch_ros,
# message_filters as wheels; composition_interfaces, vision_msgs, semantic_inference_msgs as
# sources) are installed from OVSEG_ROS_THIRD_PARTY (default ../shared/third_party/ros) when
# that folder exists: wheels into the venv, sources built by colcon beside ours.
#
# Packages are staged in build/ros/src as links: CMake refuses exported include folders
# inside the source tree, and the venv's numpy headers are inside the repository when the
# venv is ./.venv.
set -euo pipefail
VENV=$(cd "${1:-.venv}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
THIRD_PARTY=${OVSEG_ROS_THIRD_PARTY:-$ROOT/../shared/third_party/ros}
rm -rf "$ROOT/build/ros/src" && mkdir -p "$ROOT/build/ros/src/ovseg"
for f in package.xml CMakeLists.txt msg srv launch config weights tools; do
    ln -s "$ROOT/$f" "$ROOT/build/ros/src/ovseg/$f"
done
if [ -d "$THIRD_PARTY" ]; then
    THIRD_PARTY=$(cd "$THIRD_PARTY" && pwd)
    # --no-deps: launch_ros asks for ament_index_python, which PyPI names ros-ament-index-python.
    "$VENV/bin/python" -m pip install --quiet --no-deps "$THIRD_PARTY"/wheels/*.whl
    for pkg in "$THIRD_PARTY"/src/*/; do
        ln -s "${pkg%/}" "$ROOT/build/ros/src/$(basename "$pkg")"
    done
    echo "build_ros: third-party ROS packages from $THIRD_PARTY"
else
    echo "build_ros: no $THIRD_PARTY; launch, launch_ros, message_filters, vision_msgs are not installed"
fi
"$VENV/bin/python" "$ROOT/tools/fix_ros_wheels.py" "$VENV"
cd "$ROOT"
PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" \
    "$VENV/bin/colcon" --log-base build/ros/log build \
    --base-paths build/ros/src --build-base build/ros/build --install-base install \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DOVSEG_INSTALL_PYTHON=OFF
# The Python code runs from the editable source only: remove copies an older build made
# (colcon never deletes installed files), so they cannot shadow it.
rm -rf "$ROOT"/install/ovseg/lib/python3*/site-packages/{ovseg_core,ovseg_ros}{,-*.egg-info}
