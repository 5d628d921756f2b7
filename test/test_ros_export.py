"""The node's `runtime` / `onnx_dir` parameters: it serves an `ovseg export` folder from
ONNX Runtime, with the same results as the PyTorch library (node class in this process)."""
import numpy as np
import pytest

from ros_harness import require_ros

require_ros()
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'ovseg[export]')")

from ovseg_core.export.cli import main as export_main  # noqa: E402
from ovseg_core.export.runtime import OnnxClassifier, OnnxProposals  # noqa: E402
from ovseg_core.shapes.world import generate_scene  # noqa: E402


def test_the_node_serves_an_export_from_onnxruntime(tmp_path, build_tiny):
    import rclpy
    from rclpy.parameter import Parameter

    from ovseg_ros.node import SegmentationNode
    assert export_main(["--preset", "tiny", "--out", str(tmp_path / "onnx"), "--seed", "0"]) == 0
    context = rclpy.Context()
    rclpy.init(context=context)
    node = SegmentationNode(context=context, parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("runtime", value="onnxruntime"),
        Parameter("onnx_dir", value=str(tmp_path / "onnx")), Parameter("overlap_threshold", value=0.0),
        Parameter("cameras", value=["/a/image_raw"]), Parameter("vocabulary", value="car; road [stuff]"),
        Parameter("embedding_cache_dir", value="")])
    try:
        node.trigger_configure()
        assert isinstance(node.segmenter.proposals, OnnxProposals)
        assert isinstance(node.segmenter.classifier, OnnxClassifier)
        image = generate_scene(3, size=128).image
        ours = node.segmenter(image, "car; road [stuff]")
        theirs = build_tiny(0, overrides={"inference.overlap_threshold": 0.0, "precision": "fp32"})(
            image, "car; road [stuff]")
        assert len(theirs.segments) > 0
        assert np.mean(ours.segment_map == theirs.segment_map) >= 0.995
    finally:
        node._stop_worker()
        node.destroy_node()
        context.try_shutdown()
