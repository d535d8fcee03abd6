"""A small convolutional autoencoder over item images and the latent neighbour table it yields.

The *replace* augmentation (paper §3.3.2) swaps an item for a visually similar one of the same
category, found "through the latent features" of a pretrained CNN autoencoder. The paper gives no
architecture; this one halves the resolution with stride-2 convolutions down to 4x4, maps that to a
``latent_dim`` code with one linear layer, and mirrors it back with transposed convolutions and a
sigmoid (pixels in [0, 1], trained with mean squared error).

Any image size >= 16 works. Stride-2 stages need a power-of-two side, so the model works at an
internal ``working_size`` (by default the largest power of two <= ``image_size``: 32 -> 32,
48 -> 32, 224 -> 128): :meth:`ConvAutoencoder.encode` first resizes its input to the working size
(bilinear, antialiased, as :func:`fndkit.models.backbones.images_to_tensor` resizes), the decoder
reconstructs at the working size, and the training loss compares that reconstruction with the
resized input (detail finer than the working size cannot be reconstructed, so it is not asked
for). Whatever the image size, the latent codes are ``[K, latent_dim]`` and the neighbour table is
``[I, k]``: the *replace* table means the same thing at 32 and at 224 px. For a power-of-two image
size the working size is the image size itself, so nothing is resized and the architecture (and
every checkpoint written before working sizes existed) is unchanged.

Pipeline (notebooks/01_autoencoder.ipynb): :func:`train_autoencoder` -> :func:`encode_items` ->
:func:`neighbour_table` (what ``fndkit.augment.replace`` draws from) -> :func:`attribute_agreement`
(evidence that neighbours share colour / pattern / shape, i.e. that replace keeps semantics).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.schema import ArrayImages
from .contract import evaluating
from .backbones import images_to_tensor as backbone_input

_MAX_CHANNELS = 128
# The smallest side: two stride-2 stages (16 -> 8 -> 4); DataConfig asks for >= 16 px as well.
_MIN_SIZE = 16


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_image_size(image_size: Any) -> int:
    if not _is_int(image_size) or image_size < _MIN_SIZE:
        raise ValueError(f"image_size must be an integer >= {_MIN_SIZE} (e.g. 32, 48 or 224), got "
                         f"{image_size!r}; resize the images in 00_data")
    return int(image_size)


def default_working_size(image_size: int) -> int:
    """The largest power of two <= ``image_size`` (>= 16): 16 -> 16, 48 -> 32, 224 -> 128."""
    return 1 << (_check_image_size(image_size).bit_length() - 1)


def _check_working_size(working_size: Any, image_size: int) -> int:
    if working_size is None:
        return default_working_size(image_size)
    if (not _is_int(working_size) or working_size < _MIN_SIZE
            or working_size & (working_size - 1) or working_size > image_size):
        raise ValueError(f"working_size must be a power of two between {_MIN_SIZE} and image_size "
                         f"({image_size}), or None for {default_working_size(image_size)}; got "
                         f"{working_size!r}")
    return int(working_size)


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder: images [K, 3, H, W] in [0, 1] -> latent [K, latent_dim].

    ``image_size`` (H = W) is any integer >= 16: the input side the model accepts.
    ``working_size`` (a power of two, 16 <= working_size <= image_size; ``None`` = the largest
    such) is the side W' it works at: inputs are resized to W' before encoding and the decoder
    reconstructs at W'. There are log2(W' / 4) stride-2 stages with 32, 64, 128, 128, ... channels.
    """

    def __init__(self, image_size: int = 32, latent_dim: int = 64, working_size: int | None = None):
        super().__init__()
        self.image_size = _check_image_size(image_size)
        self.working_size = _check_working_size(working_size, self.image_size)
        if not _is_int(latent_dim) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = int(latent_dim)
        n_stages = int(math.log2(self.working_size // 4))
        widths = [min(32 * 2**i, _MAX_CHANNELS) for i in range(n_stages)]

        down, c_in = [], 3
        for c_out in widths:
            down += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(c_in * 16, self.latent_dim))

        up = [nn.Linear(self.latent_dim, c_in * 16), nn.ReLU(inplace=True),
              nn.Unflatten(1, (c_in, 4, 4))]
        for c_out in reversed(widths[:-1]):
            up += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        up += [nn.ConvTranspose2d(c_in, 3, 4, stride=2, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*up)

    def to_working_size(self, images: torch.Tensor) -> torch.Tensor:
        """images [K, 3, H, W] in [0, 1], H = W = image_size -> [K, 3, W', W'], W' = working_size.

        The same resize as :func:`fndkit.models.backbones.images_to_tensor` (bilinear,
        antialiased, so that shrinking 224 -> 128 px averages pixels instead of skipping them);
        the identity when the two sizes agree.
        """
        if images.ndim != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images [K, 3, {self.image_size}, {self.image_size}], got "
                             f"{tuple(images.shape)}")
        if self.working_size == self.image_size:
            return images
        return F.interpolate(images, size=(self.working_size, self.working_size), mode="bilinear",
                             align_corners=False, antialias=True)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images: [K, 3, H, W] in [0, 1] (H = W = image_size) -> latent codes [K, latent_dim]."""
        return self.encoder(self.to_working_size(images))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [K, latent_dim] -> reconstructions [K, 3, W', W'] in (0, 1), W' = working_size."""
        return self.decoder(latent)

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: [K, 3, H, W] -> (reconstruction, target), both [K, 3, W', W'].

        The pair the training loss compares: the decoder's output and the input resized to the
        working size (the most the model can be asked to reproduce).
        """
        target = self.to_working_size(images)
        return self.decoder(self.encoder(target)), target

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [K, 3, H, W] in [0, 1] -> reconstructions [K, 3, H, W] in (0, 1).

        Reconstructed at the working size and scaled back up to the input size (bilinear), so
        the output can be shown beside the input (the 01_autoencoder reconstruction figure);
        training uses :meth:`reconstruct`, which stays at the working size.
        """
        recon = self.decode(self.encode(images))
        if self.working_size == self.image_size:
            return recon
        return F.interpolate(recon, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False)

    def config(self) -> dict:
        """The constructor arguments as a plain dict (stored in checkpoints)."""
        return {"image_size": self.image_size, "latent_dim": self.latent_dim,
                "working_size": self.working_size}

    @classmethod
    def from_config(cls, config: dict) -> "ConvAutoencoder":
        """Rebuild from :meth:`config`. A config without ``working_size`` (checkpoints written
        before it existed, power-of-two sizes only) gets the default, which was then the only
        choice: the image size itself."""
        unknown = set(config) - {"image_size", "latent_dim", "working_size"}
        if unknown:
            raise ValueError(f"unknown ConvAutoencoder config keys {sorted(unknown)}; "
                             f"expected image_size, latent_dim, working_size")
        return cls(**config)


# --------------------------------------------------------------------------------------------
# Images


def _image_store(images: Any) -> Any:
    """Accept an ImageStore (anything with ``.get(ids)``) or a uint8 array [I, H, W, 3]."""
    if hasattr(images, "get") and not isinstance(images, dict):
        return images
    if isinstance(images, np.ndarray):
        return ArrayImages(images)
    raise ValueError(f"images must be an image store with .get(ids) or a uint8 array "
                     f"[n_items, H, W, 3], got {type(images).__name__}")


def _ids(item_ids: Any, name: str) -> np.ndarray:
    ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} holds negative item id {int(ids.min())}; drop padding (-1) first")
    return ids


