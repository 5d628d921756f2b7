"""bench/shapes.py's variants (ovseg_core.shapes.variants) build from the shapes preset
and classify (no timing here: timing lives in the benchmark). Also: builds given one empty EmbeddingCache share it
(an empty cache is falsy; build_from_config used to replace it with its own)."""
import pytest
import torch

from ovseg_core.config import DATA_DIR
from ovseg_core.segmenter import image_to_tensor
from ovseg_core.shapes import variants as bench
from ovseg_core.shapes.world import generate_scene
from ovseg_core.text import EmbeddingCache
from ovseg_core.vocabulary import Vocabulary

pytestmark = pytest.mark.skipif(not (DATA_DIR / "weights" / "shapes" / "clip.safetensors").is_file(),
                                reason="the shipped ShapesWorld weights are missing")


def test_every_variant_builds_and_classifies():
    torch.manual_seed(0)
    cache = EmbeddingCache()
    segmenters = bench.build_variants(list(bench.VARIANTS), "cpu", cache)
    vocab = Vocabulary.parse("red circle; blue square; grass [stuff]; sky [stuff]")  # few: encoded fast
    image = image_to_tensor(generate_scene(0, size=128).image, torch.device("cpu"))
    base = segmenters[bench.BASELINE]
    with torch.inference_mode():
        proposals = base.proposals(base.layout([image]).proposal_batch)
        queries = proposals.masks.shape[1]
        for name, seg in segmenters.items():
            assert seg.text_encoder.cache is cache, name       # one shared cache: text encoded once
            logits = bench.classifier_call(seg, [image], proposals, vocab)()
            void = int(seg.classifier.void_embedding is not None)
            assert logits.shape == (1, queries, len(vocab) + void), name
            assert torch.isfinite(logits).all(), name
    assert len(cache) == 1
    assert bench.new_parameter_count(segmenters["frozen"]) == 0
    assert bench.new_parameter_count(segmenters["smart"]) > 0
    assert segmenters["smart"].classifier.encoder.sma_layers == [3]
    assert segmenters["sma_all"].classifier.encoder.sma_layers == [0, 1, 2, 3]
