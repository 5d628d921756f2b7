# Source me (bash): puts the venv's ROS 2 wheels and the packages `make ros` built into
# install/ (our interfaces, and the third-party ones when it found them) on the paths.
# `. tools/ros_env.sh [VENV]`. install/ovseg holds only the generated interfaces; ovseg_core
# and ovseg_ros come from this checkout (the venv's editable install), so what runs is
# always the source as edited.
_OVSEG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_OVSEG_VENV=$(cd "${1:-$_OVSEG_ROOT/.venv}" && pwd)
export PATH="$_OVSEG_VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$_OVSEG_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
for _OVSEG_PREFIX in "$_OVSEG_ROOT"/install/*/; do
    _OVSEG_PREFIX=${_OVSEG_PREFIX%/}
    [ -f "$_OVSEG_PREFIX/share/$(basename "$_OVSEG_PREFIX")/package.xml" ] || continue
    export AMENT_PREFIX_PATH="$_OVSEG_PREFIX:$AMENT_PREFIX_PATH"
    export LD_LIBRARY_PATH="$_OVSEG_PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PYTHONPATH="$_OVSEG_PREFIX/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
done
# Fast DDS with a shared-memory segment that holds camera frames (config/fastdds_large_frames.xml);
# an explicitly set profile wins.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_OVSEG_ROOT/config/fastdds_large_frames.xml}"
unset _OVSEG_ROOT _OVSEG_VENV _OVSEG_PREFIX
