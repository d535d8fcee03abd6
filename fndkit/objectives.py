"""Training objectives: one contract, so ``fit()`` never knows which one it runs.

    loss, stats = objective(model, batch)

``batch`` is a :class:`TrainBatch` (users, positive outfits, shared negatives); ``model`` any
:class:`~fndkit.models.contract.OutfitModel`. ``stats`` is a dict of numbers that ``fit()`` sums
over an epoch and hands back to ``objective.summarize(sums, n_steps)`` for the history record.

- :class:`NPair` — the teacher's loss, eq. (10).
- :class:`BPR` — pairwise ranking with temperature (the baselines' loss, paper §4.1.3).
- :class:`FND` — False Negative Distillation, eqs. (11)–(14), holding the frozen teacher's signal
  (:class:`TeacherSignal`); on the built-in benchmark it scores its flags against ground truth.
- :class:`WithContrastive` — adds λ·NT-Xent over two augmented views of each positive (eq. 19) to
  any objective.

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
from .losses import bpr_loss, false_negative_weights, fnd_loss, npair_loss, nt_xent_loss, positive_boundary
from .models.contract import Features, ImageFn, ItemFeatureCache, OutfitModel, make_image_fn


@dataclass
class TrainBatch:
    """One training step's data: B positive (user, outfit) pairs and N negatives shared by them.

    users: [B] int64 tensor on the model's device; positives: [B, S] item ids; negatives: [N, S]
    item ids (-1 = padding); views: extra outfit blocks (e.g. augmented views) that objectives add
    before encoding, so that every unique item of the step passes the item CNN once.
    """

    users: torch.Tensor
    positives: np.ndarray
    negatives: np.ndarray
    image_fn: ImageFn
    epoch: int = 0
    step: int = 0
    views: list[np.ndarray] = field(default_factory=list)
    _encoded: dict | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(self.positives.shape[0])

    def features(self, model: OutfitModel) -> dict[str, Any]:
        """Item features of every block, from one ``encode_items`` call over the unique items:
        ``{"positives": (f, m), "negatives": (f, m), "views": [(f, m), ...]}``. Computed once."""
        if self._encoded is None or self._encoded["model"] is not model:
            blocks = [self.positives, self.negatives, *self.views]
            sizes = [len(b) for b in blocks]
            items = torch.as_tensor(np.concatenate(blocks), device=model.device)
            feats, mask = model.item_features(items, self.image_fn)
            parts = list(zip(torch.split(feats, sizes), torch.split(mask, sizes)))
            self._encoded = {"model": model, "positives": parts[0], "negatives": parts[1],
                             "views": parts[2:]}
        return self._encoded

    def pair_scores(self, model: OutfitModel) -> tuple[torch.Tensor, torch.Tensor]:
        """Model scores of the positives [B] and of every user for every negative [B, N]."""
        enc = self.features(model)
        return model.pair_scores(self.users, enc["positives"], enc["negatives"])


class Objective:
    """Base class: ``__call__(model, batch) -> (loss, stats)``; override what you need."""

    name = "objective"

    def __call__(self, model: OutfitModel, batch: TrainBatch) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def summarize(self, sums: dict, n_steps: int) -> dict:
        """The epoch's record from the summed stats: by default the mean per step."""
        return {k: v / max(n_steps, 1) for k, v in sums.items()}

    def check_model(self, model: OutfitModel) -> None:
        """Raise a clear error when ``model`` lacks what this objective needs."""

    def state_dict(self) -> dict:
        """What a resumed run needs to continue exactly (e.g. a random generator's state)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NPair(Objective):
    """N-pair loss, eq. (10), over the batch's shared negatives."""

    name = "npair"

    def __init__(self, tau: float = 0.1):
        self.tau = tau

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        loss = npair_loss(pos, neg, tau=self.tau)
        return loss, {"loss": loss.item()}


