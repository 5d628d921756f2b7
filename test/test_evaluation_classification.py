"""Mask classification accuracy on GT masks and the oracle classifier."""
import numpy as np
import pytest
import torch

from ovseg_core.evaluation import MaskAccuracy, OracleClassifier
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.segmenter import class_probabilities


def test_mask_accuracy_hand_worked():
    acc = MaskAccuracy(3).update([0, 0, 1, 1, 1], [0, 2, 1, 1, 0])
    acc += MaskAccuracy(3).update([0], [0])
    r = acc.summary(["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["mean_class_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)   # c has no masks
    assert r["per_class"]["c"] == {"accuracy": None, "masks": 0}
    assert r["num_masks"] == 6
    with pytest.raises(ValueError, match=r"GT classes must lie in \[0, 3\)"):
        MaskAccuracy(3).update([3], [0])


def test_oracle_classifier_takes_the_class_of_the_largest_overlap():
    # GT: segment 1 (class 2) on the left half, segment 2 (class 0) on the right, bottom row void.
    index = np.zeros((4, 8), np.int32)
    index[:3, :4], index[:3, 4:] = 1, 2
    masks = np.zeros((4, 4, 8), bool)
    masks[0, :3, :5] = True        # 12 px of segment 1, 3 of segment 2 -> class 2
    masks[1, :, 3:] = True         # 3 px of segment 1, 12 of segment 2 -> class 0
    masks[2, 3, :] = True          # only void -> void
    proposals = OracleProposals()([masks[:3]])
    oracle = OracleClassifier(num_classes=3)
    with pytest.raises(RuntimeError, match="set .targets"):
        oracle(None, proposals, None)
    oracle.targets = [(index, [2, 0])]
    probs = class_probabilities(oracle(None, proposals, None), proposals.objectness, 3)
    assert probs.argmax(-1).tolist() == [[2, 0, 3]]           # 3 = void
    assert torch.allclose(probs.max(-1).values, torch.ones(1, 3))


def test_oracle_classifier_resizes_targets_to_the_masks():
    index = np.kron(np.array([[1, 2], [0, 0]], np.int32), np.ones((8, 8), np.int32))    # 16x16
    masks = torch.zeros(1, 2, 4, 4)                 # proposals at a quarter of the resolution
    masks[0, 0, :2, 2:] = 1
    masks[0, 1, 2:, :] = 1
    from ovseg_core.structures import MaskProposals
    oracle = OracleClassifier(num_classes=2)
    oracle.targets = [(index, [1, 0])]
    logits = oracle(None, MaskProposals(masks * 40 - 20, torch.ones(1, 2)), None)
    assert logits.argmax(-1).tolist() == [[0, 2]]      # segment 2 (class 0); void


def test_oracle_classifier_on_an_image_without_segments():
    oracle = OracleClassifier(num_classes=2)
    oracle.targets = [(np.zeros((4, 4), np.int32), [])]
    proposals = OracleProposals()([np.zeros((0, 4, 4), bool)])
    assert oracle(None, proposals, None).argmax(-1).tolist() == [[2]]
