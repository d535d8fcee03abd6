"""Bad parameters stop with one clear message naming the value."""

import pytest

from fndkit.config import ConfigError, DataConfig, TrainConfig, train_config


@pytest.mark.parametrize("field,value,needle", [
    ("alpha", 0.0, "alpha=0.0"), ("alpha", -1.0, "alpha=-1.0"), ("tau", 0.0, "tau=0.0"),
    ("hard_fraction", 1.5, "hard_fraction=1.5"), ("lam", -0.1, "lam=-0.1"), ("tau_cl", 0.0, "tau_cl=0.0"),
    ("dim", 100, "dim=100"),
])
def test_train_config_rejects(field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("loss", "hinge"), ("backbone", "resnet9000"), ("model", "svm")])
def test_unregistered_names_are_refused(field, value):
    """Names are checked against the registries (models, backbones, objectives) where they are built."""
    from fndkit.stages.training import check_names

    with pytest.raises(ConfigError, match=f"{field}={value!r} is unknown; choose one of"):
        check_names(TrainConfig(**{field: value}))


@pytest.mark.parametrize("field,value,needle", [
    ("epochs", 2.5, "epochs=2.5 must be an integer"), ("alpha", "abc", "alpha='abc' must be a number"),
    ("loss", "", "loss='' must be a non-empty string"), ("batch_size", True, "batch_size=True must be an integer"),
])
def test_train_config_rejects_wrong_types(field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        TrainConfig(**{field: value})


def test_linear_lr_scaling():
    assert TrainConfig(batch_size=64, lr=0.1).scaled_lr == pytest.approx(0.2)
    assert TrainConfig(batch_size=32).negatives == 32
    assert TrainConfig(n_negatives=7).negatives == 7


def test_presets_and_overrides():
    cfg = train_config("tiny", "student", alpha=1.5, epochs=None)
    assert cfg.val_split == "val_student" and cfg.alpha == 1.5 and cfg.epochs == 2
    assert train_config("demo", "teacher").val_split == "val_teacher"
    with pytest.raises(ConfigError, match="scale='huge'"):
        train_config("huge", "student")


def test_data_config_rejects_unknown_scale():
    with pytest.raises(ConfigError, match="scale='medium'.*tiny"):
        DataConfig(scale="medium")
    with pytest.raises(ConfigError, match="image_size=8"):
        DataConfig(image_size=8)


def test_round_trip():
    cfg = TrainConfig(alpha=1.5, loss="fnd")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown fields"):
        TrainConfig.from_dict({"alpah": 1.0})
