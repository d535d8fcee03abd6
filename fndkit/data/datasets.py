"""Torch views of the canonical dataset: positive (user, outfit) pairs and padded outfit batches.

The model batch contract: ``items`` LongTensor [B, S] item ids with ``-1`` for padding, ``mask``
BoolTensor [B, S] (True = real item), ``users`` LongTensor [B]. Variable-size outfits (one or two
tops) are padded, and the mask keeps the padding out of attention.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .schema import DatasetError, OutfitDataset


class PositivePairs(Dataset):
    """The positive outfits of one split; row ``k`` is ``dict(outfit, user, items [S] int64)``."""

    def __init__(self, dataset: OutfitDataset, split: str):
        self.dataset, self.split = dataset, split
        self.outfits = dataset.outfits_of(split)
        self.users = dataset.outfit_user[self.outfits].astype(np.int64)
        self.items = dataset.outfit_items[self.outfits].astype(np.int64)

    def __len__(self) -> int:
        return int(self.outfits.shape[0])

    def __getitem__(self, k: int) -> dict:
        return {"outfit": int(self.outfits[k]), "user": int(self.users[k]), "items": self.items[k]}


def pad_outfits(outfits: Sequence[Sequence[int]], n_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-align item-id lists into ``items`` LongTensor [B, n_slots] (``-1`` padding) and
    ``mask`` BoolTensor [B, n_slots] (True = real item; a ``-1`` inside a list is padding too)."""
    if n_slots < 1:
        raise ValueError(f"n_slots must be >= 1, got {n_slots}")
    items = np.full((len(outfits), n_slots), -1, dtype=np.int64)
    for b, outfit in enumerate(outfits):
        row = np.asarray(outfit, dtype=np.int64).ravel()
        if row.size > n_slots:
            raise ValueError(f"outfit {b} has {row.size} items but only {n_slots} slots; "
                             f"raise n_slots to at least {row.size}")
        items[b, :row.size] = row
    items_t = torch.from_numpy(items)
    return items_t, items_t >= 0


def collate_outfits(rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack :class:`PositivePairs` rows into the model batch contract.

    Returns items LongTensor [B, S] (-1 = padding), mask BoolTensor [B, S] (True = real item),
    users LongTensor [B], outfits LongTensor [B]. Rows of equal length keep their slot positions.
    """
    if not rows:
        raise ValueError("cannot collate an empty batch")
    n_slots = max(len(r["items"]) for r in rows)
    items, mask = pad_outfits([r["items"] for r in rows], n_slots)
    return {
        "items": items,
        "mask": mask,
        "users": torch.tensor([r["user"] for r in rows], dtype=torch.long),
        "outfits": torch.tensor([r["outfit"] for r in rows], dtype=torch.long),
    }


def make_loader(dataset: OutfitDataset, split: str, batch_size: int, shuffle: bool, seed: int,
                drop_last: bool = False, num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """A DataLoader over ``split``'s positive pairs; shuffling comes from a generator seeded with
    ``seed``, so the batch order is reproducible (and differs epoch to epoch).

    ``num_replicas`` > 1 (torchrun): process ``rank``'s share of the batches one process would load
    with ``seed`` — ``batch_size`` is the global batch, this loader yields ``batch_size /
    num_replicas`` pairs per step (:class:`GlobalBatchSampler`; the last incomplete batch is
    dropped). Call ``loader.sampler.set_epoch(epoch)`` for the order of ``seed + epoch``.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    pairs = PositivePairs(dataset, split)
    if len(pairs) == 0:
        raise DatasetError(f"split {split!r} of {dataset.name!r} has no positive outfits to load")
    if num_replicas > 1:
        sampler = GlobalBatchSampler(pairs, int(batch_size), num_replicas, rank, seed=seed, shuffle=shuffle)
        return DataLoader(pairs, batch_size=int(batch_size) // num_replicas, sampler=sampler, drop_last=True,
                          collate_fn=collate_outfits, num_workers=0)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(pairs, batch_size=int(batch_size), shuffle=shuffle, drop_last=drop_last,
                      collate_fn=collate_outfits, generator=generator, num_workers=0)


def shuffled_order(n: int, seed: int) -> torch.Tensor:
    """The order in which ``make_loader(..., shuffle=True, seed=seed)`` visits ``n`` rows: the same
    DataLoader machinery (its iterator draws a base seed from the generator before the shuffle),
    so a process sharding the batches sees exactly the single-process batches."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return next(iter(DataLoader(range(n), batch_size=max(n, 1), shuffle=True, generator=generator)))


class GlobalBatchSampler(DistributedSampler):
    """A seeded ``DistributedSampler`` (``set_epoch`` as usual) whose processes split the batches
    of the single-process loader: with ``global_batch`` B over W processes, process r's k-th batch
    of B / W pairs is rows ``r, r + W, r + 2W, …`` of the k-th batch one process would load with
    ``seed + epoch`` (:func:`shuffled_order`). The ``len // B`` full batches are kept, as one
    process with ``drop_last`` keeps them.
    """

    def __init__(self, pairs: Dataset, global_batch: int, num_replicas: int, rank: int, seed: int = 0,
                 shuffle: bool = True):
        if global_batch % num_replicas:
            raise ValueError(f"batch_size={global_batch} cannot be split over {num_replicas} processes: "
                             f"batch_size is the global batch (each process takes batch_size / "
                             f"{num_replicas} pairs per step); use a multiple of {num_replicas}")
        super().__init__(pairs, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=int(seed),
                         drop_last=True)
        self.total_size = len(pairs) // global_batch * global_batch
        if self.total_size == 0:
            raise DatasetError(f"{len(pairs)} positive pairs make no full batch of {global_batch}; "
                               f"lower batch_size")
        self.num_samples = self.total_size // num_replicas

    def __iter__(self):
        n = len(self.dataset)
        order = shuffled_order(n, self.seed + self.epoch) if self.shuffle else torch.arange(n)
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())
