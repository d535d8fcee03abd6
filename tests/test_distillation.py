"""The distillation baselines over the sampled candidates (fndkit.distillation): closed forms (KD is
N-pair at λ = 0 and FND at λ = 0 for kd-fnd; the KL term and its gradient vanish when the student
matches the teacher; T² keeps gradients comparable across T; margin-MSE moves margins toward the
teacher's; RD with K = 0 is N-pair and weighs the teacher's top items in its order; RRD against a
naive loop), the teacher frozen and its CNN never called while the student trains, and every
method end to end through the 03_student stage in one tiny run folder."""

import json
import math

import numpy as np
import pytest

from conftest import small_config
import torch

from fndkit.config import ConfigError, DataConfig, TrainConfig
from fndkit.data.sampling import NegativeSampler
from fndkit.distillation import (METHODS, KDWithFND, LatentHint, MarginMSE, RankingDistillation, RelaxedRankingDistillation,
                                 SoftTargetKD, candidate_logits, margin_mse, rank_position_weights,
                                 ranking_distillation_loss, relaxed_ranking_loss, sample_interesting,
                                 search_space, soft_target_kd, teacher_top_k, hint_loss)
from fndkit.losses import npair_loss
from fndkit.models.contract import make_image_fn
from fndkit.objectives import FND, NEEDS_TEACHER, OBJECTIVES, NPair, TrainBatch, make_objective, prepare_teacher
from fndkit.rundir import RunFolder
from fndkit.stages import data, training
from fndkit.train import build_model, fit

LOSSES = sorted(METHODS)


cfg = small_config


@pytest.fixture(scope="module")
def teacher(tiny):
    torch.manual_seed(1)
    return build_model(cfg(backbone="cnn-large"), tiny)


@pytest.fixture(scope="module")
def signal(tiny, teacher):
    return prepare_teacher(teacher, tiny)


@pytest.fixture(scope="module")
def student(tiny):
    torch.manual_seed(0)
    return build_model(cfg(), tiny).eval()


def a_batch(ds, mode="shared"):
    ids = ds.outfits_of("train")[:8]
    users, items = ds.outfit_user[ids], ds.outfit_items[ids]
    negatives = NegativeSampler(ds, n_negatives=8, seed=0, mode=mode).sample(items, users, epoch=0, step=0)
    return TrainBatch(torch.as_tensor(users), items, negatives, make_image_fn(ds.images, None, "cpu"))


def test_every_method_is_registered_with_a_teacher_and_a_search_space():
    for loss in LOSSES:
        assert loss in OBJECTIVES and loss in NEEDS_TEACHER
        space = search_space(loss)
        assert space and all(hasattr(TrainConfig(), field) and values for field, values in space.items())
        # every point of the space is a valid config for its method
        for field, values in space.items():
            for value in values:
                TrainConfig(loss=loss, **{field: value})
    with pytest.raises(ValueError, match="loss='kd' needs a trained teacher"):
        make_objective(cfg(loss="kd"))


# ------------------------------------------------------------------------------------------------
# soft-target KD


@pytest.mark.parametrize("mode", ["shared", "per_pair"])
def test_kd_is_npair_exactly_at_lambda_zero(tiny, signal, student, mode):
    kd, _ = SoftTargetKD.from_config(cfg(loss="kd", kd_weight=0.0), signal)(student, a_batch(tiny, mode))
    npair, _ = NPair(0.1)(student, a_batch(tiny, mode))
    assert torch.equal(kd, npair)
    # and another loss at λ > 0 (the teacher's distribution is not the student's)
    kd_half, stats = SoftTargetKD.from_config(cfg(loss="kd", kd_weight=0.5), signal)(student, a_batch(tiny, mode))
    assert stats["loss_distill"] > 1e-4 and abs(kd_half.item() - npair.item()) > 1e-4


