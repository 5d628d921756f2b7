"""TextEncoder's optional on-disk cache and progress hook (used by the ROS node so a large
vocabulary is encoded once per model, off the executor, and can be abandoned)."""
import open_clip
import pytest
import torch
from open_clip.model import CLIP

from ovseg_core.text import TextEncoder

CONTEXT = 24


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    clip = CLIP(32, dict(width=64, layers=2, patch_size=16, image_size=64),
                dict(width=64, layers=2, heads=2, context_length=CONTEXT)).eval()
    return clip, open_clip.get_tokenizer("ViT-B-16", context_length=CONTEXT)


def encoder(parts, tmp_path, key="tiny|a"):
    clip, tokenizer = parts
    enc = TextEncoder(clip, tokenizer, key, chunk_size=8)
    enc.disk_cache = tmp_path
    return enc


def test_a_second_encoder_loads_the_stored_rows_instead_of_encoding(parts, tmp_path):
    first = encoder(parts, tmp_path).encode("car, automobile; road [stuff]")
    second_encoder = encoder(parts, tmp_path)
    second_encoder._encode = lambda *a: pytest.fail("encoded although the rows are on disk")
    assert second_encoder.cached("car, automobile; road [stuff]")
    second = second_encoder.encode("car, automobile; road [stuff]")
    assert torch.equal(first.embeddings, second.embeddings) and torch.equal(first.class_of, second.class_of)
    # Another model (key) or another text is a different file.
    assert not encoder(parts, tmp_path, key="tiny|b").cached("car, automobile; road [stuff]")
    assert not second_encoder.cached("car; road [stuff]")
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_progress_is_reported_per_chunk_and_an_exception_abandons_the_encode(parts, tmp_path):
    enc = encoder(parts, tmp_path)
    seen = []
    enc.encode("a; b; c", progress=lambda done, total: seen.append((done, total)))
    prompts = 3 * len(enc.templates)
    assert seen[-1] == (prompts, prompts) and len(seen) == -(-prompts // 8)

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop()
    with pytest.raises(Stop):
        enc.encode("d; e", progress=stop)
    assert not enc.cached("d; e")                 # nothing half-done is kept
    assert len(list(tmp_path.glob("*"))) == 1     # no temporary file left either


def test_a_corrupt_file_is_encoded_again(parts, tmp_path):
    enc = encoder(parts, tmp_path)
    enc.encode("tree")
    (path,) = tmp_path.glob("*.safetensors")
    path.write_bytes(b"garbage")
    fresh = encoder(parts, tmp_path)
    assert fresh.encode("tree").embeddings.shape[0] == 1
    assert path.stat().st_size > 100
