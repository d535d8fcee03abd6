"""OutfitNet (Lin, Moosaei and Yang, "OutfitNet: Fashion Outfit Recommendation with
Attention-Based Multiple Instance Learning", WWW 2020). No public code exists; this is a
reconstruction from the paper's description, as the FND paper summarises it (§4.1.3: "two stages
to capture both general compatibility and personal taste … maximize the difference between
positive and negative scores, similar to BPR").

- Stage 1, item–item compatibility (OutfitNet's Fashion Item Relevancy network): an item relevancy
  embedding h_k = MLP(f_k) of the CNN feature; an outfit's compatibility is the mean cosine over its
  item pairs, c(o) = mean_{i<j} cos(h_i, h_j); BPR with temperature pushes each positive outfit's
  c above every random mixture's.
- Stage 2, user preference (Outfit Preference Learning: attention-based multiple-instance learning,
  the outfit a bag of item instances): with a user vector u,

      s_k = cos(u, h_k),   α_k = softmax_k(wᵀ tanh(V [h_k; u])),   s(u, o) = Σ_k α_k s_k

  and BPR with temperature over every positive–negative pair. The whole network (CNN included)
  keeps training in stage 2.

**The final score has no compatibility term, on purpose.** In the WWW 2020 paper the Fashion
Item Relevancy network is the first stage that learns the item embeddings h, and the Outfit
Preference Learning network that reads them outputs the recommendation score: the attention-pooled
user–item preference above. We read no additive compatibility term into that output, so stage 1's
c(o) trains (initialises) h, and stage 2 and evaluation score with s(u, o) alone; adding c(o) to
the score would be a model the paper does not describe. General compatibility still reaches the
score through h, which stage 2 keeps training from stage 1's weights.

Choices the paper leaves open, made here: s_k is a cosine rather than the raw product uᵀh_k, so the
temperature of §4.1.3 sets the scale as it does for every other model; stage 1 lasts the first
``STAGE1_EPOCHS`` epoch(s) of the run (objective ``outfitnet``), stage 2 the rest; the attention
width is d/2.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..losses import bpr_loss
from ..models.registry import register_model
from ..objectives import Objective, register_objective
from .common import Baseline, flat_outfits, masked_mean, mlp, normalized, slot_pairs

STAGE1_EPOCHS = 1


@register_model("outfitnet")
class OutfitNet(Baseline):
    objective = "outfitnet"
    train_defaults = {"lr": 0.01, "tau": 0.1}
    search_space = {"lr": [0.003, 0.01, 0.03], "tau": [0.05, 0.1, 0.2]}
    source = "Lin et al., WWW 2020 (OutfitNet); no public code: reconstructed from the paper"

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        attention = max(dim // 2, 1)
        self.relevancy = mlp(dim, dim, dim)                       # h = MLP(f)
        self.user_embedding = nn.Embedding(n_users, dim)
        self.attention_v = nn.Linear(2 * dim, attention)          # V
        self.attention_w = nn.Linear(attention, 1, bias=False)    # w

    def item_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        return self.relevancy(features)

    def compatibility(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Stage 1: c(o) = mean over item pairs of cos(h_i, h_j): [M, S, d] -> [M]."""
        h = normalized(self.item_embeddings(features))
        i, j = slot_pairs(self.categories(features.shape[1]))
        return masked_mean((h[:, i] * h[:, j]).sum(-1), mask[:, i] & mask[:, j])

    def attention(self, h: torch.Tensor, user: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """α_k = softmax over the outfit's items of wᵀ tanh(V [h_k; u]): -> [M, S]."""
        u = user[:, None, :].expand_as(h)
        logits = self.attention_w(torch.tanh(self.attention_v(torch.cat([h, u], -1)))).squeeze(-1)
        return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)

    def score_items(self, users, features, mask):
        """Stage 2: s(u, o) = Σ_k α_k cos(u, h_k): [B], [B, S, d], [B, S] -> [B]."""
        h = self.item_embeddings(features)
        user = self.user_embedding(users)
        instance = (normalized(h) * normalized(user)[:, None, :]).sum(-1)    # s_k
        return (self.attention(h, user, mask) * instance).sum(1)


class OutfitNetObjective(Objective):
    """Stage 1 (epochs < ``stage1_epochs``): compatibility BPR; then preference BPR."""

    name = "outfitnet"

    def __init__(self, tau: float = 0.1, stage1_epochs: int = STAGE1_EPOCHS):
        self.tau, self.stage1_epochs = tau, stage1_epochs

    def check_model(self, model):
        if not hasattr(model, "compatibility"):
            raise ValueError(f"loss='outfitnet' trains the outfitnet model, not {type(model).__name__}; "
                             f"use loss='bpr' for this model")

    def __call__(self, model, batch):
        if batch.epoch < self.stage1_epochs:
            enc = batch.features(model)
            positives = enc["positives"]
            pos = model.compatibility(*positives)
            neg = model.compatibility(*flat_outfits(enc["negatives"], positives))
            loss = bpr_loss(pos, neg[None, :].expand(len(pos), -1), tau=self.tau)
            return loss, {"loss": loss.item(), "stage": 1.0}
        pos, neg = batch.pair_scores(model)
        loss = bpr_loss(pos, neg, tau=self.tau)
        return loss, {"loss": loss.item(), "stage": 2.0}


@register_objective("outfitnet")
def _outfitnet(cfg, **_) -> Objective:
    return OutfitNetObjective(cfg.tau)
