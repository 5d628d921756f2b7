"""ovseg finds its presets, model configs, weights and messages by one rule in every layout:
a checkout, a regular (non-editable) pip install, the ament index. The colcon workspace
layout is tested end to end in test_launch.py."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovseg_core.data_dir import find_data_dir
from source_tree import REPO, copy_source_tree

PROBE = ("import ovseg_core, ovseg_core.config as c, ovseg_ros.interfaces as i; "
         "print(ovseg_core.__file__); print(c.DATA_DIR); print(i.interface_dir()); "
         "print(c.load_preset('shapes').name)")


def clean_env(**extra):
    """No trace of this checkout: its install/ovseg off the ament index and PYTHONPATH."""
    env = dict(os.environ)
    for key in ("AMENT_PREFIX_PATH", "PYTHONPATH"):
        env[key] = os.pathsep.join(p for p in env.get(key, "").split(os.pathsep)
                                   if p and not p.startswith(str(REPO)))
    env.update(extra)
    return env


def run(code, cwd, env):
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout.split("\n"), done.stderr


def test_a_checkout_reads_its_own_config():
    assert find_data_dir("config/presets") == REPO
    assert find_data_dir("msg/PanopticResult.msg") == REPO


def test_a_pip_install_reads_the_copy_under_its_prefix(tmp_path):
    source = copy_source_tree(tmp_path / "src")
    prefix = tmp_path / "prefix"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--prefix", str(prefix), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    site = next(prefix.glob("lib/python3*/site-packages"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = run(PROBE, elsewhere, clean_env(PYTHONPATH=str(site)))
    assert code == 0, err
    share = prefix / "share" / "ovseg"
    assert out[:4] == [str(site / "ovseg_core" / "__init__.py"), str(share), str(share), "shapes"], out
    assert (share / "weights" / "shapes" / "clip.safetensors").is_file()


def _code_alone(tmp_path) -> Path:
    """The Python packages without anything beside them (as installed somewhere else)."""
    lib = tmp_path / "lib_elsewhere"
    for package in ("ovseg_core", "ovseg_ros"):
        shutil.copytree(REPO / package, lib / package, ignore=shutil.ignore_patterns("__pycache__"))
    return lib


def test_the_ament_index_serves_code_installed_apart_from_its_share(tmp_path):
    lib = _code_alone(tmp_path)
    prefix = tmp_path / "ament_prefix"
    share = prefix / "share" / "ovseg"
    for folder in ("config", "msg"):
        shutil.copytree(REPO / folder, share / folder)
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / "ovseg"
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    code, out, err = run(PROBE, tmp_path, clean_env(PYTHONPATH=str(lib), AMENT_PREFIX_PATH=str(prefix)))
    assert code == 0, err
    assert out[1:4] == [str(share), str(share), "shapes"], out


def test_nothing_found_names_every_place_it_looked(tmp_path):
    lib = _code_alone(tmp_path)
    code, out, err = run("import ovseg_core.config", tmp_path, clean_env(PYTHONPATH=str(lib), AMENT_PREFIX_PATH=""))
    assert code != 0
    message = err.strip().splitlines()[-1]
    assert message.startswith("FileNotFoundError: ovseg's shared files (config/presets) were not found")
    for place in (lib / "config" / "presets", tmp_path / "share" / "ovseg" / "config" / "presets",
                  Path(sys.prefix) / "share" / "ovseg" / "config" / "presets"):
        assert str(place) in message, message
    assert "source install/setup.bash" in message and "pip install ." in message
