"""Training objectives of the paper, one function each, averaged over the batch.

- :func:`bpr_loss`: Bayesian personalised ranking (the baselines' loss, with temperature).
- :func:`npair_loss`: N-pair loss of the teacher, eq. (10); :func:`npair_loss_excluding` leaves
  chosen negatives out of its denominator (the false-negative lab's drop oracle).
- :func:`false_negative_weights`: false-negativeness d_ijk from the frozen teacher, eqs. (11)-(12).
- :func:`fnd_loss`: False Negative Distillation loss of the student, eqs. (13)-(14).
- :func:`nt_xent_loss`: SimCLR's contrastive loss over augmented outfit views, eqs. (17)-(18).

All are computed through ``F.cross_entropy`` / ``F.softplus`` (log-sum-exp inside), so they stay
finite for small temperatures and large logits. Scores are cosines r_ij in [-1, 1] (eq. 9).
Shapes: B = batch size, N = negatives per positive, d = embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")


def _check_scores(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> None:
    if pos_scores.ndim != 1:
        raise ValueError(f"pos_scores must be [B], got shape {tuple(pos_scores.shape)}")
    if neg_scores.ndim != 2 or neg_scores.shape[0] != pos_scores.shape[0]:
        raise ValueError(f"neg_scores must be [B, N] with B = {pos_scores.shape[0]} "
                         f"(len of pos_scores), got shape {tuple(neg_scores.shape)}")


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """BPR with temperature: mean over b, k of  -log sigma((r_b - r_bk) / tau).

    pos_scores: [B] scores of the positive outfits; neg_scores: [B, N] scores of each positive's
    negatives. Returns a scalar. Equal scores give log 2.
    """
    _check_tau(tau)
    _check_scores(pos_scores, neg_scores)
    # -log sigma(x) = softplus(-x), stable for large |x|
    return F.softplus((neg_scores - pos_scores[:, None]) / tau).mean()


def npair_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """N-pair loss, eq. (10):

        L = -1/B sum_(i,j) log [ exp(r_ij/tau) / (exp(r_ij/tau) + sum_k exp(r_ijk/tau)) ]

    pos_scores: [B] r_ij; neg_scores: [B, N] r_ijk; tau = tau_FND. Returns a scalar.
    """
    _check_tau(tau)
    _check_scores(pos_scores, neg_scores)
    logits = torch.cat([pos_scores[:, None], neg_scores], dim=1) / tau
    target = torch.zeros(len(pos_scores), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def npair_loss_excluding(pos_scores: torch.Tensor, neg_scores: torch.Tensor, exclude: torch.Tensor,
                         tau: float = 0.1) -> torch.Tensor:
    """Eq. (10) with some negatives left out of the denominator:

        L = -1/B sum_i log [ exp(r_i/tau) / (exp(r_i/tau) + sum_{k not excluded} exp(r_ik/tau)) ]

    exclude: bool [B, N] (True = not a negative of that row, e.g. a known false negative). An
    excluded negative gets no gradient at all. With nothing excluded this is :func:`npair_loss`.
    """
    _check_tau(tau)
    _check_scores(pos_scores, neg_scores)
    if exclude.shape != neg_scores.shape or exclude.dtype != torch.bool:
        raise ValueError(f"exclude must be a bool tensor shaped like neg_scores {tuple(neg_scores.shape)}, "
                         f"got {exclude.dtype} {tuple(exclude.shape)}")
    logits = torch.cat([pos_scores[:, None], neg_scores.masked_fill(exclude, float("-inf"))], dim=1) / tau
    target = torch.zeros(len(pos_scores), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def positive_boundary(teacher_pos_scores, pos_users, n_users: int):
    """r̂_i, eq. (11): the teacher's mean score over each user's training positives.

    teacher_pos_scores: [P] teacher scores of positive outfits (numpy); pos_users: [P] their users.
    Returns float64 numpy [n_users] (NaN for a user without positives).
    """
    import numpy as np

    scores = np.asarray(teacher_pos_scores, dtype=np.float64)
    users = np.asarray(pos_users, dtype=np.int64)
    if scores.shape != users.shape or scores.ndim != 1:
        raise ValueError(f"teacher_pos_scores [P] and pos_users [P] must agree, got "
                         f"{scores.shape} and {users.shape}")
    counts = np.bincount(users, minlength=n_users).astype(np.float64)
    sums = np.bincount(users, weights=scores, minlength=n_users)
    return np.divide(sums, counts, out=np.full(n_users, np.nan), where=counts > 0)


def false_negative_weights(teacher_neg_scores: torch.Tensor, teacher_user_mean: torch.Tensor,
                           alpha: float) -> torch.Tensor:
    """False-negativeness of each negative, eqs. (11)-(12):

        d_ijk = alpha * (r^_i - r^_ijk),   r^_i = mean of the teacher's scores over u_i's
                                            training positives (eq. 11, computed by the caller)

    teacher_neg_scores: [B, N] teacher scores r^_ijk of the negatives; teacher_user_mean: [B] r^_i
    of each row's user. Returns [B, N] constants (detached): positive = push the negative away,
    negative = a likely false negative, pulled toward the user (eq. 16).
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (distillation scaling, eq. 12), got {alpha}")
    _check_scores(teacher_user_mean, teacher_neg_scores)
    return (alpha * (teacher_user_mean[:, None] - teacher_neg_scores)).detach()


def fnd_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, weights: torch.Tensor,
             tau: float = 0.1) -> torch.Tensor:
    """False Negative Distillation loss, eqs. (13)-(14):

        l(i, j) = -log [ exp(r_ij/tau) / (exp(r_ij/tau) + sum_k exp(d_ijk r_ijk / tau)) ]
        L_FND = 1/B sum_(i,j) l(i, j)

    pos_scores: [B] student scores r_ij; neg_scores: [B, N] student scores r_ijk; weights: [B, N]
    d_ijk from :func:`false_negative_weights` (treated as constants: no gradient flows into them).
    The gradient w.r.t. r_ijk' is (d_ijk'/tau) p(r_ijk') / B (eqs. 15-16), with the sign of d.
    With all weights 1 this is :func:`npair_loss`.
    """
    _check_tau(tau)
    _check_scores(pos_scores, neg_scores)
    if weights.shape != neg_scores.shape:
        raise ValueError(f"weights must have the shape of neg_scores {tuple(neg_scores.shape)}, "
                         f"got {tuple(weights.shape)}")
    logits = torch.cat([pos_scores[:, None], weights.detach() * neg_scores], dim=1) / tau
    target = torch.zeros(len(pos_scores), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Contrastive loss over two augmented views per outfit, eqs. (17)-(18):

        s_nm = cos(g(o_n), g(o_m))
        l(n, m) = -log [ exp(s_nm/tau) / sum_{t != n} exp(s_nt/tau) ]
        L_CL = 1/(2B) sum_n [ l(2n-1, 2n) + l(2n, 2n-1) ]

    z1, z2: [B, d] projections g(.) of the first and second view of each outfit (row b of z1 and
    row b of z2 are a positive pair; all 2B - 2 other views are negatives). tau = tau_CL.
    Returns a scalar; identical embeddings give log(2B - 1).
    """
    _check_tau(tau)
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be [B, d] with equal shapes, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / tau
    # a view is never its own negative: drop t = n from the denominator
    self_pair = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pair, float("-inf"))
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, partner)
