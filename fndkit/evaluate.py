"""Batched scoring with item-feature caching, and the metric tables (DESIGN.md §4).

Every unique item is encoded once per model, every unique outfit once, and users are scored
against outfits by gathering (or one matrix product for all-users scoring). The paper's Table 5
spent 65–80 s per full scoring on a P100 mostly re-encoding the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from .data.schema import OutfitDataset
from .metrics import ranking_metrics_all
from .models.contract import ItemFeatureCache, OutfitModel, make_image_fn
from .models.recommender import OutfitRecommender, outfit_vectors_cached


def image_fn_for(model: OutfitModel, dataset: OutfitDataset, device: str):
    """A function item_ids -> normalised float images [K, 3, H, W] on ``device`` for ``model``."""
    return make_image_fn(dataset.images, model.input_size, device)


def item_cache(model: OutfitModel, dataset: OutfitDataset, outfit_items: np.ndarray,
               device: str = "cpu") -> ItemFeatureCache:
    """Encode every item occurring in ``outfit_items`` once (no grad, eval mode)."""
    return ItemFeatureCache(model, outfit_items, image_fn_for(model, dataset, device))


@torch.no_grad()
def encode_candidates(model: OutfitRecommender, dataset: OutfitDataset, outfit_items: np.ndarray,
                      device: str = "cpu", cache: ItemFeatureCache | None = None) -> torch.Tensor:
    """Outfit vectors [M, d] for the rows of ``outfit_items`` (unique items and outfits once)."""
    if cache is None:
        cache = item_cache(model, dataset, outfit_items, device)
    return outfit_vectors_cached(model, outfit_items, cache)


@torch.no_grad()
def score_rows(model: OutfitModel, dataset: OutfitDataset, users: np.ndarray,
               outfit_items: np.ndarray, device: str = "cpu",
               cache: ItemFeatureCache | None = None) -> np.ndarray:
    """Score of ``users[m]`` for outfit ``outfit_items[m]`` (the model contract's
    ``score_cached``; cosine, eq. 9, for the recommender): float [M]."""
    if cache is None:
        cache = item_cache(model, dataset, outfit_items, device)
    return model.score_cached(users, outfit_items, cache).float().cpu().numpy()


def evaluate(model: OutfitModel, dataset: OutfitDataset, split: str = "test",
             protocols: tuple[str, ...] = ("random", "hard"), device: str = "cpu") -> dict:
    """Ranking metrics per protocol: {protocol: {auc, ndcg_lpae, ndcg_standard, n_users, n_skipped}}.

    One item-feature cache serves every protocol of the split.
    """
    keys = [f"{split}/{p}" for p in protocols if f"{split}/{p}" in dataset.candidates]
    if not keys:
        return {}
    cache = item_cache(model, dataset, np.concatenate([dataset.candidates[k].items for k in keys]), device)
    out = {}
    for key in keys:
        protocol = key.split("/")[1]
        cand = dataset.candidates[key]
        scores = score_rows(model, dataset, cand.user, cand.items, device, cache)
        out[protocol] = ranking_metrics_all(cand.user, scores, cand.label)
    return out
