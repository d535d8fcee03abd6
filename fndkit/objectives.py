"""Training objectives: one contract, so ``fit()`` never knows which one it runs.

    loss, stats = objective(model, batch)

``batch`` is a :class:`TrainBatch` (users, positive outfits, negatives shared by the batch or
each pair's own); ``model`` any :class:`~fndkit.models.contract.OutfitModel`. ``stats`` is a dict
of numbers that ``fit()`` sums over an epoch and hands back to ``objective.summarize(sums,
n_steps)`` for the history record.

- :class:`NPair` — the teacher's loss, eq. (10).
- :class:`BPR` — pairwise ranking with temperature (the baselines' loss, paper §4.1.3).
- :class:`FND` — False Negative Distillation, eqs. (11)–(14), holding the frozen teacher's signal
  (:class:`TeacherSignal`); on the built-in benchmark it scores its flags against ground truth.
- :class:`WithContrastive` — adds λ·NT-Xent over two augmented views of each positive (eq. 19) to
  any objective.

The false-negative lab's variants (the built-in benchmark's ground truth; see
:mod:`fndkit.stages.false_negatives`): :class:`OracleDrop` (``oracle-drop``: the true false
negatives leave the denominator), :class:`OraclePull` (``oracle-pull``: FND with d = −1 for a true
false negative, +1 otherwise — a perfect flagger), :class:`FNDSign` (``fnd-sign``: the teacher's
flags at unit strength, d = ±1) and :class:`FNDMagnitude` (``fnd-magnitude``: the teacher's |d|,
never pulling). (a)/(b) bound what false-negative-aware training can gain; (c)/(d) separate
FND's flags from its rescaling of every negative's logit.

:func:`make_objective` builds the one a :class:`~fndkit.config.TrainConfig` describes; models
with their own loss register one with :func:`register_objective`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .augment import make_views, parse_pair
from .config import TrainConfig
from .data.schema import OutfitDataset
from .distributed import BatchShard, gather_with_grad
from .losses import (bpr_loss, false_negative_weights, fnd_loss, npair_loss, npair_loss_excluding, nt_xent_loss,
                     positive_boundary)
from .models.contract import Features, ImageFn, ItemFeatureCache, OutfitModel, make_image_fn


@dataclass
class TrainBatch:
    """One training step's data: B positive (user, outfit) pairs and their N negatives each.

    users: [B] int64 tensor on the model's device; positives: [B, S] item ids; negatives: [N, S]
    item ids shared by every pair, or [B, N, S] each pair's own (eq. 10; -1 = padding); views:
    extra outfit blocks (e.g. augmented views) that objectives add before encoding, so that every
    unique item of the step passes the item CNN once (and, per pair, every unique negative outfit
    the set transformer once).
    """

    users: torch.Tensor
    positives: np.ndarray
    negatives: np.ndarray
    image_fn: ImageFn
    epoch: int = 0
    step: int = 0
    views: list[np.ndarray] = field(default_factory=list)
    shard: BatchShard | None = None  # under torchrun: the global batch and this process's rows of it
    _encoded: dict | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(self.positives.shape[0])

    @property
    def per_pair(self) -> bool:
        """True when each pair has its own negatives ([B, N, S])."""
        return self.negatives.ndim == 3

    @property
    def n_negatives(self) -> int:
        return int(self.negatives.shape[1] if self.per_pair else self.negatives.shape[0])

    def negative_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (user, negative) pair of the step as rows, in [B, N] order: users [B·N] and
        items [B·N, S] (what ground truth and a teacher score)."""
        users = self.users.cpu().numpy()
        b, n = self.size, self.n_negatives
        items = self.negatives.reshape(b * n, -1) if self.per_pair else np.tile(self.negatives, (b, 1))
        return np.repeat(users, n), items

    def features(self, model: OutfitModel) -> dict[str, Any]:
        """Item features of every block, from one ``encode_items`` call over the unique items:
        ``{"positives": (f, m), "negatives": (f, m), "views": [(f, m), ...]}``, plus
        ``"negative_index"`` [B, N] into the unique negative outfits when negatives are per pair
        (None when shared). Computed once."""
        if self._encoded is None or self._encoded["model"] is not model:
            index = None
            negatives = self.negatives
            if self.per_pair:
                negatives, inverse = np.unique(self.negatives.reshape(-1, self.negatives.shape[-1]),
                                               axis=0, return_inverse=True)
                index = torch.as_tensor(inverse.reshape(self.size, self.n_negatives), device=model.device)
            blocks = [self.positives, negatives, *self.views]
            sizes = [len(b) for b in blocks]
            items = torch.as_tensor(np.concatenate(blocks), device=model.device)
            feats, mask = model.item_features(items, self.image_fn)
            parts = list(zip(torch.split(feats, sizes), torch.split(mask, sizes)))
            self._encoded = {"model": model, "positives": parts[0], "negatives": parts[1],
                             "views": parts[2:], "negative_index": index}
        return self._encoded

    def pair_scores(self, model: OutfitModel) -> tuple[torch.Tensor, torch.Tensor]:
        """Model scores of the positives [B] and of each pair's negatives [B, N] (shared: every
        user against every negative)."""
        enc = self.features(model)
        if enc["negative_index"] is None:
            return model.pair_scores(self.users, enc["positives"], enc["negatives"])
        return model.pair_scores(self.users, enc["positives"], enc["negatives"],
                                 negative_index=enc["negative_index"])


