import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

LFW_DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lfw-dev"


@pytest.fixture(scope="session")
def lfw_dev() -> Path:
    if not (LFW_DEV / "pairs.txt").is_file():
        pytest.skip(f"lfw-dev not found at {LFW_DEV}")
    return LFW_DEV


@pytest.fixture(scope="session")
def default_model():
    from morphable import load_default_model

    return load_default_model()


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module single-threaded (small tensors: threading only adds overhead and noise)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available (CI has none: they are skipped there)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
