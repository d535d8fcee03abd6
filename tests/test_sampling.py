"""Negatives, evaluation candidates, split invariants and the torch views, on hand-built datasets."""

import numpy as np
import pytest
import torch

from fndkit.data.datasets import PositivePairs, collate_outfits, make_loader, pad_outfits
from fndkit.data.sampling import (NegativeSampler, attach_candidates, build_candidates,
                                  category_pools, check_split_invariants, hard_negatives,
                                  positive_hashes, random_mixtures)
from fndkit.data.schema import (FIXED_LAYOUT, SPLITS, VARIABLE_LAYOUT, ArrayImages, CandidateSet,
                                DatasetError, OutfitDataset, outfit_hashes, split_sizes)

LAYOUTS = {"fixed": FIXED_LAYOUT, "variable": VARIABLE_LAYOUT}


def make_dataset(layout="fixed", n_users=6, outfits_per_user=13, items_per_category=24,
                 n_cold_users=2, seed=0) -> OutfitDataset:
    """A tiny canonical dataset split per user with split_sizes; each user's test outfits draw
    from items their other outfits never use, so the paper's split invariant holds."""
    rng = np.random.default_rng(seed)
    slot_categories = np.array(LAYOUTS[layout], dtype=np.int8)
    item_category = np.repeat(np.arange(3), items_per_category).astype(np.int8)
    by_category = [np.flatnonzero(item_category == c) for c in range(3)]
    rows, owners, splits = [], [], []
    n_all = n_users + n_cold_users
    for u in range(n_all):
        sizes = split_sizes(outfits_per_user) if u < n_users else {"cold": outfits_per_user}
        halves = [rng.permutation(ids) for ids in by_category]   # test half | rest half
        for split, n in sizes.items():
            for _ in range(n):
                row = np.full(len(slot_categories), -1, dtype=np.int64)
                for s, c in enumerate(slot_categories):
                    if layout == "variable" and s == 1 and rng.random() < 0.5:
                        continue                                  # a one-top outfit
                    half = halves[c][:items_per_category // 2] if split == "test" \
                        else halves[c][items_per_category // 2:]
                    choice = rng.choice(half)
                    while choice in row:
                        choice = rng.choice(half)
                    row[s] = choice
                rows.append(row), owners.append(u), splits.append(SPLITS.index(split))
    images = rng.integers(0, 256, size=(item_category.size, 8, 8, 3), dtype=np.uint8)
    ds = OutfitDataset(
        name=f"hand-{layout}", item_category=item_category, outfit_items=np.stack(rows),
        outfit_user=np.array(owners, dtype=np.int64), outfit_split=np.array(splits, dtype=np.int8),
        slot_categories=slot_categories,
        user_pool=np.array([0] * n_users + [1] * n_cold_users, dtype=np.int8),
        images=ArrayImages(images), meta={"source": "synthetic"})
    return ds.validate()


@pytest.fixture(scope="module", params=["fixed", "variable"])
def ds(request):
    return make_dataset(request.param)


def outfits_with_items(ds, rows, split):
    """For each row, the ids of ``split``'s positives with exactly that item set."""
    split_ids = ds.outfits_of(split)
    hashes = outfit_hashes(ds.outfit_items[split_ids])
    return [split_ids[hashes == h] for h in outfit_hashes(rows)]


# --------------------------------------------------------------------------------------------
# pools and random mixtures


def test_category_pools_match_a_loop(ds):
    for split in ("train", "test"):
        pools = category_pools(ds, split)
        for c in range(3):
            ref = sorted({int(i) for o in ds.outfits_of(split) for i in ds.outfit_items[o]
                          if i >= 0 and ds.item_category[i] == c})
            assert pools[c].tolist() == ref


def test_random_mixtures_keep_layout_pools_and_avoid_positives(ds):
    rng = np.random.default_rng(0)
    template = ds.outfit_items[ds.outfits_of("test")].repeat(20, axis=0)
    mix = random_mixtures(ds, template, "test", rng)
    assert mix.shape == template.shape and mix.dtype == np.int64
    assert ((mix < 0) == (template < 0)).all()
    present = mix >= 0
    cats = ds.item_category[np.where(present, mix, 0)]
    assert (cats == ds.slot_categories)[present].all()
    pool = np.concatenate(category_pools(ds, "test"))
    assert np.isin(mix[present], pool).all()
    assert not np.isin(outfit_hashes(mix), positive_hashes(ds)).any()
    s = np.sort(mix, axis=1)
    assert not ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any()   # no item twice in a mixture


def test_random_mixtures_determinism_per_seed(ds):
    template = ds.outfit_items[:50]
    a = random_mixtures(ds, template, "train", np.random.default_rng(3))
    b = random_mixtures(ds, template, "train", np.random.default_rng(3))
    c = random_mixtures(ds, template, "train", np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def tiny_pool_dataset():
    """2 tops x 2 bottoms x 2 shoes, all 8 combinations posted: no mixture is a non-positive."""
    combos = np.array([[t, 2 + b, 4 + s] for t in (0, 1) for b in (0, 1) for s in (0, 1)])
    return OutfitDataset(
        name="tiny-pools", item_category=np.array([0, 0, 1, 1, 2, 2], dtype=np.int8),
        outfit_items=combos, outfit_user=np.zeros(8, dtype=np.int64),
        outfit_split=np.full(8, SPLITS.index("test"), dtype=np.int8),
        slot_categories=np.array(FIXED_LAYOUT, dtype=np.int8), user_pool=np.zeros(1, np.int8),
        images=ArrayImages(np.zeros((6, 8, 8, 3), np.uint8))).validate()


def test_rejection_redraws_until_the_only_free_combination():
    ds = tiny_pool_dataset()
    free = ds.outfit_items[5]
    reject = set(outfit_hashes(np.delete(ds.outfit_items, 5, axis=0)).tolist())
    mix = random_mixtures(ds, np.zeros((40, 3), np.int64), "test", np.random.default_rng(0),
                          reject=reject)
    assert (mix == free).all()          # 1 in 8 per draw: many rows needed redrawing
    with pytest.raises(DatasetError, match="could not draw"):
        random_mixtures(ds, np.zeros((4, 3), np.int64), "test", np.random.default_rng(0))


def test_random_mixtures_bad_input(ds):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="shape"):
        random_mixtures(ds, np.zeros((2, ds.n_slots + 1), np.int64), "train", rng)
    with pytest.raises(ValueError, match="no item"):
        random_mixtures(ds, np.full((2, ds.n_slots), -1), "train", rng)
    with pytest.raises(DatasetError, match="unknown split"):
        random_mixtures(ds, ds.outfit_items[:2], "training", rng)


# --------------------------------------------------------------------------------------------
# hard negatives


def test_hard_negatives_are_other_users_positives(ds):
    users = np.repeat(ds.trained_users, 30)
    items, outfits = hard_negatives(ds, users, "train", np.random.default_rng(0),
                                    return_outfits=True)
    assert (ds.outfit_user[outfits] != users).all()
    assert (ds.outfit_split[outfits] == SPLITS.index("train")).all()
    assert np.array_equal(items, ds.outfit_items[outfits])
    for u, same in zip(users, outfits_with_items(ds, items, "train")):
        assert same.size and (ds.outfit_user[same] != u).all()   # not also posted by u
    assert len(np.unique(ds.outfit_user[outfits])) == ds.trained_users.size  # every user's used


def test_hard_negatives_need_another_user():
    ds = tiny_pool_dataset()
    with pytest.raises(DatasetError, match="other than 0"):
        hard_negatives(ds, [0], "test", np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# evaluation candidates


@pytest.mark.parametrize("ratio", [1, 10])
def test_build_candidates_layout(ds, ratio):
    cands = build_candidates(ds, seed=0, ratio=ratio)
    assert sorted(cands) == sorted(f"{s}/{p}" for s in ("val_teacher", "val_student", "test")
                                   for p in ("random", "hard"))
    reject = positive_hashes(ds)
    for key, c in cands.items():
        split, protocol = key.split("/")
        positives = ds.outfits_of(split)
        P, block = positives.size, ratio + 1
        assert len(c) == P * block and c.items.shape == (P * block, ds.n_slots)
        label = c.label.reshape(P, block)
        assert (label[:, 0] == 1).all() and (label[:, 1:] == 0).all()
        assert (c.user.reshape(P, block) == ds.outfit_user[positives][:, None]).all()
        items = c.items.reshape(P, block, ds.n_slots)
        assert np.array_equal(items[:, 0], ds.outfit_items[positives])
        negatives = items[:, 1:].reshape(-1, ds.n_slots)
        neg_users = np.repeat(ds.outfit_user[positives], ratio)
        if protocol == "random":
            assert ((items[:, 1:] < 0) == (items[:, :1] < 0)).all()
            assert not np.isin(outfit_hashes(negatives), reject).any()
            assert np.isin(negatives[negatives >= 0], np.concatenate(category_pools(ds, split))).all()
        else:
            for u, same in zip(neg_users, outfits_with_items(ds, negatives, split)):
                assert same.size and (ds.outfit_user[same] != u).all()
    ds.candidates = dict(cands)
    ds.validate()


def test_build_candidates_deterministic_per_seed(ds):
    a = build_candidates(ds, seed=5, ratio=3)
    b = build_candidates(ds, seed=5, ratio=3, splits=("test",), protocols=("hard",))
    c = build_candidates(ds, seed=6, ratio=3)
    assert np.array_equal(a["test/hard"].items, b["test/hard"].items)   # streams independent
    for key in a:
        assert not np.array_equal(a[key].items, c[key].items)
    with pytest.raises(ValueError, match="ratio"):
        build_candidates(ds, ratio=0)


def test_attach_candidates_keeps_released_lists():
    ds = make_dataset("fixed", n_users=4)
    released = CandidateSet(np.zeros(2, np.int64), ds.outfit_items[:2].copy(), np.array([1, 0], np.int8))
    ds.candidates["test/random"] = released
    attach_candidates(ds, seed=0, ratio=2)
    assert ds.candidates["test/random"] is released
    assert {"test/hard", "val_teacher/random", "val_student/hard"} <= set(ds.candidates)
    fresh = build_candidates(ds, seed=0, ratio=2)
    assert np.array_equal(ds.candidates["test/hard"].items, fresh["test/hard"].items)


# --------------------------------------------------------------------------------------------
# training sampler


def batch_of(ds, n=8, offset=0):
    train = ds.outfits_of("train")[offset:offset + n]
    return ds.outfit_items[train], ds.outfit_user[train]


def test_sampler_reproducible_and_redrawn(ds):
    sampler = NegativeSampler(ds, n_negatives=16, hard_fraction=0.5, seed=1)
    items, users = batch_of(ds)
    a = sampler.sample(items, users, epoch=0, step=0)
    assert a.shape == (16, ds.n_slots)
    assert np.array_equal(a, sampler.sample(items, users, epoch=0, step=0))
    assert np.array_equal(a, NegativeSampler(ds, n_negatives=16, hard_fraction=0.5, seed=1)
                          .sample(torch.from_numpy(items), torch.from_numpy(users), 0, 0))
    assert not np.array_equal(a, sampler.sample(items, users, epoch=0, step=1))
    assert not np.array_equal(a, sampler.sample(items, users, epoch=1, step=0))
    other_seed = NegativeSampler(ds, n_negatives=16, hard_fraction=0.5, seed=2)
    assert not np.array_equal(a, other_seed.sample(items, users, 0, 0))


def test_sampler_mix_of_hard_and_random(ds):
    sampler = NegativeSampler(ds, n_negatives=10, hard_fraction=0.3, seed=0)
    items, users = batch_of(ds, n=4)
    for step in range(5):
        neg, owners = sampler.sample(items, users, 0, step, return_owners=True)
        hard, rand = neg[:3], neg[3:]
        assert (owners[3:] == -1).all() and not np.isin(owners[:3], users).any()
        for owner, same in zip(owners[:3], outfits_with_items(ds, hard, "train")):
            assert owner in ds.outfit_user[same]
        batch_layouts = {tuple(r) for r in (items >= 0)}
        assert all(tuple(r) in batch_layouts for r in (rand >= 0))
        # no mixture is a training positive of a batch user (held-out positives may appear)
        own = {(int(u), h) for u, h in zip(ds.outfit_user[ds.outfits_of("train")],
                                           outfit_hashes(ds.outfit_items[ds.outfits_of("train")]))}
        assert not {(int(u), h) for u in users for h in outfit_hashes(rand)} & own
        assert np.isin(rand[rand >= 0], np.concatenate(category_pools(ds, "train"))).all()


def test_sampler_falls_back_when_every_user_is_in_the_batch():
    ds = make_dataset("fixed", n_users=3)
    train = ds.outfits_of("train")
    items, users = ds.outfit_items[train], ds.outfit_user[train]     # all three users
    sampler = NegativeSampler(ds, n_negatives=12, hard_fraction=1.0, seed=0)
    neg, owners = sampler.sample(items, users, 0, 0, return_owners=True)
    assert (owners >= 0).all() and len(neg) == 12


@pytest.mark.parametrize("kwargs, match", [({"hard_fraction": 1.5}, "hard_fraction"),
                                           ({"hard_fraction": -0.1}, "hard_fraction"),
                                           ({"n_negatives": 0}, "n_negatives"),
                                           ({"seed": -1}, "non-negative")])
def test_sampler_validates(kwargs, match):
    ds = make_dataset("fixed", n_users=3)
    with pytest.raises(ValueError, match=match):
        NegativeSampler(ds, **kwargs)


# --------------------------------------------------------------------------------------------
# split invariants


def test_split_invariants_hold_and_catch_violations(ds):
    check_split_invariants(ds)
    bad = make_dataset("variable" if ds.variable_size else "fixed")
    o_test = bad.outfits_of("test")[0]
    u = bad.outfit_user[o_test]
    o_train = np.flatnonzero((bad.outfit_user == u) & bad.split_mask("train"))[0]
    bad.outfit_items[o_train, -1] = bad.outfit_items[o_test, -1]      # plant a shared shoe
    with pytest.raises(DatasetError, match=f"user {u}'s test outfit {o_test}"):
        check_split_invariants(bad)


def test_split_sizes_checked_only_for_synthetic():
    ds = make_dataset("fixed", n_users=3)
    ds.outfit_split[ds.outfits_of("val_student")[0]] = SPLITS.index("val_teacher")
    with pytest.raises(DatasetError, match="split counts"):
        check_split_invariants(ds)
    ds.meta["source"] = "polyvore"
    check_split_invariants(ds)


# --------------------------------------------------------------------------------------------
# torch views


def test_positive_pairs_and_collate(ds):
    pairs = PositivePairs(ds, "train")
    assert len(pairs) == ds.outfits_of("train").size
    row = pairs[3]
    o = ds.outfits_of("train")[3]
    assert row["outfit"] == o and row["user"] == ds.outfit_user[o]
    assert row["items"].dtype == np.int64 and np.array_equal(row["items"], ds.outfit_items[o])
    batch = collate_outfits([pairs[k] for k in range(5)])
    assert batch["items"].dtype == torch.long and batch["mask"].dtype == torch.bool
    assert torch.equal(batch["items"], torch.from_numpy(ds.outfit_items[ds.outfits_of("train")[:5]]))
    assert torch.equal(batch["mask"], batch["items"] >= 0)
    assert batch["users"].tolist() == [pairs[k]["user"] for k in range(5)]


def test_pad_outfits():
    items, mask = pad_outfits([[4, 9], [1, 2, 3], [7]], n_slots=4)
    assert items.tolist() == [[4, 9, -1, -1], [1, 2, 3, -1], [7, -1, -1, -1]]
    assert mask.tolist() == [[True, True, False, False], [True, True, True, False],
                             [True, False, False, False]]
    with pytest.raises(ValueError, match="n_slots"):
        pad_outfits([[1, 2, 3]], n_slots=2)


def test_loader_seeded_and_complete(ds):
    def order(seed):
        return torch.cat([b["outfits"] for b in make_loader(ds, "train", 7, True, seed)]).tolist()

    a = order(0)
    assert sorted(a) == ds.outfits_of("train").tolist()
    assert a == order(0) and a != order(1)
    loader = make_loader(ds, "train", 7, False, 0, drop_last=True)
    assert all(b["items"].shape == (7, ds.n_slots) for b in loader)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, "train", 0, True, 0)