class Objective:
    """Base class: ``__call__(model, batch) -> (loss, stats)``; override what you need."""

    name = "objective"
    # TrainConfig field -> the values a validation search tries (paper §4.1.4: every method "with
    # their optimal hyper-parameters searched via the validation set"); fndkit.plans.search reads it
    search_space: dict[str, list] = {}

    def __call__(self, model: OutfitModel, batch: TrainBatch) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def summarize(self, sums: dict, n_steps: int) -> dict:
        """The epoch's record from the summed stats: by default the mean per step."""
        return {k: v / max(n_steps, 1) for k, v in sums.items()}

    def check_model(self, model: OutfitModel) -> None:
        """Raise a clear error when ``model`` lacks what this objective needs."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters the objective owns (e.g. a latent hint's projection): ``fit``
        optimises them beside the model's; their values belong in :meth:`state_dict`."""
        return []

    def state_dict(self) -> dict:
        """What a resumed run needs to continue exactly (e.g. a random generator's state)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NPair(Objective):
    """N-pair loss, eq. (10), over the batch's shared negatives."""

    name = "npair"
    # τ is the paper's (0.1, shared with FND); the learning rate it leaves open
    search_space = {"lr": [0.003, 0.01, 0.03]}

    def __init__(self, tau: float = 0.1):
        self.tau = tau

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        loss = npair_loss(pos, neg, tau=self.tau)
        return loss, {"loss": loss.item()}


class BPR(Objective):
    """BPR with temperature ("for fairness", paper §4.1.3) over every positive-negative pair."""

    name = "bpr"
    # the temperature "for fairness" (§4.1.3) is this loss's own knob
    search_space = {"tau": [0.05, 0.1, 0.2, 0.5]}

    def __init__(self, tau: float = 0.1):
        self.tau = tau

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        loss = bpr_loss(pos, neg, tau=self.tau)
        return loss, {"loss": loss.item()}


@dataclass
class TeacherSignal:
    """The frozen teacher, reduced to what FND needs (eqs. 11–12).

    Item features are cached once, so the teacher's score for any sampled negative costs a
    set-transformer pass, not a CNN pass. ``user_mean[i]`` is r̂_i, the teacher's mean score over
    user i's training positives (eq. 11): the user's *positive boundary*.
    """

    model: OutfitModel
    cache: ItemFeatureCache
    user_mean: torch.Tensor  # [n_users]

    @torch.no_grad()
    def negative_scores(self, users: torch.Tensor, negative_items: np.ndarray) -> torch.Tensor:
        """Teacher scores r̂_ijk [B, N] of each batch user for the sampled negatives: shared
        ``negative_items`` [N, S] (every user against every one) or per pair [B, N, S]."""
        users = users.cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
        negative_items = np.asarray(negative_items)
        if negative_items.ndim == 3:
            b, n, s = negative_items.shape
            return self.model.score_cached(np.repeat(users, n), negative_items.reshape(b * n, s),
                                           self.cache).reshape(b, n)
        return self.model.score_matrix_cached(users, negative_items, self.cache)


