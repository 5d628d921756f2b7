"""A copy of this checkout as a user gets it (tracked files and new files git does not
ignore; no venv, no build outputs), for tests of the install layouts."""
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def copy_source_tree(dst: Path) -> Path:
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            (dst / name).write_bytes(src.read_bytes())
    return dst
