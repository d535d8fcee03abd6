"""Outfit augmentations for contrastive learning: identity, erase and replace (paper §3.3, Fig. 2).

Each augmentation alters at most one item of every outfit in a padded batch:

* ``erase`` removes one random real item (paper §3.3.1);
* ``replace`` swaps one random real item for one of its latent neighbours of the same category,
  looked up in the table built by :func:`fndkit.models.autoencoder.neighbour_table` (§3.3.2);
* ``identity`` leaves the outfit as it is (the extra baseline of §4.6 / Fig. 5).

Batches are item-id arrays ``[B, S]`` with ``-1`` for a padded / absent slot (``mask = items >= 0``),
given either as a NumPy int array or as a torch ``LongTensor``; every function returns the same type
it was given (a tensor comes back on its own device). The work itself is done in NumPy because the
random draws come from a caller-seeded ``numpy.random.Generator``; a batch is a few hundred ids, so
the round trip costs nothing next to the image encoder.

Every augmentation returns ``(new_items, altered_pos, n_untouched)``: ``altered_pos[b]`` is the slot
that was changed in outfit ``b`` (``-1`` when none was) and ``n_untouched`` counts the outfits an
augmentation was asked to alter but could not (``erase`` on a one-item outfit, ``replace`` where no
item has a usable neighbour, or where the only candidate is the ``avoid`` slot).

Each draw consumes the same amount of randomness whatever the batch holds, so one seed gives one
sequence of views.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

AUGMENTATIONS = ("identity", "erase", "replace")


# --------------------------------------------------------------------------------------------
# Helpers


def _to_numpy(items: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Return ``items`` as an int64 array and a function converting results back to its type."""
    try:
        import torch
    except ImportError:  # data-only use without torch
        torch = None
    if torch is not None and isinstance(items, torch.Tensor):
        if items.dtype.is_floating_point or items.dtype == torch.bool:
            raise ValueError(f"items must be an integer tensor of item ids, got {items.dtype}")
        device = items.device
        array = items.detach().cpu().numpy().astype(np.int64)
        return array, lambda a: torch.as_tensor(a, dtype=torch.long, device=device)
    array = np.asarray(items)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"items must be an integer array of item ids, got dtype {array.dtype}")
    return array.astype(np.int64), lambda a: a


def _check_batch(items: np.ndarray) -> None:
    if items.ndim != 2:
        raise ValueError(f"items must be a padded batch [B, S], got shape {items.shape}")
    if items.size and items.min() < -1:
        raise ValueError(f"items hold ids below -1 ({int(items.min())}); -1 is the only padding value")


def _avoid_mask(avoid: Any, shape: tuple[int, int]) -> np.ndarray:
    """Bool [B, S]: True where a slot must not be chosen (``avoid[b]`` = slot, -1 = none)."""
    B, S = shape
    blocked = np.zeros(shape, dtype=bool)
    if avoid is None:
        return blocked
    avoid = _to_numpy(avoid)[0].reshape(-1)
    if avoid.shape != (B,):
        raise ValueError(f"avoid must hold one slot per outfit, shape ({B},), got {avoid.shape}")
    if (avoid >= S).any():
        raise ValueError(f"avoid holds slot {int(avoid.max())}, but outfits have only {S} slots")
    rows = np.flatnonzero(avoid >= 0)
    blocked[rows, avoid[rows]] = True
    return blocked


