"""The false-negative lab (issue 13): oracle objectives against reference computations, per-pair
negatives (eq. 10) with only the user's own training positives rejected, the generator's
false-negative-rate knob, the teacher diagnostics' arithmetic, and the lab's experiment plans."""

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from conftest import small_config
import torch
from scipy.stats import spearmanr

from fndkit import cli
from fndkit.plans import lab as fnlab
from fndkit.plans.execute import Job, run_plan, unique_jobs
from fndkit.artifacts import load_checkpoint, read_json, save_checkpoint, write_json
from fndkit.config import DataConfig, TrainConfig
from fndkit.data.sampling import (NegativeSampler, _in_sorted, _user_outfit_keys, attach_candidates,
                                  user_positive_keys)
from fndkit.data.schema import ArrayImages, OutfitDataset, outfit_hashes
from fndkit.data.synthetic import false_negative_fraction, make_dataset
from fndkit.losses import fnd_loss, npair_loss, npair_loss_excluding
from fndkit.models.contract import OutfitModel, make_image_fn
from fndkit.objectives import (FND, FNDMagnitude, FNDSign, OracleDrop, OraclePull, TrainBatch,
                               batch_false_negatives, make_objective, prepare_teacher)
from fndkit.plans.execute import NOTEBOOK_DIR
from fndkit.rundir import RunFolder, StageError
from fndkit.stages import data as data_stage
from fndkit.stages import false_negatives as fn
from fndkit.stages import training
from fndkit.train import build_model


cfg = small_config


def a_batch(ds, mode="shared", n=8, seed=0):
    ids = ds.outfits_of("train")[:8]
    users, items = ds.outfit_user[ids], ds.outfit_items[ids]
    negatives = NegativeSampler(ds, n_negatives=n, seed=seed, mode=mode).sample(items, users, epoch=0, step=0)
    return TrainBatch(torch.as_tensor(users), items, negatives, make_image_fn(ds.images, None, "cpu"))


@pytest.fixture(scope="module")
def student(tiny):
    torch.manual_seed(0)
    return build_model(cfg(), tiny)


@pytest.fixture(scope="module")
def signal(tiny):
    torch.manual_seed(1)
    return prepare_teacher(build_model(cfg(backbone="cnn-large"), tiny), tiny)


# --------------------------------------------------------------------------------------------
# oracle objectives


def reference_npair_without(pos, neg, exclude, tau):
    """Eq. (10) row by row in float64, the excluded negatives simply absent."""
    total = 0.0
    for b in range(len(pos)):
        kept = [float(neg[b, k]) for k in range(neg.shape[1]) if not exclude[b, k]]
        logits = np.array([float(pos[b])] + kept) / tau
        total += -(logits[0] - np.log(np.exp(logits).sum()))
    return total / len(pos)


@pytest.mark.parametrize("mode", ["shared", "per_pair"])
def test_drop_oracle_leaves_no_true_false_negative_in_the_denominator(tiny, student, mode):
    batch = a_batch(tiny, mode)
    is_fn = batch_false_negatives(tiny.truth, batch)
    assert 0 < is_fn.sum() < is_fn.size  # tiny data: about a quarter of random mixtures
    loss, stats = OracleDrop(tiny.truth, tau=0.1)(student, batch)
    pos, neg = batch.pair_scores(student)
    ref = reference_npair_without(pos.detach().numpy(), neg.detach().numpy(), is_fn, 0.1)
    assert loss.item() == pytest.approx(ref, abs=1e-4)
    assert stats["true_fn"] == int(is_fn.sum()) and stats["pairs"] == is_fn.size
    # no gradient reaches a dropped negative: it is not in the denominator at all
    neg = neg.detach().requires_grad_(True)
    npair_loss_excluding(pos.detach(), neg, torch.as_tensor(is_fn), tau=0.1).backward()
    assert torch.all(neg.grad[torch.as_tensor(is_fn)] == 0)
    assert torch.all(neg.grad[~torch.as_tensor(is_fn)] > 0)


