"""The papers' measuring instruments: Panoptic Quality (panopticapi's rules), mIoU
(detectron2's SemSegEvaluator), mask classification accuracy and the oracle analysis.

Every statistic is a plain array that adds up (per-class sums, confusion matrices), so
shards of a split evaluated in other processes or machines merge to exactly the numbers
of a single run."""
import importlib

# Names -> submodule, imported on first use: the metrics need no torch (only the oracle
# classifier does), and ``python -m ovseg_core.evaluation.panoptic`` must not find its
# module already imported by this package (runpy warns then).
_WHERE = {"PQStat": "panoptic", "pq_compute": "panoptic", "pq_image": "panoptic", "pq_prediction": "panoptic",
          "resize_labels": "panoptic", "SemanticStat": "semantic", "MaskAccuracy": "classification",
          "OracleClassifier": "oracle"}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PQStat", "pq_image", "pq_prediction", "pq_compute", "resize_labels", "SemanticStat", "MaskAccuracy", "OracleClassifier"]
