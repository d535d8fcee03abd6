"""Distillation baselines over the sampled candidates: what a student can learn from the frozen
teacher using only the outfits the N-pair step already scores.

The paper (§1, §2.2) sets the recommender-system distillation methods aside because they "rank all
possible outfits". None of the methods here ranks more than the step's candidates: each positive
(user i, outfit j) and its N sampled negatives k, which FND's d_ijk (eq. 12) is computed on. The
teacher's scores come from the same :class:`~fndkit.objectives.TeacherSignal` FND uses (item
features cached once by :func:`~fndkit.objectives.prepare_teacher`, so a step costs the teacher a
set-transformer pass per outfit and no CNN pass; the teacher is never updated).

Scales. Student and teacher scores are cosines r ∈ [-1, 1] (eq. 9); every method below works on
N-pair's logits r/τ (τ = ``cfg.tau``, the τ_FND of eq. 10), the scale the teacher was trained on,
so that one temperature or weight means the same for teacher and student.

Shapes: B = pairs in the step, N = sampled negatives per pair, C = N + 1 candidates, K = the
teacher's top items taken from a pool of N.

- :class:`SoftTargetKD` (``kd``) — Hinton, Vinyals & Dean 2015, over {positive, its negatives}.
- :class:`MarginMSE` (``margin-mse``) — Hofstätter et al. 2020, over every (positive, negative).
- :class:`RankingDistillation` (``rd``) — Tang & Wang, KDD 2018, the teacher's top-K of the pool.
- :class:`RelaxedRankingDistillation` (``rrd``) — Kang et al., CIKM 2020 (the RRD of DE-RRD).
- :class:`LatentHint` (``hint``) — FitNets / DE-RRD's experts: student user and outfit vectors
  regressed onto the teacher's through learned projections (the objective's own parameters,
  which ``fit`` optimises beside the model's).
- :class:`KDWithFND` (``kd-fnd``) — FND's reweighted N-pair (eqs. 13–14) plus the KD term.

Each class declares ``search_space`` (TrainConfig field -> values) and ``config_fields`` (the
TrainConfig fields it reads besides ``tau``, which name its stage folder when not at their
defaults: :func:`name_suffix`). Registered under its ``name`` with ``needs_teacher=True``; the
stage (:mod:`fndkit.stages.training`) imports this module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError, TrainConfig
from .losses import _check_scores, false_negative_weights, fnd_loss, npair_loss
from .objectives import FND, Objective, TeacherSignal, TrainBatch, register_objective

# short names of the distillation fields in a stage folder's name (student_kd-w0.25-T4)
FIELD_TAGS = {"kd_weight": "w", "kd_temperature": "T", "rd_k": "K"}


# ------------------------------------------------------------------------------------------------
# shared: the teacher's scores of the step's candidates


@torch.no_grad()
def teacher_candidate_scores(teacher: TeacherSignal, batch: TrainBatch,
                             device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen teacher's scores r̂ of the step's positives [B] and of their sampled negatives
    [B, N] (shared negatives: every user against every one), from its cached item features — the
    signal FND's d is computed on (:meth:`TeacherSignal.negative_scores`)."""
    users = batch.users.cpu().numpy()
    pos = teacher.model.score_cached(users, batch.positives, teacher.cache)
    neg = teacher.negative_scores(users, batch.negatives)
    return pos.to(device=device, dtype=torch.float32), neg.to(device=device, dtype=torch.float32)


