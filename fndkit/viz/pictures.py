"""Pictures of outfits: item images laid out as a grid (pure numpy) and shown with plotly."""

from __future__ import annotations

import numpy as np
import plotly.express as px

from ..data.schema import OutfitDataset


def outfit_strip(dataset: OutfitDataset, outfit_items: np.ndarray, pad: int = 2,
                 background: int = 255) -> np.ndarray:
    """One row of item images per outfit: uint8 [n_outfits*(S+pad), n_slots*(S+pad), 3].

    Absent slots (-1) stay blank.
    """
    outfit_items = np.atleast_2d(np.asarray(outfit_items, dtype=np.int64))
    size = dataset.image_size
    cell = size + pad
    rows, slots = outfit_items.shape
    canvas = np.full((rows * cell, slots * cell, 3), background, dtype=np.uint8)
    present = outfit_items >= 0
    if present.any():
        images = dataset.images.get(outfit_items[present])
        for (r, s), img in zip(np.argwhere(present), images):
            canvas[r * cell:r * cell + size, s * cell:s * cell + size] = img
    return canvas


def sample_outfits(dataset: OutfitDataset, users: list[int] | None = None, per_user: int = 4,
                   split: str = "train", seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Pick ``per_user`` positive outfits of each user (default: the first three trained users)."""
    rng = np.random.default_rng(seed)
    if users is None:
        users = [int(u) for u in dataset.trained_users[:3]]
    ids = dataset.outfits_of(split)
    chosen, owners = [], []
    for u in users:
        mine = ids[dataset.outfit_user[ids] == u]
        if mine.size == 0:
            continue
        pick = rng.choice(mine, size=min(per_user, mine.size), replace=False)
        chosen.extend(pick.tolist())
        owners.extend([u] * len(pick))
    return dataset.outfit_items[np.asarray(chosen, dtype=np.int64)], owners


def outfits_figure(dataset: OutfitDataset, users: list[int] | None = None, per_user: int = 4,
                   seed: int = 0, title: str = "Sample positive outfits (one row each)"):
    """A plotly image of sample outfits, labelled by user."""
    items, owners = sample_outfits(dataset, users, per_user, seed=seed)
    canvas = outfit_strip(dataset, items)
    fig = px.imshow(canvas, title=title)
    cell = dataset.image_size + 2
    fig.update_yaxes(tickmode="array", tickvals=[i * cell + cell / 2 for i in range(len(owners))],
                     ticktext=[f"user {u}" for u in owners])
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=max(300, 40 * len(owners)), width=500)
    return fig