def test_excluding_nothing_is_npair():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(5, generator=g), torch.rand(5, 7, generator=g)
    none = torch.zeros(5, 7, dtype=torch.bool)
    assert npair_loss_excluding(pos, neg, none, 0.1).item() == pytest.approx(npair_loss(pos, neg, 0.1).item())
    with pytest.raises(ValueError, match="exclude must be a bool tensor"):
        npair_loss_excluding(pos, neg, none.float(), 0.1)


def test_pull_oracle_is_fnd_with_truth_weights(tiny, student):
    batch = a_batch(tiny)
    loss, _ = OraclePull(tiny.truth, tau=0.1)(student, batch)
    pos, neg = batch.pair_scores(student)
    is_fn = torch.as_tensor(batch_false_negatives(tiny.truth, batch))
    weights = torch.where(is_fn, -1.0, 1.0)
    assert loss.item() == pytest.approx(fnd_loss(pos, neg, weights, tau=0.1).item(), abs=1e-6)
    assert abs(loss.item() - npair_loss(pos, neg, tau=0.1).item()) > 1e-3


def test_sign_and_magnitude_variants_take_one_part_of_d(tiny, student, signal):
    batch = a_batch(tiny)
    pos, neg = batch.pair_scores(student)
    d = FND(signal, alpha=2.0).weights(batch, neg.device)
    assert (d < 0).any() and (d > 0).any()
    for cls, expected in ((FND, d), (FNDSign, torch.where(d < 0, -1.0, 1.0)), (FNDMagnitude, d.abs())):
        loss, stats = cls(signal, alpha=2.0, tau=0.1, truth=tiny.truth)(student, batch)
        assert loss.item() == pytest.approx(fnd_loss(pos, neg, expected, tau=0.1).item(), abs=1e-5), cls.name
        assert stats["flagged"] == int((d < 0).sum())  # flag statistics describe the teacher's d
    # the sign variant does not depend on α; the magnitude variant does
    assert FNDSign(signal, alpha=1.0)(student, batch)[0].item() == pytest.approx(
        FNDSign(signal, alpha=3.0)(student, batch)[0].item(), abs=1e-6)


def test_oracles_need_ground_truth(tiny):
    for loss in ("oracle-drop", "oracle-pull"):
        with pytest.raises(ValueError, match="needs the generator's ground truth"):
            make_objective(cfg(loss=loss), truth=None)
        assert make_objective(cfg(loss=loss), truth=tiny.truth).name == loss
    with pytest.raises(ValueError, match="loss='fnd-sign' needs a trained teacher"):
        make_objective(cfg(loss="fnd-sign"))


# --------------------------------------------------------------------------------------------
# per-pair negatives


def small_world() -> OutfitDataset:
    """Three users over 3 × 3 items (27 possible outfits), so random mixtures keep hitting
    positives: user 0 trains on three outfits; (0, 4, 8) is user 0's test positive."""
    outfits = [((0, 3, 6), 0, 0), ((1, 4, 7), 0, 0), ((2, 5, 8), 0, 0), ((0, 4, 8), 0, 3),
               ((0, 5, 7), 1, 0), ((1, 3, 8), 1, 0), ((2, 4, 6), 1, 3),
               ((2, 3, 7), 2, 0), ((1, 5, 6), 2, 0), ((0, 3, 8), 2, 3)]
    rng = np.random.default_rng(0)
    ds = OutfitDataset(name="small-world", item_category=np.repeat(np.arange(3), 3).astype(np.int8),
                       outfit_items=np.array([o for o, _, _ in outfits], dtype=np.int64),
                       outfit_user=np.array([u for _, u, _ in outfits], dtype=np.int64),
                       outfit_split=np.array([s for _, _, s in outfits], dtype=np.int8),
                       slot_categories=np.arange(3, dtype=np.int8), user_pool=np.zeros(3, dtype=np.int8),
                       images=ArrayImages(rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)))
    return ds.validate()


