"""Fuzz (hypothesis) of the library entry point, ``Segmenter.__call__``: arrays of any
dtype, shape and values give a result of the image's size or a ValueError / TypeError
that says what to change; never another exception."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fuzz_corruptions import FUZZ
from ovseg_core.structures import PanopticResult

DTYPES = [np.uint8, np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_, np.uint16]


@pytest.fixture(scope="module")
def segmenter():
    from ovseg_core.build import build_segmenter
    torch.manual_seed(0)
    return build_segmenter("tiny", device="cpu")


@st.composite
def images(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.one_of(
        st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3, 4])),    # H, W, C
        st.tuples(st.sampled_from([1, 3, 4]), st.integers(1, 24), st.integers(1, 24)),    # C, H, W
        hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=5)))
    if dtype.kind == "f":
        elements = st.one_of(st.floats(0, 1, width=16 if dtype == np.float16 else 32),
                             st.floats(allow_nan=True, allow_infinity=True, width=16))
    else:
        elements = None
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    as_torch = draw(st.booleans()) and dtype != np.uint16
    return torch.from_numpy(array) if as_torch else array


@FUZZ
@given(image=images(), batch=st.booleans())
def test_segmenter_call_refuses_clearly_or_answers(segmenter, image, batch):
    try:
        out = segmenter([image, image] if batch else image, "car; road [stuff]")
    except (ValueError, TypeError) as err:
        message = str(err)
        assert "\n" not in message and len(message) > 20
        assert any(w in message for w in ("give", "convert", "use", "drop", "repeat", "divide", "transpose")), message
        return
    if image.ndim == 4:                 # a batch array: one result per image
        assert not batch and isinstance(out, list) and len(out) == image.shape[0]
        results, shape = out, tuple(image.shape[1:])
    else:
        results, shape = (out if batch else [out]), tuple(image.shape)
    assert all(isinstance(r, PanopticResult) for r in results)
    # an accepted image is RGB: its result has the image's height and width
    height_width = shape[1:] if (isinstance(image, torch.Tensor) and shape[0] == 3) else shape[:2]
    for r in results:
        assert r.segment_map.shape == height_width and r.semantic_map.shape == height_width
