"""Losses against closed forms, naive loop references and the paper's gradient (eqs. 10-18)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fndkit.losses import (bpr_loss, false_negative_weights, fnd_loss, npair_loss,
                           nt_xent_loss)



@pytest.fixture(autouse=True)
def float64():
    # exact comparisons with the python-float references; restored so other test files are unaffected
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _scores(b=5, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(b, generator=g) * 2 - 1
    neg = torch.rand(b, n, generator=g) * 2 - 1
    return pos, neg


def _naive_fnd(pos, neg, weights, tau):
    """Eqs. (13)-(14) literally, one pair at a time (weights all 1 gives eq. 10)."""
    total = 0.0
    for i in range(len(pos)):
        numerator = math.exp(pos[i].item() / tau)
        denominator = numerator + sum(math.exp(weights[i, k].item() * neg[i, k].item() / tau)
                                      for k in range(neg.shape[1]))
        total += -math.log(numerator / denominator)
    return total / len(pos)


def _naive_nt_xent(z1, z2, tau):
    """Eqs. (17)-(18) literally, with the paper's interleaved view order (2n-1, 2n)."""
    views = []
    for a, b in zip(z1, z2):
        views += [a, b]
    n2 = len(views)
    s = [[F.cosine_similarity(views[n], views[m], dim=0).item() for m in range(n2)]
         for n in range(n2)]

    def ell(n, m):
        denominator = sum(math.exp(s[n][t] / tau) for t in range(n2) if t != n)
        return -math.log(math.exp(s[n][m] / tau) / denominator)

    return sum(ell(2 * n, 2 * n + 1) + ell(2 * n + 1, 2 * n) for n in range(n2 // 2)) / n2


@pytest.mark.parametrize("tau", [0.05, 0.1, 1.0])
@pytest.mark.parametrize("b,n", [(1, 1), (4, 3), (6, 10)])
def test_npair_matches_loop_reference_and_cross_entropy(tau, b, n):
    pos, neg = _scores(b, n, seed=b * n)
    loss = npair_loss(pos, neg, tau=tau)
    assert loss.item() == pytest.approx(_naive_fnd(pos, neg, torch.ones_like(neg), tau), rel=1e-9)
    logits = torch.cat([pos[:, None], neg], 1) / tau
    expected = F.cross_entropy(logits, torch.zeros(b, dtype=torch.long))
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_fnd_matches_loop_reference(tau):
    pos, neg = _scores(4, 6, seed=3)
    weights = torch.randn(4, 6, generator=torch.Generator().manual_seed(1)) * 2
    loss = fnd_loss(pos, neg, weights, tau=tau)
    assert loss.item() == pytest.approx(_naive_fnd(pos, neg, weights, tau), rel=1e-9)


def test_fnd_with_unit_weights_is_npair():
    pos, neg = _scores(8, 5, seed=2)
    assert torch.allclose(fnd_loss(pos, neg, torch.ones_like(neg), tau=0.1),
                          npair_loss(pos, neg, tau=0.1))


def test_fnd_gradient_is_eq16_and_has_the_sign_of_the_weight():
    tau, b, n = 0.1, 3, 5
    pos, neg = _scores(b, n, seed=4)
    neg = neg.clone().requires_grad_(True)
    weights = torch.tensor([[1.5, -0.5, 0.2, -1.0, 0.7]] * b) * torch.tensor([[1.0], [2.0], [-1.0]])
    fnd_loss(pos, neg, weights, tau=tau).backward()
    # eq. (15): p = softmax over [r_ij, d_ijk r_ijk] / tau, at the negatives' positions
    logits = torch.cat([pos[:, None], weights * neg.detach()], 1) / tau
    p = torch.softmax(logits, dim=1)[:, 1:]
    # eq. (16) for one pair; the batch mean of eq. (14) divides by B
    assert torch.allclose(neg.grad, weights / tau * p / b)
    assert torch.equal(torch.sign(neg.grad), torch.sign(weights))


def test_no_gradient_flows_into_the_weights():
    pos, neg = _scores(3, 4, seed=5)
    teacher_neg = torch.rand(3, 4, requires_grad=True)
    teacher_mean = torch.rand(3, requires_grad=True)
    weights = torch.randn(3, 4, requires_grad=True)
    pos = pos.clone().requires_grad_(True)
    fnd_loss(pos, neg, weights).backward()
    assert weights.grad is None
    assert pos.grad is not None
    derived = false_negative_weights(teacher_neg, teacher_mean, alpha=1.25)
    assert not derived.requires_grad


@pytest.mark.parametrize("loss_fn", ["npair", "fnd", "bpr"])
def test_finite_at_small_temperature_and_large_logits(loss_fn):
    pos = torch.tensor([1.0, -1.0, 1.0, -1.0], requires_grad=True)
    neg = torch.tensor([[-1.0, 1.0, 1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]],
                       requires_grad=True)
    weights = torch.tensor([[50.0, -50.0, 3.0]] * 4)
    if loss_fn == "npair":
        loss = npair_loss(pos, neg, tau=0.01)
    elif loss_fn == "fnd":
        loss = fnd_loss(pos, neg, weights, tau=0.01)   # logits up to 5000
    else:
        loss = bpr_loss(pos, neg, tau=0.01)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert loss.item() > 0


def test_fnd_large_logit_value_matches_logsumexp_form():
    # a false negative with d = -50 and r = -1 has logit 5000: loss ~ (5000 - 100) in nats
    pos = torch.tensor([1.0])
    neg = torch.tensor([[-1.0]])
    loss = fnd_loss(pos, neg, torch.tensor([[-50.0]]), tau=0.01)
    assert loss.item() == pytest.approx(5000.0 - 100.0, rel=1e-9)


def test_bpr_closed_forms():
    s = torch.tensor([0.3, -0.2])
    assert bpr_loss(s, s[:, None].repeat(1, 4)).item() == pytest.approx(math.log(2))
    pos, neg = torch.tensor([0.5]), torch.tensor([[0.1, 0.9]])
    tau = 0.5
    expected = (-math.log(1 / (1 + math.exp(-0.8))) - math.log(1 / (1 + math.exp(0.8)))) / 2
    assert bpr_loss(pos, neg, tau=tau).item() == pytest.approx(expected)


@pytest.mark.parametrize("b", [1, 2, 5])
def test_nt_xent_identical_embeddings_give_log_2b_minus_1(b):
    z = torch.ones(b, 8)
    assert nt_xent_loss(z, z.clone(), tau=0.1).item() == pytest.approx(math.log(2 * b - 1), abs=1e-9)


@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("b", [2, 5])
def test_nt_xent_matches_loop_reference_and_is_symmetric(tau, b):
    g = torch.Generator().manual_seed(b)
    z1, z2 = torch.randn(b, 6, generator=g), torch.randn(b, 6, generator=g)
    loss = nt_xent_loss(z1, z2, tau=tau)
    assert loss.item() == pytest.approx(_naive_nt_xent(z1, z2, tau), rel=1e-9)
    assert torch.allclose(loss, nt_xent_loss(z2, z1, tau=tau))
    # invariant to the scale of each embedding (cosine similarities)
    assert torch.allclose(loss, nt_xent_loss(3 * z1, 0.5 * z2, tau=tau))


def test_nt_xent_gradients_finite():
    z1 = torch.randn(4, 5, requires_grad=True)
    z2 = torch.randn(4, 5, requires_grad=True)
    nt_xent_loss(z1, z2, tau=0.01).backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_false_negative_weights_hand_example():
    teacher_neg = torch.tensor([[0.2, 0.9], [-0.5, 0.1]])
    teacher_mean = torch.tensor([0.6, 0.1])
    weights = false_negative_weights(teacher_neg, teacher_mean, alpha=1.5)
    expected = torch.tensor([[1.5 * 0.4, 1.5 * -0.3], [1.5 * 0.6, 0.0]])
    assert torch.allclose(weights, expected)
    # a negative the teacher scores above the user's positives is a false negative: d < 0
    assert weights[0, 1] < 0


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_false_negative_weights_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        false_negative_weights(torch.zeros(2, 3), torch.zeros(2), alpha=alpha)


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan")])
def test_bad_temperature_is_named(tau):
    pos, neg = _scores(2, 3)
    for call in (lambda: bpr_loss(pos, neg, tau=tau), lambda: npair_loss(pos, neg, tau=tau),
                 lambda: fnd_loss(pos, neg, torch.ones_like(neg), tau=tau),
                 lambda: nt_xent_loss(neg, neg, tau=tau)):
        with pytest.raises(ValueError, match=f"tau.*{tau}"):
            call()


def test_shape_mismatches_raise():
    pos, neg = _scores(3, 4)
    with pytest.raises(ValueError, match="neg_scores"):
        npair_loss(pos, neg[:2])
    with pytest.raises(ValueError, match="pos_scores"):
        bpr_loss(pos[:, None], neg)
    with pytest.raises(ValueError, match="weights"):
        fnd_loss(pos, neg, torch.ones(3, 5))
    with pytest.raises(ValueError, match="z1 and z2"):
        nt_xent_loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        false_negative_weights(neg, torch.zeros(2), alpha=1.0)
