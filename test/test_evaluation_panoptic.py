"""Panoptic Quality: hand-worked cases for each of panopticapi's rules, random cases
against the panopticapi-equivalent loop of ovseg_core.evaluation.reference, and the CLI."""
import json
from pathlib import Path

import numpy as np
import pytest

from ovseg_core.evaluation import reference
from ovseg_core.evaluation.panoptic import PQStat, main, pq_compute, pq_image


NAMES = ["car", "road", "sky"]
THING = [True, False, False]


def pq(gt, gt_segments, pred, pred_segments, num=3):
    gt_segments = [dict({"iscrowd": 0}, **s) for s in gt_segments]
    return pq_image(np.array([gt]), gt_segments, np.array([pred]), pred_segments, num).summary(NAMES[:num], THING[:num])


def seg(i, c, **kw):
    return {"id": i, "category_id": c, **kw}


def test_union_leaves_out_predicted_pixels_on_void():
    # GT segment 1 (6 px) + 4 void px; prediction 5 covers it and 2 void px:
    # union = 8 + 6 - 6 - 2 = 6 -> IoU 1 (0.75 without the void rule).
    r = pq([1] * 6 + [0] * 4, [seg(1, 0)], [5] * 8 + [7] * 2, [seg(5, 0), seg(7, 1)])
    assert r["per_class"]["car"]["tp"] == 1 and r["per_class"]["car"]["pq"] == pytest.approx(1.0)
    # 7 lies only on void: not a false positive, so "road" does not count at all
    assert not r["per_class"]["road"]["present"]
    assert r["All"] == {"pq": pytest.approx(1.0), "sq": pytest.approx(1.0), "rq": pytest.approx(1.0), "n": 1}


