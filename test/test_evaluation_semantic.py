"""mIoU / fwIoU / accuracies with detectron2's SemSegEvaluator rules, worked by hand."""
import numpy as np
import pytest

from ovseg_core.evaluation import SemanticStat

NAMES = ["wall", "floor", "car", "tree"]
GT = np.array([[0, 0, 0, 0, 1, 1, 255, 255]])
PRED = np.array([[0, 0, 1, 3, 1, 1, 2, 0]])


def test_hand_worked_case():
    # Valid pixels: (pred, gt) = (0,0) x2, (1,0), (3,0), (1,1) x2; the last two are ignored.
    # IoU wall = 2 / (4 + 2 - 2) = 1/2, floor = 2 / (2 + 3 - 2) = 2/3; car (predicted only
    # on an ignored pixel) and tree (predicted, absent from the GT) are left out of the mean.
    r = SemanticStat(4).update(PRED, GT).summary(NAMES)
    assert r["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["fwIoU"] == pytest.approx(1 / 2 * 4 / 6 + 2 / 3 * 2 / 6)
    assert r["pACC"] == pytest.approx(4 / 6)
    assert r["mACC"] == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert r["per_class"]["car"] == {"iou": None, "acc": None, "gt_pixels": 0}
    assert r["per_class"]["tree"]["iou"] is None
    assert r["per_class"]["floor"]["iou"] == pytest.approx(2 / 3)


def test_seen_unseen_split():
    r = SemanticStat(4).update(PRED, GT).summary(NAMES, seen=[True, False, False, False])
    assert r["mIoU_seen"] == pytest.approx(1 / 2)
    assert r["mIoU_unseen"] == pytest.approx(2 / 3)         # floor; car and tree absent from the GT
    assert r["hIoU"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert (r["num_seen"], r["num_unseen"]) == (1, 3)
    r = SemanticStat(4).update(PRED, GT).summary(NAMES, seen=[False, False, True, False])
    assert r["mIoU_seen"] is None and r["hIoU"] is None


def test_images_merge_exactly():
    halves = SemanticStat(4).update(PRED[:, :4], GT[:, :4])
    halves += SemanticStat(4).update(PRED[:, 4:], GT[:, 4:])
    np.testing.assert_array_equal(halves.matrix, SemanticStat(4).update(PRED, GT).matrix)


def test_all_ignored_gives_no_numbers():
    r = SemanticStat(2).update(np.zeros((2, 2)), np.full((2, 2), 255)).summary(["a", "b"])
    assert r["mIoU"] is None and r["pACC"] is None


def test_bad_input():
    with pytest.raises(ValueError, match=r"GT labels \[7\]"):
        SemanticStat(4).update(np.zeros((1, 2)), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="predicted labels must lie in"):
        SemanticStat(4).update(np.array([[0, 4]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="differ in size"):
        SemanticStat(4).update(np.zeros((1, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="ignore label 3 is one of the 4 classes"):
        SemanticStat(4, ignore_label=3)
    with pytest.raises(ValueError, match="one flag per class"):
        SemanticStat(4).summary(NAMES, seen=[True])
    with pytest.raises(ValueError, match="4 classes but 2 names"):
        SemanticStat(4).summary(["a", "b"])
