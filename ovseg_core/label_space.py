"""Fixed label ids for mapping stacks (the node's ``label_space`` file), and their export
as the label-space YAML and colormap CSV that Hydra and semantic_inference read.

Pure Python (no ROS): the node maps vocabulary classes to these ids, and
``ovseg labelspace export`` writes the mapper's files from the same file, so the ids on
the semantic image and in the mapper's configuration cannot drift apart.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from .vocabulary import Vocabulary

# Colours of the entries a label-space file does not colour (CSV export).
UNKNOWN_COLOR, VOID_COLOR = (128, 128, 128), (0, 0, 0)


@dataclass
class LabelSpace:
    """Fixed label ids (a YAML file) for mapping stacks: a class keeps its id whatever the
    vocabulary. File format::

        unknown_id: 0          # vocabulary classes not listed here
        void_id: 0             # pixels no segment covers (default: unknown_id)
        labels:
          - {name: car, id: 1, color: [0, 0, 142]}
          - {name: road, id: 7, color: [128, 64, 128]}
    """

    names: list
    ids: list
    colors: list
    unknown_id: int
    void_id: int

    @classmethod
    def load(cls, path) -> "LabelSpace":
        import yaml
        where = f"label space {path}"
        try:
            data = yaml.safe_load(open(path).read())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{where}: cannot read it: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list) or "unknown_id" not in data:
            raise ValueError(f"{where}: expected keys unknown_id and labels (a list of {{name, id, color}})")
        names, ids, colors = [], [], []
        for entry in data["labels"]:
            if not isinstance(entry, dict) or not {"name", "id"} <= set(entry):
                raise ValueError(f"{where}: every label needs name and id; got {entry!r}")
            color = entry.get("color", [255, 255, 255])
            if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
                raise ValueError(f"{where}: color of {entry['name']!r} must be three ints 0..255")
            names.append(str(entry["name"]))
            ids.append(entry["id"])
            colors.append(tuple(color))
        unknown, void = data["unknown_id"], data.get("void_id", data["unknown_id"])
        for value in ids + [unknown, void]:
            if not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"{where}: ids are integers 0..65535; got {value!r}")
        folded = [n.casefold() for n in names]
        if len(set(folded)) != len(folded) or len(set(ids)) != len(ids) or unknown in ids:
            raise ValueError(f"{where}: names and ids must be unique, and unknown_id ({unknown}) "
                             f"must not be a label's id")
        return cls(names, ids, colors, int(unknown), int(void))

    def class_ids(self, vocabulary: Vocabulary) -> np.ndarray:
        """Label id per vocabulary class: by class name, else by a synonym, else unknown."""
        by_name = {n.casefold(): i for n, i in zip(self.names, self.ids)}
        out = []
        for c in vocabulary.classes:
            match = [by_name[w.casefold()] for w in (c.name, *c.synonyms) if w.casefold() in by_name]
            out.append(match[0] if match else self.unknown_id)
        return np.asarray(out, np.int64)

    @property
    def wide(self) -> bool:
        return max(self.ids + [self.unknown_id, self.void_id]) > 255

    def entries(self) -> Dict[int, tuple]:
        """id -> (name, colour) of every value the semantic image can hold: the labels,
        ``unknown`` and ``void`` (one entry when they share an id)."""
        out = {i: (n, c) for n, i, c in zip(self.names, self.ids, self.colors)}
        out.setdefault(self.void_id, ("void", VOID_COLOR))
        out[self.unknown_id] = ("unknown", UNKNOWN_COLOR) if self.unknown_id != self.void_id else \
            ("unknown", VOID_COLOR)
        return out

    def ids_of(self, names: Sequence[str], option: str) -> List[int]:
        """Label ids of ``names`` (case-insensitive); ValueError naming the unknown ones."""
        by_name = {n.casefold(): i for n, i in zip(self.names, self.ids)}
        unknown = [n for n in names if n.casefold() not in by_name]
        if unknown:
            raise ValueError(f"{option}: {unknown} not in the label space; its labels are {self.names}")
        return sorted({by_name[n.casefold()] for n in names})


def missing_ids(space: LabelSpace) -> List[int]:
    """The ids between 0 and the largest id that no entry has (Hydra wants none)."""
    entries = space.entries()
    return [i for i in range(max(entries) + 1) if i not in entries]


class SparseIds(ValueError):
    """Label ids with gaps, which Hydra cannot take as they are."""


def _dense_entries(space: LabelSpace, fill_gaps: bool):
    """(entries for ids 0..N-1, the ids filled in). Hydra sizes each voxel's label histogram
    by ``total_semantic_labels`` and indexes it by id, so ids must be 0..N-1."""
    entries = space.entries()
    total = max(entries) + 1
    gaps = missing_ids(space)
    if gaps and not fill_gaps:
        shown = gaps if len(gaps) <= 12 else gaps[:12] + ["..."]
        raise SparseIds(f"label ids are sparse: {len(entries)} ids span 0..{total - 1}, missing {shown}; Hydra "
                        f"needs ids 0..N-1 (it sizes every voxel's label histogram by the largest id). "
                        f"Renumber the label space's ids (and unknown_id/void_id) to 0..{len(entries) - 1}, "
                        f"or pass --fill-gaps to list the missing ids as invalid placeholders "
                        f"(total_semantic_labels {total})")
    for i in gaps:
        entries[i] = (f"unused_{i}", VOID_COLOR)
    return dict(sorted(entries.items())), gaps


def hydra_label_space(space: LabelSpace, dynamic: Sequence[str] = (), objects: Sequence[str] = (),
                      surfaces: Sequence[str] = (), fill_gaps: bool = False) -> dict:
    """Hydra's label-space dictionary: ``total_semantic_labels``, ``dynamic_labels``,
    ``invalid_labels`` (void, and any filled gaps), ``object_labels`` (the classes Hydra
    turns into object nodes), ``surface_places_labels`` and ``label_names``. Sparse ids
    raise :class:`SparseIds` unless ``fill_gaps``."""
    entries, gaps = _dense_entries(space, fill_gaps)
    return {"total_semantic_labels": len(entries),
            "dynamic_labels": space.ids_of(dynamic, "--dynamic"),
            "invalid_labels": sorted({space.void_id, *gaps}),
            "object_labels": space.ids_of(objects, "--objects"),
            "surface_places_labels": space.ids_of(surfaces, "--surfaces"),
            "label_names": [{"label": i, "name": name} for i, (name, _) in entries.items()]}


def colormap_csv(space: LabelSpace, fill_gaps: bool = False) -> str:
    """The colormap CSV (``name,red,green,blue,alpha,id``) of semantic_inference and Hydra:
    one row per id 0..N-1, the label space's colours (unknown grey, void black)."""
    entries, _ = _dense_entries(space, fill_gaps)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "red", "green", "blue", "alpha", "id"])
    for i, (name, color) in entries.items():
        writer.writerow([name, *color, 255, i])
    return out.getvalue()


def export(space: LabelSpace, fmt: str, dynamic: Sequence[str] = (), objects: Sequence[str] = (),
           surfaces: Sequence[str] = (), fill_gaps: bool = False) -> str:
    """The text of ``fmt`` (``hydra``: label-space YAML, ``csv``: colormap)."""
    if fmt == "csv":
        return colormap_csv(space, fill_gaps)
    if fmt != "hydra":
        raise ValueError(f"format {fmt!r}: choose hydra or csv")
    import yaml
    data = hydra_label_space(space, dynamic, objects, surfaces, fill_gaps)
    names = data.pop("label_names")
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    rows = "".join(f"  - {{label: {e['label']}, name: {_yaml_name(e['name'])}}}\n" for e in names)
    return "---\n" + text + "label_names:\n" + rows


def _yaml_name(name: str) -> str:
    """The name plain when YAML reads it back as that string (``road``), else quoted
    (``"yes"``, ``"a: b"``)."""
    import json
    import yaml
    try:
        if yaml.safe_load(f"{{name: {name}}}") == {"name": name}:
            return name
    except yaml.YAMLError:
        pass
    return json.dumps(name)