def test_iou_must_exceed_half():
    # pair (1,5): 2 / (2 + 4 - 2) = 0.5 -> no match; pair (2,6): 4 / 6 -> match.
    r = pq([1] * 4 + [2] * 4, [seg(1, 0), seg(2, 0)], [5] * 2 + [6] * 6, [seg(5, 0), seg(6, 0)])
    car = r["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 1, 1)
    assert car["sq"] == pytest.approx(2 / 3)
    assert car["rq"] == pytest.approx(0.5)
    assert car["pq"] == pytest.approx(1 / 3)


def test_crowd_of_the_same_category_absorbs_predictions():
    gt = [1, 1, 1, 1, 2, 2, 2, 2, 0, 0]          # 1: car crowd, 2: road
    pred = [5, 5, 5, 6, 6, 6, 6, 6, 5, 7]
    # 5 (car): 3 px on car crowd + 1 on void -> ignored; 6 (road): IoU 4/5; 7: all void.
    r = pq(gt, [seg(1, 0, iscrowd=1), seg(2, 1)], pred, [seg(5, 0), seg(6, 1), seg(7, 1)])
    assert r["per_class"]["road"]["pq"] == pytest.approx(0.8)
    assert not r["per_class"]["car"]["present"]            # a crowd region is never a false negative
    assert r["All"]["n"] == 1
    # The same prediction labelled road lies on another category's crowd: a false positive.
    r = pq(gt, [seg(1, 0, iscrowd=1), seg(2, 1)], pred, [seg(5, 1), seg(6, 1), seg(7, 1)])
    road = r["per_class"]["road"]
    assert (road["tp"], road["fp"], road["fn"]) == (1, 1, 0)
    assert road["pq"] == pytest.approx(0.8 / 1.5)
    assert road["rq"] == pytest.approx(1 / 1.5)


def test_crowd_segments_are_never_matched():
    r = pq([1] * 4, [seg(1, 0, iscrowd=1)], [5] * 4, [seg(5, 0)])
    assert r["All"]["n"] == 0          # the prediction lies wholly on a same-category crowd region


def test_more_than_half_on_void_is_not_a_false_positive():
    # Exactly half on void is still a false positive ...
    r = pq([0, 0, 1, 1, 1, 1], [seg(1, 0)], [5, 5, 5, 5, 6, 6], [seg(5, 1), seg(6, 0)])
    car, road = r["per_class"]["car"], r["per_class"]["road"]
    assert (car["tp"], car["fp"], car["fn"]) == (0, 1, 1)       # (1,6): IoU 2/4, not > 0.5
    assert (road["tp"], road["fp"], road["fn"]) == (0, 1, 0)
    assert r["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
    # ... three quarters is not.
    r = pq([0, 0, 0, 1, 1, 1], [seg(1, 0)], [5, 5, 5, 5, 6, 6], [seg(5, 1), seg(6, 0)])
    assert not r["per_class"]["road"]["present"]
    assert r["per_class"]["car"]["tp"] == 1 and r["per_class"]["car"]["sq"] == pytest.approx(2 / 3)


def test_empty_prediction():
    r = pq([1, 1, 2, 2, 0], [seg(1, 0), seg(2, 1)], [0] * 5, [])
    assert r["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
    assert r["Things"]["n"] == 1 and r["Stuff"]["n"] == 1
    assert r["per_class"]["car"]["fn"] == 1


def test_empty_image_and_empty_groups():
    r = pq([0, 0], [], [0, 0], [])
    for group in ("All", "Things", "Stuff"):
        assert r[group] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_category_missing_from_one_side_counts_absent_from_both_does_not():
    # car perfect; sky only predicted (a false positive, PQ 0); road in neither.
    r = pq([1, 1, 1, 0], [seg(1, 0)], [5, 5, 5, 6], [seg(5, 0), seg(6, 2)])
    # 6 lies on void: ignored. Put it on GT instead:
    assert r["All"]["n"] == 1
    r = pq([1, 1, 1, 1], [seg(1, 0)], [5, 5, 5, 6], [seg(5, 0), seg(6, 2)])
    assert r["per_class"]["sky"]["fp"] == 1 and r["per_class"]["sky"]["present"]
    assert not r["per_class"]["road"]["present"]
    assert r["All"]["n"] == 2 and r["All"]["pq"] == pytest.approx(0.75 / 2)
    assert r["Things"] == {"pq": pytest.approx(0.75), "sq": pytest.approx(0.75), "rq": pytest.approx(1.0), "n": 1}
    assert r["Stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}


def test_gt_area_must_agree_with_the_map():
    # panopticapi takes the GT area from the JSON; one that disagrees with the map would
    # give IoU > 1 (area 0: PQ inf), so it is refused, naming the segment.
    r = pq([1] * 4, [seg(1, 0, area=4)], [5] * 4, [seg(5, 0)])
    assert r["per_class"]["car"]["tp"] == 1
    for area in (8, 2, 0):
        with pytest.raises(ValueError, match=f"GT segment 1 has area {area} in segments_info but 4 pixels"):
            pq([1] * 4, [seg(1, 0, area=area)], [5] * 4, [seg(5, 0)])


def test_ids_not_listed():
    # An unlisted GT id is neither void nor matchable (panopticapi skips its pairs).
    r = pq([9, 9, 1, 1], [seg(1, 0)], [5, 5, 5, 5], [seg(5, 0)])
    assert r["per_class"]["car"]["tp"] == 0 and r["per_class"]["car"]["fp"] == 1
    with pytest.raises(ValueError, match=r"predicted ids \[6\] are in the PNG but not in segments_info"):
        pq([1, 1], [seg(1, 0)], [5, 6], [seg(5, 0)])
    with pytest.raises(ValueError, match=r"predicted ids \[7\] are in segments_info but not in the PNG"):
        pq([1, 1], [seg(1, 0)], [5, 5], [seg(5, 0), seg(7, 0)])
    with pytest.raises(ValueError, match="outside"):
        pq([1, 1], [seg(1, 0)], [5, 5], [seg(5, 3)])
    with pytest.raises(ValueError, match="differ in size"):
        pq_image(np.zeros((2, 2)), [], np.zeros((2, 3)), [], 3)


def test_stats_add_up():
    a = pq_image(np.array([[1, 1, 0]]), [seg(1, 0, iscrowd=0)], np.array([[5, 5, 5]]), [seg(5, 0)], 3)
    b = pq_image(np.array([[2, 2]]), [seg(2, 1, iscrowd=0)], np.array([[0, 0]]), [], 3)
    total = PQStat(3)
    total += a
    total += b
    np.testing.assert_array_equal(total.sums, a.sums + b.sums)
    assert (a + b).sums.tolist() == total.sums.tolist()


@pytest.mark.parametrize("seed", range(40))
def test_random_images_equal_the_reference_loop(seed):
    rng = np.random.default_rng(seed)
    gt, gt_segments, pred, pred_segments = reference.make_case(
        rng, int(rng.integers(8, 60)), int(rng.integers(8, 60)), 4, num_segments=int(rng.integers(1, 16)), cell=4)
    ours = pq_image(gt, gt_segments, pred, pred_segments, 4).sums
    ref = reference.reference_pq_image(gt, gt_segments, pred, pred_segments, set(range(4)))
    expected = np.array([ref.get(c, [0.0, 0, 0, 0]) for c in range(4)], np.float64)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_cli_on_files_equals_reference(tmp_path, capsys):
    gt_json, gt_dir, pred_json, pred_dir, cats = reference.write_dataset(tmp_path, 6, 40, 56, num_categories=6)
    expected = PQStat(len(cats), reference.reference_pq_compute(gt_json, gt_dir, pred_json, pred_dir)).summary(
        [c["name"] for c in cats], [bool(c["isthing"]) for c in cats])
    out = tmp_path / "pq.json"
    assert main(["--gt-json", gt_json, "--gt-dir", gt_dir, "--pred-json", pred_json, "--pred-dir", pred_dir,
                 "--json-out", str(out), "--workers", "2"]) == 0
    got = json.loads(out.read_text())
    assert set(got) == {"All", "Things", "Stuff", "per_class"}
    for group in ("All", "Things", "Stuff"):
        assert set(got[group]) == {"pq", "sq", "rq", "n"}
        for k in ("pq", "sq", "rq", "n"):
            assert got[group][k] == pytest.approx(expected[group][k], abs=1e-12)
    assert got["All"]["n"] > 0 and 0 < got["All"]["pq"] < 1
    printed = capsys.readouterr().out
    assert "All" in printed and f"{100 * expected['All']['pq']:.1f}" in printed
    # one worker and two give identical numbers (images are summed in order)
    single = pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=1, progress=False)
    assert single == got


def test_cli_errors(tmp_path, capsys):
    gt_json, gt_dir, pred_json, pred_dir, _ = reference.write_dataset(tmp_path, 2, 16, 16, num_categories=3)
    data = json.loads(Path(pred_json).read_text())
    data["annotations"] = data["annotations"][:1]
    Path(pred_json).write_text(json.dumps(data))
    assert main(["--gt-json", gt_json, "--gt-dir", gt_dir, "--pred-json", pred_json, "--pred-dir", pred_dir,
                 "--workers", "1"]) == 2
    assert "no prediction for the image with id 1" in capsys.readouterr().err
    assert main(["--gt-json", str(tmp_path / "no.json"), "--gt-dir", gt_dir, "--pred-json", pred_json,
                 "--pred-dir", pred_dir]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--gt-json", gt_json, "--gt-dir", str(tmp_path / "nope"), "--pred-json", pred_json,
              "--pred-dir", pred_dir])
