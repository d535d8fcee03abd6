"""The rich appearance of the synthetic benchmark (fndkit.data.appearance), the auxiliary
attribute pre-training (fndkit.pretrain) and the presets that go with them. Tiny scale only."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from fndkit.config import SCALE_PRESETS, ConfigError, DataConfig
from fndkit.data.appearance import (FREQUENCIES, N_HUES, PERIODS, RICH_PATTERNS, RICH_SHAPES,
                                    _pattern_code, rich_silhouettes)
from fndkit.data.synthetic import make_dataset


@pytest.fixture(scope="module")
def rich():
    return make_dataset("tiny", seed=0, image_size=32, appearance="rich")


def _digest(ds) -> str:
    h = hashlib.sha256()
    for a in (ds.outfit_items, ds.outfit_user, ds.outfit_split, ds.truth.item_style, ds.truth.user_anchors,
              np.asarray(ds.images.get(np.arange(ds.n_items)))):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def test_simple_generation_is_unchanged_bit_for_bit():
    """The default benchmark's tables, truth and pixels as they were before the rich appearance
    existed (hash taken from the generator at the commit before it)."""
    ds = make_dataset("tiny", seed=1)
    assert ds.fingerprint() == "3e8d5e3f57e24517"
    assert _digest(ds) == _digest(make_dataset("tiny", seed=1, appearance="simple"))
    assert "appearance" not in ds.meta["generator"] and "frequency" not in ds.item_attributes
    assert ds.truth.false_negative_threshold == pytest.approx(0.4423157351284913, abs=1e-12)


def test_rich_is_seeded_valid_and_labelled(rich):
    again = make_dataset("tiny", seed=0, image_size=32, appearance="rich")
    assert _digest(rich) == _digest(again)
    assert _digest(rich) != _digest(make_dataset("tiny", seed=1, image_size=32, appearance="rich"))
    rich.validate()
    assert rich.name == "synthetic-tiny-rich" and rich.meta["generator"]["appearance"] == "rich"
    a = rich.item_attributes
    assert set(a) == {"colour", "pattern", "shape", "frequency"}
    assert a["colour"].max() < N_HUES and a["pattern"].max() < len(RICH_PATTERNS)
    assert a["frequency"].max() < len(FREQUENCIES) and a["shape"].max() < 4
    assert len(set(map(len, RICH_SHAPES.values()))) == 1
    # truth: positives are liked more than the ground truth's threshold on average
    pos = rich.outfit_split != 4
    aff = rich.truth.true_affinity(rich.outfit_user[pos], rich.outfit_items[pos])
    assert np.quantile(aff, 0.1) == pytest.approx(rich.truth.false_negative_threshold)


def test_rich_items_with_equal_attributes_share_more_style(rich):
    """style = normalise(sum of attribute embeddings + noise): items equal in every attribute
    are closer in style than random pairs."""
    a, s = rich.item_attributes, rich.truth.item_style
    key = (rich.item_category.astype(int) * 1000 + a["colour"] * 100 + a["pattern"] * 10 + a["shape"])
    same = [(i, j) for i in range(200) for j in range(i + 1, 200) if key[i] == key[j]
            and (a["pattern"][i] == 0 or a["frequency"][i] == a["frequency"][j])]
    assert len(same) >= 3
    cos_same = np.mean([s[i] @ s[j] for i, j in same])
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 200, (500, 2))
    assert cos_same > np.mean([s[i] @ s[j] for i, j in pairs]) + 0.3


def test_rich_silhouettes_and_patterns_closed_form():
    from fndkit.data.synthetic import silhouette_masks

    masks = rich_silhouettes(silhouette_masks(64))
    assert masks.shape == (3, 4, 64, 64)
    flat = masks.reshape(12, -1)
    assert flat.any(1).all() and len({m.tobytes() for m in flat}) == 12   # none empty, all distinct
    c = (np.arange(40) + 0.5) / 40
    v, u = np.meshgrid(c, c, indexing="ij")
    u, v = u[None], v[None]
    zero = np.zeros(1)
    for f, period in enumerate(PERIODS):
        h = _pattern_code(np.array([1]), u, v, np.array([f]), zero)[0]    # h-stripes: rows only
        assert (h == h[:, :1]).all()
        vs = _pattern_code(np.array([2]), u, v, np.array([f]), zero)[0]   # v-stripes: columns only
        assert (vs == vs[:1]).all()
        # one dark band per half period: band count along v matches 1 / period
        changes = np.count_nonzero(np.diff(h[:, 0].astype(int)))
        assert abs(changes - 2 / period) <= 2
    assert not _pattern_code(np.array([0]), u, v, np.array([2]), zero).any()   # solid: no pattern


def test_rich_images_depend_on_image_size_and_the_garment_colour_shows(rich):
    big = make_dataset("tiny", seed=0, image_size=64, appearance="rich")
    assert big.images.get(np.arange(2)).shape == (2, 64, 64, 3)
    assert (big.truth.item_style == rich.truth.item_style).all()   # pictures change, the truth does not


def test_data_config_checks_appearance():
    assert DataConfig(appearance="rich").appearance == "rich"
    with pytest.raises(ConfigError, match="appearance='fancy'.*simple.*rich"):
        DataConfig(appearance="fancy")
    with pytest.raises(ConfigError, match="synthetic generator only"):
        DataConfig(source="/some/folder", appearance="rich")
    with pytest.raises(ValueError, match="appearance='x'"):
        make_dataset("tiny", appearance="x")


def test_rich_run_folder_takes_the_rich_preset(tmp_path):
    from fndkit.rundir import RunFolder
    from fndkit.stages import data as data_stage
    from fndkit.stages.training import teacher_config

    ds = data_stage.run(tmp_path, DataConfig(scale="tiny", appearance="rich"))
    assert RunFolder(tmp_path).preset_name() == "tiny-rich"
    assert teacher_config(tmp_path).backbone == SCALE_PRESETS["tiny-rich"]["teacher_backbone"]
    s = data_stage.summary(ds)
    assert s["appearance"] == "rich"
    # the ceiling on the clean lists is at least the ceiling on the lists with false negatives
    assert s["true_affinity_auc_clean"]["random"] >= s["true_affinity_auc"]["random"]
    for preset in ("tiny-rich", "demo-rich"):
        p = SCALE_PRESETS[preset]
        assert set(p["students"]) == {"XS", "S", "M"} and p["teacher_pretrain"]["task"] == "attributes"


# ---- auxiliary pre-training ------------------------------------------------------------------

def test_attribute_targets_closed_form(rich):
    from fndkit.pretrain import attribute_targets

    t = attribute_targets(rich)
    a = rich.item_attributes
    assert (t["shape"] == rich.item_category * 4 + a["shape"]).all()
    assert (t["frequency"][a["pattern"] == 0] == -1).all()
    assert (t["frequency"][a["pattern"] > 0] == a["frequency"][a["pattern"] > 0]).all()
    simple = attribute_targets(make_dataset("tiny", seed=0))
    assert "frequency" not in simple and simple["shape"].max() < 9


def test_pretrain_saves_conv_weights_a_backbone_loads(rich, tmp_path):
    from fndkit.models.backbones import build_backbone
    from fndkit.pretrain import ItemSet, pretrain_backbone, save_backbone_features

    items = ItemSet.of(rich)
    train = ItemSet(items.images[:300], {k: v[:300] for k, v in items.targets.items()})
    held = ItemSet(items.images[300:400], {k: v[300:400] for k, v in items.targets.items()})
    model, history = pretrain_backbone(train, held, "cnn-tiny", epochs=1, progress=False)
    assert len(history) == 1 and set(history[0]["held_out_accuracy"]) == set(items.targets)
    assert all(0.0 <= x <= 1.0 for x in history[0]["held_out_accuracy"].values())
    path = save_backbone_features(model, tmp_path / "w.pt")
    fresh = build_backbone("cnn-tiny", 128, weights=str(path))
    assert fresh.initial_weights["tensors"] == len([k for k in model.backbone.state_dict() if k.startswith("features.")])
    for k, v in fresh.state_dict().items():
        if k.startswith("features."):
            assert torch.equal(v, model.backbone.state_dict()[k])