def _pick(allowed: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One uniformly chosen True column per row of ``allowed`` [B, n], -1 for an all-False row.

    ``u`` [B] are uniform draws in [0, 1); the r-th allowed column (r = floor(u * count)) is taken,
    so every row costs exactly one draw whatever it holds.
    """
    count = allowed.sum(1)
    rank = np.minimum((u * count).astype(np.int64), np.maximum(count - 1, 0))
    # the column where the running count of allowed entries first exceeds rank
    chosen = (np.cumsum(allowed, 1) > rank[:, None]) & allowed
    return np.where(count > 0, chosen.argmax(1), -1)


# --------------------------------------------------------------------------------------------
# The augmentations


def identity(items: Any, rng: np.random.Generator, avoid: Any = None) -> tuple[Any, Any, int]:
    """Return a copy of ``items`` [B, S] unchanged; ``altered_pos`` is all -1, ``n_untouched`` 0.

    ``rng`` and ``avoid`` are accepted (and ignored) so every augmentation has one signature.
    """
    array, back = _to_numpy(items)
    _check_batch(array)
    return back(array.copy()), back(np.full(array.shape[0], -1, dtype=np.int64)), 0


def erase(items: Any, rng: np.random.Generator, avoid: Any = None) -> tuple[Any, Any, int]:
    """Remove one random real item from every outfit (paper §3.3.1).

    items: [B, S] item ids, -1 = padding. avoid: optional [B] slot per outfit that must not be
    erased (-1 = no constraint); :func:`make_views` passes the first view's altered slot so two
    erase views differ. Returns ``(new_items [B, S], altered_pos [B], n_untouched)``.

    An outfit with a single real item is left as it is (erasing would leave nothing to score) and
    counted in ``n_untouched``, as is an outfit whose only erasable item is the ``avoid`` slot.
    Padding slots are never chosen, so they stay -1.
    """
    array, back = _to_numpy(items)
    _check_batch(array)
    real = array >= 0
    allowed = real & ~_avoid_mask(avoid, array.shape)
    allowed &= (real.sum(1) >= 2)[:, None]
    pos = _pick(allowed, rng.random(array.shape[0]))
    rows = np.flatnonzero(pos >= 0)
    out = array.copy()
    out[rows, pos[rows]] = -1
    return back(out), back(pos), int((pos < 0).sum())


def replace(items: Any, neighbours: np.ndarray, rng: np.random.Generator,
            avoid: Any = None) -> tuple[Any, Any, int]:
    """Swap one random real item of every outfit for one of its latent neighbours (paper §3.3.2).

    items: [B, S] item ids, -1 = padding. neighbours: int [I, k] from
    :func:`fndkit.models.autoencoder.neighbour_table`, each row the item's nearest items of the
    same category (-1 = no neighbour, never used), so the category of every slot is kept.
    avoid: optional [B] slot per outfit that must not be replaced (-1 = no constraint).
    Returns ``(new_items [B, S], altered_pos [B], n_untouched)``.

    The slot is drawn uniformly among the real items that have a usable neighbour, and the
    neighbour uniformly among that item's usable ones. A neighbour already in the same outfit is
    not usable (in a variable-size outfit with two tops it would duplicate an item). An outfit with
    no replaceable item is left as it is and counted in ``n_untouched``.
    """
    array, back = _to_numpy(items)
    _check_batch(array)
    neighbours = np.asarray(neighbours)
    if neighbours.ndim != 2 or not np.issubdtype(neighbours.dtype, np.integer):
        raise ValueError(f"neighbours must be an int table [n_items, k], got {neighbours.dtype} "
                         f"{neighbours.shape}; build it with fndkit.models.autoencoder.neighbour_table")
    if array.size and array.max() >= neighbours.shape[0]:
        raise ValueError(f"items hold id {int(array.max())} but the neighbour table covers only "
                         f"{neighbours.shape[0]} items; was it built for another dataset?")
    B, S = array.shape
    real = array >= 0
    candidates = neighbours[np.where(real, array, 0)]                     # [B, S, k]
    in_outfit = (candidates[..., None] == array[:, None, None, :]).any(-1)  # [B, S, k]
    usable = (candidates >= 0) & ~in_outfit & real[..., None]
    allowed = usable.any(-1) & ~_avoid_mask(avoid, array.shape)
    # both draws are made for every row, used or not, so the stream does not depend on the batch
    u_slot, u_neighbour = rng.random(B), rng.random(B)
    pos = _pick(allowed, u_slot)
    rows = np.flatnonzero(pos >= 0)
    choice = _pick(usable[rows, pos[rows]], u_neighbour[rows])
    out = array.copy()
    out[rows, pos[rows]] = candidates[rows, pos[rows], choice]
    return back(out), back(pos), int((pos < 0).sum())


# --------------------------------------------------------------------------------------------
# Pairs and views


def parse_pair(pair: str | Sequence[str]) -> tuple[str, str]:
    """Parse an augmentation pair such as ``"erase,replace"`` or ``("erase", "erase")``.

    Names are case- and whitespace-tolerant. Raises ValueError for an unknown name, for anything
    other than two names, and for ``(identity, identity)``: the two views must differ (paper §4.6).
    """
    if isinstance(pair, str):
        names = pair.split(",")
    elif isinstance(pair, (tuple, list)):
        names = list(pair)
    else:
        raise ValueError(f"augmentation pair must be a string like 'erase,replace' or a pair of "
                         f"names, got {type(pair).__name__}")
    names = [str(n).strip().lower() for n in names]
    if len(names) != 2:
        raise ValueError(f"an augmentation pair needs exactly two names, got {pair!r}; "
                         f"e.g. 'erase,replace'")
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"augmentations={pair!r}: unknown augmentation {name!r}; valid ones: "
                             f"{', '.join(AUGMENTATIONS)} (a pair such as 'erase,replace')")
    if names == ["identity", "identity"]:
        raise ValueError("the pair (identity, identity) gives two identical views, and contrastive "
                         "learning needs them to differ (paper §4.6); use erase or replace for at "
                         "least one of them")
    return names[0], names[1]


def _apply(name: str, items: Any, rng: np.random.Generator, neighbours: np.ndarray | None,
           avoid: Any = None) -> tuple[Any, Any, int]:
    if name == "identity":
        return identity(items, rng, avoid)
    if name == "erase":
        return erase(items, rng, avoid)
    return replace(items, neighbours, rng, avoid)


def make_views(items: Any, pair: str | Sequence[str], rng: np.random.Generator,
               neighbours: np.ndarray | None = None) -> tuple[Any, Any, dict]:
    """Two augmented views of every outfit in a batch (paper §3.3, the inputs to eq. 17).

    items: [B, S] item ids, -1 = padding (NumPy or torch; the views come back as the same type).
    pair: e.g. ``"erase,replace"`` (see :func:`parse_pair`). neighbours: [I, k] table, needed when
    the pair holds ``replace``.

    When both augmentations are the same kind, the second must alter a different slot than the
    first so the views differ (§3.3); an outfit too small for that (one item for erase, one
    replaceable item for replace) keeps the second view untouched.

    Returns ``(view1 [B, S], view2 [B, S], stats)`` where ``stats`` holds ``pair``, ``batch``,
    ``untouched_first`` / ``untouched_second`` (outfits each augmentation could not alter) and
    ``identical_views`` (outfits whose two views are equal, so they give no contrast).
    """
    first, second = parse_pair(pair)
    if "replace" in (first, second) and neighbours is None:
        raise ValueError("the 'replace' augmentation needs the latent neighbour table; run "
                         "notebooks/01_autoencoder.ipynb first and pass its neighbour table")
    view1, pos1, untouched1 = _apply(first, items, rng, neighbours)
    avoid = pos1 if first == second else None
    view2, _, untouched2 = _apply(second, items, rng, neighbours, avoid)
    v1, v2 = _to_numpy(view1)[0], _to_numpy(view2)[0]
    stats = {
        "pair": f"{first},{second}",
        "batch": int(v1.shape[0]),
        "untouched_first": untouched1,
        "untouched_second": untouched2,
        "identical_views": int((v1 == v2).all(1).sum()),
    }
    return view1, view2, stats
