"""Shared fixtures: the demo image and the tiny preset (random weights, built once)."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
STREET = REPO / "assets" / "street.png"


@pytest.fixture(scope="session")
def street_path() -> Path:
    assert STREET.is_file(), f"{STREET} is missing; regenerate it with python assets/make_street.py"
    return STREET


@pytest.fixture(scope="session")
def build_tiny():
    """A factory: ``build_tiny(seed=0, **build_segmenter_kwargs)`` builds the tiny preset on
    the CPU after seeding torch, so two builds with one seed get identical random weights."""
    from ovseg_core.build import build_segmenter

    def build(seed: int = 0, **kwargs):
        kwargs.setdefault("device", "cpu")
        torch.manual_seed(seed)
        return build_segmenter("tiny", **kwargs)

    return build


@pytest.fixture(scope="session")
def tiny_segmenter(build_tiny):
    """The tiny preset (seed 0), shared by the whole session: do not modify it."""
    return build_tiny(0)