@torch.no_grad()
def prepare_teacher(teacher: OutfitModel, dataset: OutfitDataset, split: str = "train",
                    device: str = "cpu") -> TeacherSignal:
    """Freeze ``teacher``, cache its features for every item a training negative can hold, and
    compute r̂_i over each user's ``split`` positives."""
    teacher.eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    ids = dataset.outfits_of(split)
    items = dataset.outfit_items[ids]
    # every item a training negative can hold: random mixtures and hard negatives both come from
    # the items of this split's positives
    cache = ItemFeatureCache(teacher, items, make_image_fn(dataset.images, teacher.input_size, device))
    users = dataset.outfit_user[ids]
    scores = teacher.score_cached(users, items, cache).double().cpu().numpy()
    user_mean = positive_boundary(scores, users, dataset.n_users)
    return TeacherSignal(teacher, cache, torch.as_tensor(user_mean, dtype=torch.float32))


class FND(Objective):
    """False Negative Distillation, eqs. (11)–(14): each negative's logit scaled by the frozen
    teacher's d_ijk = α(r̂_i − r̂_ijk); d < 0 flags a likely false negative, which is pulled.

    With ``truth`` (the built-in benchmark's generator) the flags are scored against the ground
    truth: ``flag_precision``, ``flag_recall``, ``true_fn_fraction`` per epoch. The flag
    statistics always describe the teacher's d (eq. 12), also in the variants below that use
    another weight.
    """

    name = "fnd"
    # α, Fig. 4's grid: at the demo teacher's margins 1.25 flattens the softmax (issue 22)
    search_space = {"alpha": [1.0, 1.25, 1.5, 2.0, 2.5, 3.0]}

    def __init__(self, teacher: TeacherSignal, alpha: float = 1.25, tau: float = 0.1, truth=None):
        self.teacher, self.alpha, self.tau, self.truth = teacher, alpha, tau, truth

    def weights(self, batch: TrainBatch, device) -> torch.Tensor:
        """d_ijk [B, N] for the batch's users and negatives (eq. 12)."""
        teacher_neg = self.teacher.negative_scores(batch.users, batch.negatives).to(device)
        return false_negative_weights(teacher_neg, self.teacher.user_mean.to(device)[batch.users], self.alpha)

    def loss_weights(self, d: torch.Tensor) -> torch.Tensor:
        """The weights the loss uses, from the teacher's d: d itself (FND)."""
        return d

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        d = self.weights(batch, neg.device)
        loss = fnd_loss(pos, neg, self.loss_weights(d), tau=self.tau)
        return loss, {"loss": loss.item(), **self.flag_stats(d, batch)}

    def flag_stats(self, d: torch.Tensor, batch: TrainBatch) -> dict:
        """The step's flag counts from the teacher's d [B, N] (and, with ``truth``, against it)."""
        flagged = (d < 0).cpu().numpy()
        b, n = flagged.shape
        stats = {"flagged": int(flagged.sum()), "pairs": b * n}
        if self.truth is not None:
            is_fn = batch_false_negatives(self.truth, batch)
            stats["true_fn"] = int(is_fn.sum())
            stats["flagged_true"] = int((is_fn & flagged).sum())
        return stats

    def summarize(self, sums, n_steps):
        out = {"loss": sums["loss"] / max(n_steps, 1),
               "flagged_fraction": sums["flagged"] / max(sums["pairs"], 1)}
        if "true_fn" in sums:
            out["flag_precision"] = sums["flagged_true"] / sums["flagged"] if sums["flagged"] else float("nan")
            out["flag_recall"] = sums["flagged_true"] / sums["true_fn"] if sums["true_fn"] else float("nan")
            out["true_fn_fraction"] = sums["true_fn"] / max(sums["pairs"], 1)
        return out


