"""Set Transformer T: R^{n x d} -> R^d of paper §3.1.1, following the paper's equations (1)-(8).

    Attention(Q, K, V) = Softmax(Q K^T / sqrt(d_q)) V                                    (1)
    A_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)                                           (2)
    MultiHead(Q, K, V) = Concat(A_1, ..., A_h) W^M                                       (3)
    H = LayerNorm(X + MultiHead(X, X, X))                                                (4)
    SAB(X) = LayerNorm(H + sigma(H))                                                     (5)
    F = SAB(SAB(X))                                                                      (6)
    z = LayerNorm(s + MultiHead(s, F, F))                                                (7)
    o = LayerNorm(z + sigma(z))                                                          (8)

with per-head projections of size d/h, so the scale in (1) is sqrt(d/h) (the query dimension
each attention actually sees), sigma a row-wise feed-forward layer (Linear + ReLU), and one
learnable seed s. The projections carry no bias, as in the equations.

Where this differs from Lee et al.'s reference code (and LPAE's copy of it), on purpose:
- the reference scales the attention logits by sqrt(d), not sqrt(d/h) (LPAE's copy uses d/h);
- the reference has no output projection W^M: it concatenates the heads and adds the *projected*
  queries (``Q W^Q + A``, not X + ... as in eq. 4), and uses its ``fc_o`` only inside the rFF
  residual ``H + relu(fc_o(H))``;
- the reference's PMA applies no rFF to the set before pooling (the Set Transformer paper's
  PMA(Z) = MAB(S, rFF(Z)) is not what its code does); we follow eqs. (7)-(8), which have none
  either, and put the rFF after the pooling as eq. (8) says.

Padding: variable-size outfits are padded to a common length and a boolean mask
``[B, n]`` (True = real item) keeps padded items out of every attention as keys, so the output
is exactly what the unpadded set gives. Padded *rows* still get (finite, meaningless) outputs from
the SABs; nothing reads them, because the pooling masks them as keys too. Their inputs are zeroed
first so that even NaN/inf garbage in padded rows cannot leak through ``0 * NaN``.

An outfit with no real item has no representation: :class:`SetTransformer` raises a ValueError
naming the empty rows rather than returning NaN.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_dims(dim: int, heads: int) -> None:
    if dim <= 0 or heads <= 0:
        raise ValueError(f"dim and heads must be positive, got dim={dim}, heads={heads}")
    if dim % heads != 0:
        raise ValueError(f"dim={dim} is not divisible by heads={heads}; each head gets dim/heads "
                         f"features (paper §3.1.1), pick heads dividing dim")


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) of eqs. (1)-(3).

    W^Q, W^K, W^V stack the h per-head matrices W_i (each ``d x d/h``) into one ``d x d`` linear
    map; W^M is ``d x d``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        _check_dims(dim, heads)
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.w_m = nn.Linear(dim, dim, bias=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, h, n, d/h]

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query: [B, n_q, d], key and value: [B, n_k, d], key_mask: [B, n_k] bool (True = real
        item) -> [B, n_q, d]. Masked keys get exactly zero attention weight."""
        q = self._split_heads(self.w_q(query))
        k = self._split_heads(self.w_k(key))
        v = self._split_heads(self.w_v(value))
        logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [B, h, n_q, n_k]
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        heads = torch.softmax(logits, dim=-1) @ v  # [B, h, n_q, d/h]
        b, _, n_q, _ = heads.shape
        return self.w_m(heads.transpose(1, 2).reshape(b, n_q, self.dim))


def _row_feed_forward(dim: int) -> nn.Module:
    """sigma of eqs. (5) and (8): a row-wise feed-forward layer."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU())


class MAB(nn.Module):
    """Multihead attention block shared by eqs. (4)-(5) and (7)-(8):

        H = LayerNorm(Q + MultiHead(Q, K, K)),   out = LayerNorm(H + sigma(H))

    q [B, n_q, d], k [B, n_k, d], key_mask [B, n_k] -> [B, n_q, d].
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self._build_block(dim, heads)

    def _build_block(self, dim: int, heads: int) -> None:
        self.attention = MultiHeadAttention(dim, heads)
        self.norm_attention = nn.LayerNorm(dim)
        self.feed_forward = _row_feed_forward(dim)
        self.norm_feed_forward = nn.LayerNorm(dim)

    def attend(self, q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_attention(q + self.attention(q, k, k, key_mask=key_mask))
        return self.norm_feed_forward(h + self.feed_forward(h))


class SAB(MAB):
    """Set Attention Block, eqs. (4)-(5): x [B, n, d], mask [B, n] -> [B, n, d]."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, x, mask)


class PMA(MAB):
    """Pooling by multi-head attention with one learnable seed s, eqs. (7)-(8):
    f [B, n, d], mask [B, n] -> [B, d]."""

    def __init__(self, dim: int, heads: int):
        nn.Module.__init__(self)
        # the seed is drawn before the block's weights, so a given torch seed initialises every
        # parameter exactly as it always has (pinned metrics depend on it)
        self.seed = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.xavier_uniform_(self.seed)
        self._build_block(dim, heads)

    def forward(self, f: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(self.seed.expand(f.shape[0], -1, -1), f, mask).squeeze(1)


class SetTransformer(nn.Module):
    """T(X) = PMA(SAB(SAB(X))), eqs. (4)-(8): item features -> one outfit vector.

    x: [B, n, d] item features, mask: [B, n] bool (True = real item; None = all real)
    -> [B, d] outfit vectors. Invariant to the order of the items and to masked padding.
    """

    def __init__(self, dim: int = 128, heads: int = 8):
        super().__init__()
        _check_dims(dim, heads)
        self.dim, self.heads = dim, heads
        self.sab1 = SAB(dim, heads)
        self.sab2 = SAB(dim, heads)
        self.pma = PMA(dim, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be [B, n, {self.dim}], got {tuple(x.shape)}")
        if mask is None:
            return self.pma(self.sab2(self.sab1(x)))
        if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be bool {tuple(x.shape[:2])} (True = real item), got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        empty = ~mask.any(dim=1)
        if empty.any():
            rows = torch.nonzero(empty).flatten()[:10].tolist()
            raise ValueError(f"outfit rows {rows} have no real item (mask all False); an empty "
                             f"outfit has no representation, drop those rows")
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        return self.pma(self.sab2(self.sab1(x, mask), mask), mask)
