"""Shared pytest options and fixtures: slow tests run only with --runslow; GPU tests only where
CUDA exists; ``tiny`` is the tiny synthetic dataset with its evaluation candidates (a fresh one per
test module, so a module that changes it cannot move another's numbers)."""

import pytest

from fndkit.data.sampling import attach_candidates
from fndkit.data.synthetic import make_dataset


@pytest.fixture(scope="module")
def tiny():
    ds = make_dataset("tiny", seed=0)
    attach_candidates(ds, seed=0)
    return ds


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
