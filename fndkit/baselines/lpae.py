"""LPAE-u and LPAE-g: learnable anchors per user (Lu et al., "Personalized Outfit Recommendation
With Learnable Anchors", CVPR 2021; public code lzcn/LPAE-Net, ``models/lpae_net.py``,
``configs/lpae_{u,g}.yaml``).

Outfit encoder (``encoder="lpae"``, the default): LPAE's own set transformer, as its code builds it
— an input embedding Linear → LayerNorm → ReLU → Dropout(0.2) of the item features, two SABs and a
PMA with one seed, 4 heads, each block H = LN(Q W_q + Attention(Q W_q, K W_k, K W_v)) (the
residual adds the *projected* queries, projections with bias), out = LN(H + relu(H W_o + b)).
``encoder="fnd"`` swaps in FND's set transformer (paper §3.1.1: eqs. 1–8, residual on the raw
queries, output projection W^M, no input embedding; ``encoder_heads`` 8 as FND's), which is what
fndkit used before issue 25 and what a checkpoint saved then rebuilds with. Then a linear map W. A
user u is K anchors a_{u,1..K}; the score is a sum of cosines,

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
finite when K > d (tiny test models). As LPAE's training does, every gradient value is clipped to
±0.5 before the step (``grad_clip_value``, read by :func:`fndkit.train.fit`).

Left as fndkit has it: the optimiser (SGD, lr 0.01 at batch 32, momentum 0.9, the plateau
schedule; fndkit's shared training loop for every model), W's initialisation (PyTorch's default
rather than N(0, 2/d)) and the item CNN (the student's backbone family, as for every baseline).

Departures that remain, against the public code:

- Temperature. The code's rank loss is ``F.soft_margin_loss(s⁺ − s⁻)``, log(1 + e^{−(s⁺ − s⁻)}):
  τ = 1. fndkit's default is τ = 0.1 (``train_defaults``): the paper applies temperature scaling
  to the baselines' BPR "for a more fair comparison" (§4.1.3) without giving its value, and 0.1 is
  its τ_FND. The validation search space holds 0.1, 0.3 and 1.0 (1.0 is the code's).
- Frozen features. The code's configs (``use_nn_feature: true``, a TensorLMDB of ResNet-34
  features) train LPAE on precomputed, frozen ImageNet features: only the outfit encoder and the
  anchors learn. Here the item CNN trains end to end with the rest, as every baseline's and the
  students' do (synthetic data has no ImageNet features to freeze).
- The code's ``l2reg`` weight (1e-4) is configured but its term is commented out, so it is not
  part of the code's loss either; not applied here.

Cold start (Table 3) by **anchor search**, no training. The FND paper uses LPAE's "anchor-search"
strategy (§4.3, citing the LPAE paper); the public code implements only fine-tuning a cold user's
anchors (it freezes the rest and trains), which Table 3's "no training" setting does not allow.
So the exact rule below is **fndkit's own** reading of anchor search, not LPAE's code. The rule: the pool is every trained user's own anchors
(U × K of them). For a cold user who revealed outfits R, each pool anchor a gets its mean cosine
with the revealed outfits, mean_{r∈R} cos(W z_r, a); the K anchors with the highest mean become the
cold user's anchors (LPAE-g keeps its shared anchors as they are), and the cold user is then
scored like any user. A sensitivity variant ranks each anchor by its *max* cosine over the revealed
outfits instead (an anchor close to any one revealed outfit counts: anchors are per-style
prototypes); 05_cold_start reports it as strategy ``anchor-search-max`` beside ``anchor-search``
(:data:`COLD_START_RULES`).
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


LPAE_DROPOUT = 0.2
LPAE_HEADS = 4
# Table-3 strategy name -> how anchor search scores a pool anchor over the revealed outfits
COLD_START_RULES = {"anchor-search": "mean", "anchor-search-max": "max"}


def anchor_search(revealed: torch.Tensor, pool: torch.Tensor, k: int, reduce: str = "mean") -> torch.Tensor:
    """fndkit's anchor-search rule: revealed [C, n, d] (normalized outfit vectors W z of each cold
    user's n revealed outfits), pool [P, d] (normalized anchors of the trained users) -> indices
    [C, k] of the k pool anchors with the highest ``reduce`` ("mean" or "max") cosine over the
    revealed outfits."""
    if k > pool.shape[0]:
        raise ValueError(f"anchor search needs k={k} anchors but the pool holds {pool.shape[0]}")
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce={reduce!r} must be 'mean' or 'max' (how an anchor's cosines to the "
                         f"revealed outfits combine)")
    cosines = torch.einsum("cnd,pd->cnp", revealed, pool)
    affinity = cosines.mean(1) if reduce == "mean" else cosines.amax(1)
    return affinity.topk(k, dim=1).indices


class LPAEBlock(nn.Module):
    """One attention block of LPAE's set transformer: queries q [B, m, d] attend to keys k
    [B, n, d] (``key_mask`` [B, n], True = real item); H = LN(q W_q + Attention), out =
    LN(H + relu(H W_o + b)). Per-head logits are scaled by sqrt(d / heads)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by encoder_heads={heads}; pick heads dividing dim")
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm_attention, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, m, d = q.shape
        h = self.heads

        def split(x):   # [B, n, d] -> [B, h, n, d/h]
            return x.reshape(b, x.shape[1], h, d // h).transpose(1, 2)

        pq, pk, pv = split(self.query(q)), split(self.key(k)), split(self.value(k))
        logits = pq @ pk.transpose(-2, -1) / math.sqrt(d // h)
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        attended = pq + torch.softmax(logits, dim=-1) @ pv          # the residual on projected queries
        hidden = self.norm_attention(attended.transpose(1, 2).reshape(b, m, d))
        return self.norm_out(hidden + torch.relu(self.out(hidden)))


class LPAEEncoder(nn.Module):
    """LPAE's outfit encoder (module docstring): embed → SAB → SAB → PMA (one seed):
    features [B, S, d], mask [B, S] -> [B, d]. Padded slots are zeroed first and never attended to."""

    def __init__(self, dim: int, heads: int = LPAE_HEADS, dropout: float = LPAE_DROPOUT):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(), nn.Dropout(dropout))
        nn.init.kaiming_uniform_(self.embed[0].weight, nonlinearity="relu")   # as LPAE initialises it
        nn.init.zeros_(self.embed[0].bias)
        self.sab1, self.sab2 = LPAEBlock(dim, heads), LPAEBlock(dim, heads)
        self.seed = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.xavier_uniform_(self.seed)
        self.pma = LPAEBlock(dim, heads)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.where(mask[..., None], features, torch.zeros((), dtype=features.dtype, device=features.device))
        h = self.embed(x)
        h = self.sab1(h, h, mask)
        h = self.sab2(h, h, mask)
        return self.pma(self.seed.expand(h.shape[0], -1, -1), h, mask).squeeze(1)


ENCODERS = ("lpae", "fnd")


class LPAE(FactorizedBaseline):
    """LPAE with ``user_anchors`` per user and ``shared_anchors`` common to all (0 for LPAE-u);
    ``encoder``: ``"lpae"`` (LPAE's own, ``encoder_heads`` 4 by default) or ``"fnd"`` (FND's set
    transformer, 8 heads by default)."""

    objective = "lpae"
    train_defaults = {"lr": 0.01, "tau": 0.1}
    search_space = {"lr": [0.003, 0.01, 0.03], "tau": [0.1, 0.3, 1.0]}
    cold_start_strategy = "anchor-search"
    cold_start_rules = COLD_START_RULES
    grad_clip_value = 0.5   # LPAE's training clips gradient values at 0.5
    default_user_anchors = 64
    default_shared_anchors = 0

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None, user_anchors: int | None = None,
                 shared_anchors: int | None = None, encoder: str = "lpae", encoder_heads: int | None = None):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        user_anchors = self.default_user_anchors if user_anchors is None else int(user_anchors)
        shared_anchors = self.default_shared_anchors if shared_anchors is None else int(shared_anchors)
        if user_anchors < 1 or shared_anchors < 0:
            raise ValueError(f"user_anchors={user_anchors} must be >= 1 and shared_anchors={shared_anchors} >= 0")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder={encoder!r} must be one of {ENCODERS} ('lpae': LPAE's own set "
                             f"transformer; 'fnd': FND's, paper §3.1.1)")
        heads = int(encoder_heads) if encoder_heads is not None else (LPAE_HEADS if encoder == "lpae" else 8)
        self.hparams = {"user_anchors": user_anchors, "shared_anchors": shared_anchors, "encoder": encoder,
                        "encoder_heads": heads}
        self.set_transformer = LPAEEncoder(dim, heads) if encoder == "lpae" else SetTransformer(dim=dim, heads=heads)
        self.transform = nn.Linear(dim, dim)   # W
        scale = math.sqrt(3.0 / dim)
        self.user_anchors = nn.Parameter(torch.empty(n_users, user_anchors, dim).uniform_(-scale, scale))
        self.shared_anchors = (nn.Parameter(torch.empty(shared_anchors, dim).uniform_(-scale, scale))
                               if shared_anchors else None)

    @classmethod
    def from_config(cls, cfg: dict) -> "LPAE":
        """A saved config; one written before the encoder option (it has ``heads``, no
        ``encoder``) rebuilds the FND set transformer it was trained with."""
        cfg = dict(cfg)
        if "heads" in cfg and "encoder" not in cfg:
            cfg["encoder"], cfg["encoder_heads"] = "fnd", cfg.pop("heads")
        return super().from_config(cfg)

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
                          cache: ItemFeatureCache, pool_users: np.ndarray,
                          rule: str = "anchor-search") -> torch.Tensor:
        """Scores [R] of cold users for candidate outfits by anchor search (module docstring).

        revealed [C, n, S]: item ids of each cold user's n revealed outfits; candidates [R, S];
        owner [R]: which cold user (0..C-1) each candidate row belongs to; pool_users: the
        trained users whose anchors form the pool; cache: item features of every item used;
        rule: a key of ``cold_start_rules`` (``anchor-search``: mean cosine, ``anchor-search-max``).
        """
        if rule not in self.cold_start_rules:
            raise ValueError(f"rule={rule!r} is unknown; choose one of {sorted(self.cold_start_rules)}")
        revealed = np.asarray(revealed, dtype=np.int64)
        c, n, s = revealed.shape
        rev_vec, _ = self.outfit_parts_cached(revealed.reshape(c * n, s), cache)
        pool_ids = torch.as_tensor(np.asarray(pool_users, dtype=np.int64), device=rev_vec.device)
        pool = normalized(self.user_anchors[pool_ids]).reshape(-1, self.dim)
        chosen = anchor_search(rev_vec.reshape(c, n, -1), pool, self.user_anchors.shape[1],
                               reduce=self.cold_start_rules[rule])
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
