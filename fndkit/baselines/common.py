"""What the seven baselines of Table 2 share: the item CNN, each slot's category, pair lists, and
the scoring shapes of the model contract (:mod:`fndkit.models.contract`).

Every baseline is an :class:`OutfitModel` built from the common arguments (``backbone``,
``n_users``, ``dim``, ``weights``; ``heads`` where it has attention) plus its own, and declares as
class attributes what the notebook and the experiments runner need to train it:

- ``objective``: the registered objective (:mod:`fndkit.objectives`) that trains it — the
  ``loss`` of its :class:`~fndkit.config.TrainConfig`;
- ``train_defaults``: TrainConfig fields it trains with unless told otherwise (lr, tau …);
- ``search_space``: TrainConfig field -> values a validation search tries (the paper reports each
  method "with their optimal hyper-parameters searched via the validation set", §4.1.4);
- ``source``: the paper and the public code the reconstruction follows;
- ``cold_start_strategy``: the name of its own rule for users it never trained on (see
  ``cold_start_scores``), None when it has none. Non-personalized models need none.

**Categories.** The model contract hands a model item features ``[B, S, d]`` and a mask, not
categories. Every dataset of fndkit lays its outfit slots out one way (schema
``slot_categories``): ``(top, bottom, shoe)`` for fixed-size outfits and ``(top, top, bottom,
shoe)`` for variable-size ones, so a slot's position names its category. Models that need
categories (FHN's per-category encoders, Type-Aware's type pairs, Bi-LSTM's order) read them from
:func:`slot_categories`; a dataset with another layout passes ``slot_categories`` when building.

**Negatives.** Objectives read item features through ``batch.features(model)`` and scores through
``batch.pair_scores(model)``. Negatives are ``[N, S, d]`` shared by the batch, ``[B, N, S, d]``
per positive, or K unique outfits with a ``negative_index`` [B, N]; :func:`flat_outfits`,
:func:`negative_layout` and the ``pair_scores`` overrides here accept all three.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.schema import CATEGORIES, FIXED_LAYOUT, VARIABLE_LAYOUT
from ..models.backbones import build_backbone
from ..models.contract import Features, ItemFeatureCache, OutfitModel, evaluating
from ..objectives import Objective, register_objective

N_CATEGORIES = len(CATEGORIES)


def slot_categories(n_slots: int, given: Sequence[int] | None = None) -> tuple[int, ...]:
    """The category of each of ``n_slots`` outfit slots: ``given`` when set, else the schema's
    fixed (3 slots) or variable (4 slots) layout."""
    if given is not None:
        given = tuple(int(c) for c in given)
        if len(given) != n_slots:
            raise ValueError(f"slot_categories={list(given)} names {len(given)} slots but the outfits "
                             f"have {n_slots}; give one category per slot")
        return given
    if n_slots == len(FIXED_LAYOUT):
        return tuple(FIXED_LAYOUT)
    if n_slots == len(VARIABLE_LAYOUT):
        return tuple(VARIABLE_LAYOUT)
    raise ValueError(f"outfits with {n_slots} slots have no known layout (fixed: top, bottom, shoe; "
                     f"variable: top, top, bottom, shoe); build the model with slot_categories=[...] "
                     f"naming each slot's category (0 top, 1 bottom, 2 shoe)")


def slot_pairs(categories: Sequence[int], distinct: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Slot index pairs (i < j) of an outfit layout; ``distinct``: only pairs of two categories
    (FHN leaves out the top–top pair of variable-size outfits)."""
    pairs = [(i, j) for i in range(len(categories)) for j in range(i + 1, len(categories))
             if not distinct or categories[i] != categories[j]]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = np.array(pairs, dtype=np.int64).T
    return i, j


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``values`` over ``dim`` where ``mask`` is True (0 where nothing is)."""
    mask = mask.to(values.dtype)
    while mask.ndim < values.ndim:
        mask = mask.unsqueeze(-1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def flat_outfits(block: Features, like: Features) -> Features:
    """Outfit features of a negative block as ``[M, S, d]`` / ``[M, S]`` whether the batch shares
    its negatives (``[N, S, d]``) or gives each positive its own (``[B, N, S, d]``)."""
    f, m = block
    return f.reshape(-1, *like[0].shape[1:]), m.reshape(-1, like[1].shape[1])


def negative_layout(b: int, positives: Features, negatives: Features,
                    negative_index: torch.Tensor | None = None) -> torch.Tensor | None:
    """Which flattened negative row (:func:`flat_outfits`) is pair b's n-th negative: an index
    [B, N], or None when the negatives are shared (every user against every row). Accepts the
    three layouts of the model contract's ``pair_scores``: shared ``[N, S, d]``, per pair
    ``[B, N, S, d]``, or unique outfits ``[K, S, d]`` with ``negative_index`` [B, N]."""
    if negative_index is not None:
        return negative_index.to(negatives[0].device)
    if negatives[0].ndim == positives[0].ndim + 1:
        n = negatives[0].shape[1]
        return torch.arange(b * n, device=negatives[0].device).reshape(b, n)
    return None


def unique_rows(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct outfit rows of ``items [M, S]`` and each row's index among them."""
    items = np.asarray(items, dtype=np.int64)
    if items.ndim != 2:
        raise ValueError(f"items must be [M, S] item ids, got shape {items.shape}")
    unique, inverse = np.unique(items, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)


