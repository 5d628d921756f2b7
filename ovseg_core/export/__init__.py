"""Deployment: ONNX export of a Segmenter's networks (``onnx_export``), serving them from
ONNX Runtime with the same pre- and post-processing (``runtime``), and TensorRT engines
built from the exports (``tensorrt``). docs/deployment.md is the user's guide.

Nothing here is imported by the PyTorch path: onnx and onnxruntime are optional
(``pip install 'ovseg[export]'``).
"""