class FNDSign(FND):
    """FND with the teacher's flags at unit strength: d = −1 where the teacher's d < 0, else +1.

    Against :class:`FND` it removes the rescaling (every pushed negative at N-pair's strength);
    against :class:`OraclePull` it swaps perfect flags for the teacher's.
    """

    name = "fnd-sign"

    def loss_weights(self, d):
        return torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))


class FNDMagnitude(FND):
    """FND with the teacher's rescaling but no pull: weights |d|. Against :class:`FND` it removes
    the flags; against N-pair it keeps only the rescaling of every negative's logit."""

    name = "fnd-magnitude"

    def loss_weights(self, d):
        return d.abs()


def batch_false_negatives(truth, batch: TrainBatch) -> np.ndarray:
    """bool [B, N]: which of the step's negatives are true false negatives for their pair's user
    (the generator's ground truth, :class:`~fndkit.data.truth.SyntheticTruth`)."""
    users, items = batch.negative_rows()
    return truth.is_false_negative(users, items).reshape(batch.size, batch.n_negatives)


class _Oracle(Objective):
    """Base of the ground-truth objectives: they need the generator's truth."""

    def __init__(self, truth, tau: float = 0.1):
        if truth is None:
            raise ValueError(f"loss={self.name!r} needs the generator's ground truth, which only the "
                             f"built-in synthetic benchmark has (dataset.truth is None here); use "
                             f"loss='fnd' with a teacher on this dataset")
        self.truth, self.tau = truth, tau

    def summarize(self, sums, n_steps):
        return {"loss": sums["loss"] / max(n_steps, 1),
                "true_fn_fraction": sums["true_fn"] / max(sums["pairs"], 1)}


class OracleDrop(_Oracle):
    """N-pair (eq. 10) without the true false negatives: they leave the denominator, so they are
    neither pushed nor pulled. Bounds what discarding false negatives can gain."""

    name = "oracle-drop"

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        is_fn = batch_false_negatives(self.truth, batch)
        loss = npair_loss_excluding(pos, neg, torch.as_tensor(is_fn, device=neg.device), tau=self.tau)
        return loss, {"loss": loss.item(), "true_fn": int(is_fn.sum()), "pairs": int(is_fn.size)}


class OraclePull(_Oracle):
    """FND (eq. 13) with d from the ground truth: −1 for a true false negative (pulled), +1
    otherwise (pushed as in N-pair) — a perfect flagger at unit strength."""

    name = "oracle-pull"

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        is_fn = torch.as_tensor(batch_false_negatives(self.truth, batch), device=neg.device)
        weights = torch.where(is_fn, -torch.ones_like(neg), torch.ones_like(neg))
        loss = fnd_loss(pos, neg, weights, tau=self.tau)
        return loss, {"loss": loss.item(), "true_fn": int(is_fn.sum()), "pairs": int(is_fn.numel())}


class WithContrastive(Objective):
    """``base`` + λ · NT-Xent over two augmented views of each positive outfit (eqs. 17–19).

    The views pass the item CNN in the same call as the positives and negatives; the projection
    head g (``model.projection``) maps their outfit vectors to the contrastive space.
    """

    # λ and the augmentation pair (eq. 19; Fig. 5's pairs); the base objective's space comes on top
    search_space = {"lam": [0.1, 0.2, 0.5],
                    "augmentations": ["erase,erase", "erase,replace", "replace,replace", "identity,erase",
                                      "identity,replace"]}

    def __init__(self, base: Objective, lam: float, pair: tuple[str, str], tau_cl: float = 0.1,
                 neighbours: np.ndarray | None = None, seed: int = 0):
        if "replace" in pair and neighbours is None:
            raise ValueError("augmentation 'replace' needs the autoencoder's neighbour table; run "
                             "notebooks/01_autoencoder.ipynb first or use augmentations='erase,erase'")
        self.base, self.lam, self.pair, self.tau_cl, self.neighbours = base, lam, pair, tau_cl, neighbours
        self.name = f"{base.name}+cl"
        self.rng = np.random.default_rng([seed, 7])

    def check_model(self, model):
        self.base.check_model(model)
        if getattr(model, "projection", None) is None:
            raise ValueError("lam > 0 needs a projection head: build the model with "
                             "fndkit.train.build_model(cfg, dataset)")

    def __call__(self, model, batch):
        shard = batch.shard  # under torchrun: the global batch's views (one process's draw), our rows
        view1, view2, _ = make_views(torch.as_tensor(batch.positives if shard is None else shard.positives),
                                     self.pair, self.rng,
                                     neighbours=self.neighbours)
        batch.views = [np.asarray(v) if shard is None else np.asarray(v)[shard.rows] for v in (view1, view2)]
        loss, stats = self.base(model, batch)
        (f1, m1), (f2, m2) = batch.features(model)["views"]
        b = batch.size
        z = model.projection(model.encode_outfits(torch.cat([f1, f2]), torch.cat([m1, m2])))
        # over the global batch under torchrun (every process's projections, gradient kept)
        loss_cl = nt_xent_loss(gather_with_grad(z[:b]), gather_with_grad(z[b:]), tau=self.tau_cl)
        return loss + self.lam * loss_cl, {**stats, "loss": stats["loss"] + self.lam * loss_cl.item(),
                                           "loss_cl": loss_cl.item()}

    def summarize(self, sums, n_steps):
        out = self.base.summarize({k: v for k, v in sums.items() if k != "loss_cl"}, n_steps)
        out["loss_cl"] = sums["loss_cl"] / max(n_steps, 1)
        return out

    def parameters(self):
        return self.base.parameters()

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "base": self.base.state_dict()}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.base.load_state_dict(state.get("base", {}))


