"""The one model contract: what the trainer, the evaluator, cold start and the explorer may call.

Every model — the paper's recommender (teacher and students) and every baseline — is an
:class:`OutfitModel`: an ``nn.Module`` that scores (user, outfit) pairs from item features.

- ``encode_items(images [K, 3, H, W]) -> [K, d_item]``: the per-item CNN. It is the expensive
  part, so callers encode each unique item once (training batches, :class:`ItemFeatureCache` for
  evaluation) and hand the model item features.
- ``score_items(users [B], features [B, S, d_item], mask [B, S]) -> [B]``: the score of each row's
  outfit for each row's user. Non-personalized models ignore ``users``.
- ``pair_scores(users [B], positives, negatives, negative_index=None) -> ([B], [B, N])``: scores
  of the batch's positives and of their negatives (training). ``negatives`` is either N outfits
  shared by every pair (features ``[N, S, d]``: every user against every negative), or each
  pair's own (``[B, N, S, d]``), or K unique outfits with ``negative_index [B, N]`` picking pair
  b's n-th negative among them (per-pair negatives, each unique outfit encoded once). The default
  calls ``score_items`` on B × N rows and so serves every case; models with an outfit vector
  override it with one set-transformer pass per outfit.
- ``score_cached(users [M], items [M, S], cache) -> [M]``: evaluation scores from cached item
  features (defaults to ``score_items`` in chunks).
- ``personalized``: False for models that "cannot distinguish users" (paper §4.4); they rank every
  user's candidates by s(o) alone and are left out of the hard-negative table.
- ``grad_clip_value``: None, or a bound c that :func:`fndkit.train.fit` clips every gradient
  value to (``[-c, c]``) between backward and the step, for a model whose published training
  does so (LPAE: 0.5). The trainer reads it from any model; it names no model.
- ``grad_clip_norm``: None, or a bound c on the global L2 norm of all gradients together
  (``torch.nn.utils.clip_grad_norm_``), for a model whose published training clips so (Bi-LSTM:
  5.0, TensorFlow's ``optimize_loss(clip_gradients=5.0)``); applied after ``grad_clip_value``.
- ``start_epoch(epoch)``: called by :func:`fndkit.train.fit` before each training epoch (0-based);
  a no-op unless a model's published training schedules something by epoch (FHN's tanh scale).
- ``config()`` / ``from_config(cfg)``: a plain dict that rebuilds the untrained model (with the
  registry name under ``"kind"``), so a checkpoint rebuilds from the file alone.

Models that have user and outfit vectors (the recommender) also offer ``user_vectors`` and
``outfit_vectors``; cold start by neighbourhood (eqs. 20–24) and the explorer use those. A
baseline with its own cold-start rule implements ``cold_start_scores`` (see ``coldstart.py``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .backbones import images_to_tensor

ImageFn = Callable[[np.ndarray], torch.Tensor]
Features = tuple[torch.Tensor, torch.Tensor]  # item features [B, S, d], mask [B, S] (True = item)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients while the body runs; the model's own mode restored after, even
    when the body raises (scoring inside a training loop must not leave dropout off)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def make_image_fn(images, size: int | None = None,
                  device: str | torch.device = "cpu") -> ImageFn:
    """An ``image_fn`` over an image store (anything with ``get(ids) -> uint8 [K, H, W, 3]``,
    e.g. ``dataset.images``): ids [K] int64 -> float ``[K, 3, size, size]`` on ``device``."""

    def image_fn(item_ids: np.ndarray) -> torch.Tensor:
        return images_to_tensor(images.get(np.asarray(item_ids, dtype=np.int64)), size, device)

    return image_fn


class OutfitModel(nn.Module):
    """Base class of every model (see the module docstring for the contract)."""

    kind: ClassVar[str] = ""             # registry name, set by @register_model
    personalized: ClassVar[bool] = True
    grad_clip_value: ClassVar[float | None] = None   # fit() clips gradient values to ±this
    grad_clip_norm: ClassVar[float | None] = None    # fit() clips the gradients' global norm to this

    # -- items: a model with a ``backbone`` CNN and ``dim`` needs nothing more ------------------
    @property
    def input_size(self) -> int | None:
        """Image side length the item CNN (``self.backbone``) expects (None = any)."""
        return getattr(getattr(self, "backbone", None), "input_size", None)

    def start_epoch(self, epoch: int) -> None:
        """Called by ``fit`` before training epoch ``epoch`` (0-based); nothing by default."""

    def encode_items(self, images: torch.Tensor) -> torch.Tensor:
        """Item features f = CNN(image) with ``self.backbone``: [K, 3, H, W] -> [K, dim]."""
        features = self.backbone(images)
        if features.shape != (images.shape[0], self.dim):
            raise ValueError(f"backbone returned {tuple(features.shape)}, expected "
                             f"({images.shape[0]}, {self.dim})")
        return features

    # -- required ------------------------------------------------------------------------

    def score_items(self, users: torch.Tensor, features: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg: dict) -> "OutfitModel":  # pragma: no cover - abstract
        raise NotImplementedError

    # -- provided --------------------------------------------------------------------------
    @classmethod
    def build(cls, **kwargs) -> "OutfitModel":
        """A new model from the common arguments (n_users, dim, backbone, heads, weights) and the
        model's own; override to drop arguments the model has no use for."""
        return cls(**kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def item_features(self, items: torch.Tensor, image_fn: ImageFn) -> Features:
        """items [B, S] int64 (-1 = padding) -> (features [B, S, d], mask [B, S]).

        Each unique item is encoded once (one ``encode_items`` call) and gathered into place.
        """
        if items.ndim != 2:
            raise ValueError(f"items must be [B, S] item ids, got shape {tuple(items.shape)}")
        mask = items >= 0
        unique_ids, inverse = torch.unique(items[mask], return_inverse=True)
        features = self.encode_items(image_fn(unique_ids.cpu().numpy()))
        out = features.new_zeros(*items.shape, features.shape[-1])
        mask = mask.to(features.device)
        out[mask] = features[inverse.to(features.device)]
        return out, mask

    def pair_scores(self, users: torch.Tensor, positives: Features, negatives: Features,
                    negative_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the B positives [B] and of their N negatives [B, N].

        negatives: shared ``([N, S, d], [N, S])`` — every user against every negative; per pair
        ``([B, N, S, d], [B, N, S])``; or K unique outfits ``([K, S, d], [K, S])`` with
        ``negative_index`` [B, N] (int64 rows of them) giving each pair its own.
        """
        pos = self.score_items(users, *positives)
        b = users.shape[0]
        neg_f, neg_m = per_pair_negatives(b, negatives, negative_index)
        if neg_f.ndim == 4:   # each pair's own negatives
            n = neg_f.shape[1]
            rows_f, rows_m = neg_f.reshape(b * n, *neg_f.shape[2:]), neg_m.reshape(b * n, -1)
        else:                 # shared: every user against every negative
            n = neg_f.shape[0]
            rows_f = neg_f.unsqueeze(0).expand(b, -1, -1, -1).reshape(b * n, *neg_f.shape[1:])
            rows_m = neg_m.unsqueeze(0).expand(b, -1, -1).reshape(b * n, -1)
        neg = self.score_items(users.repeat_interleave(n), rows_f, rows_m).reshape(b, n)
        return pos, neg

    def forward(self, users: torch.Tensor, items: torch.Tensor, image_fn: ImageFn) -> torch.Tensor:
        """Preference scores: users [B], items [B, S] (-1 = padding) -> [B]."""
        return self.score_items(users, *self.item_features(items, image_fn))

    @torch.no_grad()
    def score_cached(self, users: np.ndarray, items: np.ndarray, cache,
                     batch_size: int = 4096) -> torch.Tensor:
        """Evaluation scores [M] of ``users[m]`` for ``items[m]`` from an ItemFeatureCache."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        chunks = []
        with evaluating(self):
            for lo in range(0, len(items), batch_size):
                feats, mask = cache.lookup(items[lo:lo + batch_size])
                u = torch.as_tensor(users[lo:lo + batch_size], device=feats.device)
                chunks.append(self.score_items(u, feats, mask))
        return torch.cat(chunks) if chunks else torch.zeros(0, device=self.device)

    @torch.no_grad()
    def score_matrix_cached(self, users: np.ndarray, items: np.ndarray, cache) -> torch.Tensor:
        """Scores [B, N] of each of ``users`` [B] for each outfit of ``items`` [N, S] (cached)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        b, n = len(users), len(items)
        return self.score_cached(np.repeat(users, n), np.tile(items, (b, 1)), cache).reshape(b, n)


def per_pair_negatives(b: int, negatives: Features,
                       negative_index: torch.Tensor | None = None) -> Features:
    """The negatives of :meth:`OutfitModel.pair_scores` as given (shared ``[N, S, d]`` or per pair
    ``[B, N, S, d]``), or gathered per pair from unique outfits by ``negative_index`` [B, N];
    a clear error for shapes that fit none of these."""
    neg_f, neg_m = negatives
    if negative_index is not None:
        if neg_f.ndim != 3 or negative_index.ndim != 2 or negative_index.shape[0] != b:
            raise ValueError(f"negative_index must be [B={b}, N] rows of unique negatives [K, S, d]; "
                             f"got index {tuple(negative_index.shape)} and negatives {tuple(neg_f.shape)}")
        index = negative_index.to(neg_f.device)
        return neg_f[index], neg_m[index]
    if neg_f.ndim == 4 and (neg_f.shape[0] != b or neg_m.shape != neg_f.shape[:3]):
        raise ValueError(f"per-pair negatives must be [B={b}, N, S, d] with a mask [B, N, S]; got "
                         f"{tuple(neg_f.shape)} and {tuple(neg_m.shape)}")
    if neg_f.ndim not in (3, 4):
        raise ValueError(f"negatives must be shared [N, S, d] or per pair [B, N, S, d], got {tuple(neg_f.shape)}")
    return neg_f, neg_m


class ItemFeatureCache:
    """Item features of a fixed set of items, each encoded once (no grad, eval mode).

    model: any :class:`OutfitModel`; item_ids: any int array of item ids (-1 and repeats are
    ignored); image_fn: see :func:`make_image_fn`. ``features`` is ``[K, d]`` on the model's device,
    row k for ``item_ids[k]`` (sorted unique ids). ``lookup`` gathers them for padded outfits.
    """

    def __init__(self, model: OutfitRecommender, item_ids: np.ndarray | Iterable[int],
                 image_fn: ImageFn, batch_size: int = 256, progress: bool = False):
        ids = np.asarray(item_ids, dtype=np.int64).ravel()
        self.item_ids = np.unique(ids[ids >= 0])
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        starts = range(0, len(self.item_ids), batch_size)
        if progress:
            starts = tqdm(starts, desc="encoding items", unit="batch")
        chunks = []
        with evaluating(model):
            for start in starts:
                chunk = self.item_ids[start:start + batch_size]
                chunks.append(model.encode_items(image_fn(chunk)))
        self.features = (torch.cat(chunks) if chunks
                         else torch.zeros(0, getattr(model, "dim", 0), device=model.device))

    @classmethod
    def from_features(cls, item_ids: np.ndarray, features: torch.Tensor) -> "ItemFeatureCache":
        """A cache of features encoded elsewhere (e.g. gathered from several processes):
        ``features[k]`` [K, d] for ``item_ids[k]``, sorted unique ids."""
        ids = np.asarray(item_ids, dtype=np.int64).ravel()
        if ids.shape[0] != features.shape[0] or (ids.size > 1 and not (ids[1:] > ids[:-1]).all()):
            raise ValueError(f"item_ids must be sorted unique ids, one per row of features; got "
                             f"{ids.shape[0]} ids for {features.shape[0]} rows")
        cache = cls.__new__(cls)
        cache.item_ids, cache.features = ids, features
        return cache

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Row of each id in ``features`` (same shape); KeyError naming ids not in the cache."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        rows = np.searchsorted(self.item_ids, item_ids)
        rows = np.minimum(rows, max(len(self.item_ids) - 1, 0))
        found = self.item_ids[rows] == item_ids if len(self.item_ids) else np.zeros_like(item_ids, bool)
        if not found.all():
            missing = np.unique(item_ids[~found])
            raise KeyError(f"{len(missing)} item ids are not in the cache, e.g. "
                           f"{missing[:10].tolist()}; build the cache over every item you score")
        return rows

    def lookup(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """items [M, S] int64 (-1 = padding) -> (item_features [M, S, d], mask [M, S] bool), on the
        cache's device; padded slots hold zeros."""
        items = np.asarray(items, dtype=np.int64)
        mask = items >= 0
        rows = np.zeros(items.shape, dtype=np.int64)
        rows[mask] = self.rows(items[mask])
        device = self.features.device
        mask_t = torch.from_numpy(mask).to(device)
        gathered = self.features[torch.from_numpy(rows).to(device)]
        return gathered * mask_t[..., None].to(gathered.dtype), mask_t
