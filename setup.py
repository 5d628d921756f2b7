"""pip-installable core library and CLI. The ROS package builds with colcon (see README)."""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="ovseg",
    version="0.1.0",
    description="Open-vocabulary panoptic segmentation (SMART/FISA, Mask-Adapter) for robots",
    packages=find_packages(include=["ovseg_core", "ovseg_core.*"]),
    python_requires=">=3.10",
    install_requires=[
        # torch/torchvision: install the pair first (see the Makefile); not pinned here so
        # a CUDA machine keeps the build that matches its driver.
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
    ],
    extras_require={
        "train": ["tensorboard"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["ovseg=ovseg_core.cli:main"]},
    # Presets and model configs live in the repository's config/; a regular install copies
    # them to <prefix>/share/ovseg/config, where ovseg_core.config looks second.
    data_files=[("share/ovseg/config/presets", glob("config/presets/*.yaml")),
                ("share/ovseg/config/clip", glob("config/clip/*.json"))],
)