def as_sets(rows):
    return {tuple(sorted(r)) for r in np.asarray(rows).reshape(-1, 3).tolist()}


def test_per_pair_never_draws_the_users_own_training_positive():
    ds = small_world()
    train = ds.outfits_of("train")
    users, items = ds.outfit_user[train], ds.outfit_items[train]
    sampler = NegativeSampler(ds, n_negatives=60, seed=0, mode="per_pair")
    seen_other, seen_own_test = False, False
    for step in range(5):
        neg = sampler.sample(items, users, epoch=0, step=step)
        assert neg.shape == (len(train), 60, 3)
        for b, u in enumerate(users):
            own_train = as_sets(ds.outfit_items[(ds.outfit_user == u) & (ds.outfit_split == 0)])
            drawn = as_sets(neg[b])
            assert not drawn & own_train, (u, drawn & own_train)
            others = as_sets(ds.outfit_items[ds.outfit_user != u])
            seen_other |= bool(drawn & others)
            seen_own_test |= bool(u == 0 and (0, 4, 8) in drawn)
    # only the user's own training positives are rejected: other users' positives and the user's
    # own test positive can be drawn (paper §3.2.1, §4.9; no test label is used)
    assert seen_other and seen_own_test


@pytest.mark.parametrize("mode", ["shared", "per_pair"])
def test_default_negatives_never_exclude_a_held_out_positive(mode):
    """Both modes reject only training positives of the batch's users: every held-out positive
    (each user's test outfit) keeps being drawn, so no test label shapes training."""
    ds = small_world()
    train = ds.outfits_of("train")
    own_train = as_sets(ds.outfit_items[train])
    held_out = as_sets(ds.outfit_items[ds.outfit_split != 0])
    drawn = set()
    for step in range(20):
        neg = NegativeSampler(ds, n_negatives=60, seed=0, mode=mode).sample(
            ds.outfit_items[train], ds.outfit_user[train], epoch=0, step=step)
        users = ds.outfit_user[train]
        for b, rows in enumerate(neg if mode == "per_pair" else [neg] * len(train)):
            # a pair's negatives are never its user's training positives (shared ones: never any
            # batch user's, and every user is in this batch)
            own = own_train if mode == "shared" else as_sets(ds.outfit_items[train][users == users[b]])
            assert not as_sets(rows) & own
        drawn |= as_sets(neg)
    assert held_out <= drawn, held_out - drawn


def test_shared_negatives_reject_all_positives_only_when_asked():
    ds = small_world()
    train = ds.outfits_of("train")
    every_positive = as_sets(ds.outfit_items)
    for step in range(5):
        neg = NegativeSampler(ds, n_negatives=60, seed=0, reject="all_positives").sample(
            ds.outfit_items[train], ds.outfit_user[train], epoch=0, step=step)
        assert neg.shape == (60, 3) and not as_sets(neg) & every_positive


def test_per_pair_gives_each_pair_its_own_draw(tiny):
    train = tiny.outfits_of("train")[:16]
    users, items = tiny.outfit_user[train], tiny.outfit_items[train]
    sampler = NegativeSampler(tiny, n_negatives=8, seed=3, mode="per_pair", hard_fraction=0.25)
    neg, owners = sampler.sample(items, users, epoch=1, step=2, return_owners=True)
    assert neg.shape == (16, 8, tiny.n_slots) and owners.shape == (16, 8)
    again = sampler.sample(items, users, epoch=1, step=2)
    np.testing.assert_array_equal(neg, again)  # reproducible from (seed, epoch, step)
    rows = {tuple(r) for r in neg.reshape(-1, tiny.n_slots).tolist()}
    assert len(rows) > 0.9 * 16 * 8  # not one set repeated: every pair drew its own
    # two pairs of one user still get different negatives
    same_user = np.flatnonzero(users == users[0])
    assert same_user.size >= 2 and not np.array_equal(neg[same_user[0]], neg[same_user[1]])
    # hard ones (the first quarter) come from other users, random ones are marked -1
    assert (owners[:, :2] != users[:, None]).all() and (owners[:, :2] >= 0).all() and (owners[:, 2:] == -1).all()
    keys = user_positive_keys(tiny, "train")
    drawn = _user_outfit_keys(np.repeat(users, 8), outfit_hashes(neg.reshape(-1, tiny.n_slots)))
    assert not _in_sorted(drawn, keys).any()
    with pytest.raises(ValueError, match="mode='pairs' must be one of"):
        NegativeSampler(tiny, mode="pairs")