class Baseline(OutfitModel):
    """An item CNN (the student's backbone family) and the bookkeeping every baseline shares.

    backbone: a name from ``fndkit.models.backbones.BACKBONES``; n_users: rows of user tables;
    dim: d, the item feature size (128 in the paper for all methods); weights: passed to
    ``build_backbone`` (not part of :meth:`config`: a checkpoint's state dict overrides it);
    slot_categories: each slot's category (None: the schema's layout for the outfits' size).
    """

    objective: ClassVar[str] = "bpr"
    train_defaults: ClassVar[dict[str, Any]] = {}
    search_space: ClassVar[dict[str, list]] = {}
    source: ClassVar[str] = ""
    cold_start_strategy: ClassVar[str | None] = None

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None):
        super().__init__()
        if not isinstance(backbone, str):
            raise ValueError(f"backbone must be a registered name, got {type(backbone).__name__}")
        if n_users <= 0:
            raise ValueError(f"n_users must be positive, got {n_users}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.backbone_name, self.n_users, self.dim = backbone, int(n_users), int(dim)
        self.backbone = build_backbone(backbone, dim=dim, weights=weights)
        self.layout = None if slot_categories is None else tuple(int(c) for c in slot_categories)
        if self.layout is not None and not all(0 <= c < N_CATEGORIES for c in self.layout):
            raise ValueError(f"slot_categories={list(self.layout)} must hold categories 0..{N_CATEGORIES - 1}")
        self.hparams: dict[str, Any] = {}   # the model's own constructor arguments (config)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def build(cls, **kwargs) -> "Baseline":
        """From the common arguments; those this model has no use for (e.g. ``heads``) are dropped."""
        accepted = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in kwargs.items() if k in accepted})

    def config(self) -> dict:
        return {"kind": self.kind, "backbone": self.backbone_name, "n_users": self.n_users,
                "dim": self.dim, "slot_categories": None if self.layout is None else list(self.layout),
                **self.hparams}

    @classmethod
    def from_config(cls, cfg: dict) -> "Baseline":
        missing = {"backbone", "n_users", "dim"} - set(cfg)
        if missing:
            raise ValueError(f"model config lacks {sorted(missing)}; got keys {sorted(cfg)}")
        args = {k: v for k, v in cfg.items() if k != "kind"}
        unknown = set(args) - set(inspect.signature(cls.__init__).parameters)
        if unknown:
            raise ValueError(f"model config has keys {sorted(unknown)} that {cls.__name__} does not take")
        return cls(**args)


    def categories(self, n_slots: int) -> tuple[int, ...]:
        """Each slot's category for outfits of ``n_slots`` slots."""
        return slot_categories(n_slots, self.layout)