# Objectives by the name a TrainConfig's ``loss`` gives; a baseline registers its own.
ObjectiveFactory = Callable[..., Objective]
OBJECTIVES: dict[str, ObjectiveFactory] = {}
NEEDS_TEACHER: set[str] = set()


def register_objective(name: str, needs_teacher: bool = False):
    """Decorator: ``factory(cfg, teacher=None, truth=None) -> Objective`` under ``name``;
    ``needs_teacher``: the stage loads the run folder's frozen teacher for it."""

    def wrap(factory: ObjectiveFactory) -> ObjectiveFactory:
        OBJECTIVES[name] = factory
        if needs_teacher:
            NEEDS_TEACHER.add(name)
        return factory

    return wrap


@register_objective("npair")
def _npair(cfg: TrainConfig, **_) -> Objective:
    return NPair(cfg.tau)


@register_objective("bpr")
def _bpr(cfg: TrainConfig, **_) -> Objective:
    return BPR(cfg.tau)


def _teacher_objective(cls: type[FND]):
    def factory(cfg: TrainConfig, teacher: TeacherSignal | None = None, truth=None, **_) -> Objective:
        if teacher is None:
            raise ValueError(f"loss={cls.name!r} needs a trained teacher: pass teacher=prepare_teacher(...) "
                             f"(notebook 02_teacher trains one)")
        return cls(teacher, alpha=cfg.alpha, tau=cfg.tau, truth=truth)

    return factory


for _cls in (FND, FNDSign, FNDMagnitude):
    register_objective(_cls.name, needs_teacher=True)(_teacher_objective(_cls))


@register_objective("oracle-drop")
def _oracle_drop(cfg: TrainConfig, truth=None, **_) -> Objective:
    return OracleDrop(truth, tau=cfg.tau)


@register_objective("oracle-pull")
def _oracle_pull(cfg: TrainConfig, truth=None, **_) -> Objective:
    return OraclePull(truth, tau=cfg.tau)


def make_objective(cfg: TrainConfig, teacher: TeacherSignal | None = None,
                   neighbours: np.ndarray | None = None, truth=None) -> Objective:
    """The objective ``cfg`` describes: ``cfg.loss`` (+ λ·NT-Xent when ``cfg.lam > 0``)."""
    if cfg.loss not in OBJECTIVES:
        raise ValueError(f"loss={cfg.loss!r} is unknown; choose one of {sorted(OBJECTIVES)}")
    objective = OBJECTIVES[cfg.loss](cfg, teacher=teacher, truth=truth)
    if cfg.lam > 0:
        objective = WithContrastive(objective, cfg.lam, parse_pair(cfg.augmentations), cfg.tau_cl,
                                    neighbours=neighbours, seed=cfg.seed)
    return objective