def test_kd_term_is_the_candidate_kl(tiny, signal, student):
    batch = a_batch(tiny)
    objective = SoftTargetKD.from_config(cfg(loss="kd", kd_weight=0.3, kd_temperature=3.0), signal)
    loss, stats = objective(student, batch)
    pos, neg = a_batch(tiny).pair_scores(student)
    t_pos = signal.model.score_cached(batch.users.numpy(), batch.positives, signal.cache)
    t_neg = signal.negative_scores(batch.users, batch.negatives)
    z, zt = candidate_logits(pos, neg, 0.1) / 3.0, candidate_logits(t_pos, t_neg, 0.1) / 3.0
    q = torch.softmax(zt, 1)
    kl = (q * (torch.log_softmax(zt, 1) - torch.log_softmax(z, 1))).sum(1).mean() * 9.0
    assert stats["loss_distill"] == pytest.approx(kl.item(), rel=1e-4)
    assert loss.item() == pytest.approx(0.7 * npair_loss(pos, neg, 0.1).item() + 0.3 * kl.item(), rel=1e-4)


def test_kl_term_and_its_gradient_vanish_when_student_equals_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(6, 9) * 3
    student = teacher.clone().requires_grad_(True)
    loss = soft_target_kd(student, teacher, temperature=2.0)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    assert student.grad.abs().max().item() < 1e-7
    other = (teacher + torch.randn(6, 9)).requires_grad_(True)
    soft_target_kd(other, teacher, temperature=2.0).backward()
    assert other.grad.abs().max().item() > 1e-3


def test_t_squared_keeps_the_gradient_magnitude_comparable_across_t():
    torch.manual_seed(0)
    teacher, start = torch.randn(16, 33), torch.randn(16, 33)
    norms = {}
    for t in (2.0, 4.0, 8.0, 16.0):
        student = start.clone().requires_grad_(True)
        soft_target_kd(student, teacher, temperature=t).backward()
        norms[t] = student.grad.norm().item()
    assert max(norms.values()) / min(norms.values()) < 1.3, norms
    # without T² the gradient would shrink as 1/T²: 64× from T = 2 to T = 16
    assert (norms[2.0] / 4) / (norms[16.0] / 256) > 40


# ------------------------------------------------------------------------------------------------
# margin-MSE


def test_margin_mse_is_zero_when_margins_match():
    torch.manual_seed(0)
    t_pos, t_neg = torch.randn(5), torch.randn(5, 7)
    shift = torch.randn(5)[:, None]       # every score of a row shifted: same margins
    assert margin_mse((t_pos[:, None] + shift)[:, 0], t_neg + shift, t_pos, t_neg).item() == pytest.approx(0, abs=1e-10)
    assert margin_mse(t_pos + 1.0, t_neg, t_pos, t_neg).item() == pytest.approx(1.0)


def test_margin_mse_gradient_moves_each_student_margin_toward_the_teachers():
    torch.manual_seed(0)
    t_pos, t_neg = torch.randn(6), torch.randn(6, 1)
    s_pos, s_neg = torch.randn(6).requires_grad_(True), torch.randn(6, 1).requires_grad_(True)
    margin_mse(s_pos, s_neg, t_pos, t_neg).backward()
    with torch.no_grad():
        before = (s_pos[:, None] - s_neg) - (t_pos[:, None] - t_neg)
        after = ((s_pos - 0.1 * s_pos.grad)[:, None] - (s_neg - 0.1 * s_neg.grad)) - (t_pos[:, None] - t_neg)
    assert (after.abs() < before.abs()).all()
    # the gradient's sign: a student margin above the teacher's lowers the positive's score
    assert torch.equal(torch.sign(s_pos.grad), torch.sign(before[:, 0]))


