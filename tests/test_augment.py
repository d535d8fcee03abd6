"""Tests for fndkit.augment: erase / replace / identity on padded outfit batches (paper §3.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fndkit import augment
from fndkit.augment import AUGMENTATIONS, erase, identity, make_views, parse_pair, replace

LAYOUT = np.array([0, 0, 1, 2])  # variable-size layout: top, top, bottom, shoe


def _catalogue(n_per_category: int = 12, k: int = 3, seed: int = 0):
    """item_category [I] and a hand-made same-category neighbour table [I, k] with -1 gaps."""
    rng = np.random.default_rng(seed)
    item_category = np.repeat(np.arange(3), n_per_category)
    neighbours = np.full((item_category.size, k), -1, dtype=np.int64)
    for i, c in enumerate(item_category):
        others = np.flatnonzero((item_category == c) & (np.arange(item_category.size) != i))
        n = rng.integers(0, k + 1)  # some items have fewer than k neighbours, some none
        neighbours[i, :n] = rng.choice(others, size=n, replace=False)
    return item_category, neighbours


def _batch(item_category: np.ndarray, n_outfits: int = 200, seed: int = 1) -> np.ndarray:
    """Outfits [B, 4] following LAYOUT, each slot absent with probability 0.4, >= 1 item each."""
    rng = np.random.default_rng(seed)
    items = np.full((n_outfits, LAYOUT.size), -1, dtype=np.int64)
    for b in range(n_outfits):
        present = rng.random(LAYOUT.size) < 0.6
        if not present.any():
            present[rng.integers(LAYOUT.size)] = True
        for s in np.flatnonzero(present):
            pool = np.flatnonzero(item_category == LAYOUT[s])
            pool = pool[~np.isin(pool, items[b])]
            items[b, s] = rng.choice(pool)
    return items


def _changed_slots(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per row the single changed slot (-1 if none); fails if more than one slot changed."""
    diff = before != after
    assert (diff.sum(1) <= 1).all(), "an augmentation changed more than one slot"
    return np.where(diff.any(1), diff.argmax(1), -1)


# --------------------------------------------------------------------------------------------
# erase


def test_erase_removes_exactly_one_real_item_and_never_touches_padding():
    item_category, _ = _catalogue()
    items = _batch(item_category)
    original = items.copy()
    out, pos, n_untouched = erase(items, np.random.default_rng(0))

    np.testing.assert_array_equal(items, original)  # input not modified in place
    size_before, size_after = (items >= 0).sum(1), (out >= 0).sum(1)
    single = size_before == 1
    np.testing.assert_array_equal(size_after, np.where(single, 1, size_before - 1))
    assert np.all(out[items < 0] == -1)  # padding stays padding
    assert np.all((out == items) | (out == -1))  # nothing but -1 is ever written
    np.testing.assert_array_equal(_changed_slots(items, out), pos)
    rows = np.flatnonzero(pos >= 0)
    assert np.all(items[rows, pos[rows]] >= 0)  # the erased slot held a real item
    assert n_untouched == int(single.sum()) > 0


def test_erase_leaves_a_one_item_outfit_as_is_and_counts_it():
    items = np.array([[-1, 5, -1, -1], [1, 2, -1, 30]])
    out, pos, n_untouched = erase(items, np.random.default_rng(3))
    np.testing.assert_array_equal(out[0], items[0])
    assert pos[0] == -1 and pos[1] in (0, 1, 3)
    assert n_untouched == 1


def test_erase_respects_avoid():
    items = np.array([[3, 4, -1, -1]] * 50 + [[3, 4, 17, 30]] * 50)
    avoid = np.array([0] * 50 + [2] * 50)
    out, pos, n_untouched = erase(items, np.random.default_rng(0), avoid=avoid)
    assert n_untouched == 0
    assert np.all(pos[:50] == 1)  # with two items and slot 0 avoided, slot 1 is the only choice
    assert np.all(np.isin(pos[50:], [0, 1, 3]))
    assert np.all(pos != avoid)


