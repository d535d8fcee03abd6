"""Item CNNs: the function f of paper §3.1 that maps an item image to a feature vector in R^d.

Every backbone maps float images ``[K, 3, H, W]`` (ImageNet-normalised, see
:func:`images_to_tensor`) to item features ``[K, d]`` and carries ``input_size``, the image side
length it expects (``None`` = any size).

Two families:

- ``cnn-tiny`` / ``cnn-small`` / ``cnn-large``: small CNNs for 32 px images on CPU (students and
  teacher of the built-in synthetic benchmark). GroupNorm instead of BatchNorm, because the paper
  (§4.8) avoids every component whose behaviour depends on the batch size.
- the AlexNet family of paper §4.1.4 / §4.7 / Table 5, built from ``torchvision.models.alexnet``:
  ``alexnet-large`` (the original AlexNet, teacher; last 4096->1000 layer replaced by 4096->d),
  ``alexnet-xs`` (the paper's AlexNet-small: conv layers + global average pooling + linear 256->d),
  ``alexnet-s`` / ``alexnet-m`` (fully-connected widths cut to 1/4 and 1/2 of 4096).

Initial weights (``weights``): ``None`` (random initialisation), ``"imagenet"`` (torchvision's
ImageNet AlexNet, read from the local torch hub cache only: nothing is ever downloaded) or the path
of a state-dict file; tensors are copied where name and shape match. The built module records what
it started from in ``initial_weights`` (checkpoints carry it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import SCALE_PRESETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ALEXNET_INPUT_SIZE = 224


def images_to_tensor(images: np.ndarray | torch.Tensor, size: int | None = None,
                     device: str | torch.device | None = None, normalize: bool = True) -> torch.Tensor:
    """Turn uint8 item images into the float input of a backbone.

    images: uint8 ``[K, H, W, 3]`` (numpy array or tensor), as ``dataset.images.get(ids)`` returns.
    size: output side length; the images are resized (bilinear, antialiased) only when it differs
        from theirs. ``None`` keeps their size.
    Returns float32 ``[K, 3, size, size]`` on ``device``: scaled to [0, 1], then (``normalize``)
    normalised with the ImageNet mean and standard deviation (what torchvision's pretrained AlexNet
    expects). The autoencoder reconstructs pixels, so it takes ``normalize=False``.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [K, H, W, 3], got {images.dtype} "
                         f"{tuple(images.shape)}; pass the output of dataset.images.get(ids)")
    if size is not None and size <= 0:
        raise ValueError(f"size must be a positive int or None, got {size}")
    # Move the uint8 pixels first: a quarter of the bytes of the float tensor.
    x = images.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and (x.shape[-2] != size or x.shape[-1] != size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    if not normalize:
        return x
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


class SmallCNN(nn.Module):
    """A plain CNN for small images: [conv3x3 -> GroupNorm -> ReLU -> maxpool] per stage, global
    average pooling, then an optional hidden FC layer and a linear map to d.

    x: ``[K, 3, H, W]`` -> ``[K, d]``. Every stage but the last halves the resolution.
    """

    input_size = None  # global pooling makes it work at any size; 32 px is the CPU default

    def __init__(self, channels: tuple[int, ...], dim: int, fc_hidden: int | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for stage, out_ch in enumerate(channels):
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
                       nn.GroupNorm(min(8, out_ch), out_ch), nn.ReLU(inplace=True)]
            if stage < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if fc_hidden:
            self.head = nn.Sequential(nn.Linear(in_ch, fc_hidden), nn.ReLU(inplace=True),
                                      nn.Linear(fc_hidden, dim))
        else:
            self.head = nn.Linear(in_ch, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class AlexNetBackbone(nn.Module):
    """torchvision's AlexNet with a replaced head: ``features -> avgpool -> classifier``.

    Submodule names match torchvision's, so ImageNet state-dict keys line up with ours.
    x: ``[K, 3, 224, 224]`` -> ``[K, d]`` (smaller inputs work too, via the adaptive pooling).
    """

    input_size = ALEXNET_INPUT_SIZE

    def __init__(self, dim: int, fc_width: int | None):
        super().__init__()
        from torchvision.models import alexnet  # here, not at import: torchvision takes ~2 s to import

        net = alexnet(weights=None)
        self.features = net.features
        if fc_width is None:
            # AlexNet-small (XS): no fully-connected layers, only a linear map of the pooled
            # conv5 channels.
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(256, dim)
        elif fc_width == 4096:
            self.avgpool = net.avgpool
            net.classifier[6] = nn.Linear(4096, dim)
            self.classifier = net.classifier
        else:
            self.avgpool = net.avgpool
            # Same layout (and indices) as torchvision's classifier, with narrower layers.
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, fc_width), nn.ReLU(inplace=True),
                nn.Dropout(p=0.5), nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True),
                nn.Linear(fc_width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _cnn_small(dim: int) -> nn.Module:
    return SmallCNN(channels=(32, 64, 128, 128), dim=dim)


def _cnn_large(dim: int) -> nn.Module:
    return SmallCNN(channels=(48, 96, 192, 256), dim=dim, fc_hidden=512)


def _cnn_tiny(dim: int) -> nn.Module:
    # a much smaller student (0.27M parameters with the set transformer and a 40-user table at
    # d = 128, against cnn-large's 1.10M): a teacher clearly stronger than it can be trained
    return SmallCNN(channels=(8, 16, 32, 32), dim=dim)


BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    "cnn-tiny": _cnn_tiny,
    "cnn-small": _cnn_small,
    "cnn-large": _cnn_large,
    "alexnet-large": lambda dim: AlexNetBackbone(dim, fc_width=4096),
    "alexnet-m": lambda dim: AlexNetBackbone(dim, fc_width=2048),
    "alexnet-s": lambda dim: AlexNetBackbone(dim, fc_width=1024),
    "alexnet-xs": lambda dim: AlexNetBackbone(dim, fc_width=None),
}
"""Backbone name -> builder ``(dim) -> nn.Module``."""

