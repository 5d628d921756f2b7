import math
import threading
import zlib

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP

from ovseg_core.text import VILD_TEMPLATES, ClassEmbeddings, EmbeddingCache, TextEncoder
from ovseg_core.vocabulary import Vocabulary

CONTEXT = 24  # long enough for every template with a short name; keeps the tiny CLIP fast


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    text_cfg = dict(width=64, layers=2, heads=2, context_length=CONTEXT)
    vision_cfg = dict(width=64, layers=2, patch_size=16, image_size=64)
    return CLIP(32, vision_cfg, text_cfg).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-16", context_length=CONTEXT)


def count_calls(model):
    """Wraps model.encode_text and returns the list of batch sizes it was called with."""
    batches, original = [], model.encode_text

    def spy(tokens, *args, **kwargs):
        batches.append(tokens.shape[0])
        return original(tokens, *args, **kwargs)

    model.encode_text = spy
    return batches


@pytest.fixture
def spied_clip(tiny_clip):
    batches = count_calls(tiny_clip)
    yield tiny_clip, batches
    del tiny_clip.encode_text  # back to the class method


class BagOfWords(torch.nn.Module):
    """A cheap stand-in text tower for tests about chunking, not about CLIP."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bag = torch.nn.EmbeddingBag(1000, 8)

    def encode_text(self, tokens):
        return self.bag(tokens)


def word_tokenizer(texts):
    return torch.tensor([[zlib.crc32(w.encode()) % 1000 for w in (t.split() + ["."] * 12)[:12]]
                         for t in texts])


def test_vild_templates():
    assert len(VILD_TEMPLATES) == 14 == len(set(VILD_TEMPLATES))
    assert all(t.count("{}") == 1 for t in VILD_TEMPLATES)
    assert "There is a large {} in the scene." in VILD_TEMPLATES


def test_logits_take_max_over_synonyms():
    emb = F.normalize(torch.randn(6, 4), dim=-1)
    class_of = torch.tensor([0, 1, 0, 2, 2, 2])  # class 0: rows 0, 2; class 2: rows 3-5
    ce = ClassEmbeddings(emb, class_of, 3)
    feats = F.normalize(torch.randn(2, 5, 4), dim=-1).requires_grad_()
    got = ce.logits(feats, 10.0)
    cos = feats @ emb.T
    want = torch.stack([10 * cos[..., [0, 2]].amax(-1), 10 * cos[..., 1],
                        10 * cos[..., [3, 4, 5]].amax(-1)], dim=-1)
    assert got.shape == (2, 5, 3)
    torch.testing.assert_close(got, want)
    got.sum().backward()  # training backpropagates through it into the mask features
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_logits_follow_feature_dtype():
    ce = ClassEmbeddings(F.normalize(torch.randn(3, 4), dim=-1), torch.tensor([0, 0, 1]), 2)
    out = ce.logits(F.normalize(torch.randn(5, 4), dim=-1).bfloat16(), torch.tensor(100.0))
    assert out.dtype == torch.bfloat16 and out.shape == (5, 2)
    with pytest.raises(ValueError, match="same CLIP model"):
        ce.logits(torch.randn(5, 3), 1.0)


@pytest.mark.parametrize("class_of", [[0, 0, 0], [0, 2, 1], [0, -1, 1]])
def test_class_embeddings_need_every_class_and_no_other(class_of):
    with pytest.raises(ValueError, match="every class"):
        ClassEmbeddings(torch.randn(3, 4), torch.tensor(class_of), 2)


def test_encode_averages_templates_per_synonym(tiny_clip, tokenizer):
    enc = TextEncoder(tiny_clip, tokenizer, "tiny")
    ce = enc.encode("person, child; road [stuff]")
    assert ce.num_classes == 2 and ce.class_of.tolist() == [0, 0, 1]
    assert ce.embeddings.dtype == torch.float32 and ce.embeddings.shape == (3, 32)
    with torch.no_grad():
        for row, word in enumerate(["person", "child", "road"]):
            per_template = tiny_clip.encode_text(tokenizer([t.format(word) for t in VILD_TEMPLATES]))
            want = F.normalize(F.normalize(per_template, dim=-1).mean(0), dim=0)
            torch.testing.assert_close(ce.embeddings[row], want, atol=1e-5, rtol=1e-5)
    feats = F.normalize(torch.randn(7, 32), dim=-1)
    logits = ce.logits(feats, 100.0)
    torch.testing.assert_close(logits[:, 0], 100 * (feats @ ce.embeddings[:2].T).amax(-1))


def test_cache_skips_the_text_encoder(spied_clip, tokenizer):
    model, batches = spied_clip
    enc = TextEncoder(model, tokenizer, "tiny", chunk_size=8)
    first = enc.encode("car; road [stuff]")
    calls = len(batches)
    assert calls == math.ceil(2 * 14 / 8)
    # The same vocabulary, however it is written, runs the text encoder zero more times.
    assert enc.encode(Vocabulary.parse("car ;road [stuff]\n")) is first
    assert len(batches) == calls
    enc.encode("car; road [stuff]; tree")
    assert len(batches) > calls


def test_cache_is_lru_and_keyed_by_model(spied_clip, tokenizer):
    model, batches = spied_clip
    shared = EmbeddingCache(max_size=2)
    enc = TextEncoder(model, tokenizer, "tiny", chunk_size=1000, cache=shared)
    for vocab in ["a", "b", "a", "c"]:  # "a" was used after "b", so "c" evicts "b"
        enc.encode(vocab)
    assert len(batches) == 3 and len(shared) == 2
    enc.encode("a")
    assert len(batches) == 3
    enc.encode("b")
    assert len(batches) == 4
    other = TextEncoder(model, tokenizer, "another-model", cache=shared)
    other.encode("b")
    assert len(batches) == 5


def test_concurrent_requests_encode_once(spied_clip, tokenizer):
    model, batches = spied_clip
    enc = TextEncoder(model, tokenizer, "tiny", chunk_size=1000)
    start, results = threading.Barrier(4), []

    def worker():
        start.wait()
        results.append(enc.encode("car; person, child"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(batches) == 1
    assert all(r is results[0] for r in results)


def test_chunked_equals_one_batch(tiny_clip, tokenizer):
    vocab = Vocabulary.parse("car; road [stuff]; person, child, girl; traffic light")
    chunked = TextEncoder(tiny_clip, tokenizer, "tiny", chunk_size=5).encode(vocab)
    whole = TextEncoder(tiny_clip, tokenizer, "tiny", chunk_size=10_000).encode(vocab)
    torch.testing.assert_close(chunked.embeddings, whole.embeddings, atol=1e-5, rtol=0)
    assert torch.equal(chunked.class_of, whole.class_of)


def test_large_vocabulary_is_encoded_in_bounded_chunks():
    model = BagOfWords()
    batches = count_calls(model)
    vocab = Vocabulary.from_names([f"class {i}" for i in range(847)])
    ce = TextEncoder(model, word_tokenizer, "bag", chunk_size=64).encode(vocab)
    assert len(batches) == math.ceil(847 * 14 / 64)
    assert max(batches) <= 64 and sum(batches) == 847 * 14
    assert ce.embeddings.shape == (847, 8)
    torch.testing.assert_close(ce.embeddings.norm(dim=-1), torch.ones(847))


def test_output_is_float32_on_the_model_device():
    model = BagOfWords().to(torch.bfloat16)
    ce = TextEncoder(model, word_tokenizer, "bag").encode(["car", "tree"])
    assert ce.embeddings.dtype == torch.float32
    assert ce.embeddings.device == ce.class_of.device == next(model.parameters()).device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(tokenizer):
    model = CLIP(32, dict(width=64, layers=2, patch_size=16, image_size=64),
                 dict(width=64, layers=2, heads=2, context_length=CONTEXT)).cuda().half()
    enc = TextEncoder(model, tokenizer, "tiny-cuda", chunk_size=7)
    ce = enc.encode("car; person, child")
    assert ce.embeddings.is_cuda and ce.class_of.is_cuda and ce.embeddings.dtype == torch.float32
    feats = F.normalize(torch.randn(3, 5, 32, device="cuda"), dim=-1).half()
    assert ce.logits(feats, 100.0).shape == (3, 5, 2)
    back = ce.to("cpu")
    torch.testing.assert_close(back.logits(feats.float().cpu(), 100.0),
                               ce.logits(feats.float(), 100.0).cpu(), atol=1e-4, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="model_key"):
        TextEncoder(BagOfWords(), word_tokenizer, "")
    with pytest.raises(ValueError, match="'{}'"):
        TextEncoder(BagOfWords(), word_tokenizer, "bag", templates=["a photo"])