def test_erase_picks_each_real_item_uniformly():
    items = np.tile(np.array([[7, -1, 13, 25]]), (6000, 1))
    _, pos, _ = erase(items, np.random.default_rng(0))
    freq = np.bincount(pos, minlength=4) / pos.size
    assert freq[1] == 0
    np.testing.assert_allclose(freq[[0, 2, 3]], 1 / 3, atol=0.03)


# --------------------------------------------------------------------------------------------
# replace


def test_replace_keeps_categories_and_uses_only_listed_neighbours():
    item_category, neighbours = _catalogue()
    items = _batch(item_category)
    out, pos, n_untouched = replace(items, neighbours, np.random.default_rng(0))

    np.testing.assert_array_equal(_changed_slots(items, out), pos)
    rows = np.flatnonzero(pos >= 0)
    old, new = items[rows, pos[rows]], out[rows, pos[rows]]
    assert np.all(old >= 0) and np.all(new >= 0)
    np.testing.assert_array_equal(item_category[new], item_category[old])
    assert all(n in neighbours[o] for o, n in zip(old, new))
    for b in rows:  # the new item was not already in the outfit
        assert np.sum(out[b] == out[b, pos[b]]) == 1
    # a real slot keeps its category everywhere (padding stays padding)
    real = items >= 0
    np.testing.assert_array_equal(out >= 0, real)
    np.testing.assert_array_equal(item_category[out[real]], item_category[items[real]])

    # reference count of outfits with no replaceable item
    def replaceable(row):
        return any(n >= 0 and n not in row for i in row if i >= 0 for n in neighbours[i])

    assert n_untouched == sum(not replaceable(row) for row in items) > 0


def test_replace_counts_items_without_neighbours_as_untouched():
    neighbours = np.array([[-1, -1], [2, -1], [1, -1], [-1, -1]])
    items = np.array([[0, -1], [3, 0], [1, 0]])
    out, pos, n_untouched = replace(items, neighbours, np.random.default_rng(0))
    np.testing.assert_array_equal(out[:2], items[:2])
    np.testing.assert_array_equal(pos, [-1, -1, 0])
    assert out[2, 0] == 2 and n_untouched == 2


def test_replace_draws_neighbours_uniformly_among_listed_ones():
    neighbours = np.array([[1, -1, 2], [0, 2, -1], [0, 1, -1]])
    items = np.tile(np.array([[0, -1]]), (6000, 1))
    out, _, n_untouched = replace(items, neighbours, np.random.default_rng(0))
    assert n_untouched == 0
    freq = np.bincount(out[:, 0], minlength=3) / len(out)
    assert freq[0] == 0
    np.testing.assert_allclose(freq[1:], 0.5, atol=0.03)


