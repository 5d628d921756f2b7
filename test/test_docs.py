"""The README and docs/ as a newcomer reads them: their links resolve, the files their
commands name exist, the library example runs, and docs/ros.md lists every topic,
service, parameter and launch argument the code declares (read with ast: no rclpy)."""
import ast
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
ROS_PAGE = ROOT / "docs" / "ros.md"
# Top-level folders of the repository: a path in a command that starts with one of them
# names a repository file (out/, runs/ and the like are written by the commands).
REPO_DIRS = ("assets", "bench", "config", "docs", "launch", "msg", "ovseg_core", "ovseg_ros",
             "srv", "test", "tools", "training", "weights")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
PATH_TOKEN = re.compile(r"(?:^|[\s=\"'(:])(src/ovseg/[\w./-]+|(?:%s)/[\w./-]*)" % "|".join(REPO_DIRS))
MODULE = re.compile(r"python3? -m ((?:ovseg_core|ovseg_ros)[\w.]*)")


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set:
    text = FENCE.sub("", page.read_text())
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _relative_links(page: Path):
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)   # inline code is not a link
    for target in LINK.findall(text):
        if not re.match(r"^[a-z]+:", target):
            yield target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_command_names_exists(page):
    missing = []
    for block in FENCE.findall(page.read_text()):
        for token in PATH_TOKEN.findall(block):
            token = token.rstrip(".,:;)'\"")
            if token.startswith("src/ovseg/"):   # a robot workspace's clone of this repository
                token = token[len("src/ovseg/"):]
            if any(c in token for c in "$*<>[]") or "..." in token or "NAME" in token:
                continue
            if not (ROOT / token).exists():
                missing.append(token)
        for module in MODULE.findall(block):
            base = ROOT / module.replace(".", "/")
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                missing.append(f"-m {module}")
    assert not missing, f"{page.name} names files that do not exist: {sorted(set(missing))}"


def test_the_readme_is_a_guide_and_free_of_issue_numbers():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 400
    pages = [ROOT / "README.md"] + [p for p in (ROOT / "docs").rglob("*.md") if "experiments" not in p.parts]
    found = [f"{p.name}: {m.group(0)}" for p in pages for m in re.finditer(r"\bissues? \d+", p.read_text(), re.I)]
    assert not found, found


def test_every_experiment_opens_with_date_question_answer_and_models():
    studies = sorted((ROOT / "docs" / "experiments").glob("*.md"))
    assert studies
    for study in studies:
        head = study.read_text().split("\n\n", 3)[:3]
        fields = re.findall(r"^- \*\*(\w+)\*\*:", "\n".join(head), re.M)
        assert fields == ["Date", "Question", "Answer", "Models"], (study.name, fields)


def test_the_readme_library_example_runs(monkeypatch, capsys, tmp_path):
    code = re.search(r"## Using the library\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert code, "README.md has no python example under 'Using the library'"
    script = tmp_path / "readme_example.py"
    script.write_text(code.group(1))
    monkeypatch.chdir(ROOT)
    namespace = runpy.run_path(str(script))
    result, results = namespace["result"], namespace["results"]
    assert result.segment_map.shape == (240, 320) == result.semantic_map.shape
    assert len(results) == 2
    assert "(240, 320) (240, 320) 2" in capsys.readouterr().out


# --- docs/ros.md against the code ---------------------------------------------------------

def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _node_parameters() -> set:
    tree = _tree(ROOT / "ovseg_ros" / "node.py")
    (table,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", None) == "PARAMETERS"]
    return {k.value for k in table.keys}


def _launch_arguments() -> set:
    tree = _tree(ROOT / "launch" / "ovseg.launch.py")
    (mapper,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", None) == "MAPPER_ARGUMENTS"]
    return {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == "DeclareLaunchArgument"
            and isinstance(n.args[0], ast.Constant)} | set(ast.literal_eval(mapper))


def _node_topics() -> set:
    """Constant topic and service names of node.py's create_publisher/subscription/service
    calls, and the per-camera output kinds as ~/NAME/KIND."""
    tree = _tree(ROOT / "ovseg_ros" / "node.py")
    names = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") in (
                "create_publisher", "create_subscription", "create_service"):
            if len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
                names.add(call.args[1].value)
    source = (ROOT / "ovseg_ros" / "node.py").read_text()
    kinds = re.search(r"for kind in \(([^)]*)\)", source).group(1)
    names |= {f"~/NAME/{k}" for k in ast.literal_eval(f"({kinds})")}
    mapping = _tree(ROOT / "ovseg_ros" / "mapping.py")
    (mapper_outputs,) = [n.value for n in mapping.body if isinstance(n, ast.Assign)
                         and getattr(n.targets[0], "id", None) == "MAPPER_OUTPUTS"]
    return names | {f"~/NAME/{k}" for k in ast.literal_eval(mapper_outputs)}


def _table_names(text: str) -> set:
    return set(re.findall(r"^\| `([^`]+)` \|", text, re.M))


def test_ros_page_lists_every_parameter():
    text = ROS_PAGE.read_text()
    section = text.split("## Parameters", 1)[1].split("\n## ", 1)[0]
    assert _table_names(section) == _node_parameters()


def test_ros_page_lists_every_launch_argument():
    text = ROS_PAGE.read_text()
    section = text.split("## Launch arguments", 1)[1].split("\n## ", 1)[0]
    assert _table_names(section) == _launch_arguments()


def test_ros_page_lists_every_topic_and_service():
    text = ROS_PAGE.read_text()
    section = text.split("## Topics and services", 1)[1].split("\n## ", 1)[0]
    topics = _node_topics()
    assert {"~/status", "~/set_vocabulary", "~/NAME/panoptic"} <= topics   # the parser found them
    assert topics <= _table_names(section), topics - _table_names(section)


def test_the_ros_page_robot_commands_match_the_readme():
    """One deployment recipe: the README's robot block is the ros.md one."""
    def robot_block(text, heading):
        return FENCE.findall(text.split(heading, 1)[1])[0]
    readme = robot_block((ROOT / "README.md").read_text(), "### On a robot")
    ros = robot_block(ROS_PAGE.read_text(), "## Robot deployment")
    assert readme == ros and "colcon build --packages-select ovseg" in ros
