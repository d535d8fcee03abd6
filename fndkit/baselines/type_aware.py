"""Type-Aware embeddings (Vasileva et al., "Learning Type-Aware Embeddings for Fashion
Compatibility", ECCV 2018; public code mvasil/fashion-compatibility, ``type_specific_network.py``,
``tripletnet.py``, ``main.py``). Non-personalized.

One general item embedding g (the CNN feature) and, for every unordered pair of categories {a, b}
(top–bottom, top–shoe, …, top–top), a learned mask m_ab (initialised N(0.9, 0.7), passed through a
ReLU as in the code's ``--learned`` masks) that projects g into the pair's type space, where the
type-specific embedding is l2-normalised as the public README trains it (``--l2_embed``):
e_ab(x) = normalize(relu(m_ab) ⊙ g_x). Two items are compared there, d(x, y) = ‖e_ab(x) − e_ab(y)‖₂
(so distances, and the triplet loss, do not depend on the scale of the item features). The outfit
score is the negated mean distance over its item pairs.

Objective ``triplet`` (shared with SCE-Net): for each ordered pair of items worn together (anchor,
positive) and a random item of the positive's category (negative), max(0, d(a, p) − d(a, n) + 0.3)
in the pair's type space (the code's MarginRankingLoss with its default ``--margin`` 0.3), plus the
code's regularisers: 5e-4 · the mean over the triplets' three roles (anchor, positive, negative)
of ‖G_role‖_F / √T, the root mean square norm of that role's general embeddings (the code averages
the three roles' norms; fndkit pooled the three before issue 31), and 5e-4 · the mean L1 norm of
the masks used (through the ReLU, as the code's training path).

Left out or changed, and why: the text losses (VSE, text similarity) need descriptions, and the
image-similarity term on the general embedding is left out with them; the item CNN is the
student's backbone family (as for every baseline) and training is fndkit's shared loop (SGD, lr
0.01, plateau schedule). Before issue 25 the type-specific embeddings were not normalised and the
margin was 0.2; the triplet loss then shrank with the scale of the item features.

Departures that remain, against the public code:

- Masks at test time. The code's test path (``TypeSpecificNet.forward`` with ``c=None``) uses the
  raw mask weights, without the ReLU its training path applies; here training and scoring both
  use relu(m_ab), so a pair is scored in the space it was trained in. The two differ wherever a
  mask has negative entries: about 10% of them at the N(0.9, 0.7) initialisation (Φ(−0.9/0.7)),
  entries the training path zeroes and so never fits.
- Triplets per epoch. The code's epoch is every *unordered* pair (j < k) of every training outfit
  once, one triplet each, shuffled across outfits into batches of 256, the negative a random item
  of the positive's type; here an epoch is every training positive outfit once (batches of 32
  outfits), each giving *both* orders of each pair (twice the code's triplets per outfit, a batch's
  triplets grouped by outfit), the negative the same slot of one of the step's random mixtures.
- Optimiser: fndkit's shared loop (SGD, lr 0.01 at batch 32, the plateau schedule) where the code
  runs Adam at lr 5e-5, batch 256, for 10 epochs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..models.registry import register_model
from .common import N_CATEGORIES, PairwiseCompatibility, normalized, role_rms

EMBED_WEIGHT = 5e-4
MASK_WEIGHT = 5e-4


def type_pair_index(cat_x: torch.Tensor, cat_y: torch.Tensor, n_categories: int = N_CATEGORIES) -> torch.Tensor:
    """Index of the unordered category pair {x, y} among the n(n+1)/2 pairs (same-category
    included): (0,0) 0, (0,1) 1, (0,2) 2, (1,1) 3, (1,2) 4, (2,2) 5 for three categories."""
    a, b = torch.minimum(cat_x, cat_y), torch.maximum(cat_x, cat_y)
    return a * n_categories - a * (a - 1) // 2 + (b - a)


@register_model("type-aware")
class TypeAware(PairwiseCompatibility):
    objective = "triplet"
    train_defaults = {"lr": 0.01}
    search_space = {"lr": [0.003, 0.01, 0.03], "weight_decay": [1e-6, 1e-4]}
    source = ("Vasileva et al., ECCV 2018 (Type-Aware); mvasil/fashion-compatibility "
              "type_specific_network.py, tripletnet.py")
    margin = 0.3   # the public code's --margin default

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        self.masks = nn.Parameter(torch.empty(N_CATEGORIES * (N_CATEGORIES + 1) // 2, dim).normal_(0.9, 0.7))

    def type_masks(self, cat_x: torch.Tensor, cat_y: torch.Tensor) -> torch.Tensor:
        """relu(m_ab) for each pair: [P] -> [P, d]."""
        return torch.relu(self.masks[type_pair_index(cat_x, cat_y)])

    def type_embedding(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """e_ab(x) = normalize(relu(m_ab) ⊙ g_x) (the code's ``--l2_embed``): [P, d] -> [P, d]."""
        return normalized(masks * x)

    def pair_distance(self, x, y, cat_x, cat_y):
        masks = self.type_masks(cat_x, cat_y)
        return (self.type_embedding(x, masks) - self.type_embedding(y, masks)).norm(dim=-1)

    def regularizer(self, general, cat_x, cat_y):
        embed = role_rms(general)
        mask = self.type_masks(cat_x, cat_y).abs().sum(-1).mean()
        return EMBED_WEIGHT * embed + MASK_WEIGHT * mask