def test_margin_mse_objective_adds_its_term_in_logit_units(tiny, signal, student):
    batch = a_batch(tiny)
    loss, stats = MarginMSE.from_config(cfg(loss="margin-mse", kd_weight=0.1), signal)(student, batch)
    pos, neg = a_batch(tiny).pair_scores(student)
    t_pos = signal.model.score_cached(batch.users.numpy(), batch.positives, signal.cache)
    t_neg = signal.negative_scores(batch.users, batch.negatives)
    expected = margin_mse(pos / 0.1, neg / 0.1, t_pos / 0.1, t_neg / 0.1).item()
    assert stats["loss_distill"] == pytest.approx(expected, rel=1e-4)
    assert loss.item() == pytest.approx(npair_loss(pos, neg, 0.1).item() + 0.1 * expected, rel=1e-4)


# ------------------------------------------------------------------------------------------------
# ranking distillation


def test_rd_with_k_zero_is_npair_exactly(tiny, signal, student):
    rd, _ = RankingDistillation.from_config(cfg(loss="rd", rd_k=0, kd_weight=1.0), signal)(student, a_batch(tiny))
    npair, _ = NPair(0.1)(student, a_batch(tiny))
    assert torch.equal(rd, npair)
    rd3, _ = RankingDistillation.from_config(cfg(loss="rd", rd_k=3, kd_weight=1.0), signal)(student, a_batch(tiny))
    assert abs(rd3.item() - npair.item()) > 1e-3


def test_rd_top_k_positions_follow_the_teachers_order():
    teacher_pool = torch.tensor([[0.1, 0.9, 0.5, 0.7, -0.2],
                                 [0.3, -0.5, 0.8, 0.0, 0.6]])
    top = teacher_top_k(teacher_pool, 3)
    assert top.tolist() == [[1, 3, 2], [2, 4, 0]]
    w = rank_position_weights(3, decay=1.0)
    assert w.tolist() == pytest.approx((np.exp(-np.arange(1, 4)) / np.exp(-np.arange(1, 4)).sum()).tolist())
    # equal student logits: the pull on each pool item is its teacher position's weight, nothing else
    z = torch.zeros(2, 5, requires_grad=True)
    loss = ranking_distillation_loss(z, top, w)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2))       # Σ w_r · −log σ(0), weights summing to 1
    grad = -z.grad * 2 * 2                                  # −∂/∂z = w_r σ(−0) / B
    w = w.tolist()
    assert grad[0].tolist() == pytest.approx([0, w[0], w[2], w[1], 0])
    assert grad[1].tolist() == pytest.approx([w[2], 0, w[0], 0, w[1]])
    with pytest.raises(ValueError, match="rd_k=6 must lie in"):
        teacher_top_k(teacher_pool, 6)


# ------------------------------------------------------------------------------------------------
# relaxed ranking distillation


def naive_rrd(z: torch.Tensor, interesting: torch.Tensor) -> float:
    total = 0.0
    for b in range(z.shape[0]):
        chosen = interesting[b].tolist()
        rest = [i for i in range(z.shape[1]) if i not in chosen]
        for k, item in enumerate(chosen):
            denominator = sum(math.exp(z[b, j]) for j in chosen[k:]) + sum(math.exp(z[b, u]) for u in rest)
            total += -z[b, item].item() + math.log(denominator)
    return total / z.shape[0]


@pytest.mark.parametrize("k", [0, 1, 4, 9])
def test_rrd_matches_a_naive_loop(k):
    torch.manual_seed(k)
    z, teacher_pool = torch.randn(5, 9) * 2, torch.randn(5, 9)
    interesting = sample_interesting(teacher_pool, k, temperature=3.0, rng=np.random.default_rng(0))
    assert interesting.shape == (5, k)
    assert relaxed_ranking_loss(z, interesting).item() == pytest.approx(naive_rrd(z, interesting), rel=1e-5, abs=1e-6)


def test_rrd_interesting_items_come_in_the_teachers_order():
    torch.manual_seed(0)
    teacher_pool = torch.randn(50, 12)
    rng = np.random.default_rng(0)
    cold = sample_interesting(teacher_pool, 4, temperature=1e-3, rng=rng)
    assert torch.equal(cold, teacher_top_k(teacher_pool, 4))          # small T: the teacher's top K
    hot = sample_interesting(teacher_pool, 4, temperature=100.0, rng=rng)
    picked = teacher_pool.gather(1, hot)
    assert (picked[:, :-1] >= picked[:, 1:]).all()                    # any T: in the teacher's order
    assert not torch.equal(hot, teacher_top_k(teacher_pool, 4))        # large T: beyond the top K


