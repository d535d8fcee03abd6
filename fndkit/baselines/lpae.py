"""LPAE-u and LPAE-g: learnable anchors per user (Lu et al., "Personalized Outfit Recommendation
With Learnable Anchors", CVPR 2021; public code lzcn/LPAE-Net, ``models/lpae_net.py``,
``configs/lpae_{u,g}.yaml``).

Outfit encoder: the set transformer of paper §3.1.1 (2 SAB + PMA with one seed, the same module
as FND's: the paper borrows it from LPAE) over the item features, then a linear map W. A user u is
K anchors a_{u,1..K}; the score is a sum of cosines,

    s(u, o) = Σ_k cos(W z_o, a_{u,k})          (K = 64 for LPAE-u)

and LPAE-g gives each user 32 anchors of their own plus 32 anchors shared by all users (its
"general" anchors: non-personalized compatibility). Because the sum of cosines equals
normalize(W z_o) · Σ_k normalize(a_k), the score is a dot product with one user vector, so
training scores every user against every negative by one product.

Loss (objective ``lpae``): the soft margin log(1 + e^{−(s⁺ − s⁻)/τ}) over every positive–negative
pair of the batch (BPR with temperature, paper §4.1.3) plus 1e-2 · the log-determinant divergence
tr(G) − log det(G), G = A_u A_uᵀ over the batch users' own anchors (LPAE's ``l1reg``; it keeps a
user's anchors apart). LPAE's code pairs each positive with every *row's* negative (B × B pairs,
scored for the row's own user); here each user's positive meets every negative scored for that
user. Anchors start uniform in ±sqrt(3/d) as in the code; ``G + 1e-4·I`` keeps the log-determinant
finite when K > d (tiny test models).

Cold start (Table 3) by **anchor search**, no training (the public code only fine-tunes). The
rule: the pool is every trained user's own anchors (U × K of them). For a cold user who revealed
outfits R, each pool anchor a gets its mean cosine with the revealed outfits,
mean_{r∈R} cos(W z_r, a); the K anchors with the highest mean become the cold user's anchors
(LPAE-g keeps its shared anchors as they are), and the cold user is then scored like any user.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..losses import bpr_loss
from ..models.contract import ItemFeatureCache
from ..models.registry import register_model
from ..models.set_transformer import SetTransformer
from ..objectives import Objective, register_objective
from .common import FactorizedBaseline, normalized

LOGDET_WEIGHT = 1e-2
LOGDET_EPS = 1e-4


def anchor_search(revealed: torch.Tensor, pool: torch.Tensor, k: int) -> torch.Tensor:
    """The anchor-search rule: revealed [C, n, d] (normalized outfit vectors W z of each cold
    user's n revealed outfits), pool [P, d] (normalized anchors of the trained users) -> indices
    [C, k] of the k pool anchors with the highest mean cosine over the revealed outfits."""
    if k > pool.shape[0]:
        raise ValueError(f"anchor search needs k={k} anchors but the pool holds {pool.shape[0]}")
    affinity = torch.einsum("cnd,pd->cp", revealed, pool) / revealed.shape[1]
    return affinity.topk(k, dim=1).indices


class LPAE(FactorizedBaseline):
    """LPAE with ``user_anchors`` per user and ``shared_anchors`` common to all (0 for LPAE-u)."""

    objective = "lpae"
    train_defaults = {"lr": 0.01, "tau": 0.1}
    search_space = {"lr": [0.003, 0.01, 0.03], "tau": [0.1, 0.3, 1.0]}
    cold_start_strategy = "anchor-search"
    default_user_anchors = 64
    default_shared_anchors = 0

    def __init__(self, backbone: str, n_users: int, dim: int = 128, heads: int = 8,
                 weights: str | None = None, slot_categories: Sequence[int] | None = None,
                 user_anchors: int | None = None, shared_anchors: int | None = None):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        user_anchors = self.default_user_anchors if user_anchors is None else int(user_anchors)
        shared_anchors = self.default_shared_anchors if shared_anchors is None else int(shared_anchors)
        if user_anchors < 1 or shared_anchors < 0:
            raise ValueError(f"user_anchors={user_anchors} must be >= 1 and shared_anchors={shared_anchors} >= 0")
        self.heads = heads
        self.hparams = {"heads": heads, "user_anchors": user_anchors, "shared_anchors": shared_anchors}
        self.set_transformer = SetTransformer(dim=dim, heads=heads)
        self.transform = nn.Linear(dim, dim)   # W
        scale = math.sqrt(3.0 / dim)
        self.user_anchors = nn.Parameter(torch.empty(n_users, user_anchors, dim).uniform_(-scale, scale))
        self.shared_anchors = (nn.Parameter(torch.empty(shared_anchors, dim).uniform_(-scale, scale))
                               if shared_anchors else None)

    # -- scores ------------------------------------------------------------------------------
    def encode_outfits(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Outfit vectors z = T(X): [M, S, d] -> [M, d]."""
        return self.set_transformer(features, mask)

    def outfit_parts(self, features, mask):
        vec = normalized(self.transform(self.encode_outfits(features, mask)))
        return vec, vec.new_zeros(vec.shape[0])

    def shared_vector(self) -> torch.Tensor | float:
        """Σ of the normalized shared anchors (0 for LPAE-u)."""
        if self.shared_anchors is None:
            return 0.0
        return normalized(self.shared_anchors).sum(0)

    def user_parts(self, users):
        """Σ_k normalize(a_{u,k}) (+ the shared anchors): [B] -> [B, d]."""
        return normalized(self.user_anchors[users]).sum(1) + self.shared_vector()

    def anchor_regularizer(self, users: torch.Tensor) -> torch.Tensor:
        """tr(G) − log det(G), G = A_u A_uᵀ, averaged over the batch rows' users (own anchors only)."""
        anchors = self.user_anchors[users]
        gram = anchors @ anchors.transpose(1, 2)
        eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
        return (gram.diagonal(dim1=1, dim2=2).sum(-1) - torch.logdet(gram + LOGDET_EPS * eye)).mean()

    # -- cold start --------------------------------------------------------------------------
    @torch.no_grad()
    def cold_start_scores(self, revealed: np.ndarray, candidates: np.ndarray, owner: np.ndarray,
                          cache: ItemFeatureCache, pool_users: np.ndarray) -> torch.Tensor:
        """Scores [R] of cold users for candidate outfits by anchor search (module docstring).

        revealed [C, n, S]: item ids of each cold user's n revealed outfits; candidates [R, S];
        owner [R]: which cold user (0..C-1) each candidate row belongs to; pool_users: the
        trained users whose anchors form the pool; cache: item features of every item used.
        """
        revealed = np.asarray(revealed, dtype=np.int64)
        c, n, s = revealed.shape
        rev_vec, _ = self.outfit_parts_cached(revealed.reshape(c * n, s), cache)
        pool_ids = torch.as_tensor(np.asarray(pool_users, dtype=np.int64), device=rev_vec.device)
        pool = normalized(self.user_anchors[pool_ids]).reshape(-1, self.dim)
        chosen = anchor_search(rev_vec.reshape(c, n, -1), pool, self.user_anchors.shape[1])
        profile = pool[chosen].sum(1) + self.shared_vector()          # [C, d]
        cand_vec, _ = self.outfit_parts_cached(candidates, cache)
        owner = torch.as_tensor(np.asarray(owner, dtype=np.int64), device=cand_vec.device)
        return (profile[owner] * cand_vec).sum(-1)


@register_model("lpae-u")
class LPAEu(LPAE):
    source = "Lu et al., CVPR 2021 (LPAE); lzcn/LPAE-Net models/lpae_net.py, configs/lpae_u.yaml"


@register_model("lpae-g")
class LPAEg(LPAE):
    source = "Lu et al., CVPR 2021 (LPAE); lzcn/LPAE-Net models/lpae_net.py, configs/lpae_g.yaml"
    default_user_anchors = 32
    default_shared_anchors = 32


class LPAEObjective(Objective):
    """BPR with temperature over every positive–negative pair + 1e-2 · log-det anchor divergence."""

    name = "lpae"

    def __init__(self, tau: float = 0.1, logdet_weight: float = LOGDET_WEIGHT):
        self.tau, self.logdet_weight = tau, logdet_weight

    def check_model(self, model):
        if not hasattr(model, "anchor_regularizer"):
            raise ValueError(f"loss='lpae' trains LPAE models (lpae-u, lpae-g), not {type(model).__name__}; "
                             f"use loss='bpr' for this model")

    def __call__(self, model, batch):
        pos, neg = batch.pair_scores(model)
        rank = bpr_loss(pos, neg, tau=self.tau)
        logdet = model.anchor_regularizer(batch.users)
        loss = rank + self.logdet_weight * logdet
        return loss, {"loss": loss.item(), "rank_loss": rank.item(), "logdet": logdet.item()}


@register_objective("lpae")
def _lpae(cfg, **_) -> Objective:
    return LPAEObjective(cfg.tau)
