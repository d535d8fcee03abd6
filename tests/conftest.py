"""Shared pytest options and fixtures: slow tests run only with --runslow; GPU tests only where
CUDA exists; ``tiny`` is the tiny synthetic dataset with its evaluation candidates (a fresh one per
test module, so a module that changes it cannot move another's numbers); ``tiny_run_folder`` a run
folder holding it (00_data done), each a copy of one built once per session, so no test sees
another's stages."""

import os
import shutil
from pathlib import Path

import pytest

# Figures as HTML only: each PNG export starts headless Chromium, about 18 s per report on 2 busy
# cores, in every chain, plan and stage a test runs (its notebook kernels inherit this too).
# test_stages.py::test_save_figure_png_is_bounded_in_time turns it back on for the real export.
os.environ.setdefault("FNDKIT_PNG", "0")

from fndkit.data.sampling import attach_candidates
from fndkit.data.synthetic import make_dataset


@pytest.fixture(scope="module")
def tiny():
    ds = make_dataset("tiny", seed=0)
    attach_candidates(ds, seed=0)
    return ds


@pytest.fixture(scope="session")
def make_tiny_run_folder(tmp_path_factory):
    """``make(path) -> path``: a run folder at ``path`` whose 00_data stage holds the tiny synthetic
    dataset (seed 0), copied from one built once per session (module fixtures use this)."""
    from fndkit.config import DataConfig
    from fndkit.stages import data

    template = tmp_path_factory.mktemp("tiny-template") / "run"
    data.run(template, DataConfig(scale="tiny", seed=0))

    def make(path) -> Path:
        path = Path(path)
        shutil.copytree(template / "data", path / "data")
        return path

    return make


@pytest.fixture
def tiny_run_folder(make_tiny_run_folder, tmp_path) -> Path:
    """This test's own run folder with the tiny dataset (00_data done)."""
    return make_tiny_run_folder(tmp_path / "run")


def small_config(**kw):
    """A TrainConfig small enough for a unit test (d = 16, two heads, two steps an epoch on CPU);
    ``kw`` overrides. Test modules import it (``from conftest import small_config``)."""
    from fndkit.config import TrainConfig

    base = dict(backbone="cnn-small", dim=16, heads=2, epochs=1, batch_size=8, max_steps_per_epoch=2,
                device="cpu", patience=3)
    base.update(kw)
    return TrainConfig(**base)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


# The files that take longest (seconds of test time on the 2-core box, make test at f12383e,
# 2026-12-08: 167, 94, 63, 55, 52, 49, 48, 43, 42, 37, 28, 28), run first: `make test` spreads whole
# files over two processes (--dist loadfile) in collection order (--no-loadscope-reorder: xdist's
# default order is most tests first, which handed the notebook file out last), and a long file handed
# out last leaves the other process idle at the end (the longest first is the classic fix for that).
LONGEST_FIRST = ("test_notebooks", "test_search", "test_faults", "test_baselines", "test_distillation",
                 "test_paper", "test_verdict", "test_bad_input", "test_fnlab", "test_browser", "test_pipeline",
                 "test_reliability")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's own order kept
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