def images_to_tensor(batch: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 images [K, H, W, 3] -> float tensor [K, 3, H, W] in [0, 1] on ``device``."""
    return backbone_input(batch, size=None, device=device, normalize=False)


def _load(store: Any, ids: np.ndarray, model: ConvAutoencoder, device: Any) -> torch.Tensor:
    """The images of ``ids``: float [k, 3, H, W] in [0, 1] at the store's (= the model's) size."""
    x = images_to_tensor(store.get(ids), device)
    if x.shape[-1] != model.image_size:
        raise ValueError(f"images are {x.shape[-1]} px but the autoencoder expects "
                         f"{model.image_size} px; build it with image_size={x.shape[-1]}")
    return x


# --------------------------------------------------------------------------------------------
# Training and encoding


def train_autoencoder(model: ConvAutoencoder, images: Any, train_ids: Any, val_ids: Any,
                      epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                      device: str = "cpu", progress: bool = True,
                      on_epoch_end: Callable[[dict], Any] | None = None) -> list[dict]:
    """Train ``model`` to reconstruct item images with Adam and mean squared error.

    images: ImageStore (``.get(ids)`` -> uint8 [k, H, W, 3]) or a uint8 array [I, H, W, 3].
    train_ids / val_ids: item ids. Batches are shuffled by a ``torch.Generator`` seeded with
    ``seed`` (initialise the weights with ``fndkit.repro.seed_everything`` beforehand).
    ``on_epoch_end(record)`` is called after each epoch (e.g. a live plot in the notebook).

    Returns one record per epoch: ``{"epoch" (1-based), "train_mse", "val_mse"}``; ``train_mse``
    is the mean over the epoch's batches while training, ``val_mse`` the held-out error after it
    (NaN when ``val_ids`` is empty). Both are measured at the model's working size
    (:meth:`ConvAutoencoder.reconstruct`).
    """
    store = _image_store(images)
    train_ids, val_ids = _ids(train_ids, "train_ids"), _ids(val_ids, "val_ids")
    if train_ids.size == 0:
        raise ValueError("train_ids is empty; the autoencoder needs items to train on")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    n_batches = math.ceil(train_ids.size / batch_size)
    history: list[dict] = []
    bar = tqdm(total=epochs * n_batches, desc="autoencoder", disable=not progress)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = train_ids[torch.randperm(train_ids.size, generator=generator).numpy()]
            total = 0.0
            for start in range(0, order.size, batch_size):
                x = _load(store, order[start:start + batch_size], model, device)
                loss = F.mse_loss(*model.reconstruct(x))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * x.shape[0]
                bar.update(1)
            val_mse = (reconstruction_error(model, store, val_ids, device)
                       if val_ids.size else float("nan"))
            record = {"epoch": epoch, "train_mse": total / order.size, "val_mse": val_mse}
            history.append(record)
            bar.set_postfix(epoch=epoch, train_mse=f"{record['train_mse']:.4f}",
                            val_mse=f"{val_mse:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        bar.close()
    return history


@torch.no_grad()
def encode_items(model: ConvAutoencoder, images: Any, item_ids: Any, batch_size: int = 512,
                 device: str = "cpu") -> np.ndarray:
    """Latent codes of ``item_ids``: float32 array [K, latent_dim] (eval mode, no gradients)."""
    store, ids = _image_store(images), _ids(item_ids, "item_ids")
    with evaluating(model.to(device)):
        codes = [model.encode(_load(store, ids[s:s + batch_size], model, device)).cpu()
                 for s in range(0, ids.size, batch_size)]
    if not codes:
        return np.zeros((0, model.latent_dim), dtype=np.float32)
    return torch.cat(codes).numpy().astype(np.float32)


@torch.no_grad()
def reconstruction_error(model: ConvAutoencoder, images: Any, item_ids: Any,
                         device: str = "cpu", batch_size: int = 512) -> float:
    """Mean squared error per pixel value over ``item_ids`` (eval mode, no gradients), at the
    model's working size (:meth:`ConvAutoencoder.reconstruct`: the loss training minimises)."""
    store, ids = _image_store(images), _ids(item_ids, "item_ids")
    if ids.size == 0:
        raise ValueError("item_ids is empty; no reconstruction error to measure")
    total, count = 0.0, 0
    with evaluating(model.to(device)):
        for s in range(0, ids.size, batch_size):
            recon, target = model.reconstruct(_load(store, ids[s:s + batch_size], model, device))
            total += float(F.mse_loss(recon, target, reduction="sum"))
            count += target.numel()
    return total / count