def test_pair_scores_agree_across_shapes_and_models(tiny, student):
    """Per-pair negatives as [B, N, S, d], or unique outfits + index: the recommender's override and
    the contract's default give each pair's own row-wise scores; shared ones are unchanged."""
    batch = a_batch(tiny, "per_pair")
    enc = batch.features(student)
    pos_f = enc["positives"]
    index = enc["negative_index"]
    uniq_f, uniq_m = enc["negatives"]
    assert index.shape == (8, 8) and uniq_f.shape[0] == len(np.unique(batch.negatives.reshape(-1, 3), axis=0))
    with torch.no_grad():
        pos_a, neg_a = student.pair_scores(batch.users, pos_f, (uniq_f, uniq_m), negative_index=index)
        pos_b, neg_b = OutfitModel.pair_scores(student, batch.users, pos_f, (uniq_f, uniq_m), negative_index=index)
        pos_c, neg_c = student.pair_scores(batch.users, pos_f, (uniq_f[index], uniq_m[index]))
        loop = torch.stack([student.score_items(batch.users[b].repeat(8), uniq_f[index[b]], uniq_m[index[b]])
                            for b in range(8)])
    for neg in (neg_a, neg_b, neg_c):
        torch.testing.assert_close(neg, loop, atol=1e-5, rtol=0)
    torch.testing.assert_close(pos_a, pos_b, atol=1e-5, rtol=0)
    shared = a_batch(tiny, "shared")
    s_enc = shared.features(student)
    with torch.no_grad():
        torch.testing.assert_close(student.pair_scores(shared.users, s_enc["positives"], s_enc["negatives"])[1],
                                   OutfitModel.pair_scores(student, shared.users, s_enc["positives"],
                                                           s_enc["negatives"])[1], atol=1e-5, rtol=0)


def test_per_pair_encodes_each_unique_outfit_once(tiny, student, monkeypatch):
    batch = a_batch(tiny, "per_pair")
    rows = []
    original = student.encode_outfits
    monkeypatch.setattr(student, "encode_outfits", lambda f, m: rows.append(f.shape[0]) or original(f, m))
    batch.pair_scores(student)
    assert rows == [8 + len(np.unique(batch.negatives.reshape(-1, 3), axis=0))]


def test_fnd_per_pair_scores_each_pairs_own_negatives(tiny, signal):
    batch = a_batch(tiny, "per_pair")
    d = FND(signal, alpha=1.25).weights(batch, "cpu")
    users = batch.users.numpy()
    one = signal.model.score_cached(np.array([users[3]]), batch.negatives[3, 5:6], signal.cache)
    assert d[3, 5].item() == pytest.approx(1.25 * (signal.user_mean[users[3]].item() - one.item()), abs=1e-5)


# --------------------------------------------------------------------------------------------
# the false-negative-rate knob


@pytest.mark.parametrize("scale,breadths", [("demo", (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8)),
                                             ("tiny", (0.5, 1.0, 1.5, 2.0))])  # tiny: 6 users, coarse steps
def test_knob_moves_the_false_negative_rate_monotonically(scale, breadths):
    rates = [false_negative_fraction(make_dataset(scale, seed=0, taste_breadth=b)) for b in breadths]
    assert all(a < b for a, b in zip(rates, rates[1:])), rates


