"""Tests for the built-in synthetic benchmark (fndkit.data.synthetic), tiny scale only."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from fndkit.data.schema import (CATEGORIES, FIXED_LAYOUT, VARIABLE_LAYOUT, DatasetError,
                                OutfitDataset, outfit_hashes, split_index)
from fndkit.data.synthetic import (BACKGROUND, PALETTE, PATTERNS, SCALES, SHAPES, SyntheticTruth,
                                   false_negative_fraction, make_dataset, render_items,
                                   silhouette_masks, true_affinity)
from fndkit.data.schema import _whole_npy_file
from fndkit.data.synthetic import NpyWriter

HELD_OUT = ("val_teacher", "val_student", "test")


@pytest.fixture(scope="module")
def tiny() -> OutfitDataset:
    return make_dataset("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_var() -> OutfitDataset:
    return make_dataset("tiny", seed=0, variable_size=True)


def _tables(ds: OutfitDataset) -> dict[str, np.ndarray]:
    out = {"item_category": ds.item_category, "outfit_items": ds.outfit_items,
           "outfit_user": ds.outfit_user, "outfit_split": ds.outfit_split,
           "slot_categories": ds.slot_categories, "user_pool": ds.user_pool,
           "style": ds.truth.item_style, "anchors": ds.truth.user_anchors,
           "anchor_mask": ds.truth.anchor_mask}
    out.update({f"attr_{k}": v for k, v in ds.item_attributes.items()})
    return out


# ---- shape of the dataset -------------------------------------------------------------------


@pytest.mark.parametrize("variable", [False, True])
def test_tiny_validates_with_scale_sizes(variable):
    ds = make_dataset("tiny", seed=0, variable_size=variable).validate()
    sizes = SCALES["tiny"]
    assert ds.name == "synthetic-tiny" + ("-var" if variable else "")
    assert len(ds.trained_users) == sizes["n_users"] and len(ds.cold_users) == sizes["n_cold_users"]
    assert ds.n_items == sizes["n_items"] + sizes["n_cold_items"]
    assert (~ds.split_mask("cold")).sum() == sizes["n_outfits"]
    assert ds.split_mask("cold").sum() == sizes["n_cold_outfits"]
    assert ds.candidates == {}
    assert ds.images.get(np.arange(3)).shape == (3, 32, 32, 3)
    assert ds.meta["source"] == "synthetic" and ds.meta["scale"] == "tiny"
    assert ds.meta["variable_size"] is variable and ds.meta["generator"]["n_users"] == 6
    assert set(ds.item_attributes) == {"colour", "pattern", "shape"}
    assert ds.item_attributes["pattern"].max() < len(PATTERNS)
    assert ds.item_attributes["shape"].max() < min(len(v) for v in SHAPES.values())


def test_split_sizes_per_user_follow_schema(tiny):
    from fndkit.data.schema import split_sizes

    for u in tiny.trained_users:
        mine = tiny.outfit_split[tiny.outfit_user == u]
        expected = split_sizes(mine.size)
        for split, n in expected.items():
            assert (mine == split_index(split)).sum() == n


def test_slot_categories_consistent(tiny, tiny_var):
    assert tuple(tiny.slot_categories) == FIXED_LAYOUT
    assert tuple(tiny_var.slot_categories) == VARIABLE_LAYOUT
    assert (tiny.outfit_items >= 0).all()
    for ds in (tiny, tiny_var):
        for s, c in enumerate(ds.slot_categories):
            col = ds.outfit_items[:, s]
            assert (ds.item_category[col[col >= 0]] == c).all()


def test_variable_size_has_optional_second_top(tiny_var):
    items = tiny_var.outfit_items
    absent = items < 0
    assert not absent[:, [0, 2, 3]].any(), "only the second top may be absent"
    share = (~absent[:, 1]).mean()
    assert 0.15 < share < 0.7, share
    two = items[~absent[:, 1]]
    assert (two[:, 0] != two[:, 1]).all(), "a two-top outfit holds two different tops"


def test_positive_outfits_unique_per_user(tiny, tiny_var):
    for ds in (tiny, tiny_var):
        h = outfit_hashes(ds.outfit_items)
        for u in range(ds.n_users):
            mine = h[ds.outfit_user == u]
            assert np.unique(mine).size == mine.size


def test_heldout_items_never_in_users_train_outfits(tiny, tiny_var):
    for ds in (tiny, tiny_var):
        for u in ds.trained_users:
            mine = ds.outfit_user == u
            train = ds.outfit_items[mine & ds.split_mask("train")]
            for split in HELD_OUT:
                held = ds.outfit_items[mine & ds.split_mask(split)]
                assert held.shape[0] >= 1
                shared = set(train[train >= 0].tolist()) & set(held[held >= 0].tolist())
                assert not shared, (u, split, shared)


def test_cold_users_are_a_separate_pool(tiny):
    n_trained = SCALES["tiny"]["n_users"]
    assert (tiny.trained_users == np.arange(n_trained)).all()
    assert (tiny.cold_users == np.arange(n_trained, tiny.n_users)).all()
    cold_outfit = np.isin(tiny.outfit_user, tiny.cold_users)
    assert (tiny.outfit_split[cold_outfit] == split_index("cold")).all()
    assert (tiny.outfit_split[~cold_outfit] != split_index("cold")).all()
    cold_items = set(tiny.outfit_items[cold_outfit].ravel().tolist())
    trained_items = set(tiny.outfit_items[~cold_outfit].ravel().tolist())
    assert not cold_items & trained_items
    assert min(cold_items) >= SCALES["tiny"]["n_items"]


# ---- determinism ----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tiny):
    again = make_dataset("tiny", seed=0)
    for name, arr in _tables(tiny).items():
        np.testing.assert_array_equal(arr, _tables(again)[name], err_msg=name)
    assert tiny.images.array.tobytes() == again.images.array.tobytes()
    assert tiny.truth.false_negative_threshold == again.truth.false_negative_threshold
    other = make_dataset("tiny", seed=1)
    assert not np.array_equal(other.outfit_items, tiny.outfit_items)
    assert other.images.array.tobytes() != tiny.images.array.tobytes()


def test_images_on_disk_equal_in_memory(tiny, tmp_path):
    on_disk = make_dataset("tiny", seed=0, cache_dir=tmp_path, images_on_disk=True)
    assert isinstance(on_disk.images.array, np.memmap)
    assert list(tmp_path.glob("*.npy"))
    assert on_disk.images.array.tobytes() == tiny.images.array.tobytes()


# ---- images show the attributes -------------------------------------------------------------


def test_render_colour_changes_only_the_silhouette():
    cat, shape, pattern = np.array([0, 0]), np.array([1, 1]), np.array([0, 0])
    rgb = np.array([PALETTE[0], PALETTE[4]])  # red, blue; solid pattern
    img = render_items(cat, shape, pattern, rgb, image_size=32).astype(float)
    mask = silhouette_masks(32)[0, 1]
    inside = img[:, mask].mean(1)                     # [2, 3]
    np.testing.assert_allclose(inside, np.rint(rgb), atol=0.5)
    np.testing.assert_array_equal(img[0, ~mask], img[1, ~mask])
    assert np.abs(inside[0] - inside[1]).sum() > 100


def test_silhouettes_differ_between_categories_and_shapes():
    for size in (16, 32):
        masks = silhouette_masks(size).reshape(-1, size, size)
        assert masks.shape[0] == len(CATEGORIES) * 3
        assert all(m.mean() > 0.05 for m in masks)
        for a, b in itertools.combinations(range(masks.shape[0]), 2):
            assert (masks[a] != masks[b]).mean() > 0.02, (size, a, b)


def test_dataset_images_follow_attributes(tiny):
    imgs = tiny.images.array.astype(np.int16)
    masks = silhouette_masks(32)
    cat, shape = tiny.item_category.astype(int), tiny.item_attributes["shape"].astype(int)
    foreground = np.abs(imgs - BACKGROUND.astype(np.int16)).max(-1) > 25
    agree = (foreground == masks[cat, shape]).mean((1, 2))
    assert agree.min() > 0.99, agree.min()
    # Solid items: the mean colour inside the silhouette is the palette colour, up to the jitter.
    solid = np.flatnonzero(tiny.item_attributes["pattern"] == PATTERNS.index("solid"))
    assert solid.size > 10
    colour = tiny.item_attributes["colour"]
    for i in solid[:20]:
        inside = imgs[i][masks[cat[i], shape[i]]].mean(0)
        assert np.abs(inside - PALETTE[colour[i]]).max() < 40
    # Patterned items vary inside the silhouette far more than solid ones.
    patterned = np.flatnonzero(tiny.item_attributes["pattern"] != PATTERNS.index("solid"))
    spread = [imgs[i][masks[cat[i], shape[i]]].std(0).mean() for i in np.r_[solid[:20], patterned[:20]]]
    assert max(spread[:20]) < min(spread[20:])


def test_image_size_16_works():
    ds = make_dataset("tiny", seed=0, image_size=16)
    assert ds.images.array.shape == (ds.n_items, 16, 16, 3) and ds.image_size == 16


# ---- ground truth ---------------------------------------------------------------------------


def _naive_affinity(truth: SyntheticTruth, user: int, items: np.ndarray) -> float:
    styles = [truth.item_style[i].astype(float) for i in items if i >= 0]
    pairs = [float(a @ b) for a, b in itertools.permutations(styles, 2)]
    compat = float(np.mean(pairs)) if pairs else 0.0
    mean = np.mean(styles, 0)
    mean = mean / np.linalg.norm(mean)
    taste = max(float(truth.user_anchors[user, a] @ mean)
                for a in range(truth.anchor_mask.shape[1]) if truth.anchor_mask[user, a])
    return truth.compat_weight * compat + truth.taste_weight * taste


def test_true_affinity_matches_naive_loop(tiny_var):
    rng = np.random.default_rng(3)
    rows = rng.choice(tiny_var.n_outfits, 40, replace=False)
    users = rng.integers(0, tiny_var.n_users, 40)
    items = tiny_var.outfit_items[rows]
    items[:5, 2] = -1                       # single-slot absences elsewhere are ignored too
    got = true_affinity(tiny_var, users, items)
    want = [_naive_affinity(tiny_var.truth, u, it) for u, it in zip(users, items)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    one_item = np.array([[items[0, 0], -1, -1, -1]])
    assert tiny_var.truth.true_affinity(users[:1], one_item)[0] == pytest.approx(
        _naive_affinity(tiny_var.truth, users[0], one_item[0]), abs=1e-6)


def test_own_positives_beat_random_mixtures(tiny):
    rng = np.random.default_rng(0)
    train = tiny.outfits_of("train")
    users, pos = tiny.outfit_user[train], tiny.outfit_items[train]
    mix = np.stack([rng.choice(np.unique(pos[:, s]), len(train)) for s in range(pos.shape[1])], 1)
    pos_aff, mix_aff = tiny.truth.true_affinity(users, pos), tiny.truth.true_affinity(users, mix)
    assert pos_aff.mean() > mix_aff.mean() + 0.15, (pos_aff.mean(), mix_aff.mean())


def test_threshold_is_documented_quantile(tiny):
    truth = tiny.truth
    trained = ~tiny.split_mask("cold")
    aff = truth.true_affinity(tiny.outfit_user[trained], tiny.outfit_items[trained])
    assert truth.false_negative_quantile == 0.1
    assert truth.false_negative_threshold == pytest.approx(np.quantile(aff, 0.1), abs=1e-12)
    liked = truth.is_false_negative(tiny.outfit_user[trained], tiny.outfit_items[trained])
    np.testing.assert_array_equal(liked, aff >= truth.false_negative_threshold)
    assert 0.85 <= liked.mean() <= 0.95


def test_false_negative_fraction_bounds_and_determinism(tiny):
    frac = false_negative_fraction(tiny, n_per_user=100, seed=0)
    assert 0.0 <= frac <= 1.0
    assert frac == false_negative_fraction(tiny, n_per_user=100, seed=0)
    all_liked = dataclasses.replace(tiny, truth=dataclasses.replace(
        tiny.truth, false_negative_threshold=-np.inf))
    none_liked = dataclasses.replace(tiny, truth=dataclasses.replace(
        tiny.truth, false_negative_threshold=np.inf))
    assert false_negative_fraction(all_liked, n_per_user=20) == 1.0
    assert false_negative_fraction(none_liked, n_per_user=20) == 0.0


def test_true_affinity_bad_input(tiny):
    plain = dataclasses.replace(tiny, truth=None)
    with pytest.raises(DatasetError, match="no ground truth"):
        true_affinity(plain, np.array([0]), tiny.outfit_items[:1])
    with pytest.raises(ValueError, match="user ids"):
        tiny.truth.true_affinity(np.array([tiny.n_users]), tiny.outfit_items[:1])
    with pytest.raises(ValueError, match="no items"):
        tiny.truth.true_affinity(np.array([0]), np.full((1, 3), -1))


# ---- persistence and errors -----------------------------------------------------------------


def test_save_load_round_trip(tiny_var, tmp_path):
    path = tiny_var.save(tmp_path / "data")
    back = OutfitDataset.load(path)
    assert back.name == tiny_var.name and back.fingerprint() == tiny_var.fingerprint()
    for name, arr in _tables(tiny_var).items():
        np.testing.assert_array_equal(arr, _tables(back)[name], err_msg=name)
    assert back.images.array.tobytes() == tiny_var.images.array.tobytes()
    assert back.meta == tiny_var.meta
    t0, t1 = tiny_var.truth, back.truth
    assert (t1.compat_weight, t1.taste_weight, t1.false_negative_quantile) == (
        t0.compat_weight, t0.taste_weight, t0.false_negative_quantile)
    assert t1.false_negative_threshold == t0.false_negative_threshold
    users, items = tiny_var.outfit_user, tiny_var.outfit_items
    np.testing.assert_array_equal(t1.true_affinity(users, items), t0.true_affinity(users, items))


def test_bad_scale_names_valid_choices():
    with pytest.raises(DatasetError, match="'huge'") as err:
        make_dataset("huge")
    for scale in SCALES:
        assert scale in str(err.value)


@pytest.mark.parametrize("bad", [8, 15, 32.0, "32", True, None])
def test_bad_image_size(bad):
    with pytest.raises(ValueError, match="image_size"):
        make_dataset("tiny", image_size=bad)


def test_images_on_disk_are_written_without_a_writable_map_and_copied_as_bytes(tmp_path):
    """The large scales write their images through NpyWriter and save them by copying the file:
    the same bytes as the in-memory path, in a plain .npy that loads memory-mapped."""
    in_memory = make_dataset("tiny")
    on_disk = make_dataset("tiny", images_on_disk=True, cache_dir=tmp_path / "gen")
    assert isinstance(on_disk.images.array, np.memmap)
    np.testing.assert_array_equal(np.asarray(on_disk.images.array), in_memory.images.array)
    assert _whole_npy_file(on_disk.images.array) is not None
    assert _whole_npy_file(on_disk.images.array[:5]) is None  # a view is not the whole file
    on_disk.save(tmp_path / "a")
    in_memory.save(tmp_path / "b")
    assert (tmp_path / "a" / "images.npy").read_bytes() == (tmp_path / "b" / "images.npy").read_bytes()
    assert OutfitDataset.load(tmp_path / "a").fingerprint() == in_memory.fingerprint()
    writer = NpyWriter(tmp_path / "w.npy", (4, 2))
    with pytest.raises(ValueError, match="contiguous row slices"):
        writer[0:4:2] = np.zeros((2, 2), dtype=np.uint8)
    writer.close()
