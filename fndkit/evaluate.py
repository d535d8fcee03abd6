"""Batched scoring with item-feature caching, and the metric tables (DESIGN.md §4).

Every unique item is encoded once per model, every unique outfit once, and users are scored
against outfits by gathering (or one matrix product for all-users scoring). The paper's Table 5
spent 65–80 s per full scoring on a P100 mostly re-encoding the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from . import distributed
from .data.schema import OutfitDataset
from .metrics import per_user_auc, ranking_metrics_all, ranking_metrics_clean
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


def shared_item_cache(model: OutfitModel, dataset: OutfitDataset, outfit_items: np.ndarray,
                      device: str = "cpu") -> ItemFeatureCache:
    """:func:`item_cache`, split over the processes under torchrun: each encodes its share of the
    unique items (a block of the sorted ids) and the features are gathered, so every process holds
    the whole cache. Collective: every process calls it. One process: :func:`item_cache`."""
    if not distributed.is_active():
        return item_cache(model, dataset, outfit_items, device)
    ids = np.asarray(outfit_items, dtype=np.int64).ravel()
    ids = np.unique(ids[ids >= 0])
    mine = np.array_split(ids, distributed.world_size())[distributed.rank()]
    part = item_cache(model, dataset, mine, device)
    return ItemFeatureCache.from_features(ids, distributed.all_gather_rows(part.features))


def score_rows_by_user(model: OutfitModel, dataset: OutfitDataset, users: np.ndarray, outfit_items: np.ndarray,
                       device: str = "cpu", cache: ItemFeatureCache | None = None) -> np.ndarray:
    """:func:`score_rows`, split by user under torchrun: process r scores the rows of the users
    with id mod W = r, and every process gets every score. Collective. One process: :func:`score_rows`."""
    if not distributed.is_active():
        return score_rows(model, dataset, users, outfit_items, device, cache)
    if cache is None:
        cache = shared_item_cache(model, dataset, outfit_items, device)
    users, outfit_items = np.asarray(users, dtype=np.int64), np.asarray(outfit_items, dtype=np.int64)
    owner, world = users % distributed.world_size(), distributed.world_size()
    mine = np.flatnonzero(owner == distributed.rank())
    part = model.score_cached(users[mine], outfit_items[mine], cache).float()
    scores = np.empty(len(users), dtype=np.float32)
    scores[np.concatenate([np.flatnonzero(owner == r) for r in range(world)])] = \
        distributed.all_gather_rows(part).cpu().numpy()
    return scores


def scored_candidates(model: OutfitModel, dataset: OutfitDataset, split: str, protocols: tuple[str, ...],
                      device: str = "cpu") -> list[tuple[str, object, np.ndarray]]:
    """(protocol, candidate set, scores) for each protocol of ``split`` the dataset has, one
    item-feature cache serving them all. Collective under torchrun."""
    keys = [f"{split}/{p}" for p in protocols if f"{split}/{p}" in dataset.candidates]
    if not keys:
        return []
    cache = shared_item_cache(model, dataset, np.concatenate([dataset.candidates[k].items for k in keys]), device)
    return [(key.split("/")[1], dataset.candidates[key],
             score_rows_by_user(model, dataset, dataset.candidates[key].user, dataset.candidates[key].items,
                                device, cache)) for key in keys]


def evaluate(model: OutfitModel, dataset: OutfitDataset, split: str = "test",
             protocols: tuple[str, ...] = ("random", "hard"), device: str = "cpu",
             per_user: bool = False) -> dict:
    """Ranking metrics per protocol: {protocol: {auc, ndcg_lpae, ndcg_standard, n_users, n_skipped}}.

    One item-feature cache serves every protocol of the split. ``per_user``: each protocol also
    holds ``per_user_auc`` {user id: AUC} (what paired tests between models compare).

    Under torchrun every process must call it: the work is split (:func:`shared_item_cache`,
    :func:`score_rows_by_user`) and every process returns the same metrics.
    """
    out = {}
    for protocol, cand, scores in scored_candidates(model, dataset, split, protocols, device):
        out[protocol] = ranking_metrics_all(cand.user, scores, cand.label)
        if per_user:
            users, aucs = per_user_auc(cand.user, scores, cand.label)
            out[protocol]["per_user_auc"] = {int(u): float(a) for u, a in zip(users, aucs)}
    return out


def evaluate_clean(model: OutfitModel, dataset: OutfitDataset, split: str = "test",
                   protocols: tuple[str, ...] = ("random", "hard"), device: str = "cpu",
                   per_user: bool = False) -> dict:
    """:func:`evaluate` on the lists with the true false negatives removed: {protocol: {auc,
    ndcg_lpae, ndcg_standard, n_users, n_skipped, n_removed, removed_fraction}}
    (:func:`fndkit.metrics.ranking_metrics_clean`). Empty for data without ground truth (real
    data): only the synthetic generator knows which negatives a user would in truth like.
    Collective under torchrun, like :func:`evaluate`."""
    if dataset.truth is None:
        return {}
    out = {}
    for protocol, cand, scores in scored_candidates(model, dataset, split, protocols, device):
        false_negative = dataset.truth.is_false_negative(cand.user, cand.items)
        out[protocol] = ranking_metrics_clean(cand.user, scores, cand.label, false_negative)
        if per_user:  # the clean lists' per-user AUCs (paired tests on test_clean)
            keep = ~(np.asarray(false_negative, dtype=bool).ravel() & (np.asarray(cand.label).ravel() == 0))
            users, aucs = per_user_auc(np.asarray(cand.user).ravel()[keep], np.asarray(scores).ravel()[keep],
                                       np.asarray(cand.label).ravel()[keep])
            out[protocol]["per_user_auc"] = {int(u): float(a) for u, a in zip(users, aucs)}
    return out