WEIGHT_CHOICES = (None, "imagenet")
"""Named initial weights; any other value must be the path of a state-dict file."""
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt", ".bin")


def is_weights_path(weights: Any) -> bool:
    """Whether ``weights`` names a file rather than a choice: a path object, or a string with a
    folder part or a state-dict suffix (``.pth``, ``.pt`` …), so a mistyped name such as
    ``"imagnet"`` is reported as unknown rather than as a missing file."""
    if isinstance(weights, os.PathLike):
        return True
    return (isinstance(weights, str) and weights not in WEIGHT_CHOICES
            and ("/" in weights or os.sep in weights or weights.lower().endswith(WEIGHT_FILE_SUFFIXES)))


def weights_file(weights: Any) -> Path | None:
    """The file ``weights`` reads: :func:`alexnet_weights_path` for ``"imagenet"``, the path itself
    for a path, None for None. Raises ValueError for anything else."""
    if weights is None:
        return None
    if weights == "imagenet":
        return alexnet_weights_path()
    if is_weights_path(weights):
        return Path(weights).expanduser()
    raise ValueError(f"unknown weights {weights!r}; choose None (random initialisation), 'imagenet' "
                     f"or the path of a state-dict file (ending in .pth or .pt)")


def weights_or_scratch(weights: Any, backbone: str) -> Any:
    """``weights`` if its file is there. ``"imagenet"`` without the file gives None (training
    starts from scratch) and prints one line saying so and where to put the file; a missing
    explicit path raises, naming it (a typo must not silently train from scratch)."""
    path = weights_file(weights)
    if path is None or path.is_file():
        return weights
    if weights == "imagenet":
        print(f"weights='imagenet': no ImageNet AlexNet weights at {path}, so {backbone} trains from "
              f"scratch (random initialisation); to fine-tune as the paper does (§4.1.4) copy "
              f"torchvision's AlexNet_Weights.IMAGENET1K_V1 file ({path.name}) to exactly that path "
              f"($TORCH_HOME/hub/checkpoints/), or pass weights=<path of the file>. fndkit never "
              f"downloads it.")
        return None
    raise FileNotFoundError(f"weights={str(weights)!r}: no such file ({path.resolve()}); give the "
                            f"path of a state-dict file, 'imagenet', or None for random "
                            f"initialisation")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex): which weights file a run started from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2 ** 20), b""):
            h.update(chunk)
    return h.hexdigest()


def alexnet_weights_path() -> Path:
    """Where torchvision's ImageNet AlexNet weights must lie: the local torch hub cache."""
    from torchvision.models import AlexNet_Weights

    file_name = AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _read_state_dict(path: Path) -> dict:
    """A state dict from ``path`` (tensors only, ``weights_only``): a plain one, or the
    ``"state_dict"`` of a checkpoint; keys of a whole fndkit model lose their ``backbone.``."""
    try:
        # mmap: tensors whose shape does not match (the big FC layers of S/M/XS) are never read
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:   # files in torch's legacy (non-zip) format cannot be memory-mapped
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a state-dict file torch.load can read safely "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of names to tensors)")
    if any(k.startswith("backbone.") for k in payload):
        payload = {k[len("backbone."):]: v for k, v in payload.items() if k.startswith("backbone.")}
    return payload


