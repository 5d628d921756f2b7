"""Point the ROS 2 wheels' exported CMake targets at this interpreter's include folders.

The PyPI `ros-*` wheels were built in a manylinux image, and their
`*__rosidl_generator_pyExport.cmake` files name that image's Python and numpy include
folders (/opt/python/cp311-cp311/...). CMake refuses targets whose include folders do not
exist, so `colcon build` of our interfaces fails. Instead of symlinking those paths (root
only), rewrite them inside the venv, which we own. Idempotent.
"""
import glob
import os
import sys
import sysconfig

import numpy

BUILD_PREFIX = "/opt/python/cp311-cp311"


def main(prefix: str = sys.prefix) -> int:
    replacements = {
        f"{BUILD_PREFIX}/include/python3.11": sysconfig.get_paths()["include"],
        f"{BUILD_PREFIX}/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    }
    changed = 0
    for path in glob.glob(os.path.join(prefix, "share", "*", "cmake", "*.cmake")):
        with open(path) as f:
            text = f.read()
        if BUILD_PREFIX not in text:
            continue
        for old, new in replacements.items():
            text = text.replace(old, new)
        with open(path, "w") as f:
            f.write(text)
        changed += 1
    print(f"fix_ros_wheels: rewrote {changed} CMake export file(s) under {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