def test_rrd_objective_resumes_its_draws(tiny, signal, student):
    c = cfg(loss="rrd", rd_k=3, kd_temperature=5.0)
    a = RelaxedRankingDistillation.from_config(c, signal)
    a(student, a_batch(tiny))
    b = RelaxedRankingDistillation.from_config(c, signal)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert a(student, a_batch(tiny))[0].item() == b(student, a_batch(tiny))[0].item()


# ------------------------------------------------------------------------------------------------
# latent hint


def test_hint_vanishes_when_the_projection_maps_student_onto_teacher_directions():
    torch.manual_seed(0)
    teacher = torch.randn(7, 6)
    identity = torch.nn.Linear(6, 6)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(6))
        identity.bias.zero_()
    student = (3.0 * teacher).requires_grad_(True)       # the same directions, another length
    loss = hint_loss(student, teacher, identity)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-10) and student.grad.abs().max().item() < 1e-6
    # opposite directions: the largest distance on the sphere, 4
    assert hint_loss(-teacher, teacher, identity).item() == pytest.approx(4.0)


def test_hint_projection_trains_beside_the_model_and_resumes(tiny, signal, tmp_path):
    c = cfg(loss="hint", kd_weight=1.0)
    objective = make_objective(c, teacher=signal)
    start = [p.detach().clone() for p in objective.parameters()]
    assert len(start) == 4 and all(p.requires_grad for p in objective.parameters())
    torch.manual_seed(0)
    fit(build_model(c, tiny), tiny, c, tmp_path, objective, progress=False)
    assert all(not torch.equal(a, b) for a, b in zip(start, objective.parameters()))
    again = LatentHint.from_config(c, signal)
    again.load_state_dict(json.loads(json.dumps(objective.state_dict())))
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), objective.parameters()))


# ------------------------------------------------------------------------------------------------
# KD + FND


def test_kd_fnd_is_fnd_exactly_at_lambda_zero(tiny, signal, student):
    both, stats = KDWithFND.from_config(cfg(loss="kd-fnd", kd_weight=0.0), signal)(student, a_batch(tiny))
    fnd, fnd_stats = FND(signal, alpha=1.25, tau=0.1)(student, a_batch(tiny))
    assert both.item() == pytest.approx(fnd.item(), abs=1e-6)
    assert stats["flagged"] == fnd_stats["flagged"] and stats["pairs"] == fnd_stats["pairs"]


# ------------------------------------------------------------------------------------------------
# bad values


@pytest.mark.parametrize("changes,message", [
    ({"kd_weight": float("nan")}, r"kd_weight=nan must be a finite number"),
    ({"kd_weight": -0.5}, r"kd_weight=-0.5 must be >= 0"),
    ({"kd_temperature": 0.0}, r"kd_temperature=0.0 must be > 0"),
    ({"kd_temperature": float("inf")}, r"kd_temperature=inf must be a finite number"),
    ({"rd_k": -1}, r"rd_k=-1 must be >= 0"),
    ({"rd_k": 2.0}, r"rd_k=2.0 must be an integer"),
])
def test_bad_distillation_fields_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_methods_refuse_values_they_cannot_use(signal):
    with pytest.raises(ConfigError, match=r"kd_weight=1.5 must lie in \[0, 1\] for loss='kd'"):
        SoftTargetKD.from_config(cfg(loss="kd", kd_weight=1.5), signal)
    with pytest.raises(ConfigError, match=r"rd_k=9 exceeds the 8 sampled negatives .*lower rd_k or raise n_negatives"):
        RankingDistillation.from_config(cfg(loss="rd", rd_k=9), signal)


