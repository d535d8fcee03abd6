"""Objectives under one contract: each equals its loss function on the batch's scores; FND uses
the teacher (all-ones weights would be N-pair); the teacher stays frozen; every registered model
trains one epoch with every objective that suits it (RecBole's quick test)."""

import numpy as np
import pytest

from conftest import small_config
import torch

from fndkit.config import TrainConfig
from fndkit.data.sampling import NegativeSampler
from fndkit.losses import false_negative_weights, fnd_loss, npair_loss
from fndkit.models.contract import make_image_fn
import fndkit.baselines  # noqa: F401  (registers the Table-2 baselines)
from fndkit.models.registry import MODELS
from fndkit.objectives import FND, NPair, OBJECTIVES, TrainBatch, make_objective, prepare_teacher
from fndkit.train import build_model, fit


cfg = small_config


@pytest.fixture(scope="module")
def teacher(tiny):
    torch.manual_seed(1)
    return build_model(cfg(backbone="cnn-large"), tiny)


def a_batch(ds, seed=0):
    ids = ds.outfits_of("train")[:8]
    users, items = ds.outfit_user[ids], ds.outfit_items[ids]
    negatives = NegativeSampler(ds, n_negatives=8, seed=seed).sample(items, users, epoch=0, step=0)
    return TrainBatch(torch.as_tensor(users), items, negatives, make_image_fn(ds.images, None, "cpu"))


def test_npair_objective_is_eq10_on_model_scores(tiny):
    torch.manual_seed(0)
    model = build_model(cfg(), tiny)
    batch = a_batch(tiny)
    loss, stats = NPair(tau=0.1)(model, batch)
    users = batch.users
    pos = model(users, torch.as_tensor(batch.positives), batch.image_fn)
    neg_vecs = model.outfit_vectors(torch.as_tensor(batch.negatives), batch.image_fn)
    neg = model.score_matrix(model.user_vectors(users), neg_vecs)
    assert loss.item() == pytest.approx(npair_loss(pos, neg, tau=0.1).item(), abs=1e-5)
    assert stats["loss"] == pytest.approx(loss.item())


def test_fnd_uses_the_teacher(tiny, teacher):
    torch.manual_seed(0)
    model = build_model(cfg(), tiny)
    signal = prepare_teacher(teacher, tiny)
    batch = a_batch(tiny)
    fnd = FND(signal, alpha=1.25, tau=0.1)
    loss, stats = fnd(model, batch)
    pos, neg = a_batch(tiny).pair_scores(model)
    weights = false_negative_weights(signal.negative_scores(batch.users, batch.negatives),
                                     signal.user_mean[batch.users], 1.25)
    assert loss.item() == pytest.approx(fnd_loss(pos, neg, weights, tau=0.1).item(), abs=1e-5)
    # ignoring the teacher (all weights one) is N-pair, and gives another loss and gradient here
    npair = npair_loss(pos, neg, tau=0.1).item()
    assert npair == pytest.approx(fnd_loss(pos, neg, torch.ones_like(neg), tau=0.1).item(), abs=1e-6)
    assert abs(loss.item() - npair) > 1e-3
    assert stats["pairs"] == 64 and stats["flagged"] == int((weights < 0).sum())


def test_teacher_frozen_while_student_trains(tiny, teacher, tmp_path):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    c = cfg(loss="fnd")
    fit(build_model(c, tiny), tiny, c, tmp_path, make_objective(c, teacher=prepare_teacher(teacher, tiny)),
        progress=False)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_every_model_and_every_objective_train(tiny, teacher, tmp_path):
    """RecBole's quick test: every registered model with the objective it declares, and every
    registered objective with the paper's recommender, one short epoch: loss finite, weights move."""
    signal = prepare_teacher(teacher, tiny)
    pairs = {(kind, getattr(cls, "objective", None) or "npair") for kind, cls in MODELS.items()}
    pairs |= {("recommender", loss) for loss in OBJECTIVES}
    ran = []
    for kind, loss in sorted(pairs):
        c = cfg(model=kind, loss=loss)
        try:
            objective = make_objective(c, teacher=signal, truth=tiny.truth)
            torch.manual_seed(0)
            model = build_model(c, tiny)
            objective.check_model(model)
        except ValueError:
            continue  # an objective for another kind of model (e.g. Bi-LSTM's next-item softmax)
        before = [p.detach().clone() for p in model.parameters()]
        result = fit(model, tiny, c, tmp_path / f"{kind}-{loss}", objective, progress=False)
        assert np.isfinite(result["history"][0]["loss"]), (kind, loss)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), (kind, loss)
        ran.append((kind, loss))
    assert {kind for kind, _ in ran} == set(MODELS)
    assert {("recommender", "fnd"), ("recommender", "npair"), ("recommender", "bpr")} <= set(ran)