def load_weights(backbone: nn.Module, path: str | os.PathLike) -> list[str]:
    """Copy the tensors of the state-dict file ``path`` into ``backbone`` where name and shape
    match; returns their names. For an AlexNet the conv layers (``features.*``) must match (a
    torchvision AlexNet state dict; FC layers match only where the width is unchanged)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    pretrained = _read_state_dict(path)
    own = backbone.state_dict()
    copied = [k for k, v in pretrained.items() if k in own and own[k].shape == v.shape]
    if isinstance(backbone, AlexNetBackbone) and not any(k.startswith("features.") for k in copied):
        raise ValueError(f"{path} holds no AlexNet conv weights (keys: {sorted(pretrained)[:5]}...); "
                         f"give a torchvision AlexNet state dict")
    if not copied:
        raise ValueError(f"{path} holds no tensor matching the backbone by name and shape (file "
                         f"keys: {sorted(pretrained)[:5]}..., backbone keys: {sorted(own)[:5]}...)")
    with torch.no_grad():
        for k in copied:
            own[k].copy_(pretrained[k])
    return copied


def load_imagenet_alexnet(backbone: nn.Module, path: str | os.PathLike | None = None) -> list[str]:
    """Copy torchvision's ImageNet AlexNet tensors into ``backbone`` where name and shape match.

    Reads only the local file ``path`` (default :func:`alexnet_weights_path`); never downloads.
    Conv layers always match; FC layers match only where the width is unchanged (alexnet-large's
    first two). Returns the names of the copied tensors.
    """
    path = Path(path) if path is not None else alexnet_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet AlexNet weights not found at {path}. fndkit never downloads them: copy "
            f"torchvision's AlexNet_Weights.IMAGENET1K_V1 file to exactly that path, or use "
            f"weights=None (random initialisation).")
    return load_weights(backbone, path)


def build_backbone(name: str, dim: int = 128, weights: str | None = None) -> nn.Module:
    """Build the item CNN ``name`` with output dimension ``dim``.

    weights: ``None`` (random initialisation), ``"imagenet"`` (AlexNets only; read from the local
        torch hub cache, see :func:`alexnet_weights_path`) or the path of a state-dict file (see
        :func:`load_weights`). A missing file raises; see :func:`weights_or_scratch` for
        "ImageNet when present".
    Returns an ``nn.Module`` mapping ``[K, 3, H, W] -> [K, dim]``, with attributes ``input_size``
    (expected image size, None = any), ``backbone_name`` and ``initial_weights`` (a JSON-able
    record of what it started from: ``weights``, ``file``, ``sha256``, ``tensors`` copied).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    path = weights_file(weights)   # validates weights
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    module = BACKBONES[name](dim)
    copied: list[str] = []
    if weights == "imagenet":
        if not isinstance(module, AlexNetBackbone):
            raise ValueError(f"backbone {name!r} has no ImageNet weights; use weights=None or an "
                             f"alexnet-* backbone")
        copied = load_imagenet_alexnet(module)
    elif path is not None:
        copied = load_weights(module, path)
    module.backbone_name = name
    module.initial_weights = {
        "weights": None if weights is None else str(weights),
        "file": None if path is None else str(path.resolve()),
        "sha256": None if path is None else file_sha256(path),
        "tensors": len(copied)}
    return module


def student_families(preset_name: str) -> dict[str, str]:
    """Fig. 6 / Table 5 sizes: the preset's ``students`` (XS, S, M) where it names them; the AlexNet
    family on real data; else the CPU CNN family other than the teacher's, ranked by parameters."""
    preset = SCALE_PRESETS[preset_name]
    if "students" in preset:
        return {"teacher": preset["teacher_backbone"], **preset["students"]}
    if preset_name == "real":
        return {"teacher": "alexnet-large", "XS": "alexnet-xs", "S": "alexnet-s", "M": "alexnet-m"}
    teacher = preset["teacher_backbone"]
    students = sorted((b for b in BACKBONES if b.startswith("cnn-") and b != teacher),
                      key=lambda b: count_parameters(BACKBONES[b](128)))
    return {"teacher": teacher, **dict(zip(("XS", "S", "M"), students))}
