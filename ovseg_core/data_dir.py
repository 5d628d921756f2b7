"""Where ovseg's shared files (config/, weights/, msg/) are, however ovseg was installed.

One rule for every layout, first match wins:
1. beside the code that runs: a source checkout (``ovseg_core/../config``), or the prefix
   the code was installed into (``<prefix>/lib/pythonX.Y/site-packages/ovseg_core`` ->
   ``<prefix>/share/ovseg``), which is where both ``pip install .`` (data_files) and a
   colcon workspace (``install(DIRECTORY ... share/ovseg)``) put them;
2. the package's share directory in the ament index (``AMENT_PREFIX_PATH``), for a colcon
   install whose Python packages live elsewhere;
3. ``<sys.prefix>/share/ovseg``.
The files that belong to the running code come first, so a copy installed in one place
never reads another copy's presets.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

PACKAGE = "ovseg"


def candidates() -> List[Tuple[Path, str]]:
    """Every place the rule looks, in order, each with a word on which layout it serves."""
    code = Path(__file__).resolve().parent
    found = [(code.parent, "source checkout")]
    # site-packages -> pythonX.Y -> lib -> prefix (dist-packages and lib64 alike)
    found += [(ancestor / "share" / PACKAGE, "installed prefix") for ancestor in code.parents[1:4]]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        pass
    else:
        try:
            found.append((Path(get_package_share_directory(PACKAGE)), "ament index"))
        except (PackageNotFoundError, OSError):   # OSError: AMENT_PREFIX_PATH unset
            pass
    found.append((Path(sys.prefix) / "share" / PACKAGE, "sys.prefix"))
    unique, seen = [], set()
    for path, why in found:
        if path not in seen:
            seen.add(path)
            unique.append((path, why))
    return unique


def find_data_dir(marker: str) -> Path:
    """The first candidate holding ``marker`` (a relative path such as ``config/presets``)."""
    looked = candidates()
    for path, _ in looked:
        if (path / marker).exists():
            return path
    places = "; ".join(f"{path / marker} ({why})" for path, why in looked)
    ament = "" if any(why == "ament index" for _, why in looked) else (
        " The ament index has no 'ovseg' package (is the workspace sourced: `source install/setup.bash`?).")
    raise FileNotFoundError(
        f"ovseg's shared files ({marker}) were not found. Looked in: {places}.{ament} Build the workspace "
        f"with `colcon build` and source it, install with `pip install .`, or run from a checkout.")
