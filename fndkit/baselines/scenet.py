"""SCE-Net: similarity condition embeddings (Tan et al., "Learning Similarity Conditions Without
Explicit Supervision", ICCV 2019; public code rxtan2/Learning-Similarity-Conditions, ``csn.py``,
``tripletnet.py``, ``main.py``). Non-personalized.

M condition masks m_1..m_M (M = 4, the code's ``num_concepts``; initialised N(0.9, 0.7), through a
ReLU) each give a conditional embedding e^m(x) = normalize(relu(m_m) ⊙ g_x) of the general embedding
g. An attention branch (the code's ``ConceptBranch``: Linear to 32, ReLU, Linear to M, softmax)
gives condition weights w, and items are compared in the weighted space:

    E_w(x) = Σ_m w_m e^m(x),   d_w(x, y) = ‖E_w(x) − E_w(y)‖₂

**Condition weights.** The code feeds the branch one triplet's three normalised general
embeddings [ĝ_a; ĝ_n; ĝ_p] and uses that one weight vector for both d(a, p) and d(a, n). A pair
score at test time can only see the pair, so here the branch reads a pair through a symmetric
input, w(x, y) = softmax(MLP([ĝ_x + ĝ_y ; ĝ_x ⊙ ĝ_y])) (an outfit's pair distance does not depend
on the pair's order), and an outfit's pair (x, y) is scored with d_{w(x, y)}(x, y). In training
(``triplet_weights="shared"``, the default) each triplet gets one weight vector, as in the code:
the mean of the branch over the triplet's two pairs, w = ½ (w(a, p) + w(a, n)) — it sees all three
items, like the code's, and both distances use it. ``triplet_weights="per_pair"`` is fndkit's
behaviour before issue 25: d(a, p) with w(a, p), d(a, n) with w(a, n) (each distance its own
weights, which lets the branch separate positive from negative by itself).

Outfit score and training as Type-Aware (objective ``triplet``, margin 0.2, the code's
``--margin`` default) with the code's regularisers: 5e-3 · the mean over the triplets' three roles
of ‖G_role‖_F / √T (the root mean square norm of each role's general embeddings, averaged as the
code averages the three roles' norms; pooled before issue 31) and 5e-4 · the mean over the
conditions of each mask's L1 norm (through the ReLU, as the code). Left out: the item CNN is the student's backbone family and training is fndkit's
shared loop, as for every baseline.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..models.registry import register_model
from .common import PairwiseCompatibility, normalized, role_rms

EMBED_WEIGHT = 5e-3
MASK_WEIGHT = 5e-4
BRANCH_WIDTH = 32
TRIPLET_WEIGHTS = ("shared", "per_pair")


@register_model("sce-net")
class SCENet(PairwiseCompatibility):
    objective = "triplet"
    train_defaults = {"lr": 0.01}
    search_space = {"lr": [0.003, 0.01, 0.03], "weight_decay": [1e-6, 1e-4]}
    source = ("Tan et al., ICCV 2019 (SCE-Net); rxtan2/Learning-Similarity-Conditions csn.py, "
              "tripletnet.py")
    margin = 0.2

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None, conditions: int = 4,
                 triplet_weights: str = "shared"):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        if conditions < 1:
            raise ValueError(f"conditions={conditions} must be >= 1 (SCE-Net uses 4)")
        if triplet_weights not in TRIPLET_WEIGHTS:
            raise ValueError(f"triplet_weights={triplet_weights!r} must be one of {TRIPLET_WEIGHTS} ('shared': "
                             f"one condition-weight vector per triplet, as the public code; 'per_pair')")
        self.triplet_weights = triplet_weights
        self.hparams = {"conditions": int(conditions), "triplet_weights": triplet_weights}
        self.masks = nn.Parameter(torch.empty(conditions, dim).normal_(0.9, 0.7))
        self.branch = nn.Sequential(nn.Linear(2 * dim, BRANCH_WIDTH), nn.ReLU(), nn.Linear(BRANCH_WIDTH, conditions))

    def condition_weights(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """w [P, M] for the pairs (x, y), symmetric in x and y."""
        gx, gy = normalized(x), normalized(y)
        return torch.softmax(self.branch(torch.cat([gx + gy, gx * gy], -1)), dim=-1)

    def conditional(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """E(x) = Σ_m w_m normalize(relu(m_m) ⊙ x): [P, d], [P, M] -> [P, d]."""
        per_condition = normalized(x[:, None, :] * torch.relu(self.masks)[None])   # [P, M, d]
        return (weights[..., None] * per_condition).sum(1)

    def weighted_distance(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """d_w(x, y) = ‖E_w(x) − E_w(y)‖: [P, d], [P, d], [P, M] -> [P]."""
        return (self.conditional(x, weights) - self.conditional(y, weights)).norm(dim=-1)

    def pair_distance(self, x, y, cat_x, cat_y):
        return self.weighted_distance(x, y, self.condition_weights(x, y))

    def triplet_distances(self, anchor, positive, negative, cat_a, cat_p):
        if self.triplet_weights == "per_pair":
            return super().triplet_distances(anchor, positive, negative, cat_a, cat_p)
        w = 0.5 * (self.condition_weights(anchor, positive) + self.condition_weights(anchor, negative))
        return self.weighted_distance(anchor, positive, w), self.weighted_distance(anchor, negative, w)

    def regularizer(self, general, cat_x, cat_y):
        embed = role_rms(general)
        mask = torch.relu(self.masks).sum(-1).mean()
        return EMBED_WEIGHT * embed + MASK_WEIGHT * mask