class BPR(Objective):
    """BPR with temperature ("for fairness", paper §4.1.3) over every positive-negative pair."""

    name = "bpr"

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
        """Teacher scores r̂_ijk of every batch user for every sampled negative: [B, N]."""
        return self.model.score_matrix_cached(users.cpu().numpy(), negative_items, self.cache)


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
    truth: ``flag_precision``, ``flag_recall``, ``true_fn_fraction`` per epoch.
    """

    name = "fnd"

    def __init__(self, teacher: TeacherSignal, alpha: float = 1.25, tau: float = 0.1, truth=None):
        self.teacher, self.alpha, self.tau, self.truth = teacher, alpha, tau, truth

    def weights(self, batch: TrainBatch, device) -> torch.Tensor:
        """d_ijk [B, N] for the batch's users and negatives (eq. 12)."""
        teacher_neg = self.teacher.negative_scores(batch.users, batch.negatives).to(device)
        return false_negative_weights(teacher_neg, self.teacher.user_mean.to(device)[batch.users], self.alpha)

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        weights = self.weights(batch, neg.device)
        loss = fnd_loss(pos, neg, weights, tau=self.tau)
        flagged = (weights < 0).cpu().numpy()
        b, n = flagged.shape
        stats = {"loss": loss.item(), "flagged": int(flagged.sum()), "pairs": b * n}
        if self.truth is not None:
            users = batch.users.cpu().numpy()
            is_fn = self.truth.is_false_negative(np.repeat(users, n), np.tile(batch.negatives, (b, 1))).reshape(b, n)
            stats["true_fn"] = int(is_fn.sum())
            stats["flagged_true"] = int((is_fn & flagged).sum())
        return loss, stats

    def summarize(self, sums, n_steps):
        out = {"loss": sums["loss"] / max(n_steps, 1),
               "flagged_fraction": sums["flagged"] / max(sums["pairs"], 1)}
        if "true_fn" in sums:
            out["flag_precision"] = sums["flagged_true"] / sums["flagged"] if sums["flagged"] else float("nan")
            out["flag_recall"] = sums["flagged_true"] / sums["true_fn"] if sums["true_fn"] else float("nan")
            out["true_fn_fraction"] = sums["true_fn"] / max(sums["pairs"], 1)
        return out


class WithContrastive(Objective):
    """``base`` + λ · NT-Xent over two augmented views of each positive outfit (eqs. 17–19).

    The views pass the item CNN in the same call as the positives and negatives; the projection
    head g (``model.projection``) maps their outfit vectors to the contrastive space.
    """

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
        view1, view2, _ = make_views(torch.as_tensor(batch.positives), self.pair, self.rng,
                                     neighbours=self.neighbours)
        batch.views = [np.asarray(view1), np.asarray(view2)]
        loss, stats = self.base(model, batch)
        (f1, m1), (f2, m2) = batch.features(model)["views"]
        b = batch.size
        z = model.projection(model.encode_outfits(torch.cat([f1, f2]), torch.cat([m1, m2])))
        loss_cl = nt_xent_loss(z[:b], z[b:], tau=self.tau_cl)
        return loss + self.lam * loss_cl, {**stats, "loss": stats["loss"] + self.lam * loss_cl.item(),
                                           "loss_cl": loss_cl.item()}

    def summarize(self, sums, n_steps):
        out = self.base.summarize({k: v for k, v in sums.items() if k != "loss_cl"}, n_steps)
        out["loss_cl"] = sums["loss_cl"] / max(n_steps, 1)
        return out

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


@register_objective("fnd", needs_teacher=True)
def _fnd(cfg: TrainConfig, teacher: TeacherSignal | None = None, truth=None, **_) -> Objective:
    if teacher is None:
        raise ValueError("loss='fnd' needs a trained teacher: pass teacher=prepare_teacher(...) "
                         "(notebook 02_teacher trains one)")
    return FND(teacher, alpha=cfg.alpha, tau=cfg.tau, truth=truth)


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