def test_replace_rejects_a_table_for_fewer_items():
    with pytest.raises(ValueError, match="neighbour table covers only 2"):
        replace(np.array([[0, 5]]), np.zeros((2, 3), dtype=np.int64), np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# identity, pairs, views


def test_identity_returns_the_input_unchanged():
    items = np.array([[1, -1, 4], [2, 3, -1]])
    out, pos, n_untouched = identity(items, np.random.default_rng(0))
    np.testing.assert_array_equal(out, items)
    assert out is not items and np.all(pos == -1) and n_untouched == 0
    t_out, t_pos, _ = identity(torch.as_tensor(items), np.random.default_rng(0))
    assert isinstance(t_out, torch.Tensor) and torch.equal(t_out, torch.as_tensor(items))


@pytest.mark.parametrize("text, expected", [
    ("erase,replace", ("erase", "replace")),
    ("  Erase , erase ", ("erase", "erase")),
    (("identity", "replace"), ("identity", "replace")),
    (["replace", " identity"], ("replace", "identity")),
])
def test_parse_pair_accepts(text, expected):
    assert parse_pair(text) == expected


def test_parse_pair_errors():
    with pytest.raises(ValueError, match="unknown augmentation 'crop'.*identity, erase, replace"):
        parse_pair("erase,crop")
    with pytest.raises(ValueError, match="differ"):
        parse_pair("identity, identity")
    with pytest.raises(ValueError, match="exactly two"):
        parse_pair("erase")
    with pytest.raises(ValueError, match="exactly two"):
        parse_pair(("erase", "erase", "replace"))
    assert set(AUGMENTATIONS) == {"identity", "erase", "replace"}


def test_make_views_needs_the_neighbour_table_for_replace():
    with pytest.raises(ValueError, match="01_autoencoder"):
        make_views(np.array([[0, 1]]), "erase,replace", np.random.default_rng(0))


@pytest.mark.parametrize("pair", ["erase,erase", "replace,replace"])
def test_same_kind_views_alter_different_slots(pair):
    item_category, neighbours = _catalogue()
    items = _batch(item_category, n_outfits=300)
    view1, view2, stats = make_views(items, pair, np.random.default_rng(0), neighbours)
    pos1, pos2 = _changed_slots(items, view1), _changed_slots(items, view2)
    both = (pos1 >= 0) & (pos2 >= 0)
    assert both.sum() > 100
    assert np.all(pos1[both] != pos2[both])
    np.testing.assert_array_equal((view1 == view2).all(1).sum(), stats["identical_views"])
    assert stats["untouched_first"] == int((pos1 < 0).sum())
    assert stats["untouched_second"] == int((pos2 < 0).sum())
    if pair == "erase,erase":
        size = (items >= 0).sum(1)
        # a one-item outfit is untouched twice; a two-item outfit loses a different item per view
        assert stats["untouched_first"] == stats["untouched_second"] == int((size == 1).sum())
        assert stats["identical_views"] == int((size == 1).sum())


def test_mixed_pair_views_apply_each_augmentation():
    item_category, neighbours = _catalogue()
    items = _batch(item_category)
    view1, view2, stats = make_views(items, "erase,replace", np.random.default_rng(0), neighbours)
    assert stats["pair"] == "erase,replace" and stats["batch"] == len(items)
    np.testing.assert_array_equal((view1 >= 0).sum(1),
                                  np.maximum((items >= 0).sum(1) - 1, 1))  # erased
    np.testing.assert_array_equal(view2 >= 0, items >= 0)                   # replaced in place
    assert (view2 != items).any()


@pytest.mark.parametrize("pair", ["erase,replace", "replace,replace", "identity,erase"])
def test_views_are_deterministic_by_seed_and_type_preserving(pair):
    item_category, neighbours = _catalogue()
    items = _batch(item_category)
    a1, a2, sa = make_views(items, pair, np.random.default_rng(5), neighbours)
    b1, b2, sb = make_views(items, pair, np.random.default_rng(5), neighbours)
    c1, c2, _ = make_views(items, pair, np.random.default_rng(6), neighbours)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert sa == sb
    assert not (np.array_equal(a1, c1) and np.array_equal(a2, c2))
    # a torch batch gives the same views, as LongTensors
    t1, t2, st = make_views(torch.as_tensor(items), pair, np.random.default_rng(5), neighbours)
    assert isinstance(t1, torch.Tensor) and t1.dtype == torch.long
    np.testing.assert_array_equal(t1.numpy(), a1)
    np.testing.assert_array_equal(t2.numpy(), a2)
    assert st == sa


def test_bad_batches_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        erase(np.array([1, 2, 3]), rng)
    with pytest.raises(ValueError, match="integer"):
        erase(np.array([[1.0, 2.0]]), rng)
    with pytest.raises(ValueError, match="avoid"):
        augment.erase(np.array([[1, 2]]), rng, avoid=np.array([0, 1]))
