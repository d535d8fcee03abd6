"""Tests for fndkit.models.autoencoder: shapes, training, encoding, neighbour table, agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fndkit.data.schema import ArrayImages
from fndkit.models.autoencoder import (ConvAutoencoder, attribute_agreement,
                                       default_working_size, encode_items, images_to_tensor,
                                       neighbour_table, reconstruction_error, train_autoencoder)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run far faster on one thread on a shared CPU (no thread contention)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _structured_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size, 3]: a flat background with one coloured rectangle, plus mild noise."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.float64)
    for i in range(n):
        images[i] = rng.uniform(0, 255, size=3)
        y0, x0 = rng.integers(0, size // 2, size=2)
        h, w = rng.integers(size // 4, size // 2 + 1, size=2)
        images[i, y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, size=3)
    images += rng.normal(0, 8, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size, latent_dim", [(16, 8), (32, 64), (64, 16)])
def test_forward_shapes(size, latent_dim):
    model = ConvAutoencoder(size, latent_dim)
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        z, recon = model.encode(x), model(x)
    assert z.shape == (3, latent_dim)
    assert recon.shape == x.shape
    assert float(recon.min()) > 0 and float(recon.max()) < 1  # sigmoid output


@pytest.mark.parametrize("size, working", [(16, 16), (17, 16), (32, 32), (48, 32), (63, 32),
                                           (64, 64), (100, 64), (224, 128), (291, 256)])
def test_any_size_from_16_works_at_a_power_of_two(size, working):
    model = ConvAutoencoder(size, 5)
    assert default_working_size(size) == working and model.working_size == working
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        z, recon = model.encode(x), model(x)
        recon_w, target_w = model.reconstruct(x)
    assert z.shape == (2, 5)
    assert recon.shape == x.shape   # shown beside the input, so at the input's size
    assert recon_w.shape == target_w.shape == (2, 3, working, working)
    assert float(recon.min()) > 0 and float(recon.max()) < 1
    if working == size:  # nothing resized: the target is the input itself
        assert target_w is x


def test_working_size_shrinks_the_input_like_the_backbones_do():
    images = _structured_images(3, 48)
    model = ConvAutoencoder(48, 4)
    expected = images_to_tensor(images)  # float [3, 3, 48, 48]
    from fndkit.models.backbones import images_to_tensor as backbone_input

    resized = backbone_input(images, size=32, normalize=False)
    torch.testing.assert_close(model.to_working_size(expected), resized)
    with pytest.raises(ValueError, match=r"expected images \[K, 3, 48, 48\], got \(3, 3, 32, 32\)"):
        model.encode(resized)


@pytest.mark.parametrize("size", [8, 15, 0, -32, 32.0, 224.5, "32", True, None])
def test_bad_image_sizes_are_rejected(size):
    with pytest.raises(ValueError, match=r"image_size must be an integer >= 16 .*got " + repr(size)
                       .replace("(", r"\(").replace(".", r"\.")):
        ConvAutoencoder(size)


@pytest.mark.parametrize("working", [8, 48, 256, 32.0])
def test_bad_working_sizes_are_rejected(working):
    with pytest.raises(ValueError, match=r"working_size must be a power of two between 16 and "
                                         r"image_size \(224\), or None for 128"):
        ConvAutoencoder(224, working_size=working)


def test_config_round_trip_rebuilds_the_same_model():
    torch.manual_seed(0)
    model = ConvAutoencoder(32, 12)
    config = model.config()
    assert config == {"image_size": 32, "latent_dim": 12, "working_size": 32}
    clone = ConvAutoencoder.from_config(dict(config))
    clone.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(clone(x), model(x))
    with pytest.raises(ValueError, match="unknown ConvAutoencoder config keys"):
        ConvAutoencoder.from_config({**config, "depth": 3})


def test_config_round_trip_at_224_with_a_chosen_working_size():
    torch.manual_seed(0)
    model = ConvAutoencoder(224, 6, working_size=32)
    clone = ConvAutoencoder.from_config(model.config())
    assert clone.config() == {"image_size": 224, "latent_dim": 6, "working_size": 32}
    clone.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(clone(x), model(x))


def test_checkpoint_configs_from_before_working_sizes_still_load():
    """Old checkpoints hold {"image_size", "latent_dim"} only: same architecture, same weights."""
    old = ConvAutoencoder.from_config({"image_size": 64, "latent_dim": 8})
    assert old.working_size == 64
    ConvAutoencoder(64, 8).load_state_dict(old.state_dict())  # identical parameter names / shapes


def test_images_to_tensor_layout_and_scale():
    batch = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    batch[0, 1, 0] = (255, 51, 0)
    x = images_to_tensor(batch)
    assert x.shape == (1, 3, 2, 2)
    torch.testing.assert_close(x[0, :, 1, 0], torch.tensor([1.0, 0.2, 0.0]))
    assert float(x.sum()) == pytest.approx(1.2)


def test_training_reduces_reconstruction_error():
    images = _structured_images(64, 16)
    train_ids, val_ids = np.arange(32), np.arange(48, 64)
    torch.manual_seed(0)
    model = ConvAutoencoder(16, 16)
    before = reconstruction_error(model, images, train_ids)
    seen = []
    history = train_autoencoder(model, ArrayImages(images), train_ids, val_ids, epochs=5,
                                batch_size=8, lr=5e-3, progress=False, on_epoch_end=seen.append)
    after = reconstruction_error(model, images, train_ids)
    assert after < 0.85 * before
    assert [r["epoch"] for r in history] == list(range(1, 6)) and seen == history
    assert history[-1]["train_mse"] < history[0]["train_mse"]
    assert history[-1]["val_mse"] < history[0]["val_mse"]
    assert history[-1]["val_mse"] == pytest.approx(reconstruction_error(model, images, val_ids))


def test_training_is_deterministic_given_seeds():
    images = _structured_images(20, 16)

    def run(seed):
        torch.manual_seed(0)
        model = ConvAutoencoder(16, 8)
        return train_autoencoder(model, images, np.arange(16), np.arange(16, 20), epochs=2,
                                 batch_size=8, seed=seed, progress=False)

    assert run(1) == run(1)
    assert run(1) != run(2)  # the shuffling seed matters


def test_training_checks_its_inputs():
    images = _structured_images(4, 32)
    with pytest.raises(ValueError, match="image_size=32"):
        train_autoencoder(ConvAutoencoder(16), images, [0, 1], [], epochs=1, progress=False)
    with pytest.raises(ValueError, match="train_ids is empty"):
        train_autoencoder(ConvAutoencoder(32), images, [], [2], epochs=1, progress=False)


@pytest.mark.parametrize("size", [224, 48])
def test_training_a_few_steps_at_sizes_that_are_not_powers_of_two(size):
    images = _structured_images(24, size)
    torch.manual_seed(0)
    model = ConvAutoencoder(size, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    error_before = reconstruction_error(model, images, np.arange(16))
    history = train_autoencoder(model, ArrayImages(images), np.arange(16), np.arange(16, 24),
                                epochs=3, batch_size=8, lr=5e-3, progress=False)
    assert len(history) == 3
    assert all(np.isfinite([r["train_mse"], r["val_mse"]]).all() for r in history)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert reconstruction_error(model, images, np.arange(16)) < error_before
    with torch.no_grad():  # the figure's view: input-sized reconstructions
        assert model.eval()(images_to_tensor(images[:2])).shape == (2, 3, size, size)


def test_reconstruction_error_is_measured_at_the_working_size():
    images = _structured_images(4, 48)
    torch.manual_seed(0)
    model = ConvAutoencoder(48, 4)
    with torch.no_grad():
        recon, target = model.reconstruct(images_to_tensor(images))
        assert recon.shape == (4, 3, 32, 32)
        expected = float(((recon.double() - target.double()) ** 2).mean())
    assert reconstruction_error(model, images, np.arange(4)) == pytest.approx(expected, rel=1e-5)


def test_latents_and_neighbour_table_have_the_same_shape_at_32_and_224():
    category = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    small, large = _structured_images(10, 32), _structured_images(10, 224)
    tables = {}
    for size, images in ((32, small), (224, large)):
        torch.manual_seed(0)
        codes = encode_items(ConvAutoencoder(size, 16), images, np.arange(10))
        assert codes.shape == (10, 16) and codes.dtype == np.float32
        tables[size] = neighbour_table(codes, category, k=2)
    assert tables[32].shape == tables[224].shape == (10, 2)
    for table in tables.values():   # same meaning: nearest others of the item's own category
        assert (category[table] == category[:, None]).all()
        assert not (table == np.arange(10)[:, None]).any()


def test_a_224_px_model_sees_what_the_32_px_model_sees():
    """Same weights, working size 32: a 224 px copy of a 32 px image gets (nearly) its latent code,
    so the neighbour table built at 224 px means what the one built at 32 px means."""
    small = _structured_images(12, 32, seed=3)
    large = np.repeat(np.repeat(small, 7, axis=1), 7, axis=2)   # 224 px, nearest-neighbour upscale
    torch.manual_seed(0)
    model_32 = ConvAutoencoder(32, 8)
    model_224 = ConvAutoencoder(224, 8, working_size=32)
    model_224.load_state_dict(model_32.state_dict())
    codes_32 = encode_items(model_32, small, np.arange(12))
    codes_224 = encode_items(model_224, large, np.arange(12))
    spread = np.abs(codes_32 - codes_32.mean(0)).mean()
    assert np.abs(codes_224 - codes_32).mean() < 0.1 * spread
    category = np.zeros(12, dtype=int)
    np.testing.assert_array_equal(neighbour_table(codes_224, category, k=1),
                                  neighbour_table(codes_32, category, k=1))


def test_encode_items_matches_the_encoder_and_is_batch_invariant():
    images = _structured_images(10, 16)
    torch.manual_seed(0)
    model = ConvAutoencoder(16, 6).train()
    ids = np.array([3, 1, 7, 7, 0])
    codes = encode_items(model, images, ids, batch_size=2)
    assert codes.shape == (5, 6) and codes.dtype == np.float32
    assert model.training  # mode restored
    with torch.no_grad():
        expected = model.encode(images_to_tensor(images[ids])).numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encode_items(model, images, ids, batch_size=512), codes,
                               rtol=1e-5, atol=1e-6)


def test_reconstruction_error_is_the_mean_squared_error():
    images = _structured_images(5, 16)
    torch.manual_seed(0)
    model = ConvAutoencoder(16, 4)
    ids = np.array([0, 2, 4])
    with torch.no_grad():
        x = images_to_tensor(images[ids]).double()
        expected = float(((model(x.float()).double() - x) ** 2).mean())
    assert reconstruction_error(model, images, ids, batch_size=2) == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------------------------
# Neighbour table


def _brute_force_neighbours(latents, item_category, k):
    table = np.full((len(latents), k), -1, dtype=np.int64)
    for i in range(len(latents)):
        others = [j for j in range(len(latents)) if j != i and item_category[j] == item_category[i]]
        dist = [float(np.sum((latents[i] - latents[j]) ** 2)) for j in others]
        nearest = [others[t] for t in np.argsort(dist, kind="stable")[:k]]
        table[i, :len(nearest)] = nearest
    return table


def test_neighbour_table_equals_brute_force_and_stays_in_category():
    rng = np.random.default_rng(0)
    item_category = np.array([0] * 15 + [1] * 9 + [2] * 4 + [3] * 1)  # categories 2, 3 have <= k items
    rng.shuffle(item_category)
    latents = rng.normal(size=(item_category.size, 5))
    table = neighbour_table(latents, item_category, k=4)

    assert table.shape == (item_category.size, 4) and table.dtype == np.int64
    np.testing.assert_array_equal(table, _brute_force_neighbours(latents, item_category, 4))
    assert not (table == np.arange(item_category.size)[:, None]).any()  # never the item itself
    valid = table >= 0
    assert np.all(item_category[table[valid]] == np.broadcast_to(item_category[:, None], table.shape)[valid])
    # padding: n - 1 neighbours for a category of n <= k items
    n_valid = valid.sum(1)
    np.testing.assert_array_equal(n_valid[item_category == 2], 3)
    np.testing.assert_array_equal(n_valid[item_category == 3], 0)
    np.testing.assert_array_equal(n_valid[item_category <= 1], 4)


def test_neighbour_table_checks_shapes():
    with pytest.raises(ValueError, match="one row per item"):
        neighbour_table(np.zeros((4, 2)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="k must be"):
        neighbour_table(np.zeros((4, 2)), np.zeros(4, dtype=int), k=0)


# --------------------------------------------------------------------------------------------
# Attribute agreement


def test_attribute_agreement_on_a_planted_case():
    rng = np.random.default_rng(0)
    n_colours, per_group = 5, 12
    item_category = np.repeat(np.arange(3), n_colours * per_group)
    colour = np.tile(np.repeat(np.arange(n_colours), per_group), 3)
    pattern = rng.integers(0, 4, size=colour.size)  # not encoded in the latents
    latents = np.eye(n_colours)[colour] + rng.normal(0, 0.01, size=(colour.size, n_colours))
    table = neighbour_table(latents, item_category, k=5)
    result = attribute_agreement(table, {"colour": colour, "pattern": pattern}, item_category)

    assert set(result) == {"neighbour", "random"}
    assert result["neighbour"]["colour"] == 1.0
    # random partner from the same category: (per_group - 1) / (n - 1) share the colour
    expected_random = (per_group - 1) / (n_colours * per_group - 1)
    assert result["random"]["colour"] == pytest.approx(expected_random, abs=0.05)
    assert abs(result["neighbour"]["pattern"] - result["random"]["pattern"]) < 0.1


def test_attribute_agreement_closed_forms():
    item_category = np.array([0, 0, 0, 1, 1])
    neighbours = np.array([[1, 2], [0, -1], [1, 0], [4, -1], [3, -1]])
    colour = np.array([7, 7, 8, 1, 2])
    out = attribute_agreement(
        neighbours, {"colour": colour, "category": item_category, "id": np.arange(5)},
        item_category, seed=3)
    # pairs: (0,1)=, (0,2)x, (1,0)=, (2,1)x, (2,0)x, (3,4)x, (4,3)x -> 2 of 7
    assert out["neighbour"]["colour"] == pytest.approx(2 / 7)
    assert out["neighbour"]["category"] == 1.0 and out["neighbour"]["id"] == 0.0
    # random partners stay in the item's category and are never the item itself
    assert out["random"]["category"] == 1.0 and out["random"]["id"] == 0.0
    with pytest.raises(ValueError, match="attribute 'colour' has 4 values"):
        attribute_agreement(neighbours, {"colour": colour[:4]}, item_category)
