"""FHN: Fashion Hash Net (Lu et al., "Learning Binary Code for Personalized Fashion
Recommendation", CVPR 2019; public code lzcn/Fashion-Hash-Net, ``polyvore/model/fashionnet.py``,
``basemodel.py`` and ``polyvore/solver/``), run **without binarisation** as the paper does (§4.1.3,
after LPAE).

**"Without binarisation"** has two readings: keep FHN's continuous relaxation tanh(s · x) and never
take the sign() step (fndkit's), or drop the tanh altogether (the public code's
``without_binary`` flag). fndkit keeps the relaxation: it is the model FHN trains, the codes stay
in [−1, 1] as hash codes would, and only the non-differentiable sign() of test time is skipped.

Each category has its own item encoder from the CNN feature to d (FHN's ``ImgEncoder``: Linear,
ReLU, Linear without bias), squashed by tanh(s · ·). A user is u = tanh(s · e_u) of an embedding
e_u initialised N(0, σ²), σ = ``user_init_std``. The public code's ``UserEncoder`` starts at
σ = 0.01; fndkit's default is σ = 1 because under fndkit's training (one SGD learning rate for
every parameter, the score a mean over d dimensions) users started at 0.01 never learn: demo
scale, seed 0, 4 epochs of 40 steps, validation AUC 0.499 / 0.509 / 0.505 / 0.507 at σ = 0.01
against 0.545 / 0.619 / 0.670 after three epochs at σ = 1 (both with the scale schedule; the
public code trains users with their own learning rate). ``user_init_std=0.01`` gives the public
initialisation. The scale s of the tanh
grows with training as the public solver sets it, s = √(1 + epoch) (epoch counted from 0: 1, √2,
√3 …; :meth:`FHN.start_epoch`, called by ``fit``), so the relaxation tightens towards the sign; it
is a buffer, so a checkpoint scores with the scale of the epoch it was saved at. With learnable
per-dimension weights w_u and w_i (FHN's ``CoreMat``, initialised to 1):

    s(u, o) = mean_{k, dims} (w_u ⊙ u ⊙ x_k) + mean_{(i, j), dims} (w_i ⊙ x_i ⊙ x_j)

over the outfit's items k and item pairs i < j of two different categories (FHN drops the top–top
pair of variable-size outfits). FHN multiplies the score by 10 before its soft-margin loss; here the
temperature of BPR plays that part (objective ``bpr``: log(1 + e^{−(s⁺ − s⁻)/τ}) over every
positive–negative pair; τ = 0.1 is FHN's ×10). The default τ = 0.02 learns faster from the small
scores a mean over d dimensions starts with (demo validation half, seed 0, 80 steps: 0.636 AUC
against 0.599 at τ = 0.1, measured before issue 25).

Left out: dropout in FHN's encoders and their N(0, 0.01²) weight initialisation, and the public
solver's per-group learning rates (one SGD learning rate for every parameter: fndkit's shared
training loop). Before issue 25 the scale stayed 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..models.registry import register_model
from .common import N_CATEGORIES, FactorizedBaseline, masked_mean, mlp, slot_pairs

PUBLIC_USER_INIT_STD = 0.01   # the public code's UserEncoder initialisation
USER_INIT_STD = 1.0           # fndkit's default (module docstring: 0.01 does not learn under one SGD lr)


@register_model("fhn")
class FHN(FactorizedBaseline):
    objective = "bpr"
    train_defaults = {"lr": 0.01, "tau": 0.02}
    search_space = {"lr": [0.003, 0.01, 0.03], "tau": [0.01, 0.02, 0.05, 0.1]}
    source = ("Lu et al., CVPR 2019 (FHN); lzcn/Fashion-Hash-Net polyvore/model/fashionnet.py, "
              "basemodel.py; without binarisation")

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None, user_init_std: float = USER_INIT_STD):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        if not user_init_std > 0:
            raise ValueError(f"user_init_std={user_init_std!r} must be > 0 (the public code: 0.01; fndkit: 1.0)")
        self.hparams = {"user_init_std": float(user_init_std)}
        self.item_encoders = nn.ModuleList(mlp(dim, dim, dim, bias_out=False) for _ in range(N_CATEGORIES))
        self.user_embedding = nn.Embedding(n_users, dim)
        nn.init.normal_(self.user_embedding.weight, std=user_init_std)
        self.user_weight = nn.Parameter(torch.ones(dim))   # w_u
        self.pair_weight = nn.Parameter(torch.ones(dim))   # w_i
        self.register_buffer("scale", torch.ones(()))      # s of tanh(s · x), set per epoch

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint saved before the scale existed (issue 25) was trained and scored at s = 1
        state_dict.setdefault(prefix + "scale", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def start_epoch(self, epoch: int) -> None:
        """The public solver's schedule: s = √(1 + epoch) for training epoch ``epoch`` (0-based)."""
        self.scale.fill_(math.sqrt(1.0 + epoch))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """tanh(s · x), FHN's relaxed binary codes."""
        return torch.tanh(self.scale * x)

    def item_codes(self, features: torch.Tensor) -> torch.Tensor:
        """x_k = tanh(s · encoder_{category of slot k}(f_k)): [M, S, d] -> [M, S, d]."""
        cats = self.categories(features.shape[1])
        return torch.stack([self.codes(self.item_encoders[c](features[:, s])) for s, c in enumerate(cats)], 1)

    def user_codes(self, users: torch.Tensor) -> torch.Tensor:
        """u = tanh(s · embedding): [B] -> [B, d]."""
        return self.codes(self.user_embedding(users))

    def user_parts(self, users):
        return self.user_weight * self.user_codes(users)

    def pair_term(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mean over item pairs of two categories and dims of w_i ⊙ x_i ⊙ x_j: [M]."""
        i, j = slot_pairs(self.categories(codes.shape[1]), distinct=True)
        if len(i) == 0:
            return codes.new_zeros(codes.shape[0])
        products = (self.pair_weight * codes[:, i] * codes[:, j]).mean(-1)   # [M, P]
        return masked_mean(products, mask[:, i] & mask[:, j])

    def outfit_parts(self, features, mask):
        """v_o = mean_k x_k / d (so that p_u · v_o is the user term), b_o = the pair term."""
        codes = self.item_codes(features)
        return masked_mean(codes, mask) / self.dim, self.pair_term(codes, mask)
