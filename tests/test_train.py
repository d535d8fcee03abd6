"""fit(): every loss trains on tiny data, resume continues, NaN stops clearly, FND's teacher cache
agrees with scoring the teacher from scratch."""

import json

import numpy as np
import pytest
import torch

from fndkit.config import TrainConfig
from fndkit.evaluate import evaluate, score_rows
from fndkit.objectives import make_objective, prepare_teacher
from fndkit.train import Callback, build_model, fit, load_model


def small_cfg(**kw):
    base = dict(backbone="cnn-small", dim=16, heads=2, epochs=1, batch_size=8, max_steps_per_epoch=3,
                device="cpu", patience=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def teacher(tiny, tmp_path_factory):
    cfg = small_cfg(backbone="cnn-large")
    torch.manual_seed(0)
    model = build_model(cfg, tiny)
    fit(model, tiny, cfg, tmp_path_factory.mktemp("teacher"), make_objective(cfg), progress=False)
    return model


@pytest.mark.parametrize("loss", ["npair", "bpr", "fnd"])
def test_every_loss_trains_one_epoch(tiny, teacher, tmp_path, loss):
    cfg = small_cfg(loss=loss)
    model = build_model(cfg, tiny)
    signal = prepare_teacher(teacher, tiny) if loss == "fnd" else None
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(model, tiny, cfg, tmp_path, make_objective(cfg, teacher=signal, truth=tiny.truth), progress=False)
    assert len(result["history"]) == 1 and np.isfinite(result["history"][0]["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "last.pt").exists()
    if loss == "fnd":
        rec = result["history"][0]
        assert 0.0 <= rec["flagged_fraction"] <= 1.0
        assert "flag_precision" in rec and "true_fn_fraction" in rec


def test_contrastive_needs_and_uses_projection(tiny, teacher, tmp_path):
    cfg = small_cfg(loss="fnd", lam=0.2, augmentations="erase,erase")
    model = build_model(cfg, tiny)
    assert model.projection is not None
    objective = make_objective(cfg, teacher=prepare_teacher(teacher, tiny))
    result = fit(model, tiny, cfg, tmp_path, objective, progress=False)
    assert result["history"][0]["loss_cl"] > 0
    bare = build_model(small_cfg(), tiny)
    with pytest.raises(ValueError, match="projection head"):
        fit(bare, tiny, cfg, tmp_path / "b", objective, progress=False)
    with pytest.raises(ValueError, match="01_autoencoder"):
        make_objective(small_cfg(loss="npair", lam=0.2, augmentations="erase,replace"))


def test_fnd_needs_teacher(tiny, tmp_path):
    with pytest.raises(ValueError, match="needs a trained teacher"):
        make_objective(small_cfg(loss="fnd"))


def test_teacher_signal_matches_direct_scoring(tiny, teacher):
    signal = prepare_teacher(teacher, tiny)
    train = tiny.outfits_of("train")
    users, items = tiny.outfit_user[train], tiny.outfit_items[train]
    direct = score_rows(teacher, tiny, users, items)
    expected_mean = np.array([direct[users == u].mean() for u in range(tiny.n_users) if (users == u).any()])
    got_mean = signal.user_mean.numpy()[[u for u in range(tiny.n_users) if (users == u).any()]]
    np.testing.assert_allclose(got_mean, expected_mean, atol=1e-5)
    negs = items[:5]
    batch_users = torch.as_tensor(users[:3])
    cached = signal.negative_scores(batch_users, negs).numpy()
    for b in range(3):
        np.testing.assert_allclose(cached[b], score_rows(teacher, tiny, np.full(5, users[b]), negs), atol=1e-5)


def test_resume_continues_from_last_epoch(tiny, tmp_path):
    cfg1 = small_cfg(epochs=1)
    torch.manual_seed(0)
    model = build_model(cfg1, tiny)
    fit(model, tiny, cfg1, tmp_path, make_objective(cfg1), progress=False)
    # another config is refused, a smaller epoch budget too (a larger one continues: below)
    with pytest.raises(ValueError, match="another config"):
        fit(build_model(cfg1, tiny), tiny, small_cfg(epochs=1, lr=0.02), tmp_path, make_objective(cfg1),
            resume=True, progress=False)
    seen = []
    cb = Callback()
    cb.on_epoch_end = lambda trainer: seen.append(trainer.record["epoch"])
    result = fit(build_model(cfg1, tiny), tiny, cfg1, tmp_path, make_objective(cfg1), resume=True,
                 progress=False, callbacks=[cb])
    assert seen == [] and len(result["history"]) == 1  # nothing left to do: epoch 1 of 1 is done
    result = fit(build_model(cfg1, tiny), tiny, small_cfg(epochs=2), tmp_path, make_objective(cfg1), resume=True,
                 progress=False, callbacks=[cb])
    assert seen == [2] and len(result["history"]) == 2  # a larger budget: the same run, one epoch more
    with pytest.raises(ValueError, match="another config"):
        fit(build_model(cfg1, tiny), tiny, cfg1, tmp_path, make_objective(cfg1), resume=True, progress=False)


def test_nan_loss_names_the_step(tiny, tmp_path):
    cfg = small_cfg()
    model = build_model(cfg, tiny)
    with torch.no_grad():
        model.user_embedding.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1"):
        fit(model, tiny, cfg, tmp_path, make_objective(cfg), progress=False)


def test_checkpoint_rebuilds_model_alone(tiny, tmp_path):
    cfg = small_cfg()
    model = build_model(cfg, tiny)
    fit(model, tiny, cfg, tmp_path, make_objective(cfg), progress=False)
    rebuilt, payload = load_model(tmp_path / "checkpoint.pt")
    assert payload["config"]["train"]["backbone"] == "cnn-small"
    a = evaluate(model.eval(), tiny, protocols=("random",))["random"]["auc"]
    b = evaluate(rebuilt, tiny, protocols=("random",))["random"]["auc"]
    assert a == pytest.approx(b, abs=1e-6)
    json.loads((tmp_path / "history.json").read_text())


def test_replay_of_a_stopping_rule_equals_the_run_with_that_rule(tiny, tmp_path):
    """replay_stopping on a long run's history stops where a run trained with that rule (a shorter
    patience; the learning-rate floor) stops, with the same best epoch and validation AUC (the
    convergence-cost table rests on this)."""
    from fndkit.train import replay_stopping

    def run(folder, **rule):
        torch.manual_seed(0)
        cfg = small_cfg(epochs=8, lr=0.05, lr_patience=0, **{"patience": 8, **rule})
        return fit(build_model(cfg, tiny), tiny, cfg, tmp_path / folder, make_objective(cfg), progress=False)

    long = run("long")
    aucs = [r["val_auc"] for r in long["history"]]
    assert len(long["history"]) == 8 and sum(b <= max(aucs[:i + 1]) for i, b in enumerate(aucs[1:])) >= 2
    for rule in ({"patience": 1}, {"lr_floor": 0.25}):
        short = run(str(rule), **rule)
        replay = replay_stopping(long["history"], **{"patience": 8, **rule, "lr": 0.05})
        assert replay["stop_epoch"] == len(short["history"]) < 8, rule
        assert replay["best_epoch"] == short["best_epoch"], rule
        assert replay["best_val_auc"] == pytest.approx(short["best_val_auc"]), rule
    # a budget and the learning-rate floor, by hand
    hist = [{"epoch": e, "val_auc": v, "lr": lr, "seconds": 1.0}
            for e, v, lr in [(1, .5, .1), (2, .6, .1), (3, .6, .05), (4, .605, .05), (5, .61, .025), (6, .7, .025)]]
    assert replay_stopping(hist, patience=9, epochs=4) == {"stop_epoch": 4, "best_epoch": 4, "best_val_auc": .605,
                                                           "train_seconds": 4.0}
    assert replay_stopping(hist, patience=2, min_delta=0.01)["stop_epoch"] == 4       # .605 is no gain over .6 + .01
    assert replay_stopping(hist, patience=9, lr_floor=0.5, lr=0.1)["stop_epoch"] == 3  # lr .05 <= .5 × .1, no gain