def test_knob_spans_two_to_thirty_percent_at_demo_scale():
    low = false_negative_fraction(make_dataset("demo", seed=0, taste_breadth=0.7))
    high = false_negative_fraction(make_dataset("demo", seed=0, taste_breadth=1.7))
    assert low == pytest.approx(0.0191, abs=0.002) and high == pytest.approx(0.2975, abs=0.005)


def test_default_breadth_is_the_benchmark_bit_for_bit(tiny):
    same = make_dataset("tiny", seed=0, taste_breadth=1.0)
    attach_candidates(same, seed=0)
    assert same.fingerprint() == tiny.fingerprint()
    np.testing.assert_array_equal(same.images.get(np.arange(tiny.n_items)), tiny.images.get(np.arange(tiny.n_items)))
    assert same.truth.false_negative_threshold == tiny.truth.false_negative_threshold
    other = make_dataset("tiny", seed=0, taste_breadth=1.5)
    assert other.item_category.tolist() == tiny.item_category.tolist()  # items unchanged
    assert other.fingerprint() != tiny.fingerprint()                    # positives drawn broader
    with pytest.raises(ValueError, match="taste_breadth=-1 must be a positive number"):
        make_dataset("tiny", taste_breadth=-1)


def test_data_stage_passes_the_knob_and_reports_the_rate(tmp_path):
    ds = data_stage.run(tmp_path / "run", DataConfig(scale="tiny", taste_breadth=1.5))
    summary = data_stage.summary(ds)
    assert summary["taste_breadth"] == 1.5
    assert summary["false_negative_fraction_random_mixtures"] == pytest.approx(
        false_negative_fraction(make_dataset("tiny", taste_breadth=1.5)))
    # ranking by the truth itself: the ceiling of the test protocols
    assert summary["true_affinity_auc"]["random"] > 0.8


# --------------------------------------------------------------------------------------------
# diagnostics: the arithmetic


def test_flag_quality_by_hand():
    margin = np.array([-0.2, -0.1, 0.05, 0.3, -0.4, 0.2])
    is_fn = np.array([True, False, True, False, True, False])
    q = fn.flag_quality(margin, is_fn)
    # flagged: rows 0, 1, 4 (margin < 0); of those rows 0 and 4 are true FNs; true FNs: 0, 2, 4
    assert q == {"n": 6, "flagged_fraction": 0.5, "true_fn_fraction": 0.5, "precision": 2 / 3, "recall": 2 / 3}
    assert np.isnan(fn.flag_quality([0.1, 0.2], [True, False])["precision"])
    with pytest.raises(ValueError, match="of one length"):
        fn.flag_quality([0.1], [True, False])


def test_alpha_table_flags_do_not_move_rescaling_does():
    margin = np.array([-0.5, 0.2, 0.4, 0.8, 0.1, 0.6])
    is_fn = np.array([True, True, False, False, False, False])
    t = fn.alpha_table(margin, is_fn, alphas=(1.0, 2.0))
    assert t["flag_precision"].nunique() == 1 and t["flag_recall"].nunique() == 1
    neg = t[t["truth"] == "true negative"].set_index("alpha")
    # α = 1: d = 0.4, 0.8, 0.1, 0.6 all in [0, 1); α = 2: 0.8, 1.6, 0.2, 1.2 -> two above 1
    assert neg.loc[1.0, "weakened"] == 1.0 and neg.loc[1.0, "strengthened"] == 0.0
    assert neg.loc[2.0, "weakened"] == 0.5 and neg.loc[2.0, "strengthened"] == 0.5
    assert neg.loc[2.0, "mean_d"] == pytest.approx(2 * margin[2:].mean())
    fns = t[t["truth"] == "true FN"].set_index("alpha")
    assert fns.loc[1.0, "pulled"] == 0.5 and fns.loc[2.0, "pulled"] == 0.5


