"""training/eval_shapes.py: the report the README's ShapesWorld numbers come from."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
import eval_shapes  # noqa: E402

from ovseg_core.config import DATA_DIR  # noqa: E402


def _run(tmp_path, *extra):
    out = tmp_path / "eval.json"
    eval_shapes.main(["--num", "2", "--seed", "900000", "--threads", "1", "--out", str(out), *extra])
    return json.loads(out.read_text())


def test_eval_shapes_scores_another_clip_checkpoint(tmp_path, capsys):
    """--clip-weights swaps the CLIP the preset names (a training run's checkpoint) and the
    report says which one it scored; a CLIP with scrambled weights scores differently."""
    shipped = _run(tmp_path)
    assert shipped["clip weights"] == "the preset's"
    for key in ("predicted masks", "oracle masks"):
        assert set(shipped[key]) == {"seen", "unseen", "all"}
    state = load_file(str(DATA_DIR / "weights" / "shapes" / "clip.safetensors"))
    torch.manual_seed(0)
    key = "visual.proj"
    state[key] = state[key][:, torch.randperm(state[key].shape[1])]  # the image embedding scrambled
    other = tmp_path / "scrambled.safetensors"
    save_file(state, str(other))
    scrambled = _run(tmp_path, "--clip-weights", str(other), "--clip-input-size", "160")
    assert scrambled["clip weights"] == str(other) and scrambled["clip input size"] == 160
    assert scrambled["oracle segment accuracy"] != shipped["oracle segment accuracy"]
    assert "oracle segment accuracy" in capsys.readouterr().out
