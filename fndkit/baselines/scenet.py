"""SCE-Net: similarity condition embeddings (Tan et al., "Learning Similarity Conditions Without
Explicit Supervision", ICCV 2019; public code rxtan2/Learning-Similarity-Conditions, ``csn.py``,
``tripletnet.py``, ``main.py``). Non-personalized.

M condition masks m_1..m_M (M = 4, the code's ``num_concepts``; initialised N(0.9, 0.7), through a
ReLU) each give a conditional embedding e^m(x) = normalize(relu(m_m) ⊙ g_x) of the general embedding
g. An attention branch (the code's ``ConceptBranch``: Linear to 32, ReLU, Linear to M, softmax)
weights the conditions for a pair from the pair's L2-normalised general embeddings, and the pair is
compared in the weighted space:

    w = softmax(MLP([ĝ_x + ĝ_y ; ĝ_x ⊙ ĝ_y])),   E(x) = Σ_m w_m e^m(x),   d(x, y) = ‖E(x) − E(y)‖₂

The code feeds the branch the concatenation of a triplet's three embeddings; a pair score at test
time can only see the pair, so here the branch sees the pair, through a symmetric input (the
outfit's pair distance does not depend on the pair's order). Outfit score and training as
Type-Aware (objective ``triplet``, margin 0.2) with the code's regularisers 5e-3 · ‖G‖_F / √n and
5e-4 · the mean L1 norm of the masks.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..models.registry import register_model
from .common import PairwiseCompatibility, normalized

EMBED_WEIGHT = 5e-3
MASK_WEIGHT = 5e-4
BRANCH_WIDTH = 32


@register_model("sce-net")
class SCENet(PairwiseCompatibility):
    objective = "triplet"
    train_defaults = {"lr": 0.01}
    search_space = {"lr": [0.003, 0.01, 0.03], "weight_decay": [1e-6, 1e-4]}
    source = ("Tan et al., ICCV 2019 (SCE-Net); rxtan2/Learning-Similarity-Conditions csn.py, "
              "tripletnet.py")
    margin = 0.2

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None, conditions: int = 4):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        if conditions < 1:
            raise ValueError(f"conditions={conditions} must be >= 1 (SCE-Net uses 4)")
        self.hparams = {"conditions": int(conditions)}
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

    def pair_distance(self, x, y, cat_x, cat_y):
        w = self.condition_weights(x, y)
        return (self.conditional(x, w) - self.conditional(y, w)).norm(dim=-1)

    def regularizer(self, general, cat_x, cat_y):
        embed = general.norm() / general.shape[0] ** 0.5
        mask = torch.relu(self.masks).sum(-1).mean()
        return EMBED_WEIGHT * embed + MASK_WEIGHT * mask