def candidate_logits(pos_scores: torch.Tensor, neg_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """N-pair's logits over each pair's candidates: [B, C] = [r_ij, r_ij1 … r_ijN] / τ (column 0
    the positive), as :func:`~fndkit.losses.npair_loss` forms them."""
    _check_scores(pos_scores, neg_scores)
    return torch.cat([pos_scores[:, None], neg_scores], dim=1) / tau


def _check_same(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: student and teacher tensors must have one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def _check_k(k: int, n: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"rd_k={k} must lie in [0, {n}] (the sampled negatives of each pair); lower rd_k "
                         f"or raise n_negatives")


# ------------------------------------------------------------------------------------------------
# 1. soft-target KD (Hinton, Vinyals & Dean 2015)


def soft_target_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target term, averaged over rows:

        T² · 1/B Σ_b KL( softmax(t_b / T) ‖ softmax(s_b / T) )

    student_logits, teacher_logits: [B, C] (here N-pair's logits over a pair's candidates; the
    teacher's are constants). The T² keeps the gradient's magnitude comparable across T (its
    gradient w.r.t. s is T · (softmax(s/T) − softmax(t/T)) / B, ≈ (s − t)/(C·B) for large T).
    Returns a scalar; 0, with zero gradient, when the student's logits equal the teacher's.
    """
    if not temperature > 0:
        raise ValueError(f"kd_temperature={temperature} must be > 0")
    _check_same("soft_target_kd", student_logits, teacher_logits)
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return temperature ** 2 * F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")


class _Distillation(Objective):
    """Base of the objectives below: the frozen teacher's signal, τ and the shared fields."""

    config_fields: tuple[str, ...] = ()

    def __init__(self, teacher: TeacherSignal, tau: float = 0.1, weight: float = 0.5,
                 temperature: float = 2.0, k: int = 5, seed: int = 0):
        self.teacher, self.tau, self.weight, self.temperature, self.k = teacher, tau, weight, temperature, k

    @classmethod
    def from_config(cls, cfg: TrainConfig, teacher: TeacherSignal, truth=None) -> "_Distillation":
        return cls(teacher, tau=cfg.tau, weight=cfg.kd_weight, temperature=cfg.kd_temperature, k=cfg.rd_k,
                   seed=cfg.seed)

    def scores(self, model, batch) -> tuple[torch.Tensor, ...]:
        """Student scores (pos [B], neg [B, N], with gradient) and the teacher's (constants)."""
        pos, neg = batch.pair_scores(model)
        t_pos, t_neg = teacher_candidate_scores(self.teacher, batch, neg.device)
        return pos, neg, t_pos, t_neg

    def added(self, model, batch, term_fn) -> tuple[torch.Tensor, dict]:
        """N-pair + weight · term, with both parts in the stats."""
        pos, neg, t_pos, t_neg = self.scores(model, batch)
        base = npair_loss(pos, neg, tau=self.tau)
        term = term_fn(pos, neg, t_pos, t_neg)
        loss = base + self.weight * term
        return loss, {"loss": loss.item(), "loss_npair": base.item(), "loss_distill": term.item()}


class SoftTargetKD(_Distillation):
    """Soft-target knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in
    a Neural Network") over each positive's candidate set {positive, its N sampled negatives}:

        L = (1 − λ) · N-pair + λ · T² · KL( softmax(ẑ / T) ‖ softmax(z / T) )

    z = [r_ij, r_ijk] / τ: the student's N-pair logits [B, C]; ẑ the frozen teacher's, the same
    candidates on the same scale. λ = ``kd_weight`` ∈ [0, 1], T = ``kd_temperature``. λ = 0 is
    N-pair exactly. Where the paper's setting would give a softmax over every outfit, this one is
    over the C = N + 1 candidates the step sampled.
    """

    name = "kd"
    config_fields = ("kd_weight", "kd_temperature")
    search_space = {"kd_weight": [0.25, 0.5, 0.75], "kd_temperature": [1.0, 2.0, 4.0]}

    @classmethod
    def from_config(cls, cfg, teacher, truth=None):
        if not cfg.kd_weight <= 1:
            raise ConfigError(f"kd_weight={cfg.kd_weight} must lie in [0, 1] for loss={cls.name!r}: it is λ "
                              f"of (1 − λ)·N-pair + λ·T²·KL")
        return super().from_config(cfg, teacher, truth)

    def kd_term(self, pos, neg, t_pos, t_neg) -> torch.Tensor:
        return soft_target_kd(candidate_logits(pos, neg, self.tau), candidate_logits(t_pos, t_neg, self.tau),
                              self.temperature)

    def __call__(self, model, batch):
        pos, neg, t_pos, t_neg = self.scores(model, batch)
        base = npair_loss(pos, neg, tau=self.tau)
        kd = self.kd_term(pos, neg, t_pos, t_neg)
        loss = (1 - self.weight) * base + self.weight * kd
        return loss, {"loss": loss.item(), "loss_npair": base.item(), "loss_distill": kd.item()}


# ------------------------------------------------------------------------------------------------
# 2. margin-MSE (Hofstätter et al. 2020)


def margin_mse(student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_pos: torch.Tensor,
               teacher_neg: torch.Tensor) -> torch.Tensor:
    """Hofstätter et al.'s margin-MSE over every (positive, negative) pair of the step:

        1/(B·N) Σ_{b,k} ( (s_b − s_bk) − (t_b − t_bk) )²

    student_pos [B], student_neg [B, N]; teacher_pos [B], teacher_neg [B, N] (constants). Returns
    a scalar; 0 when every student margin equals the teacher's. Its gradient w.r.t. s_b − s_bk is
    2/(B·N) · (student margin − teacher margin): it moves each margin toward the teacher's.
    """
    _check_scores(student_pos, student_neg)
    _check_scores(teacher_pos, teacher_neg)
    _check_same("margin_mse", student_neg, teacher_neg)
    student_margin = student_pos[:, None] - student_neg
    teacher_margin = (teacher_pos[:, None] - teacher_neg).detach()
    return ((student_margin - teacher_margin) ** 2).mean()


class MarginMSE(_Distillation):
    """Margin-MSE distillation (Hofstätter, Althammer, Schröder, Sertkan & Hanbury 2020, "Improving
    Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation"), added to N-pair:

        L = N-pair + w · 1/(B·N) Σ_{b,k} ( (r_b − r_bk)/τ − (r̂_b − r̂_bk)/τ )²

    w = ``kd_weight``. The paper trains on (query, positive, negative) triples with the margin-MSE
    alone; here each positive's N sampled negatives give N triples, margins are in N-pair's logit
    units (÷ τ), and N-pair stays (the teacher's margins alone would not say the positive wins).
    """

    name = "margin-mse"
    config_fields = ("kd_weight",)
    search_space = {"kd_weight": [0.01, 0.03, 0.1, 0.3]}

    def __call__(self, model, batch):
        return self.added(model, batch, lambda pos, neg, t_pos, t_neg: margin_mse(
            pos / self.tau, neg / self.tau, t_pos / self.tau, t_neg / self.tau))


# ------------------------------------------------------------------------------------------------
# 3. ranking distillation over a sampled pool (Tang & Wang 2018)


def teacher_top_k(teacher_pool: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, K] of the teacher's K highest-scored items of each row's pool [B, N], in the
    teacher's order (column 0 its top item)."""
    if teacher_pool.ndim != 2:
        raise ValueError(f"teacher_pool must be [B, N], got shape {tuple(teacher_pool.shape)}")
    _check_k(k, teacher_pool.shape[1])
    return torch.topk(teacher_pool, k, dim=1, sorted=True).indices


def rank_position_weights(k: int, decay: float = 1.0) -> torch.Tensor:
    """RD's position importance [K]: w_r ∝ exp(−r / λ) for ranks r = 1 … K, summing to 1 (the
    static weight of Tang & Wang's eq. 8 as their public code normalises it)."""
    if not decay > 0:
        raise ValueError(f"decay={decay} must be > 0")
    w = torch.exp(-torch.arange(1, k + 1, dtype=torch.float32) / decay)
    return w / w.sum() if k else w


def ranking_distillation_loss(student_pool_logits: torch.Tensor, top_k: torch.Tensor,
                              weights: torch.Tensor) -> torch.Tensor:
    """RD's distillation term: the teacher's top-K items of each pool as extra positives,

        1/B Σ_b Σ_{r=1..K} w_r · −log σ(z_{b, π_b(r)})

    student_pool_logits: [B, N] the student's logits over each row's pool; top_k: [B, K] indices
    into the pool in the teacher's order (:func:`teacher_top_k`); weights: [K]
    (:func:`rank_position_weights`). K = 0 gives 0.
    """
    if top_k.ndim != 2 or top_k.shape[0] != student_pool_logits.shape[0] or weights.shape != top_k.shape[1:]:
        raise ValueError(f"top_k must be [B, K] and weights [K] for a pool of {tuple(student_pool_logits.shape)}, "
                         f"got {tuple(top_k.shape)} and {tuple(weights.shape)}")
    candidates = student_pool_logits.gather(1, top_k)
    return (F.softplus(-candidates) * weights.to(candidates)).sum(1).mean()


class RankingDistillation(_Distillation):
    """Ranking Distillation (Tang & Wang, KDD 2018, "Ranking Distillation: Learning Compact Ranking
    Models With High Performance for Recommender System") over a sampled pool:

        L = N-pair + w · 1/B Σ_b Σ_{r=1..K} w_r · −log σ(r_{b,π_b(r)} / τ),   w_r ∝ exp(−r / λ)

    π_b(r): the teacher's r-th item of pair b's pool — its N sampled negatives (shared negatives:
    the step's N, which every user of the batch ranks for themselves). K = ``rd_k`` (0 = N-pair
    exactly), w = ``kd_weight``, λ = :attr:`position_decay` (1, their public code's default).

    Against the paper: its teacher ranks every item and its top-K excludes the user's known items;
    here the teacher ranks N sampled outfits (the sampler already left the users' training positives
    out), so "top-K" means top-K of a random pool, a weaker signal that grows with N. Only the static
    position weight is used: the paper's dynamic (rank-discrepancy) weight estimates the student's
    rank in the full ranking from extra samples, for which a pool of N offers no estimate. The
    distillation term is the public code's weighted point-wise log loss, on N-pair's logits.
    """

    name = "rd"
    config_fields = ("kd_weight", "rd_k")
    search_space = {"rd_k": [1, 3, 5, 10], "kd_weight": [0.1, 0.3, 1.0]}
    position_decay = 1.0

    @classmethod
    def from_config(cls, cfg, teacher, truth=None):
        _check_rd_k(cls.name, cfg)
        return super().from_config(cfg, teacher, truth)

    def term(self, pos, neg, t_pos, t_neg) -> torch.Tensor:
        top = teacher_top_k(t_neg, self.k)
        return ranking_distillation_loss(neg / self.tau, top, rank_position_weights(self.k, self.position_decay))

    def __call__(self, model, batch):
        return self.added(model, batch, self.term)


def _check_rd_k(name: str, cfg: TrainConfig) -> None:
    if cfg.rd_k > cfg.negatives_per_pair:
        raise ConfigError(f"rd_k={cfg.rd_k} exceeds the {cfg.negatives_per_pair} sampled negatives of each pair "
                          f"that loss={name!r} ranks; lower rd_k or raise n_negatives")


# ------------------------------------------------------------------------------------------------
# 4. relaxed ranking distillation (Kang et al. 2020, DE-RRD)


def sample_interesting(teacher_pool: torch.Tensor, k: int, temperature: float,
                       rng: np.random.Generator) -> torch.Tensor:
    """DE-RRD's interesting items, drawn from the teacher's ranking of each row's pool [B, N]:
    K items without replacement, item of teacher rank ρ (1 = top) with probability ∝ exp(−ρ / T)
    (Gumbel top-K), returned as pool indices [B, K] in the teacher's order. Small T: the teacher's
    top K; large T: K items at random, still ordered by the teacher."""
    if not temperature > 0:
        raise ValueError(f"kd_temperature={temperature} must be > 0")
    b, n = teacher_pool.shape
    _check_k(k, n)
    order = torch.argsort(teacher_pool, dim=1, descending=True).cpu()     # [B, N] pool index by rank
    keys = -np.arange(1, n + 1)[None, :] / temperature + rng.gumbel(size=(b, n))
    chosen_ranks = np.sort(np.argpartition(-keys, k - 1, axis=1)[:, :k] if k else np.zeros((b, 0), int), axis=1)
    return order.gather(1, torch.as_tensor(chosen_ranks, dtype=torch.long)).to(teacher_pool.device)


def relaxed_ranking_loss(student_pool_logits: torch.Tensor, interesting: torch.Tensor) -> torch.Tensor:
    """RRD's relaxed Plackett–Luce loss: the interesting items in the teacher's order above every
    other item of the pool, the others unordered among themselves:

        1/B Σ_b Σ_{k=1..K} [ −z_{π_k} + log( Σ_{l=k..K} exp z_{π_l} + Σ_{u ∉ π} exp z_u ) ]

    student_pool_logits: [B, N]; interesting: [B, K] pool indices π_1 … π_K in the teacher's order.
    K = 0 gives 0.
    """
    b, n = student_pool_logits.shape
    if interesting.ndim != 2 or interesting.shape[0] != b or interesting.shape[1] > n:
        raise ValueError(f"interesting must be [B={b}, K <= {n}] pool indices, got {tuple(interesting.shape)}")
    above = student_pool_logits.gather(1, interesting)                                   # [B, K]
    rest = torch.ones_like(student_pool_logits, dtype=torch.bool).scatter(1, interesting, False)
    below_rest = student_pool_logits.masked_fill(~rest, float("-inf")).logsumexp(1)      # [B]
    below_ordered = above.flip(1).logcumsumexp(1).flip(1)                                # [B, K]
    below = torch.logaddexp(below_ordered, below_rest[:, None])
    return (below - above).sum(1).mean()


class RelaxedRankingDistillation(_Distillation):
    """Relaxed Ranking Distillation (Kang, Hwang, Kweon & Yu, CIKM 2020, "DE-RRD: A Knowledge
    Distillation Framework for Recommender System", its RRD) over a sampled pool, added to N-pair:

        L = N-pair + w · RRD(r_pool / τ; π)

    The pool: pair b's N sampled negatives. π: K = ``rd_k`` interesting items drawn from the
    teacher's ranking of the pool with probability ∝ exp(−rank / T), T = ``kd_temperature``, kept in
    the teacher's order (:func:`sample_interesting`); the other N − K items are the uninteresting
    ones (:func:`relaxed_ranking_loss`). w = ``kd_weight``.

    Against the paper: it samples the interesting items from the teacher's top list over every item
    (its public code's full-ranking mode) and the uninteresting ones at random from the rest; here
    both come from the N outfits the step sampled (the public code's pool mode), so the
    uninteresting set is the rest of the pool, and the student's scores are N-pair's logits.
    """

    name = "rrd"
    config_fields = ("kd_weight", "kd_temperature", "rd_k")
    search_space = {"kd_temperature": [1.0, 3.0, 10.0], "kd_weight": [0.1, 0.3, 1.0]}

    def __init__(self, teacher, tau=0.1, weight=0.5, temperature=2.0, k=5, seed=0):
        super().__init__(teacher, tau, weight, temperature, k, seed)
        self.rng = np.random.default_rng([seed, 29])

    @classmethod
    def from_config(cls, cfg, teacher, truth=None):
        _check_rd_k(cls.name, cfg)
        return super().from_config(cfg, teacher, truth)

    def term(self, pos, neg, t_pos, t_neg) -> torch.Tensor:
        return relaxed_ranking_loss(neg / self.tau, sample_interesting(t_neg, self.k, self.temperature, self.rng))

    def __call__(self, model, batch):
        return self.added(model, batch, self.term)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]


# ------------------------------------------------------------------------------------------------
# 5. a latent hint (FitNets; DE-RRD's distillation experts)


def hint_loss(student_vectors: torch.Tensor, teacher_vectors: torch.Tensor,
              projection: torch.nn.Module) -> torch.Tensor:
    """FitNets' hint regression on the unit sphere:

        1/M Σ_m ‖ normalize(P s_m) − normalize(t_m) ‖²   (= 2 − 2 cos(P s_m, t_m))

    student_vectors: [M, d_s]; teacher_vectors: [M, d_t] (constants); projection P: d_s -> d_t.
    Normalised because fndkit's scores are cosines (eq. 9): only a vector's direction matters."""
    _check_same("hint_loss", student_vectors[:, :0], teacher_vectors[:, :0])
    projected = F.normalize(projection(student_vectors), dim=-1)
    return ((projected - F.normalize(teacher_vectors.detach(), dim=-1)) ** 2).sum(-1).mean()


class LatentHint(_Distillation):
    """A latent hint (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"; the idea of DE-RRD's
    Distillation Experts, Kang et al. 2020), added to N-pair:

        L = N-pair + w · ( hint(u_i ; û_i) + hint(o ; ô) )

    u_i: the student's vectors of the step's users [B, d]; o: its outfit vectors of the step's
    positives and (unique) sampled negatives [B + N', d]; û, ô the frozen teacher's (its user
    embeddings, and its set transformer over its cached item features); hint: :func:`hint_loss`
    through a learned linear projection per kind (:attr:`user_projection`, :attr:`outfit_projection`,
    trained by ``fit`` beside the model: :meth:`parameters`; resumed from :meth:`state_dict`).
    w = ``kd_weight``.

    Against DE-RRD: one linear expert per kind instead of a gated mixture of experts, and the
    outfits hinted are the step's candidates, not sampled from the whole catalogue. Not under
    torchrun (the projection's gradients would not be averaged over processes).
    """

    name = "hint"
    config_fields = ("kd_weight",)
    search_space = {"kd_weight": [0.1, 0.3, 1.0, 3.0]}

    def __init__(self, teacher, tau=0.1, weight=0.5, temperature=2.0, k=5, seed=0, student_dim: int | None = None):
        super().__init__(teacher, tau, weight, temperature, k, seed)
        teacher_dim = int(teacher.model.dim)
        device = next(teacher.model.parameters()).device
        with torch.random.fork_rng(devices=[]):   # the projections' initial weights follow the run's
            torch.random.default_generator.manual_seed(seed)   # seed and leave the global one alone
            self.user_projection = torch.nn.Linear(student_dim or teacher_dim, teacher_dim).to(device)
            self.outfit_projection = torch.nn.Linear(student_dim or teacher_dim, teacher_dim).to(device)

    @classmethod
    def from_config(cls, cfg, teacher, truth=None):
        return cls(teacher, tau=cfg.tau, weight=cfg.kd_weight, seed=cfg.seed, student_dim=cfg.dim)

    def check_model(self, model):
        from .distributed import is_active

        if not all(hasattr(model, a) for a in ("user_vectors", "encode_outfits")):
            raise ValueError(f"loss={self.name!r} needs a model with user and outfit vectors (the recommender); "
                             f"{type(model).__name__} has none: use loss='kd'")
        if is_active():
            raise ValueError(f"loss={self.name!r} trains its projection in one process only; run it without "
                             f"torchrun")

    def parameters(self):
        return [*self.user_projection.parameters(), *self.outfit_projection.parameters()]

    def term(self, model, batch: TrainBatch) -> torch.Tensor:
        enc = batch.features(model)
        (pos_f, pos_m), (neg_f, neg_m) = enc["positives"], enc["negatives"]
        student_outfits = model.encode_outfits(torch.cat([pos_f, neg_f]), torch.cat([pos_m, neg_m]))
        negatives = batch.negatives
        if batch.per_pair:   # the unique negative outfits, in the order features() encoded them
            negatives = np.unique(negatives.reshape(-1, negatives.shape[-1]), axis=0)
        with torch.no_grad():
            from .models.recommender import outfit_vectors_cached

            items = np.concatenate([batch.positives, negatives])
            teacher_outfits = outfit_vectors_cached(self.teacher.model, items, self.teacher.cache)
            teacher_users = self.teacher.model.user_vectors(batch.users.to(teacher_outfits.device))
        device = student_outfits.device
        return (hint_loss(model.user_vectors(batch.users), teacher_users.to(device), self.user_projection)
                + hint_loss(student_outfits, teacher_outfits.to(device), self.outfit_projection))

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        base = npair_loss(pos, neg, tau=self.tau)
        term = self.term(model, batch)
        loss = base + self.weight * term
        return loss, {"loss": loss.item(), "loss_npair": base.item(), "loss_distill": term.item()}

    def state_dict(self):
        return {name: {k: v.tolist() for k, v in module.state_dict().items()}
                for name, module in (("user_projection", self.user_projection),
                                     ("outfit_projection", self.outfit_projection))}

    def load_state_dict(self, state):
        for name in ("user_projection", "outfit_projection"):
            if name in state:
                module = getattr(self, name)
                module.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state[name].items()})


