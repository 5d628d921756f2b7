"""`ovseg train` and `ovseg evaluate` are subcommands of `ovseg` beside `ovseg segment`:
they reach the trainer's and the benchmark runner's own command lines, and the scripts
in training/ (what torchrun launches) are the same commands."""
import subprocess
import sys
from pathlib import Path

from ovseg_core.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "ovseg_core.cli", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert all(name in out for name in ("segment", "train", "evaluate", "params", "labelspace"))


def test_train_reaches_the_trainer_and_names_a_bad_recipe(tmp_path, capsys):
    assert main(["train", "--config", "no_such_recipe", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_recipe" in err and "shapes_smart" in err   # the known recipes are offered


def test_evaluate_reaches_the_runner_and_names_the_layout(tmp_path, capsys):
    assert main(["evaluate", "--dataset", "mapillary_vistas_v1.2", "--root", str(tmp_path), "--preset", "tiny"]) == 2
    assert "Expected layout" in capsys.readouterr().err


def test_subcommand_help_is_the_delegated_parser(capsys):
    try:
        main(["train", "--help"])
    except SystemExit as done:
        assert done.code == 0
    assert capsys.readouterr().out.startswith("usage: ovseg train")


def test_the_training_scripts_are_the_same_commands():
    for script, prog in (("training/train.py", "train.py"), ("training/evaluate.py", "evaluate.py"),
                         ("training/shapes/eval_shapes.py", "eval_shapes.py")):
        run = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT,
                             timeout=120)
        assert run.returncode == 0 and run.stdout.startswith(f"usage: {prog}"), (script, run.stderr[-500:])
