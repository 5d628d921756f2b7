"""The papers' measuring instruments: Panoptic Quality (panopticapi's rules), mIoU
(detectron2's SemSegEvaluator), mask classification accuracy and the oracle analysis.

Every statistic is a plain array that adds up (per-class sums, confusion matrices), so
shards of a split evaluated in other processes or machines merge to exactly the numbers
of a single run."""
from .classification import MaskAccuracy, OracleClassifier
from .panoptic import PQStat, pq_compute, pq_image, pq_prediction, resize_labels
from .semantic import SemanticStat

__all__ = ["PQStat", "pq_image", "pq_prediction", "pq_compute", "resize_labels", "SemanticStat", "MaskAccuracy", "OracleClassifier"]