# ------------------------------------------------------------------------------------------------
# 6. KD + FND


class KDWithFND(FND):
    """FND (eqs. 11–14) with the soft-target KD term of :class:`SoftTargetKD`:

        L = (1 − λ) · L_FND + λ · T² · KL( softmax(ẑ / T) ‖ softmax(z / T) )

    FND reweights the negatives' logits by the teacher's d; KD adds the teacher's distribution over
    the same candidates as a target. λ = 0 is FND exactly. α (``alpha``) is FND's: a plan passes the
    α chosen for FND (it is not searched again here); λ × T are.
    """

    name = "kd-fnd"
    config_fields = ("kd_weight", "kd_temperature")
    search_space = dict(SoftTargetKD.search_space)

    def __init__(self, teacher: TeacherSignal, alpha: float = 1.25, tau: float = 0.1, truth=None,
                 weight: float = 0.5, temperature: float = 2.0):
        super().__init__(teacher, alpha=alpha, tau=tau, truth=truth)
        self.weight, self.temperature = weight, temperature

    @classmethod
    def from_config(cls, cfg, teacher, truth=None):
        SoftTargetKD.from_config(cfg, teacher)   # the same check of λ
        return cls(teacher, alpha=cfg.alpha, tau=cfg.tau, truth=truth, weight=cfg.kd_weight,
                   temperature=cfg.kd_temperature)

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        t_pos, t_neg = teacher_candidate_scores(self.teacher, batch, neg.device)
        d = false_negative_weights(t_neg, self.teacher.user_mean.to(neg.device)[batch.users], self.alpha)
        base = fnd_loss(pos, neg, d, tau=self.tau)
        kd = soft_target_kd(candidate_logits(pos, neg, self.tau), candidate_logits(t_pos, t_neg, self.tau),
                            self.temperature)
        loss = (1 - self.weight) * base + self.weight * kd
        return loss, {"loss": loss.item(), "loss_fnd": base.item(), "loss_distill": kd.item(),
                      **self.flag_stats(d, batch)}

    def summarize(self, sums, n_steps):
        out = super().summarize(sums, n_steps)
        for key in ("loss_fnd", "loss_distill"):
            out[key] = sums[key] / max(n_steps, 1)
        return out