# ------------------------------------------------------------------------------------------------
# the teacher: frozen, and no CNN pass while the student trains


@pytest.mark.parametrize("loss", LOSSES)
def test_teacher_frozen_and_its_cnn_not_called_per_step(tiny, teacher, loss, tmp_path, monkeypatch):
    c = cfg(loss=loss, rd_k=3)
    objective = make_objective(c, teacher=prepare_teacher(teacher, tiny), truth=tiny.truth)
    calls = []
    real = teacher.encode_items
    monkeypatch.setattr(teacher, "encode_items", lambda images: calls.append(len(images)) or real(images))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(0)
    model = build_model(c, tiny)
    start = [p.detach().clone() for p in model.parameters()]
    result = fit(model, tiny, c, tmp_path, objective, progress=False)
    assert calls == []
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert np.isfinite(result["history"][0]["loss"]) and "loss_distill" in result["history"][0]
    assert any(not torch.equal(a, b) for a, b in zip(start, model.parameters()))


# ------------------------------------------------------------------------------------------------
# end to end: 03_student's stage, one tiny run folder


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = RunFolder(tmp_path_factory.mktemp("distillation") / "run")
    data.run(run, DataConfig(scale="tiny"))
    training.execute(training.TeacherParams(run_dir=str(run.root), epochs=1, max_steps_per_epoch=2, device="cpu",
                                            snapshot_epochs=[]), progress=False)
    return run


@pytest.mark.parametrize("loss", LOSSES)
def test_every_method_trains_from_the_student_stage(run_folder, loss):
    params = training.StudentParams(run_dir=str(run_folder.root), loss=loss, epochs=1, max_steps_per_epoch=2,
                                    rd_k=3, device="cpu")
    metrics = training.execute(params, progress=False)
    stage = f"student_{loss}-K3" if "rd_k" in METHODS[loss].config_fields else f"student_{loss}"
    assert metrics["stage"] == stage and metrics["loss"] == loss
    written = json.loads((run_folder.root / stage / "metrics.json").read_text())
    assert np.isfinite(written["test"]["random"]["auc"])
    assert json.loads((run_folder.root / stage / "config.json").read_text())["train"]["rd_k"] == 3


def test_student_folder_names_carry_non_default_fields(run_folder):
    def name(**kw):
        return training.StudentParams(run_dir=str(run_folder.root), **kw).plan().stage

    assert name(loss="kd") == "student_kd"
    assert name(loss="kd", kd_weight=0.25, kd_temperature=4.0) == "student_kd-w0.25-T4"
    assert name(loss="margin-mse", kd_temperature=4.0) == "student_margin-mse"   # a field it does not read
    assert name(loss="rrd", rd_k=2) == "student_rrd-K2"
    assert name(loss="kd-fnd", alpha=2.0, kd_weight=0.75) == "student_kd-fnd-alpha2-w0.75"
    assert name(loss="fnd", kd_weight=0.25) == "student_fnd"


def test_explorer_and_false_negative_lab_take_a_distilled_student_by_name(run_folder):
    from fndkit.stages import false_negatives
    from fndkit.viz.projection import load_run_models

    params = training.StudentParams(run_dir=str(run_folder.root), loss="kd-fnd", alpha=2.0, epochs=1,
                                    max_steps_per_epoch=2, device="cpu")
    stage = training.execute(params, progress=False)["stage"]
    assert stage == "student_kd-fnd-alpha2"
    models = load_run_models(run_folder.root, student=stage)
    assert models.student is not None and models.student_name == stage
    assert models.alpha == 2.0          # the student's own α weighs its d in the explorer's flags
    students = false_negatives.run(run_folder.root, max_positives=50, device="cpu")["students"]
    assert stage in set(students["stage"]) and "kd-fnd" in set(students["loss"])
    # and as the model whose flags the lab shows
    assert false_negatives.run(run_folder.root, teacher=stage, max_positives=50, device="cpu")["metrics"]["teacher"] == stage