# --------------------------------------------------------------------------------------------
# Neighbours


def neighbour_table(latents: np.ndarray, item_category: np.ndarray, k: int = 5) -> np.ndarray:
    """The ``k`` nearest items (Euclidean, in latent space) of the same category, per item.

    latents: [I, L]; item_category: [I]. Returns int64 [I, k], nearest first, never the item
    itself; this is the table ``fndkit.augment.replace`` draws from (paper §3.3.2). A category
    with ``n <= k`` items has only ``n - 1`` neighbours per item: the rest of the row is -1.
    """
    latents = np.asarray(latents)
    item_category = np.asarray(item_category).reshape(-1)
    if latents.ndim != 2 or latents.shape[0] != item_category.shape[0]:
        raise ValueError(f"latents must be [I, L] with one row per item of item_category "
                         f"({item_category.shape[0]}), got {latents.shape}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    table = np.full((latents.shape[0], k), -1, dtype=np.int64)
    from sklearn.neighbors import NearestNeighbors  # here: sklearn takes ~1.5 s to import

    for category in np.unique(item_category):
        members = np.flatnonzero(item_category == category)
        n_neighbours = min(k, members.size - 1)
        if n_neighbours < 1:
            continue
        index = NearestNeighbors(n_neighbors=n_neighbours).fit(latents[members])
        # kneighbors() without a query returns each fitted point's neighbours minus the point itself
        _, local = index.kneighbors()
        table[members, :n_neighbours] = members[local]
    return table


def attribute_agreement(neighbours: np.ndarray, attributes: dict[str, np.ndarray],
                        item_category: np.ndarray, seed: int = 0) -> dict:
    """How often an item's latent neighbours share its attributes, against a random baseline.

    neighbours: int [I, k] (-1 entries skipped); attributes: name -> int [I] (e.g. colour, pattern,
    shape); item_category: [I]. For each attribute, the fraction of (item, neighbour) pairs whose
    values agree, and the same fraction for ``k`` items drawn uniformly (with replacement) from
    the item's own category, itself excluded. A neighbour fraction well above the random one says
    replace keeps an outfit's semantics.

    Returns ``{"neighbour": {name: fraction}, "random": {name: fraction}}`` (NaN with no pairs).
    """
    neighbours = np.asarray(neighbours)
    item_category = np.asarray(item_category).reshape(-1)
    n_items, k = neighbours.shape
    if item_category.shape[0] != n_items:
        raise ValueError(f"neighbours has {n_items} rows but item_category {item_category.shape[0]}")
    rng = np.random.default_rng(seed)
    random_partners = np.full((n_items, k), -1, dtype=np.int64)
    for category in np.unique(item_category):
        members = np.flatnonzero(item_category == category)
        n = members.size
        if n < 2:
            continue
        # an offset in 1..n-1 from the item's own position never lands on the item itself
        offset = rng.integers(1, n, size=(n, k))
        random_partners[members] = members[(np.arange(n)[:, None] + offset) % n]

    out: dict = {"neighbour": {}, "random": {}}
    for name, values in attributes.items():
        values = np.asarray(values).reshape(-1)
        if values.shape[0] != n_items:
            raise ValueError(f"attribute {name!r} has {values.shape[0]} values for {n_items} items")
        for key, partners in (("neighbour", neighbours), ("random", random_partners)):
            valid = partners >= 0
            same = values[np.where(valid, partners, 0)] == values[:, None]
            out[key][name] = float(same[valid].mean()) if valid.any() else float("nan")
    return out