# ------------------------------------------------------------------------------------------------
# registration and names

METHODS: dict[str, type] = {cls.name: cls for cls in (SoftTargetKD, MarginMSE, RankingDistillation,
                                                       RelaxedRankingDistillation, LatentHint, KDWithFND)}


def _factory(cls):
    def factory(cfg: TrainConfig, teacher: TeacherSignal | None = None, truth=None, **_) -> Objective:
        if teacher is None:
            raise ValueError(f"loss={cls.name!r} needs a trained teacher: pass teacher=prepare_teacher(...) "
                             f"(notebook 02_teacher trains one)")
        return cls.from_config(cfg, teacher, truth=truth)

    return factory


for _cls in METHODS.values():
    register_objective(_cls.name, needs_teacher=True)(_factory(_cls))


def search_space(loss: str) -> dict[str, list]:
    """The declared search space of a distillation method (TrainConfig field -> values)."""
    if loss not in METHODS:
        raise ValueError(f"loss={loss!r} is not a distillation method here; choose one of {sorted(METHODS)}")
    return {k: list(v) for k, v in METHODS[loss].search_space.items()}


def name_suffix(cfg: TrainConfig) -> str:
    """The part of a student's folder name that the distillation fields ``cfg.loss`` reads add when
    they are not at their defaults, e.g. ``-w0.25-T4`` (empty for every other loss)."""
    cls = METHODS.get(cfg.loss)
    if cls is None:
        return ""
    defaults = TrainConfig()
    return "".join(f"-{FIELD_TAGS[f]}{getattr(cfg, f):g}" for f in cls.config_fields
                   if getattr(cfg, f) != getattr(defaults, f))