def test_pr_curve_contains_fnd_point_and_recall_grows():
    rng = np.random.default_rng(0)
    margin = rng.normal(size=500)
    is_fn = margin + rng.normal(scale=0.5, size=500) < -0.5
    pr = fn.flag_pr_curve(margin, is_fn)
    at_zero = pr[pr["is_fnd"]].iloc[0]
    q = fn.flag_quality(margin, is_fn)
    assert at_zero["precision"] == q["precision"] and at_zero["recall"] == q["recall"]
    assert pr.sort_values("threshold")["recall"].is_monotonic_increasing


def test_rank_correlation_is_spearman_and_calibration_bins():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200).round(1)  # ties
    y = x + rng.normal(scale=0.7, size=200)
    assert fn.rank_correlation(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    cal = fn.calibration_table(np.arange(100.0), 2 * np.arange(100.0) + 1, n_bins=4)
    assert cal["n"].tolist() == [25] * 4
    assert cal["teacher_score"].tolist() == [2 * m + 1 for m in cal["true_affinity"]]


def test_student_table():
    def m(auc_r, auc_h, loss, best=3):
        return {"loss": loss, "best_epoch": best, "epochs_run": best + 4, "stopped_early": True,
                "test": {"random": {"auc": auc_r, "ndcg_lpae": 0.5}, "hard": {"auc": auc_h, "ndcg_lpae": 0.4}},
                "budget": {"epochs": 2, "test": {"random": {"auc": auc_r - 0.01}}}}
    t = fn.student_table({"student_npair": m(0.80, 0.70, "npair"), "student_fnd": m(0.83, 0.69, "fnd")})
    gain = t.set_index(["stage", "protocol"])["gain_over_npair"]
    assert gain[("student_fnd", "random")] == pytest.approx(0.03)
    assert gain[("student_fnd", "hard")] == pytest.approx(-0.01)
    assert gain[("student_npair", "hard")] == 0.0
    assert t.set_index(["stage", "protocol"]).loc[("student_fnd", "random"), "auc_at_2_epochs"] == pytest.approx(0.82)


# --------------------------------------------------------------------------------------------
# the stage on a run folder, and the experiment plans


def test_stage_on_a_run_folder_with_an_untrained_teacher(tmp_path):
    run = RunFolder(tmp_path / "run")
    ds = data_stage.run(run, DataConfig(scale="tiny"))
    c = cfg(backbone="cnn-large")
    torch.manual_seed(0)
    teacher = build_model(c, ds)
    config = {"model": teacher.config(), "train": c.to_dict(), "dataset": {"fingerprint": ds.fingerprint()}}
    save_checkpoint(run.path("teacher", "checkpoint.pt"), state_dict=teacher.state_dict(), config=config,
                    metrics={})
    save_checkpoint(run.snapshot_path("teacher", 1), state_dict=teacher.state_dict(), config=config,
                    metrics={"epoch": 1, "val_auc": 0.5})
    out = fn.run(run, alphas=(1.0, 2.0), n_per_positive=3, device="cpu")
    table, metrics = out["negatives"], out["metrics"]
    assert len(table) == 3 * ds.outfits_of("train").size == metrics["sampled_negatives"]
    q = fn.flag_quality(table["margin"], table["is_fn"])
    assert metrics["flag_precision"] == q["precision"] and metrics["flag_recall"] == q["recall"]
    np.testing.assert_array_equal(table["is_fn"], table["true_affinity"] >= ds.truth.false_negative_threshold)
    assert out["strength"]["checkpoint"].tolist() == ["snapshot", "best"]
    assert out["strength"]["precision"].tolist()[0] == pytest.approx(q["precision"])  # same weights
    assert run.read_metrics("false_negatives")["flag_recall"] == q["recall"]


def test_stage_refuses_data_without_truth(tmp_path):
    run = RunFolder(tmp_path / "run")
    data_stage.run(run, DataConfig(scale="tiny"))
    description = read_json(run.data_dir / "dataset.json")
    write_json(run.data_dir / "dataset.json", {**description, "has_truth": False})  # as real data is
    with pytest.raises(StageError, match="has no ground truth: the false-negative lab needs the built-in"):
        fn.run(run)


def test_lab_plans_name_real_notebook_parameters(tmp_path):
    runs = fnlab.fn_rate_runs(tmp_path, seeds=[0, 1], scale="tiny") + fnlab.fn_ablation_runs(tmp_path, seeds=[0], scale="tiny")
    params = {nb: set(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{nb}.ipynb"))) for nb in {r.notebook for r in runs}}
    for r in runs:
        unknown = set(r.params.to_dict()) - params[r.notebook]
        assert not unknown, (r.notebook, unknown)
    rate = fnlab.fn_rate_runs(tmp_path, seeds=[0, 1], scale="tiny")
    folders = {r.run_dir for r in rate}
    assert len(folders) == len(fnlab.BREADTHS) * 2
    students = [r for r in rate if r.notebook == "03_student"]
    assert len(students) == len(folders) * (1 + len(fnlab.ALPHAS) + 2)
    assert {r.params.loss for r in students} == {"npair", "fnd", "oracle-drop", "oracle-pull"}
    assert len({(r.run_dir, r.stage) for r in students}) == len(students)  # no stage trained twice
    both = unique_jobs(rate + fnlab.fn_ablation_runs(tmp_path, seeds=[0, 1], scale="tiny"))
    assert sum(r.notebook == "02_teacher" for r in both) == len({r.run_dir for r in both})  # one teacher per folder
    with pytest.raises(ValueError, match="seeds"):
        fnlab.fn_rate_runs(tmp_path, seeds=[])


def test_snapshots_and_fixed_budget_of_one_run(tmp_path):
    run = RunFolder(tmp_path / "run")
    data_stage.run(run, DataConfig(scale="tiny"))
    c = cfg(epochs=2, max_steps_per_epoch=2, patience=5)
    m = training.run(run, "student_npair", c, snapshot_epochs=[1, 2], budget_epochs=1, progress=False)
    snaps = run.snapshots("student_npair")
    assert sorted(snaps) == [1, 2]
    last = load_checkpoint(run.path("student_npair", "last.pt"))["state_dict"]
    assert all(torch.equal(last[k], v) for k, v in load_checkpoint(snaps[2])["state_dict"].items())
    budget = m["budget"]
    assert budget["epochs"] == 1 and budget["best_epoch"] == 1 and set(budget["test"]) == {"random", "hard"}
    if m["best_epoch"] == 1:  # the best within one epoch is then the final best
        assert budget["test"]["random"]["auc"] == pytest.approx(m["test"]["random"]["auc"])
    else:
        assert budget["test"]["random"]["auc"] != m["test"]["random"]["auc"]


# --------------------------------------------------------------------------------------------
# the lab through the one command line: worker processes, reuse, failures, the time limit, its tables


@pytest.fixture(scope="module")
def lab_cli(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    code = cli.main(["lab", "fn_rate", "--scale", "tiny", "--seeds", "0", "--breadths", "1.0", "--root", str(root),
                     "--workers", "2", "--device", "cpu", "--no-progress"])
    return root, code


def _tiny_plan(root):
    return fnlab.fn_rate_runs(root / "cpu-2c" if (root / "cpu-2c").exists() else root, seeds=[0], scale="tiny",
                              breadths=(1.0,), device="cpu")


def _folder(root):
    return next(root.glob("*/plan.json")).parent


def test_lab_command_runs_the_plan_in_workers_and_writes_its_tables(lab_cli):
    root, code = lab_cli
    assert code == 0
    folder_root = _folder(root)
    plan = unique_jobs(fnlab.fn_rate_runs(folder_root, seeds=[0], scale="tiny", breadths=(1.0,), device="cpu"))
    record = read_json(folder_root / "plan.json")
    assert record["status"] == "finished" and len(record["jobs"]) == len(plan) == 9
    assert {j["status"] for j in record["jobs"]} == {"done"}
    folder = RunFolder(fnlab.lab_folder(folder_root, 1.0, 0))
    table = pd.read_csv(folder_root / "results.csv")
    trained = table[table.list == "test"]
    assert set(trained.method) == {"teacher", "npair", "fnd α=1.25", "fnd α=2", "fnd α=3", "oracle-drop", "oracle-pull"}

    def auc(method, protocol="random"):
        return trained.query("method == @method and protocol == @protocol and metric == 'auc'")["value"].item()

    assert auc("npair") == pytest.approx(folder.read_metrics("student_npair")["test"]["random"]["auc"], abs=1e-12)
    assert auc("teacher", "hard") == pytest.approx(folder.read_metrics("teacher")["test"]["hard"]["auc"], abs=1e-12)
    # the diagnostics ran after every student of the folder: they list all six, and their flags are rows
    students = {r.stage for r in plan if r.notebook == "03_student"}
    assert {s["stage"] for s in folder.read_metrics("false_negatives")["students"]} == students
    diag = table.query("method == 'diagnostics' and metric == 'flag_precision'")["value"].item()
    assert diag == folder.read_metrics("false_negatives")["flag_precision"]
    rate = table.query("stage == 'data' and metric == 'false_negative_fraction_random_mixtures'")["value"].item()
    assert rate == folder.read_metrics("data")["false_negative_fraction_random_mixtures"]
    summary = (folder_root / "results.md").read_text()
    assert "oracle-pull − N-pair (breadth 1.0)" in summary and "single seed: not a verdict" in summary
    assert "**fn_rate**" in summary and (folder_root / "report.html").exists()


def test_lab_reuses_finished_runs_and_reports_a_failure_by_name(lab_cli):
    root, _ = lab_cli
    folder_root = _folder(root)
    plan = fnlab.fn_rate_runs(folder_root, seeds=[0], scale="tiny", breadths=(1.0,), device="cpu")
    trained = sorted(root.rglob("checkpoint.pt"))
    before = {p: p.stat().st_mtime_ns for p in trained}
    bad = fnlab.student_run(folder_root, 1.0, 0, "npair", "tiny", device="cpu")
    bad = Job(bad.params.replace(loss="no-such-loss", out_name="student_bad"), method="bad")
    out = run_plan([*plan, bad], progress=False, on_failure="continue")
    assert len(out.done) == 9 and len(out.failed) == 1 and not out.not_started
    assert "breadth1/seed0/student_bad" in out.failed[0][1] and "no-such-loss" in out.failed[0][1]
    assert {p: p.stat().st_mtime_ns for p in trained} == before  # every model reused, none retrained


@pytest.mark.parametrize("workers", [1, 2])
def test_lab_starts_nothing_after_its_time_limit(tmp_path, workers):
    plan = fnlab.fn_rate_runs(tmp_path, seeds=[0], scale="tiny", breadths=(1.0,), device="cpu")
    out = run_plan(plan, workers=workers, time_limit=1e-9, progress=False, on_failure="continue")
    assert not out.done and not out.failed
    assert {(r.run_dir, r.stage) for r in out.not_started} == {(r.run_dir, r.stage) for r in unique_jobs(plan)}
    assert not (fnlab.lab_folder(tmp_path, 1.0, 0) / "data").exists()


def test_lab_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    for argv, needle in ((["lab", "fn_rate", "--breadths", "-1", "--root", str(tmp_path)], "--breadths"),
                         (["lab", "nope", "--root", str(tmp_path)], "unknown lab experiment"),
                         (["lab", "fn_rate", "--workers", "0", "--root", str(tmp_path)], "must be >= 1"),
                         (["lab", "fn_rate", "--scale", "polyvore630", "--root", str(tmp_path)], "no lab budget")):
        assert cli.main(argv) == 2
        assert needle in capsys.readouterr().err
    assert not list(tmp_path.rglob("data"))
