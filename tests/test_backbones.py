"""Item CNNs: preprocessing, shapes, sizes, and local-only ImageNet weights for the AlexNets."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fndkit.models.backbones import (BACKBONES, IMAGENET_MEAN, IMAGENET_STD, build_backbone,
                                     count_parameters, images_to_tensor)

ALEXNETS = ["alexnet-large", "alexnet-m", "alexnet-s", "alexnet-xs"]
# conv1..conv5 of torchvision's AlexNet: (in, out, kernel)
ALEXNET_CONVS = [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]
ALEXNET_CONV_PARAMS = sum(k * k * cin * cout + cout for cin, cout, k in ALEXNET_CONVS)


def _linear(n_in, n_out):
    return n_in * n_out + n_out


def test_images_to_tensor_normalises_and_keeps_size():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    x = images_to_tensor(images)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    c, i, j = 1, 3, 5
    expected = (images[0, i, j, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    assert x[0, c, i, j].item() == pytest.approx(expected, abs=1e-6)
    # a tensor input and size equal to the images' size give the same result
    assert torch.equal(images_to_tensor(torch.from_numpy(images), size=8), x)


def test_images_to_tensor_resizes_constant_images_exactly():
    images = np.full((3, 16, 16, 3), 200, dtype=np.uint8)
    x = images_to_tensor(images, size=6)
    assert x.shape == (3, 3, 6, 6)
    for c in range(3):
        expected = (200 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(x[:, c], torch.full((3, 6, 6), expected), atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8),
                                 np.zeros((2, 3, 8, 8), np.uint8)])
def test_images_to_tensor_rejects_bad_input(bad):
    with pytest.raises(ValueError, match=r"uint8 \[K, H, W, 3\]"):
        images_to_tensor(bad)


@pytest.mark.parametrize("name", ["cnn-tiny", "cnn-small", "cnn-large"])
def test_small_cnns_forward_shape_and_no_batchnorm(name):
    torch.manual_seed(0)
    model = build_backbone(name, dim=24)
    out = model(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, 24) and torch.isfinite(out).all()
    assert model.backbone_name == name
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    # no batch-size-dependent component (paper §4.8): a sample's output ignores its batch mates
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-5)


def test_cnn_large_has_more_capacity_than_cnn_small():
    small, large = build_backbone("cnn-small"), build_backbone("cnn-large")
    assert count_parameters(large) > 2 * count_parameters(small)
    # the false-negative lab's student, channels 8-16-32-32: convs (224 + 1168 + 4640 + 9248),
    # GroupNorms (16 + 32 + 64 + 64) and the 32 -> 128 map (4224)
    tiny = build_backbone("cnn-tiny", dim=128)
    assert count_parameters(tiny) == 19_680 < count_parameters(small) / 10


@pytest.fixture(scope="module")
def alexnets():
    """Each AlexNet built once (d = 32): building alexnet-large alone takes about a second."""
    torch.manual_seed(0)
    return {name: build_backbone(name, dim=32).eval() for name in ALEXNETS}


@pytest.mark.parametrize("name", ALEXNETS)
def test_alexnet_forward_shape_at_64px(alexnets, name):
    model = alexnets[name]
    assert model.input_size == 224 and model.backbone_name == name
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,fc_width", [("alexnet-large", 4096), ("alexnet-m", 2048),
                                           ("alexnet-s", 1024), ("alexnet-xs", None)])
def test_alexnet_parameter_counts_match_their_definition(alexnets, name, fc_width):
    d = 32
    if fc_width is None:   # conv layers + global average pooling + linear 256 -> d
        expected = ALEXNET_CONV_PARAMS + _linear(256, d)
    else:                  # 9216 -> w -> w -> d
        expected = (ALEXNET_CONV_PARAMS + _linear(256 * 6 * 6, fc_width)
                    + _linear(fc_width, fc_width) + _linear(fc_width, d))
    assert count_parameters(alexnets[name]) == expected


def test_count_parameters():
    assert count_parameters(nn.Linear(3, 4)) == 16


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="cnn-small") as info:
        build_backbone("resnet-9000")
    for name in BACKBONES:
        assert name in str(info.value)


def test_bad_weights_argument():
    with pytest.raises(ValueError, match="imagenet"):
        build_backbone("alexnet-xs", weights="places365")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_backbone("cnn-small", weights="imagenet")


def _hub_file(hub_dir: Path) -> Path:
    from torchvision.models import AlexNet_Weights

    return hub_dir / "checkpoints" / Path(AlexNet_Weights.IMAGENET1K_V1.url).name


def test_imagenet_weights_missing_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        build_backbone("alexnet-xs", weights="imagenet")
    assert str(_hub_file(tmp_path)) in str(info.value)


def test_imagenet_weights_loaded_from_local_file(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(123)
    reference = alexnet(weights=None).state_dict()
    path = _hub_file(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(reference, path)

    torch.manual_seed(7)
    large = build_backbone("alexnet-large", dim=32, weights="imagenet")
    state = large.state_dict()
    for key in ["features.0.weight", "features.3.bias", "features.10.weight",
                "classifier.1.weight", "classifier.4.weight"]:
        assert torch.equal(state[key], reference[key]), key
    assert state["classifier.6.weight"].shape == (32, 4096)   # replaced head, not copied

    xs = build_backbone("alexnet-xs", dim=32, weights="imagenet")
    assert torch.equal(xs.state_dict()["features.8.weight"], reference["features.8.weight"])
    assert xs.state_dict()["classifier.weight"].shape == (32, 256)  # AlexNet-small's own head
