"""Where users run it: CUDA with autocast. Skipped on machines without a GPU."""
import numpy as np
import pytest
import torch

from ovseg_core.build import build_segmenter

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_pipeline_matches_the_cpu(precision):
    overrides = {"inference.overlap_threshold": 0.0, "precision": precision}
    torch.manual_seed(0)
    cpu = build_segmenter("tiny", device="cpu", overrides={**overrides, "precision": "fp32"})
    torch.manual_seed(0)
    gpu = build_segmenter("tiny", device="cuda", overrides=overrides)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    vocab = "car; road [stuff]; person"
    batch = torch.rand(2, 3, 96, 128)
    _, p_cpu = cpu.predict(batch, vocab)
    _, p_gpu = gpu.predict(batch.cuda(), vocab)
    assert p_gpu.device.type == "cuda" and p_gpu.dtype == torch.float32
    tolerance = 1e-4 if precision == "fp32" else 5e-2
    assert torch.allclose(p_gpu.cpu(), p_cpu, atol=tolerance)
    result = gpu(image, vocab)
    assert result.segment_map.shape == (96, 128)
