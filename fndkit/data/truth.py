"""What the synthetic generator knows: item styles, user tastes, and so every outfit's true
affinity for every user — the ground truth that says which random-mixture negatives are in fact
false negatives (see :mod:`fndkit.data.synthetic` for how the benchmark is drawn)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SyntheticTruth:
    """What the generator knows: item styles, user taste anchors and the false-negative threshold.

    ``item_style``: float32 [I, k] (unit rows); ``user_anchors``: float32 [U, A, k];
    ``anchor_mask``: bool [U, A] (True = a real anchor). See the module docstring for the affinity.
    ``false_negative_threshold`` is the ``false_negative_quantile`` (0.1) quantile of the true
    affinities of the trained users' own positive outfits: a mixture the user would like at least
    as much as 90% of what they actually posted counts as a false negative.
    """

    item_style: np.ndarray
    user_anchors: np.ndarray
    anchor_mask: np.ndarray
    compat_weight: float = 0.5
    taste_weight: float = 0.5
    false_negative_threshold: float = float("nan")
    false_negative_quantile: float = 0.1

    def true_affinity(self, user_ids: np.ndarray, outfit_items: np.ndarray,
                      chunk: int = 65536) -> np.ndarray:
        """True affinity of each outfit for its user.

        user_ids: [M]; outfit_items: [M, S] item ids, -1 = absent slot (ignored). Returns float64
        [M]: ``compat_weight * mean pairwise cos + taste_weight * max_anchor cos(anchor, mean
        style)``; an outfit with a single item has compat 0.
        """
        user_ids = np.asarray(user_ids, dtype=np.int64)
        outfit_items = np.asarray(outfit_items, dtype=np.int64)
        if outfit_items.ndim != 2 or user_ids.shape != outfit_items.shape[:1]:
            raise ValueError(f"need user_ids [M] and outfit_items [M, S], got {user_ids.shape} "
                             f"and {outfit_items.shape}")
        n_items, n_users = self.item_style.shape[0], self.user_anchors.shape[0]
        if user_ids.size and (user_ids.min() < 0 or user_ids.max() >= n_users):
            raise ValueError(f"user ids must lie in 0..{n_users - 1}, got "
                             f"{user_ids.min()}..{user_ids.max()}")
        if outfit_items.size and (outfit_items.min() < -1 or outfit_items.max() >= n_items):
            raise ValueError(f"item ids must lie in 0..{n_items - 1} or be -1 (absent), got "
                             f"{outfit_items.min()}..{outfit_items.max()}")
        present = outfit_items >= 0
        if (present.sum(1) == 0).any():
            raise ValueError(f"outfit row {int(np.flatnonzero(present.sum(1) == 0)[0])} has no items")
        out = np.empty(user_ids.shape[0], dtype=np.float64)
        for lo in range(0, user_ids.shape[0], chunk):
            hi = lo + chunk
            out[lo:hi] = self._affinity_chunk(user_ids[lo:hi], outfit_items[lo:hi], present[lo:hi])
        return out

    def _affinity_chunk(self, users, items, present) -> np.ndarray:
        styles = self.item_style[np.where(present, items, 0)].astype(np.float64)
        styles *= present[..., None]
        n = present.sum(1).astype(np.float64)
        total = styles.sum(1)                                   # [M, k]
        sq = (total ** 2).sum(1)
        # Unit styles: the sum over ordered pairs i != j of s_i·s_j is |Σ s|² - n.
        pairs = n * (n - 1)
        compat = np.where(pairs > 0, (sq - n) / np.maximum(pairs, 1), 0.0)
        mean_dir = total / np.maximum(np.sqrt(sq), 1e-12)[:, None]
        anchor_cos = np.einsum("mak,mk->ma", self.user_anchors[users].astype(np.float64), mean_dir)
        taste = np.where(self.anchor_mask[users], anchor_cos, -np.inf).max(1)
        return self.compat_weight * compat + self.taste_weight * taste

    def is_false_negative(self, user_ids: np.ndarray, outfit_items: np.ndarray) -> np.ndarray:
        """bool [M]: the user would like the outfit at least as much as the threshold says."""
        return self.true_affinity(user_ids, outfit_items) >= self.false_negative_threshold

    def save(self, path) -> Path:
        path = Path(path)
        with open(path, "wb") as fh:  # a file handle keeps np.savez from appending ".npz"
            np.savez(fh, item_style=self.item_style, user_anchors=self.user_anchors,
                     anchor_mask=self.anchor_mask,
                     weights=np.array([self.compat_weight, self.taste_weight]),
                     false_negative_threshold=np.float64(self.false_negative_threshold),
                     false_negative_quantile=np.float64(self.false_negative_quantile))
        return path

    @classmethod
    def load(cls, path) -> "SyntheticTruth":
        with np.load(path) as z:
            return cls(item_style=z["item_style"], user_anchors=z["user_anchors"],
                       anchor_mask=z["anchor_mask"].astype(bool),
                       compat_weight=float(z["weights"][0]), taste_weight=float(z["weights"][1]),
                       false_negative_threshold=float(z["false_negative_threshold"]),
                       false_negative_quantile=float(z["false_negative_quantile"]))
