"""CUDA paths (skipped without a GPU): a training step and cached scoring agree with the CPU."""

import numpy as np
import pytest
import torch

from fndkit.config import TrainConfig
from fndkit.data.sampling import attach_candidates
from fndkit.data.synthetic import make_dataset
from fndkit.evaluate import score_rows
from fndkit.repro import seed_everything
from fndkit.objectives import make_objective
from fndkit.train import build_model, fit

pytestmark = pytest.mark.gpu


def test_fit_and_cached_scoring_on_cuda(tmp_path):
    seed_everything(0, deterministic=True)
    ds = make_dataset("tiny", seed=0)
    attach_candidates(ds, seed=0)
    cfg = TrainConfig(backbone="cnn-small", dim=16, heads=2, epochs=1, batch_size=8,
                      max_steps_per_epoch=2, device="cuda")
    model = build_model(cfg, ds)
    result = fit(model, ds, cfg, tmp_path, make_objective(cfg), progress=False)
    assert np.isfinite(result["history"][0]["loss"])
    cand = ds.candidates["test/random"]
    on_gpu = score_rows(model, ds, cand.user, cand.items, device="cuda")
    on_cpu = score_rows(model.to("cpu"), ds, cand.user, cand.items, device="cpu")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)
    assert torch.cuda.max_memory_allocated() > 0
