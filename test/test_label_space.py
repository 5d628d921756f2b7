"""`ovseg labelspace export`: the Hydra label-space YAML and colormap CSV, parsed back with
the field names Hydra and semantic_inference read."""
import csv
import re

import pytest
import yaml

from ovseg_core.cli import main
from ovseg_core.label_space import LabelSpace
from ovseg_ros.convert import LabelSpace as NodeLabelSpace

DENSE = """unknown_id: 0
void_id: 5
labels:
  - {name: road, id: 1, color: [128, 64, 128]}
  - {name: person, id: 2, color: [220, 20, 60]}
  - {name: car, id: 3, color: [0, 0, 142]}
  - {name: traffic light, id: 4, color: [250, 170, 30]}
"""


def _export(tmp_path, text, *options):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    out = tmp_path / "out" / "file"
    return main(["labelspace", "export", str(space), "--out", str(out), *options]), out


def test_hydra_yaml_lists_every_id_with_void_invalid_and_the_chosen_dynamic_and_object_labels(tmp_path):
    rc, out = _export(tmp_path, DENSE, "--format", "hydra", "--dynamic", "person, car",
                      "--objects", "car,person,traffic light", "--surfaces", "road")
    assert rc == 0
    data = yaml.safe_load(out.read_text())
    assert data["total_semantic_labels"] == 6
    assert data["label_names"] == [{"label": 0, "name": "unknown"}, {"label": 1, "name": "road"},
                                   {"label": 2, "name": "person"}, {"label": 3, "name": "car"},
                                   {"label": 4, "name": "traffic light"}, {"label": 5, "name": "void"}]
    assert data["invalid_labels"] == [5] and data["dynamic_labels"] == [2, 3]
    assert data["object_labels"] == [2, 3, 4] and data["surface_places_labels"] == [1]


def test_colormap_csv_has_one_row_per_id_with_the_label_space_colours(tmp_path, capsys):
    rc, out = _export(tmp_path, DENSE, "--format", "csv")
    assert rc == 0 and "warning" not in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["name", "red", "green", "blue", "alpha", "id"]
    assert [int(r["id"]) for r in rows] == list(range(6))
    car = next(r for r in rows if r["name"] == "car")
    assert (car["red"], car["green"], car["blue"], car["alpha"], car["id"]) == ("0", "0", "142", "255", "3")
    assert rows[5]["name"] == "void" and rows[0]["name"] == "unknown"


def test_sparse_ids_are_refused_unless_gaps_are_filled_as_invalid(tmp_path, capsys):
    sparse = DENSE.replace("void_id: 5", "void_id: 255").replace("id: 4,", "id: 9,")
    rc, out = _export(tmp_path, sparse, "--format", "hydra")
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "sparse" in err and "missing [4, 5, 6, 7, 8, 10," in err and "--fill-gaps" in err and "0..5" in err
    rc, out = _export(tmp_path, sparse, "--format", "hydra", "--fill-gaps")
    assert rc == 0 and "warning: 250 unused ids" in capsys.readouterr().err
    data = yaml.safe_load(out.read_text())
    assert data["total_semantic_labels"] == 256 == len(data["label_names"])
    assert data["invalid_labels"] == [4, 5, 6, 7, 8] + list(range(10, 256))
    assert data["label_names"][9] == {"label": 9, "name": "traffic light"}
    assert data["label_names"][7] == {"label": 7, "name": "unused_7"}


@pytest.mark.parametrize("options, words", [(["--dynamic", "dragon"], "--dynamic: \\['dragon'\\] not in"),
                                            (["--format", "xml"], None)])
def test_unknown_names_and_formats_are_refused(tmp_path, capsys, options, words):
    base = ["--format", "hydra"] if "--format" not in options else []
    if words is None:
        with pytest.raises(SystemExit):
            _export(tmp_path, DENSE, *base, *options)
        assert "invalid choice: 'xml'" in capsys.readouterr().err
        return
    rc, out = _export(tmp_path, DENSE, *base, *options)
    assert rc == 2 and not out.exists()
    assert re.search(words, capsys.readouterr().err)


def test_names_yaml_would_misread_are_quoted(tmp_path, capsys):
    rc, out = _export(tmp_path, DENSE.replace("traffic light", "'yes'").replace("name: car", "name: 'a: b'"),
                      "--format", "hydra")
    assert rc == 0 and "no --objects" in capsys.readouterr().err
    names = [e["name"] for e in yaml.safe_load(out.read_text())["label_names"]]
    assert names == ["unknown", "road", "person", "a: b", "yes", "void"]


def test_the_node_reads_the_same_label_space_class():
    assert NodeLabelSpace is LabelSpace


def test_the_shipped_hydra_label_space_exports_without_gaps(tmp_path, capsys):
    """config/label_space_hydra.yaml is the example label space renumbered for Hydra."""
    from pathlib import Path
    shipped = Path(__file__).resolve().parent.parent / "config" / "label_space_hydra.yaml"
    rc, out = _export(tmp_path, shipped.read_text(), "--format", "hydra", "--objects", "person,car,bicycle")
    assert rc == 0 and "warning" not in capsys.readouterr().err
    data = yaml.safe_load(out.read_text())
    space = LabelSpace.load(shipped)
    assert data["total_semantic_labels"] == len(space.ids) + 2          # + unknown and void
    assert data["invalid_labels"] == [space.void_id]
