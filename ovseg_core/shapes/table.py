"""Markdown tables of ShapesWorld rows from ``training/shapes/eval_shapes.py`` reports:

    .venv/bin/python training/shapes/shapes_table.py "frozen=out/shapes/rows/frozen.json" \
        "SMART 1k=out/shapes/rows/smart_1k.json:runs/captions_smart_1k" ...

Each argument is LABEL=REPORT.json, optionally :RUN_DIR (a training run: its wall time is
read from metrics.csv). Prints, for each layout in the reports, one table with predicted
masks (every row followed by its chance row: the same masks with random labels) and one
with the oracle analysis (ground-truth masks; predicted masks with oracle classes).
Unseen things are reported alone, with the GT segments matched (TP / GT).

``--proposals`` prints one table for comparing mask generators and merge settings
instead (issue 13, section 3): per layout, thing recall (a proposal with IoU > 0.5),
small-thing recall (under 15 px across), things missed (in brackets: those whose best
proposal covers them together with a thing of their colour), things kept by the merge
(with oracle classes) and PQ all with oracle classes on the predicted masks (the mask
generator and the merge alone), then PQ all and PQ unseen things with predicted masks.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

PRED = "predicted masks"
CHANCE = ", random labels"
GROUPS = ("all", "things", "stuff", "seen things", "unseen things", "unseen stuff")


def run_wall_time(run_dir: Path) -> Optional[Tuple[int, float]]:
    """(steps, minutes) of a training run: mean logged step time x steps."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    steps = int(rows[-1]["step"])
    mean = sum(float(r["seconds"]) for r in rows) / len(rows)
    return steps, steps * mean / 60


def _pq(section: dict, key: str, group: str) -> str:
    cell = section[key][group]
    text = f"{cell['PQ']:.1f}"
    return text + (f" ({cell['TP']}/{cell['GT segments']})" if group == "unseen things" else "")


def _probe(report: dict, chance: bool = False) -> str:
    """The unseen-thing probe's hits (named right at IoU > 0.5) of its scenes, or its chance."""
    pr = report.get("unseen thing probe")
    if not pr:
        return "-"
    if chance:
        return f"{100 * pr['chance hit rate']:.1f}%"
    return f"{pr['hits']}/{pr['scenes']} ({100 * pr['hit rate']:.1f}%)"


def predicted_table(rows: List[Tuple[str, dict, str]], layout: str) -> List[str]:
    probe = layout == "standard"
    head = ["row"] + [f"PQ {g}" for g in GROUPS] + ["mIoU"] + (["unseen-thing probe"] if probe else []) + ["train"]
    lines = [f"**{layout}** layout, predicted masks (in brackets: unseen-thing GT segments matched / all)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, report, train in rows:
        s = report[layout]
        lines.append("| " + " | ".join([label] + [_pq(s, PRED, g) for g in GROUPS]
                                       + [f"{s[PRED]['all']['mIoU']:.1f}"] + ([_probe(report)] if probe else [])
                                       + [train]) + " |")
        lines.append("| " + " | ".join(["&nbsp;&nbsp;chance"] + [_pq(s, PRED + CHANCE, g) for g in GROUPS]
                                       + [f"{s[PRED + CHANCE]['all']['mIoU']:.1f}"]
                                       + ([_probe(report, chance=True)] if probe else []) + [""]) + " |")
    return lines


def oracle_table(rows: List[Tuple[str, dict, str]], layout: str) -> List[str]:
    head = ["row", "oracle masks PQ all", "oracle PQ unseen things", "chance", "shape right seen / unseen things",
            "color right seen / unseen", "oracle classes on predicted masks: PQ unseen things"]
    lines = [f"**{layout}** layout, oracle analysis (shape / color chance 16.7%)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, report, _ in rows:
        s = report[layout]
        acc = s["oracle segment accuracy"]
        lines.append("| " + " | ".join([
            label, f"{s['oracle masks']['all']['PQ']:.1f}", _pq(s, "oracle masks", "unseen things"),
            _pq(s, "oracle masks" + CHANCE, "unseen things"),
            f"{acc['seen thing shape']:.1f}% / {acc['unseen thing shape']:.1f}%",
            f"{acc['seen thing color']:.1f}% / {acc['unseen thing color']:.1f}%",
            _pq(s, "predicted masks, oracle classes", "unseen things")]) + " |")
    return lines


def proposals_table(rows: List[Tuple[str, dict, str]], layouts: List[str]) -> List[str]:
    cols = ("thing recall", "small things", "things missed (merged with one of its colour)",
            "things kept by the merge", "PQ all, oracle classes", "PQ all", "PQ unseen things")
    head = ["row"] + [f"{c} ({layout})" for layout in layouts for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, report, _ in rows:
        cells = [label]
        for layout in layouts:
            s = report[layout]
            recall, kept = s["proposal recall"], s.get("kept by the merge", {})
            small = (f"{recall['small things']:.1f}% (of {s['recall segments']['small things']})"
                     if "small things" in s.get("recall segments", {}) else "-")
            missed = s.get("missed things")
            missed = (f"{sum(missed.values())} ({missed['merged with a thing of its colour']})" if missed else "-")
            cells += [f"{recall['thing']:.1f}%", small, missed,
                      f"{kept['thing']:.1f}%" if kept else "-",
                      f"{s[PRED + ', oracle classes']['all']['PQ']:.1f}", f"{s[PRED]['all']['PQ']:.1f}",
                      _pq(s, PRED, "unseen things")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", nargs="+", metavar="LABEL=REPORT.json[:RUN_DIR]")
    p.add_argument("--proposals", action="store_true", help="one table of proposal recall, merge and PQ")
    args = p.parse_args(argv)
    rows = []
    for item in args.rows:
        label, sep, rest = item.partition("=")
        if not sep:
            p.error(f"{item!r}: expected LABEL=REPORT.json[:RUN_DIR]")
        path, _, run = rest.partition(":")
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError) as err:
            p.error(f"{path}: cannot read an eval_shapes report ({err})")
        timed = run_wall_time(Path(run)) if run else None
        rows.append((label, report, f"{timed[0]} it, {timed[1]:.0f} min" if timed else "-"))
    layouts = [layout for layout in ("standard", "variants") if all(layout in r for _, r, _ in rows)]
    if not layouts:
        p.error("the reports share no layout (re-run training/shapes/eval_shapes.py: older reports have none)")
    first = rows[0][1]
    print(f"scenes per layout: {first['scenes']}, seeds {first['seed']}...{first['seed'] + first['scenes'] - 1}\n")
    if args.proposals:
        print("\n".join(proposals_table(rows, layouts)))
        return 0
    for layout in layouts:
        print("\n".join(predicted_table(rows, layout)) + "\n")
    for layout in layouts:
        print("\n".join(oracle_table(rows, layout)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