class FactorizedBaseline(Baseline):
    """A personalized model whose score is a user vector times an outfit vector plus an outfit
    bias: ``s(u, o) = p_u · v_o + b_o``. Subclasses give ``user_parts`` and ``outfit_parts``;
    training then scores every user against every negative by one product, and evaluation encodes
    each distinct outfit once."""

    def user_parts(self, users: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """users [B] -> p_u [B, d']."""
        raise NotImplementedError

    def outfit_parts(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [M, S, d], mask [M, S] -> (v_o [M, d'], b_o [M])."""  # pragma: no cover
        raise NotImplementedError

    def score_items(self, users, features, mask):
        vec, bias = self.outfit_parts(features, mask)
        return (self.user_parts(users) * vec).sum(-1) + bias

    def pair_scores(self, users, positives, negatives, negative_index=None):
        """One pass over every outfit; shared negatives: every user against every one by a product."""
        b = positives[0].shape[0]
        neg_f, neg_m = flat_outfits(negatives, positives)
        vec, bias = self.outfit_parts(torch.cat([positives[0], neg_f]), torch.cat([positives[1], neg_m]))
        user = self.user_parts(users)
        pos = (user * vec[:b]).sum(-1) + bias[:b]
        index = negative_layout(b, positives, negatives, negative_index)
        if index is None:
            neg = user @ vec[b:].T + bias[b:][None, :]
        else:
            neg = (user[:, None, :] * vec[b:][index]).sum(-1) + bias[b:][index]
        return pos, neg

    @torch.no_grad()
    def outfit_parts_cached(self, items: np.ndarray, cache: ItemFeatureCache,
                            batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_o, b_o) for outfit rows ``items [M, S]``, each distinct row computed once."""
        unique, inverse = unique_rows(items)
        vecs, biases = [], []
        with evaluating(self):
            for lo in range(0, len(unique), batch_size):
                v, bias = self.outfit_parts(*cache.lookup(unique[lo:lo + batch_size]))
                vecs.append(v)
                biases.append(bias)
        if not vecs:
            return torch.zeros(0, self.dim, device=self.device), torch.zeros(0, device=self.device)
        idx = torch.from_numpy(inverse).to(vecs[0].device)
        return torch.cat(vecs)[idx], torch.cat(biases)[idx]

    @torch.no_grad()
    def score_cached(self, users, items, cache, batch_size: int = 4096):
        vec, bias = self.outfit_parts_cached(items, cache, batch_size)
        user = self.user_parts(torch.as_tensor(np.asarray(users, dtype=np.int64), device=vec.device))
        return (user * vec).sum(-1) + bias


class NonPersonalized(Baseline):
    """A compatibility model s(o): it "cannot distinguish users" (paper §4.4), so every user's
    candidates are ranked by s(o) alone. Subclasses give ``outfit_scores``."""

    personalized = False

    def outfit_scores(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """features [M, S, d], mask [M, S] -> s(o) [M]."""
        raise NotImplementedError

    def score_items(self, users, features, mask):
        return self.outfit_scores(features, mask)

    def pair_scores(self, users, positives, negatives, negative_index=None):
        """s(o) of the positives and of the negatives in one call, the same for every user."""
        b = positives[0].shape[0]
        neg_f, neg_m = flat_outfits(negatives, positives)
        scores = self.outfit_scores(torch.cat([positives[0], neg_f]), torch.cat([positives[1], neg_m]))
        index = negative_layout(b, positives, negatives, negative_index)
        neg = scores[b:][None, :].expand(b, -1) if index is None else scores[b:][index]
        return scores[:b], neg


class PairwiseCompatibility(NonPersonalized):
    """s(o) = − mean over the outfit's item pairs of a learned pair distance (Type-Aware, SCE-Net);
    trained by the ``triplet`` objective on (anchor, compatible item, same-category random item)."""

    margin: ClassVar[float] = 0.2

    def pair_distance(self, x: torch.Tensor, y: torch.Tensor, cat_x: torch.Tensor,
                      cat_y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Distances [P] between items x [P, d] and y [P, d] of categories cat_x, cat_y [P]."""
        raise NotImplementedError

    def triplet_distances(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                          cat_a: torch.Tensor, cat_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d(a, p), d(a, n)) [T] of training triplets; the positive and the negative share a
        category. By default two pair distances; a model whose distance depends on more than the
        pair (SCE-Net's condition weights) overrides it."""
        return self.pair_distance(anchor, positive, cat_a, cat_p), self.pair_distance(anchor, negative, cat_a, cat_p)

    def regularizer(self, general: torch.Tensor, cat_x: torch.Tensor, cat_y: torch.Tensor) -> torch.Tensor:
        """Penalty added to the triplet loss; ``general`` [3, T, d] are the triplets' item
        features by role (anchors, positives, negatives; :func:`role_rms`)."""
        return general.new_zeros(())

    def outfit_scores(self, features, mask):
        cats = self.categories(features.shape[1])
        i, j = slot_pairs(cats)
        if len(i) == 0:
            return features.new_zeros(features.shape[0])
        ct = torch.as_tensor(cats, device=features.device)
        m, p = features.shape[0], len(i)
        x = features[:, i].reshape(m * p, -1)
        y = features[:, j].reshape(m * p, -1)
        dist = self.pair_distance(x, y, ct[i].repeat(m), ct[j].repeat(m)).reshape(m, p)
        return -masked_mean(dist, mask[:, i] & mask[:, j])


def sample_triplets(positives: Features, negatives: Features, categories: Sequence[int]):
    """Triplets from a batch, as Type-Aware and SCE-Net train: for each positive outfit and each
    ordered pair of its slots (i, j), anchor = item i, positive = item j (they were worn together),
    negative = slot j of a random-mixture negative (same category as the positive). The negative
    row for triplet t is ``t mod M`` over the batch's M negatives (they are redrawn every step).

    Returns (anchor, positive, negative [T, d], cat_anchor, cat_positive [T], valid [T] bool).
    """
    f, m = positives
    nf, nm = flat_outfits(negatives, positives)
    b, s = m.shape
    pairs = [(i, j) for i in range(s) for j in range(s) if i != j]
    pi = torch.tensor([p[0] for p in pairs], device=f.device)
    pj = torch.tensor([p[1] for p in pairs], device=f.device)
    t = torch.arange(b * len(pairs), device=f.device)
    rows = torch.arange(b, device=f.device).repeat_interleave(len(pairs))
    si, sj = pi.repeat(b), pj.repeat(b)
    neg_rows = t % nf.shape[0]
    cats = torch.as_tensor(categories, device=f.device)
    valid = m[rows, si] & m[rows, sj] & nm[neg_rows, sj]
    return f[rows, si], f[rows, sj], nf[neg_rows, sj], cats[si], cats[sj], valid


class Triplet(Objective):
    """Type-Aware's and SCE-Net's loss: max(0, d(a, p) − d(a, n) + margin) over the batch's
    triplets (:func:`sample_triplets`), margin from the model, plus the model's regularizer."""

    name = "triplet"

    def check_model(self, model):
        if not isinstance(model, PairwiseCompatibility):
            raise ValueError(f"loss='triplet' trains pair-distance models (type-aware, sce-net), not "
                             f"{type(model).__name__}; use loss='bpr' for this model")

    def __call__(self, model, batch):
        enc = batch.features(model)
        positives = enc["positives"]
        anchor, pos, neg, cat_a, cat_p, valid = sample_triplets(positives, enc["negatives"],
                                                                model.categories(positives[1].shape[1]))
        if not valid.any():
            raise ValueError("no triplet in this batch: every outfit has a single item")
        anchor, pos, neg, cat_a, cat_p = anchor[valid], pos[valid], neg[valid], cat_a[valid], cat_p[valid]
        d_ap, d_an = model.triplet_distances(anchor, pos, neg, cat_a, cat_p)
        triplet = torch.relu(d_ap - d_an + model.margin).mean()
        reg = model.regularizer(torch.stack([anchor, pos, neg]), cat_a, cat_p)
        loss = triplet + reg
        return loss, {"loss": loss.item(), "triplet_loss": triplet.item(),
                      "triplet_accuracy": (d_an > d_ap).float().mean().item()}


@register_objective("triplet")
def _triplet(cfg, **_) -> Objective:
    return Triplet()


def role_rms(general: torch.Tensor) -> torch.Tensor:
    """The public Type-Aware and SCE-Net codes' embedding-norm penalty: for each role of the
    triplets (anchor, positive, negative: ``general`` [3, T, d]) the Frobenius norm of its
    embeddings over √T (their root mean square norm), averaged over the three roles. A [n, d]
    input counts as one role."""
    if general.ndim == 2:
        general = general[None]
    return (general.flatten(1).norm(dim=1) / general.shape[1] ** 0.5).mean()


def normalized(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-10)


def mlp(dim: int, hidden: int, out: int, bias_out: bool = True) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out, bias=bias_out))
